"""The five defects that turned a multi-team day into a preemption storm (issue 18), each on a
hand-built snapshot against the real plan()."""

from __future__ import annotations

import dataclasses

from tests.unit.test_scheduler_policy import bound, fleet, job, snap

from fleetyard.domain.spec import Placement
from fleetyard.policy.placement import BoardView
from fleetyard.policy.preemption import lost_budget
from fleetyard.policy.queues import BATCH_MAX_LOST_S, QueueSpec
from fleetyard.policy.scheduling import RunningJob, plan


def test_a_a_pass_reclaims_exactly_what_is_owed() -> None:
    """a and b share a cohort, nominal 2 each; b runs 4 one-board jobs, a waits with 4: a is owed
    2, so one pass preempts 2 of b's jobs (the newest), not all 4."""
    queues = {"a": QueueSpec("a", {"g1": 2}, cohort="c"), "b": QueueSpec("b", {"g1": 2}, cohort="c")}
    boards = fleet(4, 1)
    running = [RunningJob(10 + i, "b", (f"h{i}-0",), started_at=float(i)) for i in range(4)]
    p = plan(snap(boards, [job(i, queue="a", at=float(i)) for i in range(1, 5)], running=running, queues=queues))
    assert sorted(x.victim for x in p.preemptions) == [12, 13]
    assert sorted(x.for_job for x in p.preemptions) == [1, 2]
    assert "quota" in p.reasons[3] and "quota" in p.reasons[4]


def test_b_reclaim_stays_within_the_cohort() -> None:
    """Cohort X: a (nominal 1, holds 0) and c (nominal 0, holds 1); cohort Y: l (nominal 1, idle)
    and b (nominal 0, holds 1, newer). a reclaims from c, which holds a's quota, never from b."""
    queues = {
        "a": QueueSpec("a", {"g1": 1}, cohort="X"),
        "c": QueueSpec("c", {"g1": 0}, cohort="X"),
        "l": QueueSpec("l", {"g1": 1}, cohort="Y"),
        "b": QueueSpec("b", {"g1": 0}, cohort="Y"),
    }
    boards = fleet(2, 1)
    running = [RunningJob(20, "c", ("h0-0",), started_at=1.0), RunningJob(21, "b", ("h1-0",), started_at=2.0)]
    p = plan(snap(boards, [job(1, queue="a")], running=running, queues=queues))
    assert [(x.victim, x.for_job) for x in p.preemptions] == [(20, 1)]


def test_e_a_quota_hold_on_one_generation_does_not_block_the_queue_on_another() -> None:
    """Queue t waits for g1 quota with a gang (held for it); its g2 job runs on a free g2 board
    with g2 quota to spare."""
    queues = {"t": QueueSpec("t", {"g1": 2, "g2": 2})}
    boards = fleet(2, 1, gen="g1") + [
        BoardView(f"x{i}", f"hx{i}", "g2", slot=0, rack="r0", firmware="1.0") for i in range(2)
    ]
    running = [RunningJob(30, "t", ("h0-0",), started_at=1.0, expected_end=600.0)]
    gang = job(1, 2, gens=("g1",), limit=60.0)
    other = job(2, 1, gens=("g2",), at=1.0, limit=7200.0)
    p = plan(snap(boards, [gang, other], running=running, queues=queues, now=0.0))
    assert 2 in bound(p), p.reasons


def test_d_a_blocked_job_of_another_generation_does_not_take_the_gangs_reservation() -> None:
    """A 2-board g2 job that cannot fit yet (one of the two g2 boards is busy) is ahead of a
    4-board g1 gang (3 g1 boards free, the 4th ends at 100 s), and a long 1-board g1 job comes
    after: the gang holds its 3 free boards (a reservation of its own generation), so the long job
    does not take one; a short one backfills."""
    boards = fleet(4, 1, gen="g1") + [
        BoardView(f"x{i}", "hx", "g2", slot=i, rack="r0", firmware="1.0") for i in range(2)
    ]
    running = [
        RunningJob(40, "t", ("h0-0",), started_at=0.0, expected_end=100.0),
        RunningJob(41, "t", ("x0",), started_at=0.0, expected_end=5000.0),
    ]
    pending = [
        job(1, 2, gens=("g2",), at=0.0),
        job(2, 4, gens=("g1",), at=1.0),
        job(3, 1, gens=("g1",), at=2.0, limit=3600.0),
        job(4, 1, gens=("g1",), at=3.0, limit=50.0),  # ends before the gang could start: backfills
    ]
    p = plan(snap(boards, pending, running=running, now=0.0))
    assert {r.job_id for r in p.reservations} == {1, 2}
    assert 3 not in bound(p) and 4 in bound(p), p.reasons


def test_c_boards_freed_for_a_job_are_kept_for_it_until_it_binds() -> None:
    """Queue l reclaimed two g1 boards from b for its gang S; they are free now. B's own job, ahead
    in fair-share order (b used less), does not take them: S binds them. Once S is gone from the
    line (canceled, bound elsewhere), they are anyone's."""
    queues = {"l": QueueSpec("l", {"g1": 2}, cohort="c"), "b": QueueSpec("b", {"g1": 2}, cohort="c")}
    boards = fleet(1, 4)
    running = [RunningJob(50, "b", ("h0-2", "h0-3"), started_at=1.0)]
    s_gang = job(1, 2, queue="l", at=0.0)
    b_job = job(2, 1, queue="b", at=1.0)
    held = {"h0-0": 1, "h0-1": 1}
    usage = {"l": 100.0, "b": 0.0}  # b first in fair-share order
    p = plan(snap(boards, [s_gang, b_job], running=running, queues=queues, usage=usage, held_for=held))
    assert bound(p) == {1: ("h0-0", "h0-1")}, p.reasons
    p = plan(snap(boards, [b_job], running=running, queues=queues, usage=usage, held_for=held))
    assert list(bound(p)) == [2]


def test_a_job_preempted_lately_is_not_preempted_again_while_protected() -> None:
    queues = {"a": QueueSpec("a", {"g1": 1}, cohort="c"), "b": QueueSpec("b", {"g1": 1}, cohort="c")}
    boards = fleet(2, 1)
    running = [
        RunningJob(60, "b", ("h0-0",), started_at=0.0),
        RunningJob(61, "b", ("h1-0",), started_at=5.0, protected_until=600.0),  # b borrows one
    ]
    p = plan(snap(boards, [job(1, queue="a")], running=running, queues=queues, now=10.0))
    # The newest borrower is protected: the older one goes, or none; never the protected one.
    assert all(x.victim != 61 for x in p.preemptions)
    p = plan(snap(boards, [job(1, queue="a")], running=running, queues=queues, now=700.0))
    assert [x.victim for x in p.preemptions] == [61]


def test_a_gang_that_must_be_on_one_host_takes_the_host_where_least_work_is_lost() -> None:
    """Host h0 runs one 8-board job 50 s in (400 board-seconds); host h1 eight 1-board jobs 100 s
    in (800). A higher-priority 8-board job of the queue stops the 8-board job, not the eight
    (which come first in victim order, one by one, and complete h1 first)."""
    boards = fleet(2, 8)
    running = [RunningJob(70, "t", tuple(f"h0-{s}" for s in range(8)), started_at=950.0)] + [
        RunningJob(80 + s, "t", (f"h1-{s}",), started_at=900.0) for s in range(8)
    ]
    urgent = job(1, 8, prio=100, placement=Placement.SAME_HOST)
    p = plan(snap(boards, [urgent], running=running, now=1000.0))
    assert [x.victim for x in p.preemptions] == [70], p.reasons


def test_no_job_throws_away_more_work_than_it_can_do_itself() -> None:
    """Lender l's 8-board job (time limit 1 h: 8 board-hours at most) would have to stop
    borrower b's 256-board gang, 3 h in (768 board-hours): it waits instead. A 1-board job of b,
    10 minutes in, is stopped for a 1-board job of l."""
    queues = {"l": QueueSpec("l", {"g1": 16}, cohort="c"), "b": QueueSpec("b", {"g1": 0}, cohort="c")}
    boards = fleet(33, 8)  # 264 boards
    gang = tuple(f"h{h}-{s}" for h in range(32) for s in range(8))
    running = [RunningJob(90, "b", gang, started_at=0.0)] + [
        RunningJob(91 + s, "b", (f"h32-{s}",), started_at=10_200.0) for s in range(8)
    ]
    now = 10_800.0
    p = plan(
        snap(boards, [job(1, 8, queue="l", placement=Placement.SAME_HOST)], running=running, queues=queues, now=now)
    )
    assert [x.victim for x in p.preemptions] == list(range(91, 99)), p.reasons  # h32's eight, not the gang
    running = running[:1]  # now only the gang holds what l lent (h32 is down)
    p = plan(
        snap(
            boards,
            [job(1, 8, queue="l", placement=Placement.SAME_HOST)],
            running=running,
            queues=queues,
            now=now,
            free=[],
        )
    )
    assert p.preemptions == [], p.reasons
    assert 1 not in bound(p)


def test_a_short_job_refused_a_preemption_does_not_refuse_a_longer_one_behind_it() -> None:
    """One lower-priority 1-board job, an hour in (3,600 board-seconds), holds the queue's one
    board. A 10-minute urgent job may not throw that hour away; the 2-hour urgent job behind it,
    of the same queue, priority and shape, may: the pass's memo of failed searches counts the
    work each was allowed to lose, not only its size."""
    boards = fleet(1, 1)
    running = [RunningJob(50, "t", ("h0-0",), started_at=0.0)]
    short = job(1, prio=100, limit=600.0, at=1.0)
    long = job(2, prio=100, limit=7200.0, at=2.0)
    p = plan(snap(boards, [short, long], running=running, now=3600.0))
    assert [(x.victim, x.for_job) for x in p.preemptions] == [(50, 2)], p.reasons
    assert "preempting" not in p.reasons.get(1, ""), p.reasons


def test_a_class_bounds_the_work_its_preemptions_throw_away() -> None:
    """a reclaims its nominal board from b. b's job has run an hour: a batch job (its class lets
    it throw away at most 5 minutes per board) waits for the board to free; an urgent one (no
    cap but its own time limit) preempts; and a batch job preempts a borrower that started lately."""
    queues = {"a": QueueSpec("a", {"g1": 1}, cohort="c"), "b": QueueSpec("b", {"g1": 0}, cohort="c")}
    boards = fleet(1, 1)
    now = 3600.0
    old = [RunningJob(10, "b", ("h0-0",), started_at=0.0)]
    batch = dataclasses.replace(job(1, queue="a", at=now), max_lost_s=BATCH_MAX_LOST_S)
    p = plan(snap(boards, [batch], running=old, queues=queues, now=now))
    assert not p.preemptions and 1 not in bound(p)
    urgent = job(1, queue="a", at=now)  # max_lost_s None: as much as it can do itself (1 board x 1 h)
    assert [x.victim for x in plan(snap(boards, [urgent], running=old, queues=queues, now=now)).preemptions] == [10]
    young = [RunningJob(10, "b", ("h0-0",), started_at=now - 60.0)]
    assert [x.victim for x in plan(snap(boards, [batch], running=young, queues=queues, now=now)).preemptions] == [10]
    assert lost_budget(batch) == BATCH_MAX_LOST_S and lost_budget(urgent) == 3600.0


def test_a_gang_that_must_be_on_one_host_stops_only_those_it_needs_within_its_budget() -> None:
    """Host h0 (4 boards, one free): a 1-board job 100 s in (100 board-seconds), then a 2-board
    job 150 s in (300). A batch 4-board job may throw away 350 board-seconds: the first victims
    in victim order lose 400, but it needs only the 2-board job (3 boards free then)."""
    boards = fleet(1, 4)
    now = 1000.0
    running = [
        RunningJob(20, "t", ("h0-0",), started_at=now - 100.0),
        RunningJob(21, "t", ("h0-1", "h0-2"), started_at=now - 150.0),
    ]
    gang = dataclasses.replace(job(1, 3, prio=100, placement=Placement.SAME_HOST, at=now), max_lost_s=350.0 / 3)
    assert lost_budget(gang) == 350.0
    p = plan(snap(boards, [gang], running=running, now=now))
    assert [x.victim for x in p.preemptions] == [21], p.reasons
    tight = dataclasses.replace(gang, max_lost_s=250.0 / 3)  # less than the 2-board job's 300
    assert plan(snap(boards, [tight], running=running, now=now)).preemptions == []
