"""A backfill reservation (:func:`fleetyard.policy.backfill.reserve`) against the plain rule it
implements, on random fleets: free boards now, then the boards of running jobs in order of their
expected end, given to a fresh pool one job at a time, until the job fits. The policy counts most
of those boards without moving the pool's books (only hosts, or racks, a gang could fill); the
answer must be the same."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.long import bounded
from tests.property.test_scheduler_props import GENS, fleets, shapes

from fleetyard.domain.spec import Packing, Placement
from fleetyard.policy.backfill import reserve
from fleetyard.policy.placement import BoardView, Constraints, Pool, Shape
from fleetyard.policy.scheduling import PendingJob, Reservation, RunningJob, Snapshot

PROPS = settings(max_examples=bounded(1000, 60), deadline=None, derandomize=True)
pytestmark = pytest.mark.long


def by_the_rule(
    boards: list[BoardView],
    free: frozenset[str],
    running: list[RunningJob],
    job: PendingJob,
    caps: dict[str, int] | None,
    now: float,
) -> Reservation | None:
    pool = Pool(boards, free)
    got = pool.pick(job.shape, job.boards, caps=caps)
    if got is not None:
        return Reservation(job.id, got, now)
    for r in sorted((r for r in running if r.preempted_for is None), key=lambda r: (r.expected_end, r.id)):
        if r.expected_end == math.inf:
            return None  # a job with no end frees nothing to wait for
        pool.give([b for b in r.boards if job.shape.constraints.admits(pool.boards[b])])
        got = pool.pick(job.shape, job.boards, caps=caps)
        if got is not None:
            return Reservation(job.id, got, max(r.expected_end, now))
    return None


@st.composite
def cases(
    draw: st.DrawFn,
) -> tuple[list[BoardView], frozenset[str], list[RunningJob], PendingJob, dict[str, int] | None]:
    boards = draw(fleets())
    ids = [b.id for b in boards]
    busy = draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids)))
    running, i = [], 0
    while i < len(busy):
        n = draw(st.integers(1, 4))
        end = draw(st.one_of(st.sampled_from([math.inf]), st.floats(0.0, 500.0)))
        running.append(RunningJob(100 + i, "q", tuple(busy[i : i + n]), expected_end=end))
        i += n
    # Mostly a gang that must be on one host or rack, of a size that fits there someday; some
    # with the scheduler's other constraints, some capped by a queue's quota.
    shape = draw(
        st.one_of(
            st.builds(
                Shape,
                st.builds(Constraints, generations=st.frozensets(st.sampled_from(GENS), max_size=2)),
                st.sampled_from(list(Placement)),
                st.just(True),
                st.sampled_from(list(Packing)),
            ),
            shapes(ids),
        )
    )
    k = draw(st.one_of(st.integers(1, 8), st.integers(1, max(1, len(ids)))))
    caps = draw(st.one_of(st.none(), st.none(), st.fixed_dictionaries({g: st.integers(0, 8) for g in GENS})))
    job = PendingJob(1, "q", k, shape, 0, 0, 0.0, 600.0)
    return boards, frozenset(set(ids) - set(busy)), running, job, caps


@PROPS
@given(cases())
def test_a_reservation_is_where_and_when_the_rule_says(case: tuple) -> None:  # type: ignore[type-arg]
    boards, free, running, job, caps = case
    snap = Snapshot(now=10.0, boards=boards, free=free, pending=[job], running=running)
    pool = Pool(boards, free)
    got = reserve(snap, pool, job, caps)
    assert got == by_the_rule(boards, free, running, job, caps, 10.0)
    assert pool.free == set(free)  # every board counted was taken back
