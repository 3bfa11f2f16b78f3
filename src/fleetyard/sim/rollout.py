"""Firmware rollouts in the fleet simulator, over the controller's own rollout policy.

:class:`RolloutSim` is a :class:`~fleetyard.sim.fleet.FleetSim` (faults, teams' work, health
checks, the remediation ladder, all as before) in which rollouts of firmware :class:`Image` s run
by :func:`~fleetyard.policy.rollout.next_acts`, :func:`~fleetyard.policy.rollout.plan_waves`,
:func:`~fleetyard.policy.rollout.queue_need` and :func:`~fleetyard.policy.rollout.gate`, called as
the controller calls them, every ``tick_s``.

What is the simulator's: a flash takes the generation's ``flash_s`` (the ``sim`` driver's,
:data:`fleetyard.drivers.sim.GENERATIONS`) and fails with the image's ``flash_fails`` share or on
a board that does not answer; an image may raise its boards' silent-corruption rate
(``sdc_per_board_hour``: a board running it turns "mercurial" after an exponential time, until it
is flashed back) and change their throughput. The gate's figures come from what the run did on
the wave's and the control boards: L1 checks (periodic, after each flash, and the soak's), job
attempts and their infrastructure errors, validations (the compiler team's jobs, which fail on a
board computing wrong numbers) and the soak checks' throughput.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetyard.domain.board import BoardState
from fleetyard.domain.health_config import CheckTier
from fleetyard.domain.job import Outcome
from fleetyard.drivers.sim import GENERATIONS
from fleetyard.policy.rollout import (
    CONTROL,
    Act,
    BoardSeen,
    Do,
    Figures,
    RolloutPlan,
    RolloutState,
    Step,
    WaveSeen,
    after,
    board_reason,
    gate,
    next_acts,
    plan_waves,
    queue_need,
    soak_checks_in,
)
from fleetyard.sim.fleet import IN_SERVICE, FleetSim, SimReport, _Board, _Job
from fleetyard.sim.model import FaultKind, Scenario, SimPolicy

__all__ = ["Image", "RolloutReport", "RolloutRun", "RolloutSim"]

S = BoardState
E_TICK, E_FLASH_END, E_IMAGE_SDC = 100, 101, 102
VALIDATING_TEAM = "compiler"  # its jobs check their numbers: a corrupt board fails them


@dataclass(frozen=True)
class Image:
    version: str
    sdc_per_board_hour: float = 0.0
    throughput: float = 1.0  # relative to the firmware it replaces
    flash_fails: float = 0.0  # share of flashes that fail


@dataclass(frozen=True)
class RolloutRun:
    """A rollout the scenario starts: ``image`` on every board of ``generation`` at ``start_s``."""

    generation: str
    image: Image
    start_s: float
    plan: RolloutPlan = field(default_factory=RolloutPlan)


@dataclass
class _Wave:
    boards: list[str]
    started_at: float | None = None
    flashed_at: float | None = None
    soak_checks_at: float | None = None
    verdict: bool | None = None
    reasons: tuple[str, ...] = ()
    table: dict[str, Any] = field(default_factory=dict)
    control: Figures | None = None


@dataclass
class _Rollout:
    n: int
    run: RolloutRun
    waves: list[_Wave]
    control: list[str]
    state: RolloutState = RolloutState.RUNNING
    wave: int = 0
    steps: dict[str, Step] = field(default_factory=dict)
    step_at: dict[str, float] = field(default_factory=dict)
    wave_of: dict[str, int] = field(default_factory=dict)
    from_version: dict[str, str] = field(default_factory=dict)
    op_ok: dict[str, bool] = field(default_factory=dict)
    check_ok: dict[str, bool] = field(default_factory=dict)
    check_lost: set[str] = field(default_factory=set)  # its check after the flash ended: it could not run
    checks_lost: dict[str, int] = field(default_factory=dict)  # how many of its step's could not run
    detail: dict[str, str] = field(default_factory=dict)
    soak_due: set[str] = field(default_factory=set)
    soak_wanted: set[str] = field(default_factory=set)  # the wave's soak boards, as asked
    ended_at: float | None = None
    halted_wave: int | None = None
    reasons: tuple[str, ...] = ()
    exposed: set[str] = field(default_factory=set)  # boards that ever ran the image
    peak_out: int = 0
    peak_out_any: int = 0
    min_headroom: int | None = None  # in service less what the quotas need, while boards were out for it
    min_headroom_at_drain: int | None = None  # the same, just after each drain the rollout began


@dataclass
class RolloutReport:
    generation: str
    version: str
    state: str
    waves: list[dict[str, Any]]
    halted_at_wave: int | None
    reasons: list[str]
    started_s: float
    duration_s: float | None  # start to completed / rolled back
    generation_boards: int
    exposed_boards: int
    exposed_share_fleet: float
    jobs_on_image: int  # attempts that ran on a board while it ran the image
    jobs_corrupt_on_image: int  # of which computed wrong numbers
    peak_out_share: float  # of the generation, out of service for the rollout at once
    peak_out_share_any: float  # of the generation, out of service for any reason at once
    flash_failures: int
    min_headroom: int | None  # boards in service beyond what the quotas needed, at worst, while it held boards
    min_headroom_at_drain: int | None  # the same, just after each of its (planned) drains

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class RolloutSim(FleetSim):
    """A fleet simulation in which ``runs`` roll firmware out. :meth:`run_rollouts` once."""

    def __init__(
        self, scenario: Scenario, runs: Sequence[RolloutRun], *, tick_s: float = 30.0, policy: str = "fleetyard"
    ) -> None:
        super().__init__(scenario, SimPolicy(policy))
        self.runs = list(runs)
        self.tick_s = tick_s
        self.firmware: dict[str, str] = {b.id: GENERATIONS[b.gen].firmware for b in self.boards}
        self.image_of: dict[str, Image | None] = dict.fromkeys(self.firmware)
        self.epoch: dict[str, int] = dict.fromkeys(self.firmware, 0)
        self.image_fault: set[str] = set()
        self.draining: set[str] = set()
        self.rollouts: list[_Rollout] = []
        self.flash_failures = 0
        # What the gates read: (time, board, ok) per check; (time, board, infra) per rank of an
        # attempt; (time, board, passed) per validation; (time, board, throughput) per soak check.
        self.check_log: list[tuple[float, str, bool]] = []
        self.attempt_log: list[tuple[float, str, bool]] = []
        self.validation_log: list[tuple[float, str, bool]] = []
        self.throughput_log: list[tuple[float, str, float]] = []
        self.flash_log: list[tuple[float, str, bool]] = []
        self.jobs_on_image: dict[int, int] = {}  # rollout index -> attempts on its image
        self.corrupt_on_image: dict[int, int] = {}
        self._handlers.update({E_TICK: self._on_tick, E_FLASH_END: self._on_flash_end, E_IMAGE_SDC: self._on_image_sdc})
        self.controller_events = self.controller_events | {E_TICK}  # the rollout's pass
        for i, r in enumerate(self.runs):
            self._at(r.start_s, E_TICK, ("start", i))

    def run_rollouts(self) -> tuple[SimReport, list[RolloutReport]]:
        base = self.run()
        return base, [self._rollout_report(r) for r in self.rollouts]

    # ---- the rollout's pass

    def _on_tick(self, what: tuple[str, int], _: int) -> None:
        verb, i = what
        if verb == "start":
            self._start_rollout(i)
            return
        r = self.rollouts[i]
        if not r.state.active:
            return
        self._at(self.now + self.tick_s, E_TICK, ("tick", i))
        gen = r.run.generation
        mine = [self.by_id[b] for b in r.steps]
        w = r.waves[r.wave]
        if w.flashed_at is None and all(r.steps[b] in (Step.DONE, Step.FAILED) for b in w.boards):
            w.flashed_at = self.now
        seen = [self._seen(r, b) for b in mine if self._relevant(r, b.id)]
        in_service = sum(1 for b in self.boards if b.gen == gen and b.state in IN_SERVICE and b.id not in self.draining)
        out = sum(1 for b in mine if r.steps[b.id].in_flight and b.state not in IN_SERVICE)
        r.peak_out = max(r.peak_out, out)
        r.peak_out_any = max(r.peak_out_any, self.gen_size[gen] - in_service)
        need = self._need(gen)
        if out:
            r.min_headroom = in_service - need if r.min_headroom is None else min(r.min_headroom, in_service - need)
        acts = next_acts(
            state=r.state, wave=r.wave, waves=[self._wave_seen(r, x) for x in r.waves], sizes=len(r.waves),
            boards=seen, plan=r.run.plan, generation_size=self.gen_size[gen], in_service=in_service,
            need=need, now=self.now,
        )  # fmt: skip
        left = in_service - need
        for act in acts:
            if act.do is Do.DRAIN and r.state is RolloutState.RUNNING:
                left -= 1
                was = r.min_headroom_at_drain
                r.min_headroom_at_drain = left if was is None else min(was, left)
            self._carry_out(r, i, act)

    def _start_rollout(self, i: int) -> None:
        run = self.runs[i]
        boards = [b.id for b in self.boards if b.gen == run.generation]
        waves, control = plan_waves(boards, run.plan, salt=f"{self.sc.seed}:{i}")
        r = _Rollout(i, run, [_Wave(w) for w in waves], control)
        for n, w in enumerate(waves):
            for b in w:
                r.steps[b], r.step_at[b], r.wave_of[b] = Step.PENDING, self.now, n
                r.from_version[b] = self.firmware[b]
        for b in control:
            r.wave_of[b] = CONTROL if len(waves) > 1 else len(waves) - 1
        r.waves[0].started_at = self.now
        self.rollouts.append(r)
        self.jobs_on_image[i] = self.corrupt_on_image[i] = 0
        self._at(self.now, E_TICK, ("tick", i))

    def _wave(self, r: _Rollout, b: str) -> int:
        """The board's wave: a control board's is the last, once the rollout gets there."""
        wave = r.wave_of[b]
        return len(r.waves) - 1 if wave == CONTROL and r.wave == len(r.waves) - 1 else wave

    def _relevant(self, r: _Rollout, b: str) -> bool:
        step = r.steps[b]
        if step.in_flight or step is Step.REVERT_PENDING:
            return True
        if step is not Step.PENDING:
            return False
        wave = self._wave(r, b)
        # A later wave's pending board matters while a control board lacks: it may replace it.
        return wave in (r.wave, CONTROL) or (wave > r.wave and self._control_lacking(r))

    def _control_lacking(self, r: _Rollout) -> bool:
        return r.wave < len(r.waves) - 1 and any(
            self.by_id[c].state in (S.OFFLINE, S.QUARANTINED, S.RETIRED) for c in r.control
        )

    def _seen(self, r: _Rollout, b: _Board) -> BoardSeen:
        return BoardSeen(
            b.id, self._wave(r, b.id), r.steps[b.id], r.step_at[b.id],
            drained=b.job is None
            and not b.in_check
            and (b.state in (S.DRAINED, S.SERVICING) or self._revertible(r, b)),
            op_ok=r.op_ok.get(b.id), check_ok=r.check_ok.get(b.id),
            checks_lost=r.checks_lost.get(b.id, 0) if b.id in r.check_lost else 0,
            detail=r.detail.get(b.id, ""), gone=f"{b.state}" if b.state in (S.QUARANTINED, S.RETIRED) else "",
            away=b.state_at if b.state is S.OFFLINE else None,
            serving=b.state in IN_SERVICE and b.id not in self.draining,
        )  # fmt: skip

    def _revertible(self, r: _Rollout, b: _Board) -> bool:
        """Out of service (or held by a tripped breaker) while its firmware is to go back."""
        if r.steps[b.id] is not Step.REVERT_DRAINING:
            return False
        return b.state in (S.SUSPECT, S.REMEDIATING) or (b.state is S.ALLOCATED and b.held)

    def _wave_seen(self, r: _Rollout, w: _Wave) -> WaveSeen:
        return WaveSeen(
            w.started_at, w.flashed_at, w.soak_checks_at,
            checks_in=w.soak_checks_at is not None and self._soak_in(r, w.soak_checks_at),
            verdict=w.verdict,
        )  # fmt: skip

    def _soak_in(self, r: _Rollout, since: float) -> bool:
        """The controller's rule (soak_checks_in) over the boards asked: those still in service
        count, those whose check judged them are in."""
        control = set(r.control) if r.wave < len(r.waves) - 1 else set()
        counts = []
        for ids in (r.soak_wanted - control, r.soak_wanted & control):
            serving = {b for b in ids if self.by_id[b].state in IN_SERVICE}
            counts.append((len(serving - r.soak_due), len(serving)))
        return soak_checks_in(wave=counts[0], control=counts[1], since=since, now=self.now, plan=r.run.plan)

    def _need(self, gen: str) -> int:
        demand: dict[str, int] = dict.fromkeys(self.queues, 0)
        for run in self.running.values():
            demand[run.queue] += sum(1 for b in run.boards if self.by_id[b].gen == gen)
        for job in self.line:
            demand[job.queue] += job.boards
        return queue_need({q: s.nominal_of(gen) for q, s in self.queues.items()}, demand)

    def _carry_out(self, r: _Rollout, i: int, act: Act) -> None:
        if act.board is not None:
            b = self.by_id[act.board]
            step = r.steps[b.id]
            reverting = step.name.startswith("REVERT_")
            version = r.from_version[b.id] if reverting and act.do is not Do.DRAIN else r.run.image.version
            # The controller's words (numbered from 1, as the store numbers rollouts).
            why = board_reason(r.n + 1, act, generation=r.run.generation, version=version, reverting=reverting)
            if act.do is Do.DRAIN:
                self._move(r, b, after(step))
                self.draining.add(b.id)
                if b.state is S.AVAILABLE and b.id in self.free and b.job is None:
                    self._to(b, S.DRAINED, why)
            elif act.do is Do.REQUEUE:
                if b.job is not None:
                    self._end_attempt(b.job, Outcome.PREEMPTED)
            elif act.do is Do.FLASH:
                self._move(r, b, after(step))
                r.op_ok.pop(b.id, None)
                drain = board_reason(r.n + 1, Act(Do.DRAIN, b.id), generation=r.run.generation,
                                     version=r.run.image.version, reverting=reverting)  # fmt: skip
                self._to_servicing(b, why, drain)
                took = GENERATIONS[b.gen].flash_s
                self._at(self.now + took, E_FLASH_END, (r, b), b.token)
            elif act.do is Do.CHECK:
                self._move(r, b, after(step))
                r.check_ok.pop(b.id, None)
                self._check(b, CheckTier.L1)
            elif act.do is Do.RELEASE:
                self._move(r, b, after(step))
                self.draining.discard(b.id)
                b.l1_at, b.jobs_since = self.now, 0
                self._to(b, S.AVAILABLE, why)
                self._make_free(b)
            elif act.do is Do.SKIP:
                self._move(r, b, Step.FAILED)
                self.draining.discard(b.id)
                r.detail[b.id] = act.reason
            elif act.do is Do.RETURN:
                self._move(r, b, Step.REVERT_PENDING if step.name.startswith("REVERT_") else Step.PENDING)
                r.op_ok.pop(b.id, None)
                r.check_ok.pop(b.id, None)
                r.check_lost.discard(b.id)
            elif act.do is Do.RECHECK:
                r.check_lost.discard(b.id)
                self._check(b, CheckTier.L1)
            elif act.do is Do.SWAP_CONTROL:
                assert act.other is not None
                new = act.other
                old_wave, new_wave = r.wave_of[b.id], r.wave_of[new]
                last = r.waves[-1].boards
                spare = r.waves[new_wave].boards
                last[last.index(b.id)], spare[spare.index(new)] = new, b.id
                r.wave_of[b.id], r.wave_of[new] = new_wave, old_wave
                r.control = [new if c == b.id else c for c in r.control]
            elif act.do is Do.FAIL:
                self._move(r, b, Step.FAILED)
                self.draining.discard(b.id)
                r.detail[b.id] = act.reason
                self._take_out(b, why, check_first=True)  # its case, as the healing shell opens it
            return
        w = r.waves[r.wave]
        if act.do is Do.SOAK_CHECKS:
            w.soak_checks_at = self.now
            r.soak_wanted.clear()
            for bid in [*w.boards, *(r.control if r.wave < len(r.waves) - 1 else ())]:
                b = self.by_id[bid]
                if b.state in IN_SERVICE and bid not in self.draining:
                    r.soak_due.add(bid)
                    r.soak_wanted.add(bid)
                    if b.state is S.AVAILABLE and bid in self.free:
                        self._l1(b)
        elif act.do is Do.GATE:
            r.soak_due.clear()  # checks still owed past the deadline are not waited for
            since = w.started_at or 0.0
            wave_boards = set(w.boards) - (set() if r.wave == len(r.waves) - 1 else set(r.control))
            wave_fig = self._figures(wave_boards, since)
            if r.wave < len(r.waves) - 1 or not r.control:
                w.control = self._figures(set(r.control), since)
            else:  # the control boards are in the last wave: the figures of their last soak
                w.control = r.waves[r.wave - 1].control or Figures()
            v = gate(wave_fig, w.control, r.run.plan.gates, no_control=not r.control)
            w.verdict, w.reasons, w.table = v.passed, v.reasons, v.table
        elif act.do is Do.HALT:
            r.state, r.halted_wave, r.reasons = RolloutState.ROLLING_BACK, r.wave, w.reasons
            for bid, step in r.steps.items():
                if step is Step.DONE or (step is Step.FAILED and self.image_of[bid] is r.run.image):
                    self._move(r, self.by_id[bid], Step.REVERT_PENDING)
        elif act.do is Do.NEXT_WAVE:
            r.wave += 1
            r.waves[r.wave].started_at = self.now
        elif act.do is Do.FINISH:
            r.state = RolloutState.COMPLETED if r.state is RolloutState.RUNNING else RolloutState.ROLLED_BACK
            r.ended_at = self.now

    def _to_servicing(self, b: _Board, reason: str, drain: str) -> None:
        """To servicing along the lifecycle's edges, drained first (``drain``: why); a rollback
        takes a board over from the ladder, its case abandoned, as the controller does."""
        if b.case is not None:
            self.cases_closed.append((b.id, "abandoned", b.case.evidence))
            b.case = None
        b.held = False
        if b.state is S.ALLOCATED:
            self._to(b, S.AVAILABLE, drain)
        if b.state in (S.AVAILABLE, S.SUSPECT, S.REMEDIATING):
            self._to(b, S.DRAINED, drain)
        self._to(b, S.SERVICING, reason)

    def _move(self, r: _Rollout, b: _Board, step: Step) -> None:
        r.steps[b.id], r.step_at[b.id] = step, self.now
        r.checks_lost.pop(b.id, None)  # counted per step

    def _figures(self, boards: set[str], since: float) -> Figures:
        checks = [ok for t, b, ok in self.check_log if t >= since and b in boards]
        attempts = [infra for t, b, infra in self.attempt_log if t >= since and b in boards]
        vals = [ok for t, b, ok in self.validation_log if t >= since and b in boards]
        tput = [x for t, b, x in self.throughput_log if t >= since and b in boards]
        flashes = [ok for t, b, ok in self.flash_log if t >= since and b in boards]
        return Figures(
            checks=len(checks), check_failures=checks.count(False), attempts=len(attempts),
            infra_errors=attempts.count(True), validations=len(vals), validation_passes=vals.count(True),
            throughput={"golden": tput} if tput else {}, flashes=len(flashes),
            flash_failures=flashes.count(False),
        )  # fmt: skip

    # ---- flashing

    def _on_flash_end(self, what: tuple[_Rollout, _Board], token: int) -> None:
        r, b = what
        if token != b.token:
            return
        reverting = r.steps[b.id] is Step.REVERT_FLASHING
        dead = b.fault in (FaultKind.HANG, FaultKind.BUS_DROP) or self.host_down[b.host]
        if dead or self.fate_rng.random() < (0.0 if reverting else r.run.image.flash_fails):
            self.flash_failures += 1
            self.flash_log.append((self.now, b.id, False))
            r.op_ok[b.id] = False
            r.detail[b.id] = "board not answering" if dead else "verify mismatch after write"
            return
        r.op_ok[b.id] = True
        self.flash_log.append((self.now, b.id, True))
        self.epoch[b.id] += 1
        if reverting:
            self.firmware[b.id], self.image_of[b.id] = r.from_version[b.id], None
            if b.id in self.image_fault:  # the image's fault goes with it
                self.image_fault.discard(b.id)
                self._clear_fault(b)
        else:
            image = r.run.image
            self.firmware[b.id], self.image_of[b.id] = image.version, image
            r.exposed.add(b.id)
            if image.sdc_per_board_hour > 0:
                delay = self.fate_rng.expovariate(image.sdc_per_board_hour / 3600.0)
                self._at(self.now + delay, E_IMAGE_SDC, b, self.epoch[b.id])

    def _on_image_sdc(self, b: _Board, epoch: int) -> None:
        if epoch != self.epoch[b.id] or b.fault is not None:
            return
        self._strike(b, FaultKind.SILENT_CORRUPTION, True)
        if b.fault is FaultKind.SILENT_CORRUPTION:
            self.image_fault.add(b.id)

    # ---- hooks into the fleet's life

    def _rollout_of(self, board: str) -> _Rollout | None:
        for r in self.rollouts:
            if board in r.steps and r.state.active:
                return r
        return None

    def _release(self, b: _Board) -> None:
        if b.id in self.draining and b.state in IN_SERVICE:
            self._to(b, S.AVAILABLE)
            self._to(b, S.DRAINED, "drained for a firmware flash")
            return
        if self._controlling(b.id) is not None and b.state in IN_SERVICE:
            self._l1(b)
            return
        super()._release(b)

    def _controlling(self, board: str) -> _Rollout | None:
        """The active rollout that owes this board a soak check."""
        for r in self.rollouts:
            if r.state.active and board in r.soak_due:
                return r
        return None

    def _make_free(self, b: _Board) -> None:
        super()._make_free(b)
        if b.id in self.draining and b.id in self.free:
            self._to(b, S.DRAINED, "drained for a firmware flash")
            return
        r = self._controlling(b.id)
        if r is not None and b.id in self.free:
            self._l1(b)

    def _on_check_end(self, what: tuple[_Board, CheckTier, bool], token: int) -> None:
        b, tier, lost = what
        if token != b.token:
            return
        # A check that could not run (its host down, its agent restarted) has no verdict for a
        # rollout (policy.outcomes.check_verdict): the check after a flash runs again, a soak
        # check is still owed, and neither counts in the gate's figures.
        verdict = self._verdict(b, lost)
        ran, ok = verdict is not None, bool(verdict)
        if ran:
            self.check_log.append((self.now, b.id, ok))
        if b.state is S.SERVICING:  # the check after a rollout's flash: the rollout's to judge
            r = self._rollout_of(b.id)
            if r is not None:
                if not ran:
                    self.checks_lost += 1
                    r.check_lost.add(b.id)
                    r.checks_lost[b.id] = r.checks_lost.get(b.id, 0) + 1
                    r.detail[b.id] = "it could not run"
                    return
                r.check_ok[b.id] = ok
                if not ok:
                    r.detail[b.id] = self._detail(b, ok, tier)
                    if b.fault is FaultKind.SILENT_CORRUPTION:
                        self._detected(b)
                        self.sdc_caught += 1
                return
        r = self._controlling(b.id)
        if r is not None and tier is CheckTier.L1 and ran:
            r.soak_due.discard(b.id)
            image = self.image_of[b.id]
            self.throughput_log.append(
                (self.now, b.id, (image.throughput if image else 1.0) * self.fate_rng.gauss(1.0, 0.01))
            )
        super()._on_check_end(what, token)

    def _start(self, job: _Job, boards: tuple[_Board, ...]) -> None:
        super()._start(job, boards)
        for r in self.rollouts:
            if any(self.image_of[b.id] is r.run.image for b in boards):
                self.jobs_on_image[r.n] += 1

    def _on_job_end(self, job: _Job, token: int) -> None:
        if token == job.token:
            for b in job.boards:
                self.attempt_log.append((self.now, b.id, False))
                if job.team.name == VALIDATING_TEAM:
                    self.validation_log.append((self.now, b.id, not job.corrupt))
            if job.corrupt:
                for r in self.rollouts:
                    if any(self.image_of[b.id] is r.run.image for b in job.boards):
                        self.corrupt_on_image[r.n] += 1
        super()._on_job_end(job, token)

    def _end_attempt(self, job: _Job, outcome: Outcome, **kw: Any) -> None:
        infra = outcome in (Outcome.INFRA_ERROR, Outcome.TIMEOUT)
        for b in job.boards:
            self.attempt_log.append((self.now, b.id, infra))
        super()._end_attempt(job, outcome, **kw)

    # ---- the figures

    def _rollout_report(self, r: _Rollout) -> RolloutReport:
        gen_size = self.gen_size[r.run.generation]
        return RolloutReport(
            generation=r.run.generation,
            version=r.run.image.version,
            state=str(r.state),
            waves=[
                {
                    "boards": len(w.boards),
                    "started_at": w.started_at,
                    "flashed_at": w.flashed_at,
                    "soak_checks_at": w.soak_checks_at,
                    "verdict": w.verdict,
                    "reasons": list(w.reasons),
                    "gate": w.table,
                }
                for w in r.waves
            ],
            halted_at_wave=r.halted_wave,
            reasons=list(r.reasons),
            started_s=r.run.start_s,
            duration_s=None if r.ended_at is None else r.ended_at - r.run.start_s,
            generation_boards=gen_size,
            exposed_boards=len(r.exposed),
            exposed_share_fleet=len(r.exposed) / len(self.boards),
            jobs_on_image=self.jobs_on_image[r.n],
            jobs_corrupt_on_image=self.corrupt_on_image[r.n],
            peak_out_share=r.peak_out / gen_size,
            peak_out_share_any=r.peak_out_any / gen_size,
            flash_failures=self.flash_failures,
            min_headroom=r.min_headroom,
            min_headroom_at_drain=r.min_headroom_at_drain,
        )
