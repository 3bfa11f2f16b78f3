"""Health decisions (pure): what a board's telemetry says, and when its golden check is due.

**Passive rules** (:func:`findings`) run on every report a board's agent makes: each crossing of a
configured line is a :class:`Finding` with a severity and a recommended action
(:class:`~fleetyard.domain.health_config.RuleAction`); :func:`worst` picks the one to act on.
Rate and increase rules compare with the previous report, so a counter that only ever grows (ECC)
fires on its growth, not on the total a long-lived board has collected.

**L1** (:func:`l1_due`): the golden, bit-exact check runs before a board returns to service and
then every ``every_s`` or ``every_jobs`` user jobs, whichever comes first. A board whose L1 is due
takes no new user job; it runs the check as soon as it is free (health checks go ahead of user
work), so a corrupting board is caught within one interval plus the job it was running.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fleetyard.domain.health_config import L1Policy, RuleAction, Severity, TelemetryRule

__all__ = ["Finding", "Reading", "TakeOut", "findings", "l1_due", "take_out_why", "worst"]

_RANK = {RuleAction.NONE: 0, RuleAction.CHECK: 1, RuleAction.REMEDIATE: 2, RuleAction.QUARANTINE: 3}


@dataclass(frozen=True, slots=True)
class Reading:
    """One telemetry report of a board and when it was taken."""

    at: float
    values: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    metric: str
    value: float  # the value, or its growth / rate for increase / rate rules
    severity: Severity
    action: RuleAction
    message: str


def findings(rules: Iterable[TelemetryRule], now: Reading, previous: Reading | None = None) -> list[Finding]:
    """The rules that fire on ``now`` (growth rules need ``previous``, else they stay quiet)."""
    out = []
    for r in rules:
        value = now.values.get(r.metric)
        if value is None:
            continue
        shown, line = value, ""
        if r.above is not None:
            fired, line = value > r.above, f"{r.metric} {value:g} above {r.above:g}"
        elif r.below is not None:
            fired, line = value < r.below, f"{r.metric} {value:g} below {r.below:g}"
        else:
            before = previous.values.get(r.metric) if previous is not None else None
            if previous is None or before is None or now.at <= previous.at:
                continue
            grew = value - before
            if r.increase_above is not None:
                fired, shown = grew > r.increase_above, grew
                line = f"{r.metric} grew by {grew:g} (more than {r.increase_above:g})"
            else:
                rate = grew / (now.at - previous.at)
                fired, shown = r.rate_above is not None and rate > r.rate_above, rate
                line = f"{r.metric} growing {rate:.3g}/s (faster than {r.rate_above:g}/s)"
        if fired:
            out.append(Finding(r.name, r.metric, shown, r.severity, r.action, f"{r.severity} {r.name}: {line}"))
    return out


def worst(found: Iterable[Finding]) -> Finding | None:
    """The finding whose action goes furthest (ties: critical first, then rule name); None if none acts."""
    acting = [f for f in found if f.action is not RuleAction.NONE]
    if not acting:
        return None
    return min(acting, key=lambda f: (-_RANK[f.action], f.severity is not Severity.CRITICAL, f.rule))


@dataclass(frozen=True, slots=True)
class TakeOut:
    """Why a board in service is taken out, and what its case begins with: ``action`` None for a
    failed probe (the ladder at once: its remediation case reads the reason), else the rule's."""

    reason: str
    action: RuleAction | None


def take_out_why(*, probe: str | None, finding: Finding | None, blamed: str | None) -> TakeOut | None:
    """Why a board in service is taken out, when its probe (``probe``: why it failed, "" with no
    reason), its telemetry (:func:`worst` finding) and blame (a job that passed elsewhere, see
    :mod:`fleetyard.policy.blame`) may all say so at once. The probe first: a board that does not
    answer needs the ladder, whatever else is said of it; then the rule, with its own action; then
    blame, which asks a check first. None: nothing takes it out."""
    if probe is not None:
        return TakeOut(f"failed its probe: {probe or 'no reason given'}", None)
    if finding is not None:
        return TakeOut(finding.message, finding.action)
    if blamed is not None:
        return TakeOut(blamed, RuleAction.CHECK)
    return None


def l1_due(policy: L1Policy, *, last_l1_at: float | None, jobs_since: int, now: float) -> str | None:
    """Why the board's L1 check is due now (None: it is not). Never checked: due."""
    if last_l1_at is None:
        return "L1 due: never checked"
    if jobs_since >= policy.every_jobs:
        return f"L1 due: {jobs_since} jobs since the last (every {policy.every_jobs})"
    if now - last_l1_at >= policy.every_s:
        return f"L1 due: {(now - last_l1_at) / 3600:.1f} h since the last (every {policy.every_s / 3600:g} h)"
    return None
