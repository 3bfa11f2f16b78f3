"""Staged firmware rollouts (pure): waves, capacity, gates, and what a rollout does next.

A rollout takes every board of one generation to one firmware version, in waves: a canary of a
few boards, then 5 %, 25 %, 50 % and 100 % of the generation (cumulative), each followed by a
soak. A few *control* boards stay on the old firmware until the last wave, so that every gate
compares boards that share the hardware, the work and the time, and differ only in firmware
(Azure's Gandalf attributes faults to the rollout that causes them the same way).

Each board of a wave goes ``pending → draining → flashing → checking → done``: drained (its
running job finishes, or is re-queued after ``drain_timeout_s`` when the plan says so), flashed
through its agent, and back in service only after a golden (L1) check passes. At the end of the
soak every wave board and every control board runs a check again, and the gate compares the two
groups (:func:`gate`): health-check failures, infrastructure errors, validation passes and
benchmark throughput; a wave whose flashes fail too often fails whatever the control boards do.
A failed gate halts the rollout and rolls every board it flashed back to the firmware it ran
before (``revert_* → reverted``), with the figures as evidence.

Capacity: at most a wave's boards are out of service for the rollout at once, and never so many
that the boards in service fall below what the queues' nominal quotas need (:func:`queue_need`).
A rollback is not planned work: every board on the failed image comes out at once, and the jobs
on them are re-queued rather than left to finish on a board that may compute wrong numbers.

Gates judge the firmware, not the weather. A check that could not run (its host lost, its agent
stopped: :func:`fleetyard.policy.outcomes.check_verdict`) is no check failure: the check runs
again, and a wave's gate waits for judged checks (:func:`soak_checks_in`). A board whose host is
lost in the middle of its step goes back to pending and through the wave again once it is back
(skipped only when it stays away longer than ``step_timeout_s``); a control board whose host is
lost, or that left service for good, is replaced by a board of a later wave (:func:`control_swaps`).

Everything here is a function of a snapshot and an explicit time; the controller
(:mod:`fleetyard.controller.rollouts`) and the fleet simulator (:mod:`fleetyard.sim.rollout`)
carry out the acts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fleetyard.policy.outcomes import run_check_again

__all__ = [
    "Act",
    "BoardSeen",
    "Do",
    "Figures",
    "Gates",
    "RolloutPlan",
    "RolloutState",
    "Step",
    "Verdict",
    "WaveSeen",
    "board_reason",
    "control_swaps",
    "gate",
    "next_acts",
    "plan_waves",
    "queue_need",
    "soak_checks_in",
]


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"  # a gate failed: every flashed board goes back
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"
    ABORTED = "aborted"

    @property
    def active(self) -> bool:
        return self in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.ROLLING_BACK)


class Step(StrEnum):
    PENDING = "pending"
    DRAINING = "draining"
    FLASHING = "flashing"
    CHECKING = "checking"
    DONE = "done"  # on the new firmware, in service
    FAILED = "failed"  # its flash or check failed: handed to the remediation ladder
    REVERT_PENDING = "revert_pending"
    REVERT_DRAINING = "revert_draining"
    REVERT_FLASHING = "revert_flashing"
    REVERT_CHECKING = "revert_checking"
    REVERTED = "reverted"  # back on the firmware it ran before

    @property
    def in_flight(self) -> bool:
        """Out of service (or on its way out) for the rollout."""
        return self in _IN_FLIGHT


_IN_FLIGHT = frozenset(
    {Step.DRAINING, Step.FLASHING, Step.CHECKING, Step.REVERT_DRAINING, Step.REVERT_FLASHING, Step.REVERT_CHECKING}
)
_NEXT = {
    Step.PENDING: Step.DRAINING,
    Step.DRAINING: Step.FLASHING,
    Step.FLASHING: Step.CHECKING,
    Step.CHECKING: Step.DONE,
    Step.REVERT_PENDING: Step.REVERT_DRAINING,
    Step.REVERT_DRAINING: Step.REVERT_FLASHING,
    Step.REVERT_FLASHING: Step.REVERT_CHECKING,
    Step.REVERT_CHECKING: Step.REVERTED,
}
CONTROL = -1  # a control board's wave


@dataclass(frozen=True)
class Gates:
    """How much worse than the control boards a wave may do before the rollout halts."""

    check_failure_margin: float = 0.02  # failed health checks / checks, above the control's
    infra_error_margin: float = 0.02  # infrastructure errors / attempts, above the control's
    validation_margin: float = 0.02  # passed validations / validations, below the control's
    throughput_drop: float = 0.05  # benchmark throughput, relative, below the control's
    flash_failures: float = 0.10  # failed flashes / flashes of the wave (control boards flash nothing)
    # Past the soak checks' deadline, a gate decides once this share of each group's boards in
    # service has a judged check (before it, it waits for all of them).
    min_judged: float = 0.75


@dataclass(frozen=True)
class RolloutPlan:
    canary: int = 8  # boards in the first wave
    shares: tuple[float, ...] = (0.05, 0.25, 0.50, 1.0)  # of the generation, cumulative, after the canary
    soak_s: float = 1800.0  # after each wave, before its gate
    control: int = 8  # boards kept on the old firmware until the last wave
    drain: str = "wait"  # "wait": running jobs finish; "requeue": re-queued after drain_timeout_s
    drain_timeout_s: float = 1800.0
    step_timeout_s: float = 1800.0  # a flash or check that takes longer failed
    gates: Gates = field(default_factory=Gates)

    def __post_init__(self) -> None:
        if self.canary < 1:
            raise ValueError(f"canary must be at least 1 board, got {self.canary}")
        if not self.shares or any(not 0 < s <= 1 for s in self.shares) or list(self.shares) != sorted(self.shares):
            raise ValueError(f"shares must rise within (0, 1], e.g. 0.05,0.25,0.5,1; got {list(self.shares)}")
        if self.shares[-1] != 1.0:
            raise ValueError(f"the last share must be 1 (the whole generation); got {self.shares[-1]}")
        if self.drain not in ("wait", "requeue"):
            raise ValueError(f"drain must be 'wait' or 'requeue', got {self.drain!r}")
        if self.soak_s < 0 or self.control < 0:
            raise ValueError("soak_s and control must not be negative")

    def as_dict(self) -> dict[str, Any]:
        return {
            "canary": self.canary, "shares": list(self.shares), "soak_s": self.soak_s, "control": self.control,
            "drain": self.drain, "drain_timeout_s": self.drain_timeout_s, "step_timeout_s": self.step_timeout_s,
            "gates": vars(self.gates).copy(),
        }  # fmt: skip

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> RolloutPlan:
        d = dict(d)
        gates = Gates(**d.pop("gates", {}))
        if "shares" in d:
            d["shares"] = tuple(float(s) for s in d["shares"])
        return cls(**d, gates=gates)


def _order(board_id: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{board_id}".encode()).hexdigest()


def plan_waves(boards: Sequence[str], plan: RolloutPlan, *, salt: str) -> tuple[list[list[str]], list[str]]:
    """The waves (lists of board ids) and the control boards of a rollout over ``boards``.

    Boards are taken in an order drawn from ``salt`` (the rollout's identity): every wave spreads
    over hosts and racks rather than emptying one. The control boards are in the last wave.
    """
    n = len(boards)
    order = sorted(boards, key=lambda b: _order(b, salt))
    control = order[n - min(plan.control, max(0, n - 1)) :] if n > 1 else []
    body = order[: n - len(control)]
    waves: list[list[str]] = []
    taken = 0
    targets = [min(plan.canary, len(body))] + [math.ceil(s * n) for s in plan.shares]
    for i, target in enumerate(targets):
        last = i == len(targets) - 1
        upto = len(body) if last else min(max(target, taken + 1), len(body))
        if upto > taken:
            waves.append(body[taken:upto])
            taken = upto
    if control:
        if waves:
            waves[-1] = waves[-1] + control
        else:
            waves.append(control)
    return waves, control


def queue_need(nominal: Mapping[str, int], demand: Mapping[str, int]) -> int:
    """Boards of a generation the queues' nominal quotas need now: each queue's quota, as far as
    its work (boards held plus boards its queued jobs ask for) uses it."""
    return sum(min(q, demand.get(name, 0)) for name, q in nominal.items())


# ---- gates


@dataclass(frozen=True)
class Figures:
    """What a group of boards did since a time: the gate's inputs."""

    checks: int = 0
    check_failures: int = 0
    attempts: int = 0
    infra_errors: int = 0
    validations: int = 0
    validation_passes: int = 0
    # benchmark: what was measured (kind and params) -> throughputs; compared like with like
    throughput: Mapping[str, Sequence[float]] = field(default_factory=dict)
    flashes: int = 0
    flash_failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "flashes": self.flashes, "flash_failures": self.flash_failures,
            "checks": self.checks, "check_failures": self.check_failures, "attempts": self.attempts,
            "infra_errors": self.infra_errors, "validations": self.validations,
            "validation_passes": self.validation_passes,
            "throughput": {k: list(v) for k, v in self.throughput.items()},
        }  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]  # why it failed (empty when it passed)
    table: dict[str, Any]  # each gate: the wave's figure, the control's, the limit


def _rate(n: int, d: int) -> float | None:
    return None if d == 0 else n / d


def gate(wave: Figures, control: Figures, gates: Gates, *, no_control: bool = False) -> Verdict:
    """Compare a wave's boards with the control boards. A measure with no data on either side is
    reported and not judged; but a rollout with ``no_control`` boards at all judges the wave
    against a clean record, no failure and every validation passed (a canary whose check fails
    after its flash must halt it), throughput excepted (no baseline). A wave may fail on several
    measures at once."""
    reasons: list[str] = []
    table: dict[str, Any] = {}

    def worse_if_above(name: str, w: tuple[int, int], c: tuple[int, int], margin: float, what: str) -> None:
        wr, cr = _rate(*w), _rate(*c)
        base = 0.0 if cr is None and no_control else cr
        table[name] = {"wave": wr, "control": cr, "limit": None if base is None else base + margin}
        if wr is not None and base is not None and wr > base + margin:
            against = "no control boards: against none" if cr is None else f"{cr:.1%} on control boards"
            reasons.append(
                f"{what} {wr:.1%} on the wave ({w[0]} of {w[1]}) vs {against}"
                + ("" if cr is None else f" ({c[0]} of {c[1]})")
                + f", limit +{margin:.1%}"
            )

    worse_if_above(
        "check_failure_rate", (wave.check_failures, wave.checks), (control.check_failures, control.checks),
        gates.check_failure_margin, "health-check failure rate",
    )  # fmt: skip
    worse_if_above(
        "infra_error_rate", (wave.infra_errors, wave.attempts), (control.infra_errors, control.attempts),
        gates.infra_error_margin, "infra-error rate",
    )  # fmt: skip
    w, c = _rate(wave.validation_passes, wave.validations), _rate(control.validation_passes, control.validations)
    vbase = 1.0 if c is None and no_control else c
    limit = None if vbase is None else vbase - gates.validation_margin
    table["validation_pass_rate"] = {"wave": w, "control": c, "limit": limit}
    if w is not None and limit is not None and w < limit:
        against = (
            "no control boards: against all passed"
            if c is None
            else f"{c:.1%} on control boards ({control.validation_passes} of {control.validations})"
        )
        reasons.append(
            f"validation pass rate {w:.1%} on the wave ({wave.validation_passes} of {wave.validations}) vs "
            f"{against}, limit -{gates.validation_margin:.1%}"
        )
    ratios = [
        _mean(wave.throughput[k]) / _mean(control.throughput[k])
        for k in sorted(set(wave.throughput) & set(control.throughput))
        if wave.throughput[k] and control.throughput[k] and _mean(control.throughput[k]) > 0
    ]
    ratio = math.exp(sum(math.log(max(r, 1e-12)) for r in ratios) / len(ratios)) if ratios else None
    table["throughput_ratio"] = {"wave": ratio, "control": 1.0 if ratios else None, "limit": 1 - gates.throughput_drop}
    if ratio is not None and ratio < 1 - gates.throughput_drop:
        reasons.append(
            f"benchmark throughput {ratio:.1%} of the control boards' (limit {1 - gates.throughput_drop:.0%}), "
            f"over {len(ratios)} benchmark(s)"
        )
    share = _rate(wave.flash_failures, wave.flashes)
    table["flash_failure_share"] = {"wave": share, "control": None, "limit": gates.flash_failures}
    if share is not None and share > gates.flash_failures:
        reasons.append(f"{wave.flash_failures} of {wave.flashes} flashes failed (limit {gates.flash_failures:.0%})")
    return Verdict(not reasons, tuple(reasons), table)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


# ---- what a rollout does next


class Do(StrEnum):
    DRAIN = "drain"  # keep new work off the board (it may still run a job)
    REQUEUE = "requeue"  # re-queue the job that keeps a draining board
    FLASH = "flash"  # the board is drained: flash it (to the target, or back when reverting)
    CHECK = "check"  # flashed: a golden check before service
    RELEASE = "release"  # passed: back in service
    FAIL = "fail"  # its flash or check failed: to the remediation ladder
    SKIP = "skip"  # it left service (quarantined, retired, lost for long): the rollout goes on without it
    RETURN = "return"  # its host was lost mid-step: back to pending, through the wave again once back
    RECHECK = "recheck"  # its check after the flash could not run: again (the step's clock goes on)
    SWAP_CONTROL = "swap_control"  # a control board away or gone: ``other`` (a later wave's) replaces it
    SOAK_CHECKS = "soak_checks"  # the soak is over: check the wave and the control boards
    GATE = "gate"  # the soak checks are in: judge the wave
    HALT = "halt"  # the gate failed: roll back
    NEXT_WAVE = "next_wave"
    FINISH = "finish"  # completed, or rolled back


@dataclass(frozen=True)
class Act:
    do: Do
    board: str | None = None
    reason: str = ""
    other: str | None = None  # SWAP_CONTROL: the board that becomes a control board


@dataclass(frozen=True)
class BoardSeen:
    """A rollout's board as the shell sees it now."""

    id: str
    wave: int  # CONTROL for a control board not yet in a wave
    step: Step
    step_at: float
    # Out of service, holding no work: ready to flash. When reverting, a board out of service for
    # any reason but quarantine (suspect, on the remediation ladder) counts: the rollback is its remedy.
    drained: bool
    op_ok: bool | None = None  # the flash under way: None while it runs
    check_ok: bool | None = None  # the check under way: None while it runs (or could not run)
    # The check under way ended without a verdict (it could not run): how many of this step's
    # did, this one included (0: none, or it has not ended).
    checks_lost: int = 0
    detail: str = ""  # why the op or check failed
    gone: str = ""  # why it is out of the rollout's reach for good (quarantined, retired, removed)
    away: float | None = None  # since when its host has been lost (it is offline); None: here
    serving: bool = False  # in service (available or allocated, not drained): it could be a control board


@dataclass(frozen=True)
class WaveSeen:
    started_at: float | None = None
    flashed_at: float | None = None  # every board of the wave done or failed
    soak_checks_at: float | None = None  # the soak's checks were asked for
    checks_in: bool = False  # every wave and control board has run a check since soak_checks_at
    verdict: bool | None = None


def next_acts(
    *,
    state: RolloutState,
    wave: int,
    waves: Sequence[WaveSeen],
    sizes: int,
    boards: Sequence[BoardSeen],
    plan: RolloutPlan,
    generation_size: int,
    in_service: int,
    need: int,
    now: float,
) -> list[Act]:
    """What the rollout does now. ``wave`` is the wave under way (its index into ``waves``);
    ``sizes`` how many waves there are; ``in_service`` the generation's boards in service now and
    ``need`` what the queues' nominal quotas need of them (:func:`queue_need`)."""
    if state not in (RolloutState.RUNNING, RolloutState.ROLLING_BACK, RolloutState.PAUSED):
        return []
    acts: list[Act] = []
    reverting = state is RolloutState.ROLLING_BACK
    # Boards in flight move on whatever the rollout's state: a paused rollout finishes what it began.
    for b in boards:
        acts.extend(_advance(b, plan, now))
    if state is RolloutState.PAUSED:
        return acts
    in_flight = sum(1 for b in boards if b.step.in_flight)
    if reverting:
        # An image that failed its gate may be computing wrong numbers: every board on it comes
        # out at once, whatever the capacity (the limits are for planned work).
        todo = [b for b in boards if b.step is Step.REVERT_PENDING and not b.gone]
        acts.extend(Act(Do.DRAIN, b.id, "rollback") for b in todo)
        if not todo and in_flight == 0:
            acts.append(Act(Do.FINISH, reason="rolled back"))
        return acts
    todo = [b for b in boards if b.wave == wave and b.step is Step.PENDING and not b.gone and b.away is None]
    cap = max(1, sum(1 for b in boards if b.wave == wave))
    room = min(cap - in_flight, in_service - need)
    acts.extend(Act(Do.DRAIN, b.id, f"wave {wave}") for b in todo[: max(0, room)])
    if wave + 1 < sizes:  # the control boards are control boards until the last wave
        acts.extend(control_swaps(boards, wave=wave))
    w = waves[wave]
    mine = [b for b in boards if b.wave == wave]
    settled = all(b.step in (Step.DONE, Step.FAILED) for b in mine)
    if not settled or w.flashed_at is None:
        return acts
    if w.soak_checks_at is None:
        if now >= w.flashed_at + plan.soak_s:
            acts.append(Act(Do.SOAK_CHECKS, reason=f"wave {wave} soaked {plan.soak_s:g} s"))
        return acts
    if not w.checks_in:
        return acts
    if w.verdict is None:
        acts.append(Act(Do.GATE, reason=f"wave {wave}"))
    elif not w.verdict:
        acts.append(Act(Do.HALT, reason=f"wave {wave} failed its gate"))
    elif wave + 1 < sizes:
        acts.append(Act(Do.NEXT_WAVE, reason=f"wave {wave} passed its gate"))
    else:
        acts.append(Act(Do.FINISH, reason="every wave passed its gate"))
    return acts


def _advance(b: BoardSeen, plan: RolloutPlan, now: float) -> list[Act]:
    step = b.step
    if b.wave == CONTROL and step is Step.PENDING:
        return []  # a control board away or gone is replaced (control_swaps), not skipped
    if b.gone and step not in (Step.DONE, Step.FAILED, Step.REVERTED):
        return [Act(Do.SKIP, b.id, b.gone)]
    if b.away is not None:
        if step.in_flight:
            # A flash or check on a host that stopped answering cannot be trusted either way.
            return [Act(Do.RETURN, b.id, "its host was lost mid-step: it goes through its wave again once back")]
        if step in (Step.PENDING, Step.REVERT_PENDING) and now >= b.away + plan.step_timeout_s:
            return [Act(Do.SKIP, b.id, f"its host has been lost for more than {plan.step_timeout_s:g} s")]
        return []
    if step in (Step.DRAINING, Step.REVERT_DRAINING):
        if b.drained:
            return [Act(Do.FLASH, b.id)]
        if step is Step.REVERT_DRAINING:
            return [Act(Do.REQUEUE, b.id, "its firmware is being rolled back (the rollout failed a gate)")]
        if plan.drain == "requeue" and now >= b.step_at + plan.drain_timeout_s:
            return [Act(Do.REQUEUE, b.id, f"drained for a firmware flash ({plan.drain_timeout_s:g} s passed)")]
        return []
    if step in (Step.FLASHING, Step.REVERT_FLASHING):
        return _verdict(b, b.op_ok, Do.CHECK, "flash", plan, now)
    if step in (Step.CHECKING, Step.REVERT_CHECKING):
        if b.checks_lost and now < b.step_at + plan.step_timeout_s:
            if run_check_again(b.checks_lost):
                return [Act(Do.RECHECK, b.id, f"its check after the flash could not run ({b.detail}): again")]
            why = f"its check after the flash could not run {b.checks_lost} times (the last: {b.detail})"
            return [Act(Do.FAIL, b.id, why)]
        return _verdict(b, b.check_ok, Do.RELEASE, "check after the flash", plan, now)
    return []


def control_swaps(boards: Sequence[BoardSeen], *, wave: int) -> list[Act]:
    """Control boards to replace: one whose host is lost, or that left service for good, would
    leave the gate comparing fewer boards (or none). Each is swapped with a board of a later wave,
    still pending and in service, the latest wave first: it takes the control board's place, and
    the control board takes its place in that wave (to be flashed then, if it is back)."""
    lacking = [b for b in boards if b.wave == CONTROL and b.step is Step.PENDING and (b.away is not None or b.gone)]
    if not lacking:
        return []
    spare = sorted(
        (b for b in boards if b.wave > wave and b.step is Step.PENDING and b.serving and b.away is None and not b.gone),
        key=lambda b: (-b.wave, b.id),
    )
    why = {True: "its host was lost", False: "it left service"}
    return [
        Act(Do.SWAP_CONTROL, old.id, f"control board {old.id} {why[old.away is not None]}: {new.id} replaces it",
            other=new.id)
        for old, new in zip(lacking, spare, strict=False)
    ]  # fmt: skip


def soak_checks_in(
    *, wave: tuple[int, int], control: tuple[int, int], since: float, now: float, plan: RolloutPlan
) -> bool:
    """Whether a wave's soak checks are in: ``wave`` and ``control`` are (boards with a judged
    check since the soak began, boards in service that should have one). Every one of them;
    past ``step_timeout_s``, the share :attr:`Gates.min_judged` of each group. A check that could
    not run is not judged: the shell asks for it again, and the gate waits."""
    groups = (wave, control)
    if all(judged >= wanted for judged, wanted in groups):
        return True
    if now < since + plan.step_timeout_s:
        return False
    return all(judged >= math.ceil(plan.gates.min_judged * wanted) for judged, wanted in groups)


def _verdict(b: BoardSeen, ok: bool | None, then: Do, what: str, plan: RolloutPlan, now: float) -> list[Act]:
    """A flash or check under way: passed (``then``), failed, or over its time (failed)."""
    if ok is True:
        return [Act(then, b.id)]
    if ok is False:
        return [Act(Do.FAIL, b.id, f"{what} failed: {b.detail}")]
    if now >= b.step_at + plan.step_timeout_s:
        return [Act(Do.FAIL, b.id, f"{what} took more than {plan.step_timeout_s:g} s")]
    return []


def after(step: Step) -> Step:
    """The step a board goes to when its act succeeds."""
    return _NEXT[step]


def board_reason(rollout: int, act: Act, *, generation: str, version: str, reverting: bool) -> str:
    """What a board's history says of ``act`` of rollout number ``rollout`` (to ``version``, or
    back to it when ``reverting``), in the controller and the simulator alike."""
    head = f"rollout {rollout}: "
    if act.do is Do.DRAIN:
        return head + (
            f"rolling {generation} back from {version}" if reverting else f"flashing {generation} to {version}"
        )
    if act.do is Do.FLASH:
        return head + (f"rolling back to {version}" if reverting else f"flashing {version}")
    if act.do is Do.RELEASE:
        return head + f"{'rolled back' if reverting else 'flashed'} to {version}, check passed"
    return head + act.reason
