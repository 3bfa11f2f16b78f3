"""The health-check configuration operators write, per generation, in YAML.

    generations:
      default:                          # what a generation not named gets; named ones override by key
        rules:                          # passive telemetry rules, checked on every heartbeat
          - {name: overheating, metric: temperature_c, above: 95, severity: critical, action: remediate}
          - {name: ecc-uncorrectable, metric: ecc_uncorrected, increase_above: 0, severity: critical,
             action: quarantine}
        l1: {every_s: 21600, every_jobs: 50, repeat: 3, timeout_s: 300}     # golden, bit-exact, seconds
        l2: {duration_s: 120, timeout_s: 900}                               # after an infra fault
        l3: {duration_s: 3600, timeout_s: 10800}                            # burn-in
        ladder:                          # remediation, in order; each step then an L2 check
          - {step: soft_reset, timeout_s: 120}
          - {step: reflash, timeout_s: 900}
          - {step: host_reboot, timeout_s: 900}
      sim-g3:
        l1: {every_s: 14400}
    breaker: {fraction: 0.1, boards: 50, window_s: 900}   # at most this much of a generation out at once

Pure: validated here (a bad file names the field and the fix) and read by
:mod:`fleetyard.policy.health` and :mod:`fleetyard.policy.remediation`. :data:`DEFAULT_HEALTH`
is what a fleet runs with no file; ``examples/config/health.yaml`` is the same, written out.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleetyard.domain import plain_yaml
from fleetyard.errors import BadRequest

__all__ = [
    "DEFAULT_HEALTH",
    "BreakerPolicy",
    "CheckTier",
    "GenerationHealth",
    "HealthConfig",
    "L1Policy",
    "LadderStep",
    "RemedyOp",
    "RuleAction",
    "Severity",
    "TelemetryRule",
    "TierPolicy",
    "parse_health_config",
]


class Severity(StrEnum):
    WARN = "warn"
    CRITICAL = "critical"


class RuleAction(StrEnum):
    """What a rule that fires recommends, mildest first."""

    NONE = "none"  # record it; the board stays in service
    CHECK = "check"  # out of service for an L2 check; back if it passes
    REMEDIATE = "remediate"  # straight onto the remediation ladder
    QUARANTINE = "quarantine"  # hardware trouble no reset heals: out until repaired


class CheckTier(StrEnum):
    L1 = "L1"
    L2 = "L2"
    L3 = "L3"


class RemedyOp(StrEnum):
    """A remediation step an agent carries out on a board (``host_reboot``: on its whole host)."""

    SOFT_RESET = "soft_reset"
    HARD_RESET = "hard_reset"
    REFLASH = "reflash"  # write the firmware the board already runs again
    HOST_REBOOT = "host_reboot"  # every board of the host: workers stopped, boards hard-reset


class TelemetryRule(BaseModel):
    """Fires when one telemetry metric crosses a line: exactly one of ``above``, ``below``,
    ``increase_above`` (growth since the previous report) or ``rate_above`` (growth per second)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    metric: str = Field(min_length=1, max_length=100, description="a telemetry key, e.g. temperature_c")
    above: float | None = None
    below: float | None = None
    increase_above: float | None = Field(None, description="fires when the value grew by more than this")
    rate_above: float | None = Field(None, description="fires when the value grew faster than this per second")
    severity: Severity = Severity.WARN
    action: RuleAction = RuleAction.NONE

    @model_validator(mode="after")
    def _one_line(self) -> TelemetryRule:
        lines = [k for k in ("above", "below", "increase_above", "rate_above") if getattr(self, k) is not None]
        if len(lines) != 1:
            raise ValueError(
                f"rule {self.name!r} must set exactly one of above, below, increase_above, rate_above"
                f" (it sets {', '.join(lines) or 'none'})"
            )
        if self.severity is Severity.WARN and self.action not in (RuleAction.NONE, RuleAction.CHECK):
            raise ValueError(
                f"rule {self.name!r}: a warn rule may only recommend none or check; make it critical to {self.action}"
            )
        return self


class L1Policy(BaseModel):
    """The golden check: before a board returns to service, and every ``every_s`` or ``every_jobs``."""

    model_config = ConfigDict(extra="forbid")

    every_s: float = Field(6 * 3600.0, gt=0, description="at most this long between two L1 checks of a board")
    every_jobs: int = Field(50, ge=1, description="… or this many user jobs, whichever comes first")
    repeat: int = Field(3, ge=1, le=1000, description="golden runs per check")
    timeout_s: float = Field(300.0, gt=0)


class TierPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration_s: float = Field(gt=0, le=7 * 86400)
    timeout_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _room(self) -> TierPolicy:
        if self.timeout_s < self.duration_s:
            raise ValueError(f"timeout_s ({self.timeout_s:g}) must be at least duration_s ({self.duration_s:g})")
        return self


class LadderStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: RemedyOp
    timeout_s: float = Field(gt=0, le=86400, description="the operation must report back within this long")


DEFAULT_RULES = (
    TelemetryRule(name="overheating", metric="temperature_c", above=95.0, severity="critical", action="remediate"),
    TelemetryRule(name="running-hot", metric="temperature_c", above=85.0, severity="warn", action="none"),
    TelemetryRule(
        name="ecc-uncorrectable", metric="ecc_uncorrected", increase_above=0.0, severity="critical", action="quarantine"
    ),
    TelemetryRule(name="ecc-storm", metric="ecc_corrected", rate_above=50.0, severity="critical", action="remediate"),
    TelemetryRule(
        name="row-remap-pending", metric="row_remap_pending", above=0.0, severity="critical", action="remediate"
    ),
    TelemetryRule(
        name="row-remap-failed", metric="row_remap_failed", above=0.0, severity="critical", action="quarantine"
    ),
    TelemetryRule(name="driver-error", metric="driver_error_code", above=0.0, severity="critical", action="check"),
)
DEFAULT_LADDER = (
    LadderStep(step=RemedyOp.SOFT_RESET, timeout_s=120.0),
    LadderStep(step=RemedyOp.REFLASH, timeout_s=900.0),
    LadderStep(step=RemedyOp.HOST_REBOOT, timeout_s=900.0),
)


class GenerationHealth(BaseModel):
    """One generation's health policy (every key optional in the file: absent keys come from ``default``)."""

    model_config = ConfigDict(extra="forbid")

    rules: tuple[TelemetryRule, ...] = DEFAULT_RULES
    l1: L1Policy = L1Policy()
    l2: TierPolicy = TierPolicy(duration_s=120.0, timeout_s=900.0)
    l3: TierPolicy = TierPolicy(duration_s=3600.0, timeout_s=3 * 3600.0)
    ladder: tuple[LadderStep, ...] = Field(DEFAULT_LADDER, min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> GenerationHealth:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dup)}")
        return self

    def tier(self, tier: CheckTier) -> TierPolicy:
        """Duration and timeout of a check of ``tier`` (L1's duration: its timeout, a bound)."""
        if tier is CheckTier.L1:
            return TierPolicy(duration_s=self.l1.timeout_s, timeout_s=self.l1.timeout_s)
        return self.l2 if tier is CheckTier.L2 else self.l3


class BreakerPolicy(BaseModel):
    """The circuit breaker (:class:`fleetyard.policy.brakes.BreakerLimits`): at most ``fraction`` of
    a generation, and never more than ``boards``, taken out of service within ``window_s``."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(0.10, gt=0)
    boards: int = Field(50, ge=1)
    window_s: float = Field(900.0, gt=0)


class HealthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generations: dict[str, GenerationHealth] = Field(default_factory=lambda: {"default": GenerationHealth()})
    breaker: BreakerPolicy = BreakerPolicy()

    def of(self, generation: str) -> GenerationHealth:
        """The policy of ``generation`` (``default``'s when it is not named)."""
        return self.generations.get(generation) or self.generations.get("default") or GenerationHealth()


DEFAULT_HEALTH = HealthConfig()


def parse_health_config(data: Any, *, source: str = "health config") -> HealthConfig:
    """Validate a parsed YAML/JSON document (or YAML text); a named generation's keys override
    ``default``'s one by one. A bad document raises :class:`BadRequest` naming the field."""
    if isinstance(data, str):
        try:
            data = plain_yaml.load(data)
        except yaml.YAMLError as exc:
            raise BadRequest(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("generations"), Mapping):
        raise BadRequest(
            f"{source}: expected a mapping with a 'generations' key (generation name or 'default' -> its policy)"
        )
    unknown = sorted(set(data) - {"generations", "breaker"})
    if unknown:
        raise BadRequest(f"{source}: unknown top-level key(s) {', '.join(unknown)}; only 'generations' and 'breaker'")
    raw: Mapping[str, Any] = data["generations"]
    base = raw.get("default") or {}
    merged: dict[str, Any] = {}
    for gen, body in raw.items():
        if body is not None and not isinstance(body, Mapping):
            raise BadRequest(f"{source}: generations.{gen} must be a mapping of rules, l1, l2, l3, ladder")
        merged[str(gen)] = {**base, **(body or {})} if gen != "default" else dict(base)
    merged.setdefault("default", dict(base))
    try:
        return HealthConfig.model_validate({"generations": merged, "breaker": data.get("breaker") or {}})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise BadRequest(f"{source}: {problems}") from None
