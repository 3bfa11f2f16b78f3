"""What a preemption leaves between passes (policy/preemption_holds.py), over an explicit time."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import pytest

from fleetyard.domain.spec import Packing, Placement
from fleetyard.policy.placement import BoardView, Constraints, Shape
from fleetyard.policy.preemption_holds import PreemptionHolds, RunningAttempt
from fleetyard.policy.queues import QueueSpec
from fleetyard.policy.scheduling import PendingJob, RunningJob, Snapshot, plan
from fleetyard.policy.snapshot import Plan


def counts(table: Mapping[int, int]) -> Callable[[Sequence[int]], dict[int, int]]:
    def preempted_before(jobs: Sequence[int]) -> dict[int, int]:
        return {j: table[j] for j in jobs if j in table}

    return preempted_before


def test_a_victims_boards_are_held_for_the_preemptor_once_it_stops_until_it_binds() -> None:
    holds = PreemptionHolds(protect_s=600.0, hold_s=300.0)
    stopping = RunningAttempt(1, job_id=10, boards=("b0", "b1"), started_at=0.0, preempted_for=20)
    holds.observe(100.0, [stopping], waiting={20}, preempted_before=counts({}))
    assert holds.held_for() == {}  # still running: nothing to hold yet
    holds.observe(110.0, [], waiting={20}, preempted_before=counts({}))
    assert holds.held_for() == {"b0": 20, "b1": 20}
    holds.observe(120.0, [], waiting=set(), preempted_before=counts({}))  # it bound (or left the line)
    assert holds.held_for() == {}


def test_a_hold_lapses_after_hold_s() -> None:
    holds = PreemptionHolds(hold_s=300.0)
    holds.keep(Plan(kept={"b0": 20}), now=0.0)
    holds.observe(299.0, [], waiting={20}, preempted_before=counts({}))
    assert holds.held_for() == {"b0": 20}
    holds.observe(301.0, [], waiting={20}, preempted_before=counts({}))
    assert holds.held_for() == {}


def test_a_job_that_searched_in_vain_searches_again_after_retry_s_while_it_waits() -> None:
    holds = PreemptionHolds(retry_s=120.0)
    holds.keep(Plan(searched_in_vain=[16, 20, 21]), now=0.0)
    # Spread by id, half to one and a half retry_s: those that failed together come back apart.
    assert holds.search_after() == {16: 60.0, 20: 120.0, 21: 135.0}
    holds.observe(60.0, [], waiting={20}, preempted_before=counts({}))  # 16 and 21 bound (or left)
    assert holds.search_after() == {20: 120.0}
    holds.observe(120.0, [], waiting={20}, preempted_before=counts({}))
    assert holds.search_after() == {}


def test_a_plan_skips_the_search_of_a_job_that_found_no_victims_lately() -> None:
    """Queue b borrows both boards; a (nominal 1) waits with a 1-board job that may throw away
    at most 60 board-seconds, behind b's jobs 10 minutes in: its search finds none. Told so, the
    next pass does not search; once it may again and a victim started lately, it preempts."""
    boards = [BoardView(f"h0-{s}", "h0", "g1", slot=s) for s in range(2)]
    queues = {"a": QueueSpec("a", {"g1": 1}, cohort="c"), "b": QueueSpec("b", {"g1": 1}, cohort="c")}
    waiting = replace(
        PendingJob(1, "a", 1, Shape(Constraints(), Placement.ANY, True, Packing.PACK), 0, 0, 0.0, 600.0),
        max_lost_s=60.0,
    )

    def plan_at(now: float, started: float, search_after: dict[int, float]) -> Plan:
        running = [RunningJob(10 + s, "b", (f"h0-{s}",), started_at=started) for s in range(2)]
        return plan(Snapshot(now, boards, frozenset(), [waiting], running, queues, search_after=search_after))

    first = plan_at(600.0, 0.0, {})
    assert first.preemptions == [] and first.searched_in_vain == [1]
    holds = PreemptionHolds(retry_s=120.0)
    holds.keep(first, now=600.0)
    assert holds.search_after() == {1: 675.0}  # job 1: 0.625 x 120 s
    # Now a victim would do (a job of b started 30 s ago), but the job does not look until 675.
    assert plan_at(630.0, 600.0, holds.search_after()).preemptions == []
    assert [p.victim for p in plan_at(675.0, 660.0, holds.search_after()).preemptions] == [10]


def test_a_job_preempted_before_is_protected_then_after_max_preemptions_never_preempted() -> None:
    holds = PreemptionHolds(protect_s=600.0, max_preemptions=2)
    fresh = RunningAttempt(1, job_id=10, boards=("b0",), started_at=50.0)
    once = RunningAttempt(2, job_id=11, boards=("b1",), started_at=50.0)
    twice = RunningAttempt(3, job_id=12, boards=("b2",), started_at=50.0)
    holds.observe(60.0, [fresh, once, twice], waiting=set(), preempted_before=counts({11: 1, 12: 2}))
    assert holds.protected_until(1) == 0.0
    assert holds.protected_until(2) == 650.0
    assert holds.protected_until(3) == math.inf
    holds.observe(70.0, [fresh], waiting=set(), preempted_before=counts({}))  # the others ended
    assert holds.protected_until(2) == 0.0


def test_the_store_is_asked_about_each_attempt_once() -> None:
    asked: list[list[int]] = []

    def preempted_before(jobs: Sequence[int]) -> dict[int, int]:
        asked.append(list(jobs))
        return {}

    holds = PreemptionHolds()
    a = RunningAttempt(1, job_id=10, boards=("b0",), started_at=0.0)
    b = RunningAttempt(2, job_id=11, boards=("b1",), started_at=5.0)
    holds.observe(1.0, [a], waiting=set(), preempted_before=preempted_before)
    holds.observe(6.0, [a, b], waiting=set(), preempted_before=preempted_before)
    holds.observe(7.0, [a, b], waiting=set(), preempted_before=preempted_before)
    assert asked == [[10], [11]]


@pytest.mark.parametrize("kw", [{"protect_s": -1.0}, {"hold_s": -1.0}, {"max_preemptions": 0}])
def test_nonsense_settings_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PreemptionHolds(**kw)  # type: ignore[arg-type]
