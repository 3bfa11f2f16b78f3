"""The remediation ladder (pure): what a failing board goes through next.

A board out of service for a fault gets a :class:`Case`. It begins either with an L2 check (a
suspect board after an infrastructure fault: maybe nothing is wrong with it) or straight with the
first step of its generation's ladder (a rule recommended remediation). Each step is an operation
the host's agent carries out (soft reset, reflash, host reboot: :class:`RemedyOp`), followed by an
L2 check; a step that fails, times out, or whose check fails escalates to the next. Past the last
step the board is quarantined, and the case's evidence (every step and check with how it went)
becomes its repair record. A check that passes heals the board.

The caller (controller or fleet simulator) carries out each :class:`Act` and reports back with
:func:`on_result`; :func:`on_time` turns a missed deadline into a failure. The board is *suspect*
during the first check and *remediating* on the ladder (DESIGN.md's lifecycle).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from fleetyard.domain.board import BoardState
from fleetyard.domain.health_config import CheckTier, GenerationHealth, RemedyOp
from fleetyard.policy.outcomes import run_check_again

__all__ = [
    "TAKEN_OVER",
    "Act",
    "Case",
    "Do",
    "Phase",
    "by_hand",
    "ladder_at_once",
    "on_result",
    "on_time",
    "open_case",
    "resume",
]

# A case an operator took over: closed with this outcome, the board left drained in their hands.
TAKEN_OVER = "taken_over"
_COULD_NOT_RUN = ": could not run"  # in a case's evidence: a check of it that got no verdict


class Phase(StrEnum):
    CHECK = "check"  # an L2 check is under way
    OPERATE = "operate"  # a ladder step's operation is under way


class Do(StrEnum):
    CHECK = "check"  # run a health check of ``tier`` on the board
    OPERATE = "operate"  # have the agent carry out ``op``
    HEAL = "heal"  # back in service
    QUARANTINE = "quarantine"  # out until repaired; ``reason`` holds the evidence


@dataclass(frozen=True, slots=True)
class Case:
    board: str
    cause: str  # why the board left service
    step: int  # index of the ladder step under way or last tried; -1: before any step
    phase: Phase
    since: float  # when the phase began
    deadline: float  # when it counts as failed if nothing was heard
    evidence: tuple[str, ...] = ()
    tier: CheckTier = CheckTier.L2  # of the check under way (phase CHECK)


@dataclass(frozen=True, slots=True)
class Act:
    do: Do
    board: str
    reason: str
    op: RemedyOp | None = None
    tier: CheckTier | None = None
    evidence: tuple[str, ...] = ()  # heal, quarantine: every step and check of the case, how it went


def ladder_at_once(cause: str) -> bool:
    """Whether a board out for ``cause`` goes up the ladder at once, not through a check first: one
    that does not answer its probe, or computed wrong numbers in its health check."""
    return "failed its probe" in cause or "health check" in cause


def open_case(
    board: str,
    *,
    cause: str,
    now: float,
    policy: GenerationHealth,
    check_first: bool,
    first: CheckTier = CheckTier.L2,
) -> tuple[Case | None, Act]:
    """A new case: a check of tier ``first`` (L2; L1 for a board back from a lost host) when
    ``check_first``, else the ladder's first step."""
    if check_first:
        case = Case(board, cause, -1, Phase.CHECK, now, now + policy.tier(first).timeout_s, tier=first)
        return case, Act(Do.CHECK, board, f"{first} check after: {cause}", tier=first)
    return _operate(Case(board, cause, -1, Phase.CHECK, now, now), 0, now, policy)


def on_result(
    case: Case, *, ok: bool | None, detail: str, now: float, policy: GenerationHealth
) -> tuple[Case | None, Act]:
    """The phase under way ended (``ok`` or not, ``detail`` says how): the case's next act, and the
    case as it goes on (None once the board is healed or quarantined). A check that could not run
    (``ok`` None: its host lost, its agent stopped) says nothing of the board: it runs again,
    within the phase's deadline."""
    what = f"{case.tier} check" if case.phase is Phase.CHECK else str(policy.ladder[case.step].step)
    if ok is None:
        tries = 1 + sum(_COULD_NOT_RUN in e for e in case.evidence)
        if run_check_again(tries):
            case = replace(case, evidence=(*case.evidence, f"{what}{_COULD_NOT_RUN}{_tail(detail)}; again"))
            return case, Act(Do.CHECK, case.board, f"{what} again: the last could not run", tier=case.tier)
        ok, detail = False, f"it could not run {tries} times (the last: {detail or 'no detail'})"
    case = replace(case, evidence=(*case.evidence, f"{what}: {'passed' if ok else 'failed'}{_tail(detail)}"))
    if ok and case.phase is Phase.OPERATE:
        checking = replace(case, phase=Phase.CHECK, since=now, deadline=now + policy.l2.timeout_s, tier=CheckTier.L2)
        return checking, Act(Do.CHECK, case.board, f"L2 check after {what}", tier=CheckTier.L2)
    if ok:
        how = f"passed its {case.tier} check" if case.step < 0 else f"healed by {policy.ladder[case.step].step}"
        return None, Act(Do.HEAL, case.board, f"{how} (left service for: {case.cause})", evidence=case.evidence)
    return _operate(case, case.step + 1, now, policy)


def on_time(case: Case, *, now: float, policy: GenerationHealth) -> tuple[Case | None, Act] | None:
    """A phase past its deadline fails (None: still within it)."""
    if now <= case.deadline:
        return None
    return on_result(
        case, ok=False, detail=f"no answer within {case.deadline - case.since:g} s", now=now, policy=policy
    )


def resume(case: Case, *, why: str, now: float, policy: GenerationHealth) -> tuple[Case, Act]:
    """The case of a board back from a lost host goes on where it was: the phase under way (its
    check, or its ladder step's op, lost with the host) starts again with a whole deadline. The
    outage is no failure of the step: the board could not be reached, not healed."""
    case = replace(case, evidence=(*case.evidence, f"{_doing(case)}; interrupted ({why}): again"), since=now)
    if case.phase is Phase.CHECK:
        case = replace(case, deadline=now + policy.tier(case.tier).timeout_s)
        return case, Act(Do.CHECK, case.board, f"{case.tier} check again after: {why}", tier=case.tier)
    rung = policy.ladder[case.step]
    case = replace(case, deadline=now + rung.timeout_s)
    return case, Act(Do.OPERATE, case.board, f"remediation step {case.step + 1} again: {rung.step}", op=rung.step)


def by_hand(case: Case, *, op: str, take_over: bool, by: str, reason: str) -> tuple[BoardState, str] | str:
    """An operator's ``op`` on a board whose case is open. Without ``take_over`` the refusal (a
    reset by hand kills the ladder's check, and the board escalates as if it had failed it); with
    it, where the board goes and why: drained, which the ladder leaves alone, until the operator
    undrains it. The caller closes the case as :data:`TAKEN_OVER` before the op runs."""
    if not take_over:
        return (
            f"board {case.board} is under automatic remediation ({_doing(case)}, for: {case.cause}); "
            f"a {op} by hand would fight the ladder. Wait for the case to end (fleetyard boards repairs "
            f"{case.board}), or order the op with --take-over: the case closes as taken over by you and "
            "the board stays drained until you undrain it"
        )
    why = f"remediation taken over by {by} for a {op}" + (f": {reason}" if reason else "")
    return BoardState.DRAINED, why


def _doing(case: Case) -> str:
    if case.phase is Phase.CHECK:
        return f"its {case.tier} check is under way"
    return f"ladder step {case.step + 1} is under way"


def _operate(case: Case, step: int, now: float, policy: GenerationHealth) -> tuple[Case | None, Act]:
    if step >= len(policy.ladder):
        tried = "; ".join(case.evidence) or "nothing tried"
        reason = f"remediation exhausted after: {case.cause}; {tried}"
        return None, Act(Do.QUARANTINE, case.board, reason, evidence=case.evidence)
    rung = policy.ladder[step]
    nxt = replace(case, step=step, phase=Phase.OPERATE, since=now, deadline=now + rung.timeout_s)
    return nxt, Act(Do.OPERATE, case.board, f"remediation step {step + 1}: {rung.step}", op=rung.step)


def _tail(detail: str) -> str:
    return f" ({detail})" if detail else ""
