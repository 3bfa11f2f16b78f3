"""The pure policy: scheduling order and placement, liveness, outcomes."""

from __future__ import annotations

import pytest

from fleetyard.domain.board import BoardState, can_transition, check_transition
from fleetyard.domain.job import JobState, Outcome, attempt_outcome
from fleetyard.domain.spec import Placement
from fleetyard.errors import Conflict
from fleetyard.policy.liveness import HostView, SuspectView, lost_hosts, suspects_to_release, watching_since
from fleetyard.policy.outcomes import board_after_rank, job_after_attempt
from fleetyard.policy.scheduling import FleetBoard, FreeBoard, PendingJob, schedule, why_unschedulable


def job(
    id: int, boards: int = 1, prio: int = 0, at: float = 0.0, gens: tuple[str, ...] = (), **kw: object
) -> PendingJob:
    return PendingJob(
        id=id,
        priority=prio,
        submitted_at=at,
        boards=boards,
        generations=frozenset(gens),
        labels=kw.get("labels", {}),  # type: ignore[arg-type]
        placement=kw.get("placement", Placement.ANY),  # type: ignore[arg-type]
        board_ids=frozenset(kw.get("board_ids", ())),  # type: ignore[arg-type]
    )


def board(host: str, slot: int, gen: str = "g1", **labels: str) -> FreeBoard:
    return FreeBoard(f"{host}-{slot}", host, slot, gen, labels)


def test_priority_then_fifo() -> None:
    boards = [board("a", 0)]
    assert schedule([job(1, at=1), job(2, at=0)], boards)[0].job_id == 2
    assert schedule([job(1, at=0), job(2, prio=5, at=9)], boards)[0].job_id == 2


def test_a_big_job_that_does_not_fit_does_not_block_small_ones() -> None:
    boards = [board("a", i) for i in range(2)]
    got = schedule([job(1, boards=4), job(2, boards=1)], boards)
    assert [b.job_id for b in got] == [2]


def test_same_host_best_fit_keeps_big_holes() -> None:
    boards = [board("a", i) for i in range(4)] + [board("b", i) for i in range(2)]
    [b] = schedule([job(1, boards=2, placement=Placement.SAME_HOST)], boards)
    assert b.board_ids == ("b-0", "b-1")


def test_anywhere_gang_spans_hosts_and_ranks_follow_hosts() -> None:
    boards = [board("a", 0), board("b", 0), board("b", 1)]
    [b] = schedule([job(1, boards=3)], boards)
    assert b.board_ids == ("b-0", "b-1", "a-0")


def test_constraints() -> None:
    boards = [board("a", 0, "g1"), board("b", 0, "g2", pool="ci")]
    assert schedule([job(1, gens=("g2",))], boards)[0].board_ids == ("b-0",)
    assert schedule([job(1, labels={"pool": "ci"})], boards)[0].board_ids == ("b-0",)
    assert schedule([job(1, gens=("g3",))], boards) == []


def test_why_unschedulable() -> None:
    fleet = [FleetBoard("a-0", "a", "g1"), FleetBoard("b-0", "b", "g1")]
    assert why_unschedulable(job(1, boards=2), fleet) is None
    assert "unknown generation g7" in (why_unschedulable(job(1, gens=("g7",)), fleet) or "")
    assert "only 2" in (why_unschedulable(job(1, boards=3), fleet) or "")
    assert "on one host" in (why_unschedulable(job(1, boards=2, placement=Placement.SAME_HOST), fleet) or "")
    # One known generation among the asked ones is enough.
    assert why_unschedulable(job(1, gens=("g1", "g7")), fleet) is None


def test_named_boards_only() -> None:
    boards = [board("a", 0), board("a", 1), board("b", 0)]
    assert schedule([job(1, board_ids=("a-1",))], boards)[0].board_ids == ("a-1",)
    assert schedule([job(1, boards=2, board_ids=("a-0", "b-0", "zz"))], boards)[0].board_ids == ("a-0", "b-0")
    # A named board that is busy now leaves the job waiting, not placed elsewhere.
    assert schedule([job(1, board_ids=("a-1",))], [board("a", 0)]) == []
    fleet = [FleetBoard("a-0", "a", "g1"), FleetBoard("b-0", "b", "g1", {"pool": "ci"})]
    assert why_unschedulable(job(1, board_ids=("a-0",)), fleet) is None
    assert "board(s) zz not in the fleet" in (why_unschedulable(job(1, board_ids=("zz",)), fleet) or "")
    # Two named, one unknown, one board wanted: the known one will do.
    assert why_unschedulable(job(1, board_ids=("a-0", "zz")), fleet) is None
    reason = why_unschedulable(job(1, board_ids=("a-0",), labels={"pool": "ci"}), fleet) or ""
    assert "board in {a-0}" in reason and "only 0 such boards" in reason


def test_job_spec_board_ids() -> None:
    from pydantic import ValidationError

    from fleetyard.domain.spec import JobSpec

    assert JobSpec(board_ids=["b", "a", "b"]).board_ids == ["a", "b"]
    with pytest.raises(ValidationError, match="asks for 2 boards but board_ids names only 1"):
        JobSpec(boards=2, board_ids=["a"])


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


def test_suspects_need_a_fresh_passing_probe() -> None:
    views = [
        SuspectView("fresh", True, 10.0, True, 13.0),
        SuspectView("stale", True, 10.0, True, 11.0),
        SuspectView("failing", True, 10.0, False, 13.0),
        SuspectView("host-down", False, 10.0, True, 13.0),
    ]
    assert suspects_to_release(views, now=14.0, cooldown_s=2.0) == ["fresh"]


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
