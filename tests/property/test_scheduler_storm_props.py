"""Properties of the scheduler over random multi-team days: pass after pass of plan(), applied as
the controller applies it (bindings run, victims stop at the next pass and their boards are kept
for the job they stopped for, jobs end at their expected end, new jobs come).

Each pass: no queue is reclaimed from below its nominal quota (one-board jobs: a victim frees
exactly one board; counting what the queue binds in the same pass), no victim is of another
cohort, a board kept for a job goes to no other job, and no job is preempted while protected
(preempted before, started again lately)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from tests.long import bounded
from tests.unit.test_scheduler_policy import fleet, job

from fleetyard.policy.queues import QueueSpec
from fleetyard.policy.scheduling import PendingJob, RunningJob, Snapshot, plan

pytestmark = pytest.mark.long

PROTECT_S = 50.0
STEP_S = 10.0


@dataclass
class Day:
    queues: dict[str, QueueSpec]
    boards: int
    pending: dict[int, PendingJob] = field(default_factory=dict)
    running: dict[int, RunningJob] = field(default_factory=dict)
    held_for: dict[str, int] = field(default_factory=dict)
    preempted_at: dict[int, list[float]] = field(default_factory=dict)
    durations: dict[int, float] = field(default_factory=dict)


@st.composite
def days(draw: st.DrawFn) -> tuple[Day, list[list[tuple[str, int, int, float]]]]:
    boards = draw(st.integers(2, 8))
    names = ["a", "b", "c", "d"][: draw(st.integers(2, 4))]
    cohorts = {q: draw(st.sampled_from(["X", "Y"])) for q in names}
    nominal = {q: draw(st.integers(0, boards)) for q in names}
    queues = {q: QueueSpec(q, {"g1": nominal[q]}, cohort=cohorts[q]) for q in names}
    # Bursts: a team sends several jobs at once (a CI run), which is when queues borrow and reclaim.
    burst = st.tuples(
        st.sampled_from(names), st.integers(1, 4), st.sampled_from([0, 100, 1000]), st.integers(0, 3),
        st.sampled_from([15.0, 60.0, 300.0]),
    )  # fmt: skip
    steps = draw(st.lists(st.lists(burst, max_size=3), min_size=3, max_size=12))
    arrivals = [[(q, prio, rank, d) for q, n, prio, rank, d in step for _ in range(n)] for step in steps]
    return Day(queues, boards), arrivals


# Defect A of issue 18 as a day: b fills the fleet, a comes for its nominal half.
_A = {"a": QueueSpec("a", {"g1": 2}, cohort="X"), "b": QueueSpec("b", {"g1": 2}, cohort="X")}
DEFECT_A = (Day(_A, 4), [[("b", 0, 0, 300.0)] * 4, [("a", 0, 0, 300.0)] * 4, [], []])


@settings(max_examples=bounded(1000, 100), deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(days())
@example(DEFECT_A)
def test_no_pass_over_reclaims_crosses_cohorts_gives_away_kept_boards_or_hits_a_protected_job(
    case: tuple[Day, list[list[tuple[str, int, int, float]]]],
) -> None:
    day, steps = case
    note(f"{day.boards} boards, queues {day.queues}, arrivals {steps}")
    boards = fleet(day.boards, 1)
    next_id = 1
    for i, arrivals in enumerate(steps):
        now = i * STEP_S
        # Ends: jobs past their expected end; victims told to stop last pass stop now.
        for r in list(day.running.values()):
            if r.expected_end <= now:
                del day.running[r.id]
            elif r.preempted_for is not None:
                del day.running[r.id]
                for b in r.boards:
                    day.held_for[b] = r.preempted_for
                day.pending[r.id] = job(r.id, queue=r.queue, prio=r.priority, at=r.started_at)
        day.held_for = {b: j for b, j in day.held_for.items() if j in day.pending}
        for queue, prio, rank, duration in arrivals:
            day.pending[next_id] = job(next_id, queue=queue, prio=prio, rank=rank, at=now)
            day.durations[next_id] = duration
            next_id += 1
        busy = {b for r in day.running.values() for b in r.boards}
        snap = Snapshot(
            now=now,
            boards=boards,
            free=frozenset(b.id for b in boards if b.id not in busy),
            pending=list(day.pending.values()),
            running=list(day.running.values()),
            queues=day.queues,
            held_for=dict(day.held_for),
        )
        p = plan(snap)

        used = Counter(r.queue for r in day.running.values())
        lost: Counter[str] = Counter()
        for x in p.preemptions:
            victim, preemptor = day.running[x.victim], day.pending[x.for_job]
            assert victim.protected_until <= now, f"job {victim.id} preempted while protected"
            if victim.queue != preemptor.queue:
                assert day.queues[victim.queue].cohort == day.queues[preemptor.queue].cohort, x
                lost[victim.queue] += 1
        gained = Counter(day.pending[b.job_id].queue for b in p.bindings)
        for q, n in lost.items():
            # What the queue holds once its victims stop and this pass's bindings run.
            assert used[q] - n + gained[q] >= day.queues[q].nominal_of("g1"), (q, used[q], n, gained[q], p.preemptions)
        for b in p.bindings:
            for board in b.board_ids:
                owner = day.held_for.get(board)
                assert owner is None or owner == b.job_id, (board, owner, b.job_id)

        # Apply the plan as the controller does.
        for x in p.preemptions:
            day.running[x.victim] = replace(day.running[x.victim], preempted_for=x.for_job)
            day.preempted_at.setdefault(x.victim, []).append(now)
        for b in p.bindings:
            pj = day.pending.pop(b.job_id)
            protected = now + PROTECT_S if b.job_id in day.preempted_at else 0.0
            day.running[b.job_id] = RunningJob(
                b.job_id, pj.queue, b.board_ids, pj.priority, pj.rank, started_at=now,
                expected_end=now + day.durations.get(b.job_id, 60.0), protected_until=protected,
            )  # fmt: skip
            day.held_for = {k: v for k, v in day.held_for.items() if v != b.job_id}
