"""What a preemption leaves between passes (policy/preemption_holds.py), over an explicit time."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import pytest

from fleetyard.policy.preemption_holds import PreemptionHolds, RunningAttempt


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
    holds.keep({"b0": 20}, now=0.0)
    holds.observe(299.0, [], waiting={20}, preempted_before=counts({}))
    assert holds.held_for() == {"b0": 20}
    holds.observe(301.0, [], waiting={20}, preempted_before=counts({}))
    assert holds.held_for() == {}


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
