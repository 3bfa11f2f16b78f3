"""The fleet simulator (discrete events, a virtual clock) over the controller's own policy code.

What is the policy's, called as the controller calls it: where jobs run (:func:`plan` on a kept
:class:`Pool` and :class:`Line`), what an attempt's end means for its job
(:func:`job_after_attempt`), the telemetry rules (:func:`findings`, :func:`worst`), when L1 is due
(:func:`l1_due`), the remediation ladder (:func:`open_case`, :func:`on_result`, :func:`on_time`),
the circuit breaker (:func:`take_out`), lemon detection (:func:`lemon_reason`) and the uptime
accounting (:func:`uptime`, over the transitions the run records).

What is the simulator's: the boards and their faults (:class:`~fleetyard.sim.model.FaultModel`),
the teams' work (:class:`~fleetyard.sim.model.WorkloadModel`), heartbeats (a host reports every
``heartbeat_s`` at its own phase; the controller's health pass looks every ``health_pass_s``), how
long checks and remediation steps take, and what each heals (:data:`~fleetyard.sim.model.HEALED_BY`).
An L1 check that is due runs on the board as soon as it is free, ahead of user work, as the
controller's pinned, top-priority ``health-check`` job does.

The three policies (:class:`~fleetyard.sim.model.SimPolicy`) meet the same faults at the same
times on the same boards (their own random stream), and the teams submit the same jobs in the
same order, so their figures compare pair by pair.

*Availability* here is the honest kind: a board counts as in service only while it is in service
**and** sound. A board that computes wrong numbers, or hangs, while the fleet thinks it serves is
down (``availability_accounted`` is what the event log alone says).
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import math
import random
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetyard.domain.board import Actor, BoardState, check_transition
from fleetyard.domain.health_config import CheckTier, RemedyOp, RuleAction
from fleetyard.domain.host import HostState
from fleetyard.domain.job import Cause, JobState, Outcome
from fleetyard.domain.spec import Placement
from fleetyard.pass_gc import PassCollector
from fleetyard.policy.brakes import LEMON_WINDOW_S, BreakerLimits, lemon_reason, take_out
from fleetyard.policy.fairshare import accrue
from fleetyard.policy.health import Reading, findings, l1_due, take_out_why, worst
from fleetyard.policy.line import Line
from fleetyard.policy.liveness import HOST_BACK_RESUME, HostView, back_from_offline, judge_hosts, watching_since
from fleetyard.policy.outcomes import board_after_rank, check_verdict, job_after_attempt, rank_end_reason, stopped
from fleetyard.policy.placement import BoardView, Constraints, Pool, Shape
from fleetyard.policy.preemption_holds import PreemptionHolds, RunningAttempt
from fleetyard.policy.queues import DEFAULT_PRIORITY_CLASSES, QueueSpec, QuotaLedger
from fleetyard.policy.remediation import (
    TAKEN_OVER,
    Act,
    Case,
    Do,
    by_hand,
    ladder_at_once,
    on_result,
    on_time,
    open_case,
    resume,
)
from fleetyard.policy.scheduling import plan
from fleetyard.policy.snapshot import PendingJob, RunningJob, Snapshot
from fleetyard.policy.uptime import Incident, Transition, uptime
from fleetyard.sim.model import HEALED_BY, FaultKind, Scenario, SimPolicy
from fleetyard.sim.workload import Arrival, JobKind, Team

__all__ = ["FleetSim", "SimReport", "simulate"]

S = BoardState
IN_SERVICE = (S.AVAILABLE, S.ALLOCATED)
DEAD = frozenset({FaultKind.HANG, FaultKind.BUS_DROP, FaultKind.FIRMWARE})  # the probe fails
PROBE_REASON = {
    FaultKind.HANG: "board not responding",
    FaultKind.BUS_DROP: "fell off the bus",
    FaultKind.FIRMWARE: "driver error (firmware)",
}
PRIORITY = {c.name: c.value for c in DEFAULT_PRIORITY_CLASSES}
MAX_LOST = {c.name: c.max_lost_s for c in DEFAULT_PRIORITY_CLASSES}


class _Board:
    __slots__ = (
        "before_offline",
        "case",
        "crash_pending",
        "crashed",
        "fault",
        "fault_at",
        "faulty_since",
        "gen",
        "held",
        "host",
        "id",
        "in_check",
        "incidents",
        "job",
        "jobs_since",
        "l1_at",
        "lemon",
        "onboarded",
        "permanent",
        "seen",
        "state",
        "state_at",
        "streak",
        "token",
    )  # fmt: skip

    def __init__(self, bid: str, host: int, gen: str) -> None:
        self.id, self.host, self.gen = bid, host, gen
        self.state = S.AVAILABLE
        self.state_at = 0.0  # when it entered its state
        self.onboarded = True  # through approval and burn-in (a repaired board: again)
        self.token = 0  # bumped whenever what a pending event assumed may have changed
        self.fault: FaultKind | None = None
        self.fault_at = 0.0
        self.permanent = False
        self.faulty_since: float | None = None  # in service with a fault, since
        self.job: _Job | None = None
        self.l1_at: float | None = None
        self.jobs_since = 0
        self.case: Case | None = None
        self.in_check = False  # a periodic L1 runs on it (it is allocated to the check)
        self.crash_pending = False
        self.crashed = False  # a crash (one-shot: no fault stays) took its job down, not yet dealt with
        self.lemon = False
        self.incidents: list[float] = []  # when it left service, lately
        self.streak = 0  # no-checks: failed jobs in a row, the ladder step to try
        self.held = False  # the breaker kept it from being taken out
        self.seen = False  # its current fault was detected
        self.before_offline: BoardState | None = None  # the state it left when its host was lost


class _Job:
    __slots__ = (
        "arrival",
        "attempt",
        "boards",
        "corrupt",
        "duration",
        "ends_at",
        "first_start",
        "id",
        "infra_retries",
        "kind",
        "limit",
        "preemptions",
        "size",
        "started",
        "submitted",
        "team",
        "token",
        "view",
    )  # fmt: skip

    def __init__(
        self, jid: int, team: Team, kind: JobKind, size: int, duration: float, limit: float, submitted: float,
        arrival: Arrival | None = None,
    ) -> None:  # fmt: skip
        self.id, self.team, self.kind, self.size, self.duration, self.limit = jid, team, kind, size, duration, limit
        self.submitted = submitted
        self.arrival = arrival  # a backlog's job: replaced when it first starts
        self.infra_retries = 0
        self.preemptions = 0
        self.attempt = 0  # the running attempt's id (the simulator's numbering)
        self.first_start: float | None = None
        self.boards: tuple[_Board, ...] = ()
        self.started = 0.0
        self.ends_at = 0.0
        self.token = 0
        self.corrupt = False
        constraints = _constraints(frozenset(kind.generations))
        self.view = PendingJob(
            jid, team.name, size, Shape(constraints, kind.placement_of(size)), PRIORITY[kind.priority_class],
            submitted_at=submitted, time_limit_s=limit, max_lost_s=MAX_LOST[kind.priority_class],
        )  # fmt: skip


_CONSTRAINTS: dict[frozenset[str], Constraints] = {}


def _constraints(generations: frozenset[str]) -> Constraints:
    """One :class:`Constraints` per generation set: the scheduler indexes boards per constraints."""
    c = _CONSTRAINTS.get(generations)
    if c is None:
        c = _CONSTRAINTS[generations] = Constraints(generations=generations)
    return c


@dataclass
class SimReport:
    """What a run measured. Times in seconds of simulated time."""

    policy: str
    boards: int
    days: float
    availability: float  # in service and sound / counted
    availability_accounted: float  # in service by the event log (a silently broken board counts)
    goodput_loss: float  # board-time of user work lost to faults / all user work run
    mttd_s: float | None  # dead boards (hang, bus drop, firmware): fault to out of service
    mttd_by_kind_s: dict[str, float]
    mttd_sdc_max_s: float | None
    sdc_caught: int
    sdc_missed: int
    mttr_s: float | None
    mtbi_s: float | None
    incidents: int
    incidents_by_cause: dict[str, int]
    faults: dict[str, int]
    quarantined: int
    lemons: int
    breaker_trips: int
    jobs_done: int
    jobs_failed: int
    jobs_corrupt: int
    attempts_lost: int
    check_overhead: float  # board-time in health checks / board-time counted
    utilization: float  # board-time in user jobs / board-time counted
    # Scheduling (preemptible workloads above all: see bench/sched_trace.py).
    board_hours_run: float = 0.0  # of user jobs, lost attempts included
    preemptions: int = 0
    wasted_board_hours: float = 0.0  # of attempts preempted: work thrown away
    max_preemptions_per_job: int = 0
    # Busy boards over boards in service, over the time some job its queue's quota admits waited.
    utilisation_waiting: float | None = None
    # Half the summed gap between each queue's share of the busy boards and its fair share (its
    # quota share, water-filled up to what it asks: held plus waiting), over the time jobs waited.
    fairshare_error: float | None = None
    gang_wait_max_s: float | None = None  # submit to first start, jobs of 2 boards or more
    jobs_started: int = 0
    plan_passes: int = 0
    plan_p50_ms: float | None = None
    plan_p99_ms: float | None = None
    # Noise (FaultModel.noisy): none of it is a fault, so each of these should stay at 0.
    blips: int = 0  # hosts silent for a while, then back
    stalls: int = 0  # times the control plane fell behind
    checks_lost: int = 0  # checks that could not run (no verdict)
    false_takeouts_per_1000_board_days: float = 0.0  # boards without a fault taken out of service
    false_requeues: int = 0  # attempts ended for the infrastructure with no fault behind them
    unapproved_boards_served: int = 0  # user work started on a board not through approval and burn-in
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# Out of service, by the policy's hand: a board without a fault sent here was taken out for nothing.
_TAKEN_OUT = frozenset({S.SUSPECT, S.REMEDIATING, S.QUARANTINED})


# Event kinds (ints: the heap compares tuples).
(E_FAULT, E_SDC, E_HOST_LOSS, E_HOST_LOST, E_HOST_BACK, E_DETECT, E_JOB_END, E_JOB_FAIL, E_CHECK_END,
 E_OP_END, E_OPERATOR, E_REPAIRED, E_PASS, E_L1_TIMER, E_BREAKER_RESET, E_CASE_TIMER, E_REQUEUE,
 E_INJECT, E_ARRIVE, E_PREEMPTED, E_BLIP, E_UNREACHABLE, E_BLIP_END, E_HAND, E_HAND_END, E_STALL,
 E_STALL_END) = range(27)  # fmt: skip
# What the controller does (its passes, and the results it collects): nothing of it while the
# control plane has fallen behind (FaultModel.stalls_per_day); all of it once it catches up.
CONTROLLER_EVENTS = frozenset({E_PASS, E_DETECT, E_HOST_LOST, E_CASE_TIMER, E_L1_TIMER, E_CHECK_END, E_OP_END})


class FleetSim:
    """One scenario under one policy. :meth:`run` once."""

    def __init__(self, scenario: Scenario, policy: SimPolicy | str) -> None:
        self.sc = sc = scenario
        self.policy = SimPolicy(policy)
        self.now = 0.0
        self.end = sc.days * 86400.0
        self._heap: list[tuple[float, int, int, Any, int]] = []
        self._seq = 0
        self.fault_rng = random.Random(f"{sc.seed}:faults")
        self.phase_rng = random.Random(f"{sc.seed}:phases")
        # How faults play out on work varies with the policy: its own stream, so that the
        # fault stream (what strikes where, when) is the same under every policy.
        self.fate_rng = random.Random(f"{sc.seed}:fates")
        self.breaker = BreakerLimits.of(sc.health)
        hosts = math.ceil(sc.boards / sc.boards_per_host)
        racks_per_gen = max(1, math.ceil(hosts / sc.hosts_per_rack / len(sc.generations)))
        self.boards: list[_Board] = []
        views = []
        self.host_boards: list[list[_Board]] = [[] for _ in range(hosts)]
        for i in range(sc.boards):
            h = i // sc.boards_per_host
            rack = h // sc.hosts_per_rack
            gen = sc.generations[min(rack // racks_per_gen, len(sc.generations) - 1)]
            b = _Board(f"h{h:05d}-{i % sc.boards_per_host}", h, gen)
            self.boards.append(b)
            self.host_boards[h].append(b)
            views.append(BoardView(b.id, f"h{h:05d}", gen, i % sc.boards_per_host, f"r{rack:04d}"))
        self.by_id = {b.id: b for b in self.boards}
        self.gen_size = Counter(b.gen for b in self.boards)
        self.hb_phase = [self.phase_rng.uniform(0, sc.heartbeat_s) for _ in range(hosts)]
        self.host_down = [False] * hosts
        self.host_lost = [False] * hosts
        self.host_unreachable = [False] * hosts  # silent past the unreachable threshold: no new work
        self.unreachable_n = 0
        self.blip_lost = [False] * hosts  # lost, though it was only a blip (silent past the grace)
        self.free: set[str] = set()
        self.pool = Pool(views, ())
        self.line = Line()
        self.running: dict[int, RunningJob] = {}
        self.queues = {
            t.name: QueueSpec(
                t.name,
                {g: math.floor(t.share * sc.quota_share * n) for g, n in self.gen_size.items()},
                t.cohort,
                {}
                if t.borrowing_limit is None
                else {g: math.floor(t.borrowing_limit * n) for g, n in self.gen_size.items()},
            )
            for t in sc.workload.teams
        }
        self.share = {t.name: t.share for t in sc.workload.teams}
        self.preemptible = sc.workload.preemptible
        self.scheduling_figures = sc.scheduling_figures or self.preemptible
        self.holds = PreemptionHolds(sc.preempt_protect_s)
        self.arrival_rng = random.Random(f"{sc.seed}:arrivals")
        self.usage: dict[str, float] = dict.fromkeys(self.queues, 0.0)
        self.held_by_team: dict[str, int] = dict.fromkeys(self.queues, 0)
        self.team_rng = {t.name: random.Random(f"{sc.seed}:team:{t.name}") for t in sc.workload.teams}
        self.jobs: dict[int, _Job] = {}
        self._next_job = 1
        self._attempts = 0
        self._changed = True
        self._last_pass = 0.0
        n_lemons = round(sc.faults.lemon_share * sc.boards)
        lemons = self.fault_rng.sample(range(sc.boards), n_lemons) if n_lemons else []
        for i in lemons:
            self.boards[i].lemon = True
        self.lemon_ids = [b for b in self.boards if b.lemon]
        self.normal_ids = [b for b in self.boards if not b.lemon]
        # Accounting.
        self.transitions: list[Transition] = [Transition(b.id, 0.0, S.AVAILABLE, Actor.POLICY, "") for b in self.boards]
        self.faulty_in_service_s = 0.0
        self.user_bs = 0.0
        self.lost_bs = 0.0
        self.check_bs = 0.0
        self.fault_counts: Counter[str] = Counter()
        self.detect_waits: dict[str, list[float]] = defaultdict(list)
        self.sdc_caught = self.sdc_missed = 0
        self.jobs_done = self.jobs_failed = self.jobs_corrupt = self.attempts_lost = 0
        self.preempted_bs = 0.0
        self.preemption_count = 0
        self.plan_ms: list[float] = []
        self._collector = PassCollector() if sc.freeze_gc else None
        self.jobs_started = 0
        self.gang_wait_max = 0.0
        self.waiting_s = self.busy_waiting_bs = self.in_service_waiting_bs = self.fair_gap_s = 0.0
        self._sample: tuple[bool, int, int, float] = (False, 0, 0, 0.0)  # as the last pass left it
        self.quarantined = self.lemons_found = self.trips = 0
        self.tripped: set[str] = set()
        self.taken_out: dict[str, deque[float]] = defaultdict(deque)
        self.host_down_since: dict[int, float] = {}
        self.false_takeouts = self.false_requeues = self.unapproved_served = self.checks_lost = 0
        self._handlers: dict[int, Callable[[Any, int], None]] = {
            E_FAULT: self._on_fault, E_SDC: self._on_sdc, E_HOST_LOSS: self._on_host_loss,
            E_HOST_LOST: self._on_host_lost, E_HOST_BACK: self._on_host_back, E_DETECT: self._on_detect,
            E_JOB_END: self._on_job_end, E_JOB_FAIL: self._on_job_fail, E_CHECK_END: self._on_check_end,
            E_OP_END: self._on_op_end, E_OPERATOR: self._on_operator, E_REPAIRED: self._on_repaired,
            E_PASS: self._on_pass, E_L1_TIMER: self._on_l1_timer, E_BREAKER_RESET: self._on_breaker_reset,
            E_CASE_TIMER: self._on_case_timer, E_REQUEUE: self._on_requeue, E_INJECT: self._on_inject,
            E_ARRIVE: self._on_arrive, E_PREEMPTED: self._on_preempted, E_BLIP: self._on_blip,
            E_UNREACHABLE: self._on_unreachable, E_BLIP_END: self._on_blip_end, E_HAND: self._on_hand,
            E_HAND_END: self._on_hand_end, E_STALL: self._on_stall, E_STALL_END: self._on_stall_end,
        }  # fmt: skip
        self.controller_events = CONTROLLER_EVENTS
        self.stalled_since = self.stalled_until = -math.inf  # the control plane's last stall
        self.watching = 0.0  # since when the controller watched heartbeats (policy.liveness.watching_since)
        self.host_last_beat: dict[int, float] = {}  # a down host's last heartbeat
        self._placed: dict[str, BoardState] = {}
        self.refusals: list[tuple[float, str, str]] = []  # (when, board, why) of ops refused by hand
        # Each remediation case as it closed: (board, outcome, its steps), the store's repair records.
        self.cases_closed: list[tuple[str, str, tuple[str, ...]]] = []

    def inject(self, at: float, board: str, kind: FaultKind | str, *, permanent: bool = False) -> None:
        """A fault of ``kind`` on ``board`` at ``at`` s (besides the fault model's): a scripted scenario."""
        self._at(at, E_INJECT, (self._board(board), FaultKind(kind), permanent))

    def lose_host(self, at: float, host: int, down_s: float) -> None:
        """Host number ``host`` stops heartbeating at ``at`` s for ``down_s`` s (a scripted scenario)."""
        if not 0 <= host < len(self.host_boards):
            raise KeyError(f"no host {host} in this fleet (0 to {len(self.host_boards) - 1})")
        self._at(at, E_HOST_LOSS, (host, down_s))

    def blip(self, at: float, host: int, silent_s: float) -> None:
        """Host number ``host`` is silent from ``at`` s for ``silent_s`` s, then back as it was."""
        if not 0 <= host < len(self.host_boards):
            raise KeyError(f"no host {host} in this fleet (0 to {len(self.host_boards) - 1})")
        self._at(at, E_BLIP, (host, silent_s))

    def board_state(self, board: str) -> BoardState:
        return self.by_id[board].state

    # ---- scripted: what an operator's hand and a team's job do (a scripted scenario)

    def place(self, board: str, state: BoardState | str) -> None:
        """Start ``board`` out of service, as a fleet running for a while would have it: discovered
        (never approved), drained, quarantined, or onboarding (its burn-in under way). Before :meth:`run`."""
        state = BoardState(state)
        if state not in (S.DISCOVERED, S.DRAINED, S.QUARANTINED, S.ONBOARDING):
            raise ValueError(
                f"a board starts in service, or discovered, drained, quarantined or onboarding: not {state}"
            )
        self._board(board)
        self._placed[board] = state

    def run_job(self, at: float, board: str, duration_s: float) -> None:
        """A one-board job of the first team's first kind starts on ``board`` at ``at`` s, if it is
        free then (a scripted scenario: it bypasses the scheduler)."""
        team = self.sc.workload.teams[0]
        job = _Job(self._next_job, team, team.jobs[0], 1, duration_s, self.sc.workload.time_limit_s(duration_s), at)
        self._next_job += 1
        self.jobs[job.id] = job
        self._at(at, E_HAND, ("job", self._board(board), job))

    def drain(self, at: float, board: str, reason: str = "drained by hand") -> None:
        """An operator drains a free ``board`` at ``at`` s."""
        self._at(at, E_HAND, ("drain", self._board(board), reason))

    def order_op(
        self, at: float, board: str, op: RemedyOp | str, *, take_over: bool = False, by: str = "operator",
        reason: str = "",
    ) -> None:  # fmt: skip
        """An operator orders ``op`` on ``board`` by hand at ``at`` s. On a board whose remediation
        case is open it is refused (:attr:`refusals`), or with ``take_over`` closes the case and
        leaves the board drained (:func:`~fleetyard.policy.remediation.by_hand`)."""
        self._at(at, E_HAND, ("op", self._board(board), (RemedyOp(op), take_over, by, reason)))

    def _board(self, board: str) -> _Board:
        if board not in self.by_id:
            raise KeyError(f"no board {board!r} in this fleet (ids look like {self.boards[0].id!r})")
        return self.by_id[board]

    def _on_hand(self, what: tuple[str, _Board, Any], _: int) -> None:
        do, b, arg = what
        if do == "job":
            if b.state is S.AVAILABLE and b.id in self.free:
                self._start(arg, (b,))
        elif do == "drain":
            if b.state is S.AVAILABLE:
                self.free.discard(b.id)
                self._to(b, S.DRAINED, arg, Actor.OPERATOR)
        else:
            op, take_over, by, reason = arg
            if b.case is not None:
                got = by_hand(b.case, op=str(op), take_over=take_over, by=by, reason=reason)
                if isinstance(got, str):
                    self.refusals.append((self.now, b.id, got))
                    return
                self.cases_closed.append((b.id, TAKEN_OVER, b.case.evidence))
                b.case = None
                self._to(b, got[0], got[1], Actor.OPERATOR)
            self._at(self.now + self.sc.op_s[op], E_HAND_END, (b, op), b.token)

    def _on_hand_end(self, what: tuple[_Board, RemedyOp], token: int) -> None:
        b, op = what
        if token == b.token:
            self._heal(b, op)  # the board stays where the operator has it

    # ---- the loop

    def _at(self, t: float, kind: int, what: Any = None, token: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, what, token))

    def run(self) -> SimReport:
        sc = self.sc
        l1 = sc.health.of(sc.generations[0]).l1
        for b in self.boards:  # checks spread over the first interval, as in a fleet long running
            b.l1_at = -self.phase_rng.uniform(0, sc.health.of(b.gen).l1.every_s)
            b.jobs_since = self.phase_rng.randrange(l1.every_jobs)
            self._make_free(b)
        for board, state in self._placed.items():
            self._put(self.by_id[board], state)
        for team in sc.workload.teams:
            for arrival in team.arrivals:
                if arrival.backlog and arrival.from_s <= 0.0:  # queued before the run begins
                    for _ in range(arrival.backlog):
                        self._submit(team, arrival)
                else:
                    start = arrival.first_s if arrival.burst[1] and arrival.first_s is not None else arrival.from_s
                    self._at(start if not arrival.per_hour else start + self._gap(arrival), E_ARRIVE, (team, arrival))
        self._schedule_next_fault(E_FAULT)
        self._schedule_next_fault(E_SDC)
        self._schedule_next_fault(E_HOST_LOSS)
        self._schedule_next_fault(E_BLIP)
        self._schedule_next_fault(E_STALL)
        self._at(0.0, E_PASS)
        heap, handlers, end, deferred = self._heap, self._handlers, self.end, self.controller_events
        try:
            while heap and heap[0][0] <= end:
                t, _, kind, what, token = heapq.heappop(heap)
                self.now = t
                if t < self.stalled_until and kind in deferred:
                    self._at(self.stalled_until, kind, what, token)  # the controller, behind, does it later
                    continue
                handlers[kind](what, token)
        finally:
            if self._collector is not None:
                gc.unfreeze()  # what this run froze is the process's to collect again
        self.now = end
        return self._report()

    # ---- work

    def _submit(self, team: Team, arrival: Arrival) -> None:
        rng = self.team_rng[team.name]
        kinds = team.kinds_of(arrival)
        kind = kinds[0] if len(kinds) == 1 else rng.choices(kinds, [k.weight for k in kinds])[0]
        size = rng.choice(kind.boards)
        duration = min(kind.max_s, kind.median_s * math.exp(rng.gauss(0.0, kind.sigma)))
        job = _Job(
            self._next_job, team, kind, size, duration, self.sc.workload.time_limit_s(duration), self.now,
            arrival if arrival.backlog else None,
        )  # fmt: skip
        self._next_job += 1
        self.jobs[job.id] = job
        self.line.add(job.view)
        self._changed = True  # a pass plans again only when boards freed or work came

    def _gap(self, arrival: Arrival) -> float:
        return self.arrival_rng.expovariate(arrival.per_hour / 3600.0)

    def _on_arrive(self, what: tuple[Team, Arrival], _: int) -> None:
        team, arrival = what
        if self.now >= arrival.until_s:
            return
        if arrival.backlog:
            n = arrival.backlog
        elif arrival.per_hour:
            n = 1
            self._at(self.now + self._gap(arrival), E_ARRIVE, what)
        else:
            n = self.arrival_rng.randint(*arrival.burst)
            self._at(self.now + arrival.every_s, E_ARRIVE, what)
        for _ in range(n):
            self._submit(team, arrival)

    def _on_pass(self, _: Any, __: int) -> None:
        self._at(self.now + self.sc.pass_s, E_PASS)
        dt = self.now - self._last_pass
        for q in self.usage:
            self.usage[q] = accrue(self.usage[q], self.held_by_team[q], dt)
        self._account_pass(dt)
        self._last_pass = self.now
        if self.preemptible:
            # Preemption can change what runs with nothing freed: every pass plans while jobs wait.
            if not len(self.line):
                self._sample_pass()
                return
        elif not self._changed or not self.free:
            self._sample_pass()
            return
        self._changed = False
        running = self._running_views()
        snap = Snapshot(
            self.now, self.pool, self._placeable(), self.line, running, self.queues, self.usage,
            window=self.sc.window, held_for=self.holds.held_for(), search_after=self.holds.search_after(),
        )  # fmt: skip
        if self._collector is not None:
            self._collector.before_pass(self.now)
        t0 = time.perf_counter()
        result = plan(snap)
        self.plan_ms.append((time.perf_counter() - t0) * 1000.0)
        self.holds.keep(result, self.now)
        for binding in result.bindings:
            job = self.jobs[binding.job_id]
            self.line.discard(job.id)
            self._start(job, tuple(self.by_id[i] for i in binding.board_ids))
            if job.arrival is not None and job.first_start == self.now and self.now < job.arrival.until_s:
                self._submit(job.team, job.arrival)  # a backlog stays as long
        for p in result.preemptions:
            victim = self.jobs[p.victim]
            self.running[victim.id] = dataclasses.replace(self.running[victim.id], preempted_for=p.for_job)
            self._at(self.now + self.sc.preempt_stop_s, E_PREEMPTED, victim, victim.token)
        self._sample_pass()

    def _running_views(self) -> list[RunningJob]:
        """The running jobs as the scheduler sees them, protections brought up to date (the
        policy's :class:`PreemptionHolds`, as the controller keeps them)."""
        if not self.preemptible:
            return list(self.running.values())
        jobs = self.jobs
        attempts = [
            RunningAttempt(jobs[r.id].attempt, r.id, r.boards, r.started_at, r.preempted_for)
            for r in self.running.values()
        ]
        self.holds.observe(
            self.now,
            attempts,
            self.line.ids(),
            lambda ids: {i: jobs[i].preemptions for i in ids if jobs[i].preemptions},
        )
        views = []
        for r in self.running.values():
            until = self.holds.protected_until(jobs[r.id].attempt)
            if until != r.protected_until:
                r = self.running[r.id] = dataclasses.replace(r, protected_until=until)
            views.append(r)
        return views

    def _on_preempted(self, job: _Job, token: int) -> None:
        """A victim's ranks stopped: its attempt's work is thrown away, it goes back to its place
        in line, its boards back to work (held for the preemptor by the holds)."""
        if token != job.token:
            return  # it ended otherwise first
        bs = job.size * (self.now - job.started)
        self.user_bs += bs
        self.preempted_bs += bs
        self.preemption_count += 1
        job.preemptions += 1
        self._finish(job)
        self.line.add(job.view)
        boards, job.boards = job.boards, ()
        for b in boards:
            b.job = None
            self._release(b)

    # ---- scheduling figures

    def _account_pass(self, dt: float) -> None:
        """The time since the last pass, at the state that pass left."""
        waiting, busy, in_service, gap = self._sample
        if waiting and dt > 0:
            self.waiting_s += dt
            self.busy_waiting_bs += busy * dt
            self.in_service_waiting_bs += in_service * dt
            self.fair_gap_s += gap * dt

    def _sample_pass(self) -> None:
        if not self.scheduling_figures:
            return
        busy = sum(self.held_by_team.values())
        in_service = sum(1 for b in self.boards if b.state in IN_SERVICE)
        waiting = self._eligible_waits()
        gap = 0.0
        if waiting and busy:
            asks: Counter[str] = Counter(self.held_by_team)
            for view in self.line:
                asks[view.queue] += view.boards
            fair = water_fill(busy, self.share, asks)
            gap = sum(abs(self.held_by_team[q] - fair.get(q, 0.0)) for q in self.held_by_team) / (2 * busy)
        self._sample = (waiting, busy, in_service, gap)

    def _eligible_waits(self) -> bool:
        """Whether a job waits that its queue's quota admits now (borrowing what its cohort
        lends): one held back by its own quota or borrowing limit is not the fleet's idleness."""
        if not len(self.line):
            return False
        used: dict[str, Counter[str]] = defaultdict(Counter)
        for job_id in self.running:
            job = self.jobs[job_id]
            for b in job.boards:
                used[job.team.name][b.gen] += 1
        ledger = QuotaLedger(self.queues, used)
        gens = tuple(self.gen_size)
        room: dict[tuple[str, frozenset[str], bool], int] = {}
        for view in self.line:
            # A job on one host (rack) takes one generation: its quota must admit it in one.
            one = view.shape.required and view.shape.placement is not Placement.ANY
            key = (view.queue, view.shape.constraints.generations, one)
            if key not in room:
                heads = [max(0, ledger.headroom(view.queue, g)) for g in key[1] or gens]
                room[key] = max(heads, default=0) if one else sum(heads)
            if room[key] >= view.boards:
                return True
        return False

    def _start(self, job: _Job, boards: tuple[_Board, ...]) -> None:
        self.unapproved_served += sum(not b.onboarded for b in boards)
        job.boards, job.started, job.corrupt = boards, self.now, False
        job.token += 1
        self._attempts += 1
        job.attempt = self._attempts
        self.jobs_started += 1
        if job.first_start is None:
            job.first_start = self.now
            if job.size > 1:
                self.gang_wait_max = max(self.gang_wait_max, self.now - job.submitted)
        self.held_by_team[job.team.name] += len(boards)
        self.running[job.id] = RunningJob(
            job.id, job.team.name, tuple(b.id for b in boards), job.view.priority, 0, self.now,
            self.now + job.limit, preemptible=job.kind.preemptible,
        )  # fmt: skip
        job.ends_at = self.now + job.duration
        for b in boards:
            self.free.discard(b.id)
            self._to(b, S.ALLOCATED)
            b.job = job
            if b.fault is FaultKind.SILENT_CORRUPTION:
                job.corrupt = True
        if any(self.host_down[b.host] for b in boards):
            return  # nothing it does reaches the server; the host's loss ends it
        self._at(job.ends_at, E_JOB_END, job, job.token)
        for b in boards:
            self._doom(job, b)

    def _doom(self, job: _Job, b: _Board) -> None:
        """If ``b``'s fault makes the job fail before it would end, when and how (its end is off)."""
        fate = self._fate(b, job)
        if fate is not None and (fate[1] is Outcome.TIMEOUT or fate[0] < job.ends_at):
            job.token += 1
            job.ends_at = fate[0]
            self._at(fate[0], E_JOB_FAIL, (job, fate[1], b), job.token)

    def _fate(self, b: _Board, job: _Job) -> tuple[float, Outcome] | None:
        """When and how the job fails on ``b``, from the board's fault (None: it does not)."""
        if b.crash_pending:
            b.crash_pending, b.crashed = False, True
            return self.now + 5.0, Outcome.INFRA_ERROR
        kind = b.fault
        if kind is None or kind in (FaultKind.SILENT_CORRUPTION, FaultKind.THERMAL):
            return None
        if kind is FaultKind.HANG:
            return job.started + job.limit, Outcome.TIMEOUT
        if kind is FaultKind.ECC_STORM:
            if not b.permanent:
                return None  # corrected errors only
            return self.now + self.fate_rng.expovariate(1 / 600.0), Outcome.INFRA_ERROR
        return self.now + 1.0, Outcome.INFRA_ERROR  # bus drop, firmware

    def _on_job_end(self, job: _Job, token: int) -> None:
        if token != job.token:
            return
        bs = job.size * (self.now - job.started)
        self.user_bs += bs
        if job.corrupt:
            self.lost_bs += bs
            self.jobs_corrupt += 1
        self.jobs_done += 1
        self._finish(job)
        boards, job.boards = job.boards, ()
        for b in boards:
            b.job = None
            b.jobs_since += 1
            b.streak = 0
            self._release(b)

    def _on_job_fail(self, what: tuple[_Job, Outcome, _Board], token: int) -> None:
        job, outcome, board = what
        if token == job.token:
            self._end_attempt(job, outcome, blame=board)

    def _on_requeue(self, job: _Job, _: int) -> None:
        self.line.add(job.view)

    def _end_attempt(
        self, job: _Job, outcome: Outcome, *, blame: _Board | None = None, skip: _Board | None = None,
        requeue_at: float = 0.0,
    ) -> None:  # fmt: skip
        """An attempt lost to a fault: its work is lost, the job retries or fails (the policy's
        :func:`job_after_attempt`); the boards at fault go to :meth:`_job_failed_on` (but ``skip``,
        which the caller handles), the others back to work."""
        bs = job.size * (self.now - job.started)
        self.user_bs += bs
        self.lost_bs += bs
        self.attempts_lost += 1
        nxt = job_after_attempt(
            outcome, infra_retries=job.infra_retries, max_infra_retries=self.sc.workload.max_infra_retries
        )
        if outcome is Outcome.INFRA_ERROR and any(self.blip_lost[b.host] for b in job.boards):
            self.false_requeues += 1  # a host judged lost that was only silent: noise re-ran it
        self._finish(job)
        boards, job.boards = job.boards, ()
        if nxt.state is JobState.QUEUED:
            job.infra_retries += nxt.infra_retry
            if requeue_at > self.now:
                self._at(requeue_at, E_REQUEUE, job)
            else:
                self.line.add(job.view)
        else:
            self.jobs_failed += 1
        for b in boards:
            b.job = None
            if b is skip or self.host_lost[b.host]:
                continue
            if b is blame or b.fault is not None:
                self._rank_ended(b, job, outcome if b is blame else Outcome.CANCELED)
            else:
                self._release(b)

    def _finish(self, job: _Job) -> None:
        job.token += 1
        self.running.pop(job.id, None)
        self.held_by_team[job.team.name] -= job.size

    def _rank_ended(self, b: _Board, job: _Job, outcome: Outcome) -> None:
        """A rank of ``job`` on a faulty board ended with ``outcome`` (the failing board's own, its
        siblings' canceled): where the board goes, by the server's rule over what its probe says
        (:func:`~fleetyard.policy.outcomes.board_after_rank`)."""
        if self.policy is SimPolicy.NO_CHECKS:  # no probe, no rule: the failed job is all it knows
            self._detected(b)
            hung = outcome is Outcome.TIMEOUT
            self._take_out(
                b, "timeout of a job (board hung)" if hung else "infrastructure error during a job", remedy=True
            )
            return
        cause = {Outcome.INFRA_ERROR: Cause.BOARD_FAULT, Outcome.TIMEOUT: Cause.TIMEOUT}.get(outcome, Cause.CANCELED)
        probe = None if b.fault is None else PROBE_REASON.get(b.fault)  # the probe fails on a dead board
        to, why = board_after_rank(
            outcome, board_ok=probe is None, drain_requested=False, probe_reason=probe, cause=cause
        )
        if to is not S.SUSPECT:
            self._release(b)
            return
        self._detected(b)
        self._take_out(b, rank_end_reason(why, job.id, outcome), check_first=True)

    # ---- boards in and out of service

    def _to(self, b: _Board, state: BoardState, reason: str = "", actor: Actor = Actor.POLICY) -> None:
        was = b.state
        if was is state:
            return
        check_transition(was, state, board_id=b.id)
        b.state, b.state_at = state, self.now
        b.token += 1
        if b.fault is None and (
            (was in IN_SERVICE and state in _TAKEN_OUT and not self.host_down[b.host] and not b.crashed)
            or (state is S.OFFLINE and self.blip_lost[b.host])
        ):
            self.false_takeouts += 1  # out of service with nothing wrong with it, or its host
        if state in _TAKEN_OUT:
            b.crashed = False
        if state is S.ONBOARDING:
            b.onboarded = False
        elif was is S.ONBOARDING and state is S.AVAILABLE:
            b.onboarded = True
        if not (was in IN_SERVICE and state in IN_SERVICE):
            self.transitions.append(Transition(b.id, self.now, state, actor, reason))
        if state not in IN_SERVICE and b.faulty_since is not None:
            self.faulty_in_service_s += self.now - b.faulty_since
            b.faulty_since = None
        elif state in IN_SERVICE and b.fault is not None and b.faulty_since is None:
            b.faulty_since = self.now
        if was is S.AVAILABLE and b.id in self.free:
            self.free.discard(b.id)

    def _put(self, b: _Board, state: BoardState) -> None:
        """A board placed out of service before the run (:meth:`place`)."""
        self.free.discard(b.id)
        b.state, b.token = state, b.token + 1
        b.onboarded = state not in (S.DISCOVERED, S.ONBOARDING)
        self.transitions.append(Transition(b.id, self.now, state, Actor.OPERATOR, "placed"))
        if state is S.ONBOARDING:
            self._check(b, CheckTier.L3)
        elif state is S.QUARANTINED:
            self._at(self.now + self.sc.faults.repair_turnaround_s, E_REPAIRED, b, b.token)

    def _release(self, b: _Board) -> None:
        """A board whose work ended: an L1 check if one is due, else back to the free boards."""
        if b.state not in IN_SERVICE:
            return
        if self.policy is not SimPolicy.NO_CHECKS:
            pol = self.sc.health.of(b.gen).l1
            if l1_due(pol, last_l1_at=b.l1_at, jobs_since=b.jobs_since, now=self.now):
                self._l1(b)
                return
        self._make_free(b)

    def _make_free(self, b: _Board) -> None:
        assert b.job is None, f"board {b.id} freed while job {b.job.id} holds it"
        self._to(b, S.AVAILABLE)
        b.in_check = False
        if self.host_lost[b.host]:
            return
        self.free.add(b.id)
        self._changed = True
        if self.policy is not SimPolicy.NO_CHECKS and b.l1_at is not None:
            self._at(b.l1_at + self.sc.health.of(b.gen).l1.every_s, E_L1_TIMER, b, b.token)

    def _on_l1_timer(self, b: _Board, token: int) -> None:
        if token == b.token and b.state is S.AVAILABLE and b.id in self.free:
            self._l1(b)

    def _l1(self, b: _Board) -> None:
        """A periodic L1 check: the board is allocated to it (a health-check job) until it ends."""
        self.free.discard(b.id)
        self._to(b, S.ALLOCATED)
        b.in_check = True
        self._check(b, CheckTier.L1)

    def _check(self, b: _Board, tier: CheckTier) -> None:
        pol = self.sc.health.of(b.gen)
        took = self.sc.l1_s if tier is CheckTier.L1 else pol.tier(tier).duration_s
        timeout = pol.tier(tier).timeout_s
        if b.fault is FaultKind.HANG or self.host_down[b.host]:
            took = timeout  # a hung board never answers: the check times out
        elif b.fault is not None:
            took = min(took, max(1.0, 0.1 * took))  # the first wrong result fails it
        self.check_bs += took
        lost = self.sc.faults.checks_lost_share > 0 and self.fate_rng.random() < self.sc.faults.checks_lost_share
        self._at(self.now + took, E_CHECK_END, (b, tier, lost), b.token)

    def _verdict(self, b: _Board, lost: bool) -> bool | None:
        """What a check that ended says, by the policy's rule (its rank's outcome and cause, as
        the agent or the server would record them): None when it could not run (its agent
        restarted under it, its host down), else whether the board is sound."""
        if lost:
            outcome, cause = Outcome.PREEMPTED, Cause.AGENT_STOPPED
        elif self.host_down[b.host]:
            outcome, cause = Outcome.INFRA_ERROR, Cause.HOST_LOST
        elif b.fault is FaultKind.HANG:
            outcome, cause = Outcome.TIMEOUT, Cause.TIMEOUT  # the agent stops it at its time limit
        elif b.fault is not None:
            outcome, cause = Outcome.INFRA_ERROR, Cause.WORKLOAD  # the golden outputs were wrong
        else:
            outcome, cause = Outcome.SUCCESS, Cause.WORKLOAD
        return check_verdict(outcome, cause)

    def _on_check_end(self, what: tuple[_Board, CheckTier, bool], token: int) -> None:
        b, tier, lost = what
        if token != b.token:
            return
        verdict = self._verdict(b, lost)
        if verdict is None:
            self.checks_lost += 1
        if b.case is not None:
            detail = "could not run" if verdict is None else self._detail(b, verdict, tier)
            self._advance(b, *on_result(b.case, ok=verdict, detail=detail, now=self.now, policy=self._pol(b)))
            return
        if verdict is None:  # no verdict: run it again (a periodic L1 comes due at once; a burn-in again)
            if b.state in (S.ONBOARDING, S.SUSPECT, S.REMEDIATING):
                self._check(b, tier)
            else:
                b.in_check = False
                self._to(b, S.AVAILABLE)
                self._make_free(b)
            return
        ok = verdict
        if ok:
            b.l1_at, b.jobs_since = self.now, 0
            if b.state is S.ONBOARDING:  # burn-in passed (L3)
                self._to(b, S.AVAILABLE, "passed its L3 burn-in")
            elif b.state in (S.SUSPECT, S.REMEDIATING):
                self._to(b, S.AVAILABLE, "passed its L1 check")
            self._make_free(b)
            return
        self._detected(b)
        if b.fault is FaultKind.SILENT_CORRUPTION:
            self.sdc_caught += 1
        reason = f"{tier} check failed: {self._detail(b, ok, tier)}"
        if b.state in (S.ONBOARDING, S.REMEDIATING):  # a burn-in or an operator's fix that did not hold
            self._quarantine(b, reason)
            return
        self._take_out(b, reason)

    def _detail(self, b: _Board, ok: bool, tier: CheckTier) -> str:
        """How a check ended, in the words its rank's message would have."""
        if ok:
            return ""
        if b.fault is FaultKind.SILENT_CORRUPTION:
            return "output differs from the golden result"
        if b.fault is FaultKind.HANG:  # the agent stops it at its time limit
            return stopped(Cause.TIMEOUT, "", time_limit_s=self._pol(b).tier(tier).timeout_s)[1]
        return str(b.fault or "failed")

    def _detected(self, b: _Board) -> None:
        if b.fault is not None and not b.seen:
            b.seen = True
            self.detect_waits[str(b.fault)].append(self.now - b.fault_at)

    def _take_out(self, b: _Board, cause: str, *, check_first: bool = False, remedy: bool = False,
                  quarantine: bool = False) -> None:  # fmt: skip
        """Out of service for ``cause``: the policy's next step (the ladder, an operator, quarantine)."""
        if self.policy is SimPolicy.FLEETYARD and b.state in IN_SERVICE:
            recent = self.taken_out[b.gen]
            while recent and recent[0] < self.now - self.breaker.window_s:
                recent.popleft()
            intake = take_out(
                {b.gen: [b.id]}, recent={b.gen: len(recent)}, sizes=self.gen_size, tripped=self.tripped,
                limits=self.breaker,
            )  # fmt: skip
            if b.gen in intake.trips:
                self.trips += 1
                self.tripped.add(b.gen)
                self._at(self.now + self.sc.operator_response_s, E_BREAKER_RESET, b.gen)
            if not intake.boards:
                b.held = True  # stays as it is until an operator resets the breaker
                return
            recent.append(self.now)
        if b.job is not None:
            self._end_attempt(b.job, Outcome.INFRA_ERROR, skip=b)
        b.in_check = False
        if b.state in IN_SERVICE or b.state in (S.OFFLINE, S.ONBOARDING):
            b.incidents.append(self.now)
        self._to(b, S.SUSPECT, cause)
        b.held = False
        if quarantine:
            self._quarantine(b, cause)
            return
        if self.policy is SimPolicy.MANUAL and not check_first:
            self._at(self.now + self.sc.operator_response_s, E_OPERATOR, b, b.token)
            return
        if self.policy is SimPolicy.NO_CHECKS or remedy:
            ladder = self._pol(b).ladder
            if b.streak >= len(ladder):
                self._quarantine(b, f"failed {b.streak} jobs in a row through every remediation step; last: {cause}")
                return
            op = ladder[b.streak].step
            b.streak += 1
            self._to(b, S.REMEDIATING, f"remediation step {b.streak}: {op} after {cause}")
            self._operate(b, op)
            return
        case, act = open_case(
            b.id, cause=cause, now=self.now, policy=self._pol(b), check_first=check_first and not ladder_at_once(cause)
        )
        self._advance(b, case, act)

    def _pol(self, b: _Board) -> Any:
        return self.sc.health.of(b.gen)

    def _advance(self, b: _Board, case: Case | None, act: Act) -> None:
        """Carry out the ladder's next act on ``b``."""
        b.case = case
        if act.do is Do.HEAL:
            why = self._lemon(b)
            self.cases_closed.append((b.id, "healed" if why is None else "quarantined", act.evidence))
            if why is not None:
                self._quarantine(b, why)
                self.lemons_found += 1
                return
            b.l1_at, b.jobs_since = self.now, 0  # L2 runs the golden check too
            self._to(b, S.AVAILABLE, act.reason)
            self._make_free(b)
            return
        if act.do is Do.QUARANTINE:
            self.cases_closed.append((b.id, "quarantined", act.evidence))
            self._quarantine(b, act.reason)
            return
        if self.policy is SimPolicy.MANUAL and act.do is Do.OPERATE:
            b.case = None  # a failed board stays bad until an operator acts
            self._at(self.now + self.sc.operator_response_s, E_OPERATOR, b, b.token)
            return
        if b.state is S.SUSPECT and act.do is Do.OPERATE:
            self._to(b, S.REMEDIATING, act.reason)
        if b.gen in self.tripped:
            return  # automatic remediation stops while the breaker is tripped
        if act.do is Do.OPERATE:
            assert act.op is not None
            self._operate(b, act.op)
        else:
            self._check(b, act.tier or CheckTier.L2)
        if case is not None:
            self._at(case.deadline + 1e-6, E_CASE_TIMER, b, b.token)

    def _on_case_timer(self, b: _Board, token: int) -> None:
        if token != b.token or b.case is None:
            return
        nxt = on_time(b.case, now=self.now, policy=self._pol(b))
        if nxt is not None:
            self._advance(b, *nxt)

    def _operate(self, b: _Board, op: RemedyOp) -> None:
        self._at(self.now + self.sc.op_s[op], E_OP_END, (b, op), b.token)

    def _on_op_end(self, what: tuple[_Board, RemedyOp], token: int) -> None:
        b, op = what
        if token != b.token:
            return
        ok = not (b.fault is FaultKind.BUS_DROP and op in (RemedyOp.SOFT_RESET, RemedyOp.HARD_RESET))
        self._heal(b, op)
        if op is RemedyOp.HOST_REBOOT:
            for o in self.host_boards[b.host]:
                if o is b:
                    continue
                if o.job is not None:  # the reboot takes the host's other work down with it
                    self._end_attempt(o.job, Outcome.INFRA_ERROR)
                self._heal(o, op)
                o.l1_at = None  # rebooted: checked before it serves again
                if o.state is S.AVAILABLE and o.id in self.free and self.policy is not SimPolicy.NO_CHECKS:
                    self._l1(o)
        if b.case is None and self.policy is SimPolicy.NO_CHECKS:
            self._to(b, S.AVAILABLE, f"{op} done")  # nothing to check it with
            self._make_free(b)
            return
        if b.case is None:  # an operator's fix: an L1 check before service
            self._check(b, CheckTier.L1)
            return
        if b.case is not None:
            self._advance(b, *on_result(b.case, ok=ok, detail="" if ok else "board not on the bus", now=self.now,
                                        policy=self._pol(b)))  # fmt: skip

    def _heal(self, b: _Board, op: RemedyOp) -> None:
        if b.fault is not None and not b.permanent and op in HEALED_BY[b.fault]:
            self._clear_fault(b)

    def _clear_fault(self, b: _Board) -> None:
        if b.faulty_since is not None:
            self.faulty_in_service_s += self.now - b.faulty_since
            b.faulty_since = None
        b.fault, b.permanent, b.seen = None, False, False

    def _quarantine(self, b: _Board, reason: str) -> None:
        if b.state is S.SUSPECT:
            self._to(b, S.REMEDIATING, reason)
        self._to(b, S.QUARANTINED, reason)
        b.case = None
        self.quarantined += 1
        self._at(self.now + self.sc.faults.repair_turnaround_s, E_REPAIRED, b, b.token)

    def _lemon(self, b: _Board) -> str | None:
        since = self.now - LEMON_WINDOW_S
        b.incidents = [t for t in b.incidents if t >= since]
        incidents = [Incident(b.id, b.gen, t, None, S.SUSPECT, "fault", False) for t in b.incidents]
        return lemon_reason(incidents, now=self.now)

    def _on_repaired(self, b: _Board, token: int) -> None:
        if token != b.token:
            return
        self._clear_fault(b)
        b.lemon, b.incidents, b.streak = False, [], 0
        self._to(b, S.ONBOARDING, "repaired: burn-in before service", Actor.OPERATOR)
        if self.policy is SimPolicy.NO_CHECKS:
            self._to(b, S.AVAILABLE, "repaired")
            self._make_free(b)
        else:
            self._check(b, CheckTier.L3)

    def _on_operator(self, b: _Board, token: int) -> None:
        """Manual policy: an operator looks at a failed board and does the right thing."""
        if token != b.token:
            return
        if (b.fault is not None and b.permanent) or b.fault is FaultKind.SILENT_CORRUPTION:
            self._quarantine(b, f"operator: needs repair ({b.fault})")
            return
        op = RemedyOp.SOFT_RESET
        if b.fault is not None:
            op = min(HEALED_BY[b.fault], key=lambda o: self.sc.op_s[o])
        self._to(b, S.REMEDIATING, f"operator: {op}", Actor.OPERATOR)
        self._at(self.now + self.sc.op_s[op], E_OP_END, (b, op), b.token)

    def _on_breaker_reset(self, gen: str, _: int) -> None:
        self.tripped.discard(gen)
        for b in self.boards:
            if b.gen == gen and b.held:
                self._at(self.now, E_DETECT, b, b.token)

    # ---- faults

    def _schedule_next_fault(self, kind: int) -> None:
        fm, sc = self.sc.faults, self.sc
        if kind == E_FAULT:
            weight = len(self.normal_ids) + len(self.lemon_ids) * fm.lemon_factor
            rate = fm.board_faults_per_1000_board_days / 1000.0 / 86400.0 * weight
        elif kind == E_SDC:
            rate = fm.silent_corruption_per_1000_board_days / 1000.0 / 86400.0 * sc.boards
        elif kind == E_BLIP:
            rate = fm.blips_per_host_day / 86400.0 * len(self.host_boards)
        elif kind == E_STALL:
            rate = fm.stalls_per_day / 86400.0
        else:
            rate = fm.host_loss_per_1000_host_days / 1000.0 / 86400.0 * len(self.host_boards)
        if rate > 0:
            self._at(self.now + self.fault_rng.expovariate(rate), kind)

    def _on_fault(self, _: Any, __: int) -> None:
        fm, rng = self.sc.faults, self.fault_rng
        self._schedule_next_fault(E_FAULT)
        lemon_weight = len(self.lemon_ids) * fm.lemon_factor
        pool = (
            self.lemon_ids if rng.random() * (len(self.normal_ids) + lemon_weight) < lemon_weight else self.normal_ids
        )
        b = rng.choice(pool)
        kinds, weights = zip(*fm.mix.items(), strict=True)
        kind = rng.choices(kinds, weights)[0]
        permanent = kind is not FaultKind.CRASH and rng.random() < fm.permanent_share
        self._strike(b, kind, permanent)

    def _on_inject(self, what: tuple[_Board, FaultKind, bool], _: int) -> None:
        self._strike(*what)

    def _on_sdc(self, _: Any, __: int) -> None:
        self._schedule_next_fault(E_SDC)
        self._strike(self.fault_rng.choice(self.boards), FaultKind.SILENT_CORRUPTION, True)

    def _strike(self, b: _Board, kind: FaultKind, permanent: bool) -> None:
        if b.fault is not None or b.state in (S.QUARANTINED, S.RETIRED, S.OFFLINE) or self.host_down[b.host]:
            return
        self.fault_counts[str(kind)] += 1
        if kind is FaultKind.CRASH:  # one-shot: the job on it dies, or the next one
            if b.job is not None:
                self.detect_waits["crash"].append(0.0)
                b.crashed = True
                self._end_attempt(b.job, Outcome.INFRA_ERROR, blame=b)
            else:
                b.crash_pending = True
            return
        b.fault, b.fault_at, b.permanent, b.seen = kind, self.now, permanent, False
        if b.state in IN_SERVICE:
            b.faulty_since = self.now
        job = b.job
        if job is not None:
            if kind is FaultKind.SILENT_CORRUPTION:
                job.corrupt = True
            elif not any(self.host_down[o.host] for o in job.boards):
                self._doom(job, b)
        if self.policy is SimPolicy.NO_CHECKS or kind is FaultKind.SILENT_CORRUPTION:
            return  # seen only when a job fails, or by an L1 check
        # Probe and telemetry travel with the host's next heartbeat; the health pass sees them next.
        self._at(self._next_look(b.host, self.now), E_DETECT, b, b.token)

    def _next_look(self, host: int, t: float) -> float:
        hb, phase = self.sc.heartbeat_s, self.hb_phase[host]
        return self._health_pass_after(phase + math.ceil((t - phase) / hb + 1e-9) * hb)

    def _health_pass_after(self, t: float) -> float:
        """The first health pass of the controller's after ``t``."""
        step = self.sc.health_pass_s
        return math.ceil(t / step + 1e-9) * step

    def _log_uniform(self, lo: float, hi: float) -> float:
        """A noise duration between ``lo`` and ``hi``, log-uniform (seconds as often as minutes)."""
        return math.exp(self.fault_rng.uniform(math.log(lo), math.log(hi)))

    def _reading(self, b: _Board) -> tuple[Reading, Reading]:
        """The telemetry the board's last two heartbeats carried (what the rules judge)."""
        base = {"temperature_c": 70.0, "ecc_corrected": 1000.0, "ecc_uncorrected": 0.0, "driver_error_code": 0.0}
        prev = Reading(self.now - self.sc.heartbeat_s, base)
        cur = dict(base)
        if b.fault is FaultKind.THERMAL:
            cur["temperature_c"] = 99.0
        elif b.fault is FaultKind.ECC_STORM:
            cur["ecc_corrected"] += 250.0 * self.sc.heartbeat_s
            if b.permanent:
                cur["ecc_uncorrected"] += 5.0
        elif b.fault is FaultKind.FIRMWARE:
            cur["driver_error_code"] = 43.0
        return Reading(self.now, cur), prev

    def _on_detect(self, b: _Board, token: int) -> None:
        if token != b.token or b.fault is None or self.host_down[b.host]:
            return
        if b.state not in IN_SERVICE and not b.held:
            return  # already out for another reason
        cur, prev = self._reading(b)
        found = worst(findings(self._pol(b).rules, cur, prev))
        out = take_out_why(probe=PROBE_REASON.get(b.fault), finding=found, blamed=None)
        if out is None:
            return
        self._detected(b)
        quarantine = out.action is RuleAction.QUARANTINE and self.policy is SimPolicy.FLEETYARD
        self._take_out(b, out.reason, check_first=out.action is RuleAction.CHECK, quarantine=quarantine)

    # ---- hosts

    def _on_host_loss(self, scripted: tuple[int, float] | None, _: int) -> None:
        if scripted is None:
            self._schedule_next_fault(E_HOST_LOSS)
            h = self.fault_rng.randrange(len(self.host_boards))
            down_s = self.fault_rng.expovariate(1.0 / self.sc.faults.host_down_mean_s)
        else:
            h, down_s = scripted
        if self.host_down[h]:
            return
        self.fault_counts["host_loss"] += 1
        self.host_down[h] = True
        timeout = self.sc.liveness.lost_after_s
        down_s += timeout  # a silence shorter than the grace is a blip (E_BLIP), not a loss
        for b in self.host_boards[h]:
            if b.job is not None:
                b.job.token += 1  # nothing it does reaches the server any more
        hb, phase = self.sc.heartbeat_s, self.hb_phase[h]
        last = phase + math.floor((self.now - phase) / hb) * hb
        self.host_last_beat[h] = last
        self._at(max(self._health_pass_after(last + timeout), self.now), E_HOST_LOST, h)
        self._at(self.now + down_s, E_HOST_BACK, h)
        self.host_down_since[h] = self.now

    def _on_blip(self, scripted: tuple[int, float] | None, _: int) -> None:
        """A host silent for seconds to a minute, then back as it was. Past the unreachable
        threshold it gets no new work; past the grace it is lost, as a host that failed (and that
        counts against the policy: nothing was wrong)."""
        fm, lv = self.sc.faults, self.sc.liveness
        if scripted is None:
            self._schedule_next_fault(E_BLIP)
            h = self.fault_rng.randrange(len(self.host_boards))
            silent_s = self._log_uniform(fm.blip_min_s, fm.blip_max_s)
        else:
            h, silent_s = scripted
        if self.host_down[h] or self.host_unreachable[h]:
            return
        self.fault_counts["blip"] += 1
        if silent_s > lv.lost_after_s:
            self.blip_lost[h] = True
            self._on_host_loss((h, silent_s - lv.lost_after_s), 0)  # it adds the grace back
            return
        if silent_s > lv.unreachable_after_s:
            self._at(self.now + lv.unreachable_after_s, E_UNREACHABLE, h)
            self._at(self.now + silent_s, E_BLIP_END, h)

    def _on_unreachable(self, h: int, _: int) -> None:
        if not self.host_unreachable[h] and not self.host_down[h]:
            self.host_unreachable[h] = True
            self.unreachable_n += 1

    def _on_blip_end(self, h: int, _: int) -> None:
        if self.host_unreachable[h]:
            self.host_unreachable[h] = False
            self.unreachable_n -= 1
            self._changed = True

    def stall(self, at: float, seconds: float) -> None:
        """The control plane falls behind at ``at`` s for ``seconds`` s (a scripted scenario)."""
        self._at(at, E_STALL, seconds)

    def _on_stall(self, scripted: float | None, _: int) -> None:
        """The control plane falls behind: until it catches up no heartbeat is recorded and the
        controller collects and decides nothing (:data:`CONTROLLER_EVENTS` wait)."""
        fm = self.sc.faults
        if scripted is None:
            self._schedule_next_fault(E_STALL)
            seconds = self._log_uniform(fm.stall_min_s, fm.stall_max_s)
        else:
            seconds = scripted
        self.fault_counts["stall"] += 1
        if self.now >= self.stalled_until:
            self.stalled_since = self.now
        self.stalled_until = max(self.stalled_until, self.now + seconds)
        self._at(self.stalled_until, E_STALL_END)

    def _on_stall_end(self, _: Any, __: int) -> None:
        """Caught up: the controller judges every host by the policy, its heartbeats as the store
        has them (none recorded during the stall). A host judged lost that is not down was lost
        for the control plane's own trouble: noise taken for a fault."""
        if self.now < self.stalled_until:
            return  # a later stall goes on
        lv = self.sc.liveness
        self.watching = watching_since(
            self.watching, newest_server_seen=self.stalled_since, now=self.now, last_pass=self.stalled_since,
            liveness=lv,
        )  # fmt: skip
        views = [
            HostView(
                str(h),
                HostState.OFFLINE if self.host_lost[h] else HostState.ONLINE,
                self.host_last_beat.get(h, 0.0) if self.host_down[h] else min(self.stalled_since, self.now),
                0.0,
            )
            for h in range(len(self.host_boards))
        ]
        judged = judge_hosts(views, now=self.now, liveness=lv, watching_since=self.watching)
        for name in judged.lost:
            h = int(name)
            if self.host_down[h]:
                continue  # down indeed: its own loss comes
            self.blip_lost[h] = self.host_down[h] = True
            self.host_down_since[h] = self.stalled_since
            self._lose(h)
            self._at(self.now + self.sc.heartbeat_s, E_HOST_BACK, h)  # its next heartbeat

    def _placeable(self) -> frozenset[str]:
        """The free boards new work may go to: not those of an unreachable host."""
        if not self.unreachable_n:
            return frozenset(self.free)
        return frozenset(b for b in self.free if not self.host_unreachable[self.by_id[b].host])

    def _on_host_lost(self, h: int, _: int) -> None:
        lv = self.sc.liveness
        if self.watching > self.host_last_beat.get(h, -math.inf) and self.now - self.watching <= lv.lost_after_s:
            # The controller fell behind since the host went silent: it gets a whole grace again.
            self._at(self._health_pass_after(self.watching + lv.lost_after_s), E_HOST_LOST, h)
            return
        self._lose(h)

    def _lose(self, h: int) -> None:
        """Host ``h`` is lost: its boards go offline, its work runs elsewhere."""
        self.host_lost[h] = True
        self.detect_waits["host_loss"].append(self.now - self.host_down_since[h])
        reason = f"host lost: no heartbeat for {self.sc.liveness.lost_after_s:.0f} s"
        jobs = {b.job.id: b.job for b in self.host_boards[h] if b.job is not None}
        for job in jobs.values():
            self._end_attempt(job, Outcome.INFRA_ERROR, blame=None, requeue_at=self.now + self.sc.requeue_grace_s)
        for b in self.host_boards[h]:
            self.free.discard(b.id)
            b.in_check = False  # a case stays open: it resumes when the host is back
            if b.state in (S.QUARANTINED, S.RETIRED):
                continue
            if b.state in IN_SERVICE:
                b.incidents.append(self.now)
            b.before_offline = b.state
            self._to(b, S.OFFLINE, reason)
        self._changed = True

    def _on_host_back(self, h: int, _: int) -> None:
        self.host_down[h] = False
        self.host_lost[h] = False
        self.blip_lost[h] = False
        for b in self.host_boards[h]:
            if b.state is not S.OFFLINE:
                continue
            to, why = back_from_offline(b.before_offline, b.id, in_case=b.case is not None)
            self._to(b, to, why)
            if b.case is not None and why == HOST_BACK_RESUME:
                self._advance(b, *resume(b.case, why="its host was lost", now=self.now, policy=self._pol(b)))
                continue
            b.case = None
            if to is S.ONBOARDING and self.policy is not SimPolicy.NO_CHECKS:
                self._check(b, CheckTier.L3)  # its burn-in, from the start
            if to is not S.SUSPECT:
                continue
            if self.policy is SimPolicy.NO_CHECKS:
                self._to(b, S.AVAILABLE, "host back")
                self._make_free(b)
            else:
                pol = self._pol(b)
                self._advance(
                    b, *open_case(b.id, cause=why, now=self.now, policy=pol, check_first=True, first=CheckTier.L1)
                )

    # ---- the figures

    def _report(self) -> SimReport:
        for b in self.boards:  # close what is still open at the end
            if b.faulty_since is not None:
                self.faulty_in_service_s += self.end - b.faulty_since
                b.faulty_since = None
            if b.fault is FaultKind.SILENT_CORRUPTION and not b.seen:
                self.sdc_missed += 1
        for job in list(self.running):
            j = self.jobs[job]
            self.user_bs += j.size * (self.end - j.started)
        self._account_pass(self.end - self._last_pass)
        gang_wait = self.gang_wait_max
        for view in self.line:  # a gang still waiting has waited this long at least
            if view.boards > 1:
                gang_wait = max(gang_wait, self.end - view.submitted_at)
        plan_ms = sorted(self.plan_ms)
        gens = {b.id: b.gen for b in self.boards}
        figures = uptime(self.transitions, gens, since=0.0, until=self.end)
        counted = figures.counted_s
        served = figures.in_service_s
        dead = [w for k in ("hang", "bus_drop", "firmware") for w in self.detect_waits.get(k, [])]
        sdc = self.detect_waits.get("silent_corruption", [])
        return SimReport(
            policy=str(self.policy),
            boards=self.sc.boards,
            days=self.sc.days,
            availability=(served - self.faulty_in_service_s) / counted if counted else 0.0,
            availability_accounted=figures.availability or 0.0,
            goodput_loss=self.lost_bs / self.user_bs if self.user_bs else 0.0,
            mttd_s=sum(dead) / len(dead) if dead else None,
            mttd_by_kind_s={k: sum(v) / len(v) for k, v in sorted(self.detect_waits.items()) if v},
            mttd_sdc_max_s=max(sdc) if sdc else None,
            sdc_caught=self.sdc_caught,
            sdc_missed=self.sdc_missed,
            mttr_s=figures.mttr_s,
            mtbi_s=figures.mtbi_s,
            incidents=len(figures.incidents),
            incidents_by_cause=figures.by_cause,
            faults=dict(sorted(self.fault_counts.items())),
            quarantined=self.quarantined,
            lemons=self.lemons_found,
            breaker_trips=self.trips,
            jobs_done=self.jobs_done,
            jobs_failed=self.jobs_failed,
            jobs_corrupt=self.jobs_corrupt,
            attempts_lost=self.attempts_lost,
            check_overhead=self.check_bs / counted if counted else 0.0,
            utilization=self.user_bs / counted if counted else 0.0,
            board_hours_run=self.user_bs / 3600.0,
            preemptions=self.preemption_count,
            wasted_board_hours=self.preempted_bs / 3600.0,
            max_preemptions_per_job=max((j.preemptions for j in self.jobs.values()), default=0),
            utilisation_waiting=(
                self.busy_waiting_bs / self.in_service_waiting_bs if self.in_service_waiting_bs else None
            ),
            fairshare_error=self.fair_gap_s / self.waiting_s if self.waiting_s else None,
            gang_wait_max_s=gang_wait if any(j.size > 1 for j in self.jobs.values()) else None,
            jobs_started=self.jobs_started,
            plan_passes=len(plan_ms),
            plan_p50_ms=_quantile(plan_ms, 0.50),
            plan_p99_ms=_quantile(plan_ms, 0.99),
            blips=self.fault_counts["blip"],
            stalls=self.fault_counts["stall"],
            checks_lost=self.checks_lost,
            false_takeouts_per_1000_board_days=self.false_takeouts / (self.sc.boards * self.sc.days / 1000.0),
            false_requeues=self.false_requeues,
            unapproved_boards_served=self.unapproved_served,
        )


def _quantile(ordered: list[float], q: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def water_fill(total: float, weights: Mapping[str, float], asks: Mapping[str, float]) -> dict[str, float]:
    """``total`` shared in proportion to ``weights``, none getting more than it ``asks``, what
    one cannot use going to the others (max-min fairness): each queue's fair share of the busy
    boards."""
    fair: dict[str, float] = {}
    open_ = {q for q in asks if asks[q] > 0}
    left = total
    while open_ and left > 1e-9:
        weight = sum(weights.get(q, 0.0) for q in open_)
        if weight <= 0:
            break
        capped = {q for q in open_ if asks[q] - fair.get(q, 0.0) <= left * weights.get(q, 0.0) / weight}
        if not capped:
            for q in open_:
                fair[q] = fair.get(q, 0.0) + left * weights.get(q, 0.0) / weight
            break
        for q in capped:
            left -= asks[q] - fair.get(q, 0.0)
            fair[q] = asks[q]
        open_ -= capped
    return fair


def simulate(scenario: Scenario, policy: SimPolicy | str) -> SimReport:
    """Run ``scenario`` under ``policy``; the report's ``wall_s`` is how long it took here."""
    t0 = time.perf_counter()
    report = FleetSim(scenario, policy).run()
    report.wall_s = time.perf_counter() - t0
    return report
