"""The pure policy: liveness, outcomes, the board lifecycle (scheduling: test_scheduler_policy.py)."""

from __future__ import annotations

import pytest

from fleetyard.domain.board import BoardState, can_transition, check_transition
from fleetyard.domain.host import HostState
from fleetyard.domain.job import Cause, JobState, Outcome, attempt_outcome
from fleetyard.errors import Conflict
from fleetyard.policy.liveness import (
    HOST_BACK_CHECK,
    HostBrake,
    HostView,
    Liveness,
    back_from_offline,
    judge_hosts,
    watching_since,
)
from fleetyard.policy.outcomes import board_after_rank, check_verdict, job_after_attempt, stopped


def hv(id: str, last: float | None, state: HostState = HostState.ONLINE) -> HostView:
    return HostView(id, state, last, 0.0)


LV = Liveness(unreachable_after_s=5.0, lost_after_s=10.0)


def lost(hosts: list[HostView], now: float, watching_since: float = 0.0) -> list[str]:
    return judge_hosts(hosts, now=now, liveness=LV, watching_since=watching_since).lost


def test_silence_makes_a_host_unreachable_first_and_lost_only_after_the_grace() -> None:
    hosts = [hv("a", 94.0), hv("b", 89.0), hv("c", 100.0), hv("u", 99.0, HostState.UNREACHABLE)]
    judged = judge_hosts(hosts, now=100.0, liveness=LV, watching_since=0.0)
    assert judged.unreachable == ["a", "b"]  # silent 6 and 11 s: past 5 s
    assert judged.lost == ["b"]  # past 10 s
    assert judged.reachable == ["u"]  # heard from 1 s ago
    # An unreachable host is not marked again; an offline one is not judged at all.
    judged = judge_hosts(
        [hv("a", 94.0, HostState.UNREACHABLE), hv("o", 0.0, HostState.OFFLINE)],
        now=100.0,
        liveness=LV,
        watching_since=0,
    )
    assert judged == type(judged)([], [], [])


def test_silence_counts_only_while_the_controller_watched() -> None:
    hosts = [hv("a", 0.0), hv("b", 100.0)]
    assert lost(hosts, now=100.0, watching_since=95.0) == []
    assert judge_hosts(hosts, now=100.0, liveness=LV, watching_since=95.0).unreachable == []
    assert lost(hosts, now=106.0, watching_since=95.0) == ["a"]


def test_lost_hosts_brake_on_mass_silence() -> None:
    hosts = [hv(f"h{i}", 0.0) for i in range(5)] + [hv("ok", 100.0)]
    assert lost(hosts, now=100.0) == []
    # Still shown unreachable: they get no new work.
    assert judge_hosts(hosts, now=100.0, liveness=LV, watching_since=0.0).unreachable == [f"h{i}" for i in range(5)]
    hosts = [hv(f"h{i}", 0.0) for i in range(2)] + [hv(f"ok{i}", 100.0) for i in range(3)]
    assert lost(hosts, now=100.0) == ["h0", "h1"]


def test_many_hosts_silent_together_are_the_control_planes_trouble_and_none_is_lost() -> None:
    # 20 hosts: more than 10 % (2) silent within a minute of each other trips the brake.
    fine = [hv(f"ok{i}", 100.0) for i in range(17)]
    together = [hv("a", 10.0), hv("b", 40.0), hv("c", 69.0)]
    judged = judge_hosts(fine + together, now=100.0, liveness=LV, watching_since=0.0)
    assert judged.lost == [] and judged.unreachable == ["a", "b", "c"]  # no new work for them, nothing else
    assert judged.would_lose == ("a", "b", "c") and judged.trouble_since == 10.0
    assert judged.trouble is not None and judged.trouble.startswith("3 of 20 hosts went silent within 60 s")
    # The same three, their silences spread over more than the window: each host's own; lost.
    apart = [hv("a", 10.0), hv("b", 75.0), hv("c", 89.0)]
    judged = judge_hosts(fine + apart, now=100.0, liveness=LV, watching_since=0.0)
    assert judged.trouble is None and judged.lost == ["a", "b", "c"]
    # Two at once is within the limit (2 of 20).
    two = judge_hosts([*fine, hv("y", 100.0), *together[:2]], now=100.0, liveness=LV, watching_since=0.0)
    assert two.trouble is None and two.lost == ["a", "b"]
    # An operator who reset the control-plane breaker after the trouble began overrides it.
    judged = judge_hosts(fine + together, now=100.0, liveness=LV, watching_since=0.0, overridden_at=50.0)
    assert judged.trouble is None and judged.lost == ["a", "b", "c"]
    judged = judge_hosts(fine + together, now=100.0, liveness=LV, watching_since=0.0, overridden_at=5.0)
    assert judged.lost == []  # a reset from before this trouble began does not


def test_silences_are_together_by_when_hosts_were_last_heard_not_by_a_controllers_restart() -> None:
    fine = [hv(f"ok{i}", 300.0) for i in range(17)]
    # Three hosts died minutes apart; the controller restarted at 280 and watched since.
    apart = [hv("a", 10.0), hv("b", 100.0), hv("c", 200.0)]
    judged = judge_hosts(fine + apart, now=300.0, liveness=LV, watching_since=280.0)
    assert judged.trouble is None and judged.lost == ["a", "b", "c"]
    # Three that fell silent within a minute of each other brake, restart or not.
    together = [hv("a", 150.0), hv("b", 170.0), hv("c", 200.0)]
    judged = judge_hosts(fine + together, now=300.0, liveness=LV, watching_since=280.0)
    assert judged.lost == [] and judged.trouble_since == 150.0


def test_the_host_brake_is_a_share_of_a_larger_fleet_and_half_of_a_small_one() -> None:
    brake = HostBrake()
    assert [brake.limit(n) for n in (2, 3, 4, 9, 10, 19, 20, 100)] == [None, None, 2, 4, 1, 1, 2, 10]
    with pytest.raises(ValueError, match="share"):
        HostBrake(share=1.5)


def test_liveness_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="no sooner than it is unreachable"):
        Liveness(unreachable_after_s=30.0, lost_after_s=10.0)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (BoardState.DISCOVERED, BoardState.DISCOVERED),
        (BoardState.ONBOARDING, BoardState.ONBOARDING),
        (BoardState.DRAINED, BoardState.DRAINED),
        (BoardState.AVAILABLE, BoardState.SUSPECT),
        (BoardState.ALLOCATED, BoardState.SUSPECT),
        (BoardState.REMEDIATING, BoardState.SUSPECT),
        (None, BoardState.SUSPECT),
    ],
)
def test_a_board_back_from_offline_resumes_where_it_was(before: BoardState | None, after: BoardState) -> None:
    to, why = back_from_offline(before, "SG1-1")
    assert to is after and can_transition(BoardState.OFFLINE, to)
    if after is BoardState.SUSPECT:
        assert why == HOST_BACK_CHECK
    if before is BoardState.DISCOVERED:
        assert "fleetyard boards approve SG1-1" in why


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
    # What the probe found is the cause healing and the operator see, whichever path noticed it first.
    to, why = board_after_rank(Outcome.SUCCESS, board_ok=False, drain_requested=False, probe_reason="fell off the bus")
    assert to is BoardState.SUSPECT and why == "failed its probe after a job: fell off the bus"


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


def test_silence_while_no_server_listens_or_the_controller_lags_proves_nothing() -> None:
    # Servers alive, passes on time: the watch goes on.
    assert watching_since(5.0, newest_server_seen=99.0, now=100.0, last_pass=99.0, liveness=LV) == 5.0
    assert watching_since(5.0, newest_server_seen=99.0, now=100.0, last_pass=None, liveness=LV) == 5.0
    # No server for more than half the unreachable threshold: the watch restarts now.
    assert watching_since(5.0, newest_server_seen=97.0, now=100.0, last_pass=99.0, liveness=LV) == 100.0
    assert watching_since(5.0, newest_server_seen=None, now=100.0, last_pass=99.0, liveness=LV) == 100.0
    # The controller's previous pass was late (it fell behind): the watch restarts too.
    assert LV.late_pass_s == 3.0
    assert watching_since(5.0, newest_server_seen=99.0, now=100.0, last_pass=96.0, liveness=LV) == 100.0


@pytest.mark.parametrize(
    ("outcome", "cause", "verdict"),
    [
        (Outcome.SUCCESS, Cause.WORKLOAD, True),
        (Outcome.INFRA_ERROR, Cause.WORKLOAD, False),  # the golden model's outputs were wrong
        (Outcome.INFRA_ERROR, Cause.BOARD_FAULT, False),  # off the bus, its worker crashed
        (Outcome.TIMEOUT, Cause.TIMEOUT, False),  # a hung board
        (Outcome.INFRA_ERROR, Cause.HOST_LOST, None),  # it could not run: no verdict, run it again
        (Outcome.PREEMPTED, Cause.AGENT_STOPPED, None),
        (Outcome.INFRA_ERROR, Cause.AGENT_ERROR, None),
        (Outcome.INFRA_ERROR, Cause.BOARD_GONE, None),
        (Outcome.CANCELED, Cause.CANCELED, None),
        (Outcome.INFRA_ERROR, None, False),  # a rank from before causes: by its outcome, as then
        (Outcome.CANCELED, None, None),
    ],
)
def test_what_a_checks_rank_says_of_its_board(outcome: Outcome, cause: Cause | None, verdict: bool | None) -> None:
    assert check_verdict(outcome, cause) is verdict


def test_a_stopped_rank_takes_the_class_of_why_it_was_stopped() -> None:
    assert stopped(Cause.TIMEOUT, "", time_limit_s=30) == (Outcome.TIMEOUT, "over its time limit of 30 s")
    assert stopped(Cause.CANCELED, "", time_limit_s=30) == (Outcome.CANCELED, "canceled")
    assert stopped(Cause.AGENT_STOPPED, "", time_limit_s=30) == (Outcome.PREEMPTED, "the agent stopped")
    assert stopped(Cause.BOARD_FAULT, "the board fell off the bus", time_limit_s=30) == (
        Outcome.INFRA_ERROR, "the board fell off the bus",
    )  # fmt: skip


def test_an_infra_error_that_says_nothing_of_the_board_leaves_it_in_service() -> None:
    for cause in (Cause.AGENT_ERROR, Cause.BOARD_GONE, Cause.HOST_LOST):
        to, _ = board_after_rank(Outcome.INFRA_ERROR, board_ok=True, drain_requested=False, cause=cause)
        assert to is BoardState.AVAILABLE, cause
    to, _ = board_after_rank(Outcome.INFRA_ERROR, board_ok=True, drain_requested=False, cause=Cause.BOARD_FAULT)
    assert to is BoardState.SUSPECT
    # Its probe still speaks: a failed probe takes it out whatever ended the rank.
    to, _ = board_after_rank(Outcome.INFRA_ERROR, board_ok=False, drain_requested=False, cause=Cause.AGENT_ERROR)
    assert to is BoardState.SUSPECT
