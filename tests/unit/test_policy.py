"""The pure policy: liveness, outcomes, the board lifecycle (scheduling: test_scheduler_policy.py)."""

from __future__ import annotations

import pytest

from fleetyard.domain.board import BoardState, can_transition, check_transition
from fleetyard.domain.job import JobState, Outcome, attempt_outcome
from fleetyard.errors import Conflict
from fleetyard.policy.liveness import HostView, lost_hosts, watching_since
from fleetyard.policy.outcomes import board_after_rank, job_after_attempt


def hv(id: str, last: float | None, online: bool = True) -> HostView:
    return HostView(id, online, last, 0.0)


def test_lost_hosts_waits_a_full_timeout_after_start() -> None:
    hosts = [hv("a", 0.0), hv("b", 100.0)]
    assert lost_hosts(hosts, now=100.0, timeout_s=10, watching_since=95.0) == []
    assert lost_hosts(hosts, now=106.0, timeout_s=10, watching_since=95.0) == ["a"]


def test_lost_hosts_brake_on_mass_silence() -> None:
    hosts = [hv(f"h{i}", 0.0) for i in range(5)] + [hv("ok", 100.0)]
    assert lost_hosts(hosts, now=100.0, timeout_s=10, watching_since=0.0) == []
    hosts = [hv(f"h{i}", 0.0) for i in range(2)] + [hv(f"ok{i}", 100.0) for i in range(3)]
    assert lost_hosts(hosts, now=100.0, timeout_s=10, watching_since=0.0) == ["h0", "h1"]
    assert lost_hosts([hv("off", 0.0, online=False)], now=100.0, timeout_s=10, watching_since=0.0) == []


@pytest.mark.parametrize(
    ("outcome", "retries", "cap", "state"),
    [
        (Outcome.SUCCESS, 0, 3, JobState.SUCCEEDED),
        (Outcome.USER_ERROR, 0, 3, JobState.FAILED),
        (Outcome.INFRA_ERROR, 2, 3, JobState.QUEUED),
        (Outcome.INFRA_ERROR, 3, 3, JobState.FAILED),
        (Outcome.TIMEOUT, 0, 3, JobState.FAILED),
        (Outcome.PREEMPTED, 9, 3, JobState.QUEUED),
        (Outcome.CANCELED, 0, 3, JobState.CANCELED),
    ],
)
def test_job_after_attempt(outcome: Outcome, retries: int, cap: int, state: JobState) -> None:
    assert job_after_attempt(outcome, infra_retries=retries, max_infra_retries=cap).state is state


def test_board_after_rank() -> None:
    assert board_after_rank(Outcome.SUCCESS, board_ok=True, drain_requested=False)[0] is BoardState.AVAILABLE
    assert board_after_rank(Outcome.USER_ERROR, board_ok=True, drain_requested=True)[0] is BoardState.DRAINED
    assert board_after_rank(Outcome.INFRA_ERROR, board_ok=True, drain_requested=False)[0] is BoardState.SUSPECT
    assert board_after_rank(Outcome.TIMEOUT, board_ok=False, drain_requested=False)[0] is BoardState.SUSPECT


def test_attempt_outcome_precedence() -> None:
    assert attempt_outcome([Outcome.SUCCESS, Outcome.CANCELED, Outcome.USER_ERROR]) is Outcome.USER_ERROR
    assert attempt_outcome([Outcome.USER_ERROR, Outcome.INFRA_ERROR]) is Outcome.INFRA_ERROR
    assert attempt_outcome([Outcome.SUCCESS, Outcome.SUCCESS]) is Outcome.SUCCESS


def test_lifecycle_allow_list() -> None:
    assert can_transition(BoardState.AVAILABLE, BoardState.ALLOCATED)
    assert can_transition(BoardState.ALLOCATED, BoardState.OFFLINE)
    assert can_transition(BoardState.OFFLINE, BoardState.SUSPECT)
    assert not can_transition(BoardState.OFFLINE, BoardState.AVAILABLE)  # a check comes first
    assert not can_transition(BoardState.RETIRED, BoardState.AVAILABLE)
    with pytest.raises(Conflict, match="cannot go from quarantined to allocated"):
        check_transition(BoardState.QUARANTINED, BoardState.ALLOCATED, board_id="b")


def test_silence_while_no_server_listens_proves_nothing() -> None:
    # Servers alive: the watch goes on.
    assert watching_since(5.0, newest_server_seen=99.0, now=100.0, timeout_s=10) == 5.0
    # No server for more than half a timeout: the watch restarts now.
    assert watching_since(5.0, newest_server_seen=90.0, now=100.0, timeout_s=10) == 100.0
    assert watching_since(5.0, newest_server_seen=None, now=100.0, timeout_s=10) == 100.0
