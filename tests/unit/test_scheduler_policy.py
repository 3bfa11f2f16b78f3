"""The scheduler's pure policy: order, quotas, gangs and topology, constraints, preemption, backfill,
warm affinity, explanations, and rejection at submit."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from fleetyard.domain.firmware import FirmwareSelector
from fleetyard.domain.spec import JobSpec, Packing, Placement
from fleetyard.policy.fairshare import accrue
from fleetyard.policy.line import Line
from fleetyard.policy.placement import BoardView, Constraints, Shape
from fleetyard.policy.queues import QueueSpec, QuotaLedger
from fleetyard.policy.scheduling import (
    FleetBoard,
    PendingJob,
    RunningJob,
    Snapshot,
    pending_job,
    plan,
    why_unschedulable,
)


def fleet(hosts: int = 2, per_host: int = 4, gen: str = "g1", racks: int = 1, **labels: str) -> list[BoardView]:
    return [
        BoardView(f"h{h}-{s}", f"h{h}", gen, slot=s, rack=f"r{h % racks}", firmware="1.0", labels=labels)
        for h in range(hosts)
        for s in range(per_host)
    ]


def job(
    id: int,
    k: int = 1,
    *,
    queue: str = "t",
    prio: int = 0,
    rank: int = 0,
    at: float = 0.0,
    gens: Sequence[str] = (),
    placement: Placement = Placement.ANY,
    required: bool = True,
    packing: Packing = Packing.PACK,
    limit: float = 3600.0,
    artifact: str | None = None,
    **c: object,
) -> PendingJob:
    constraints = Constraints(generations=frozenset(gens), **c)  # type: ignore[arg-type]
    return PendingJob(
        id, queue, k, Shape(constraints, placement, required, packing), prio, rank, at, limit, artifact=artifact
    )


def snap(boards: list[BoardView], pending: list[PendingJob] | Line, **kw: object) -> Snapshot:
    running = kw.pop("running", ())
    busy = {b for r in running for b in r.boards}  # type: ignore[attr-defined]
    free = kw.pop("free", None)
    return Snapshot(
        now=kw.pop("now", 0.0),  # type: ignore[arg-type]
        boards=boards,
        free=frozenset(free if free is not None else [b.id for b in boards if b.id not in busy]),  # type: ignore[arg-type]
        pending=pending,
        running=running,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def bound(p: object) -> dict[int, tuple[str, ...]]:
    return {b.job_id: b.board_ids for b in p.bindings}  # type: ignore[attr-defined]


# ---- order ----------------------------------------------------------------------------------


def test_class_then_fair_share_then_own_priority_then_age() -> None:
    one = fleet(1, 1)
    assert bound(plan(snap(one, [job(1, at=1), job(2, at=0)]))) == {2: ("h0-0",)}
    assert bound(plan(snap(one, [job(1, rank=5, at=9), job(2, at=0)]))) == {1: ("h0-0",)}
    assert bound(plan(snap(one, [job(1, rank=5), job(2, prio=100, at=9)]))) == {2: ("h0-0",)}
    # Within a class, the queue that used less goes first, before the job's own priority.
    usage = {"heavy": 1e6, "light": 10.0}
    p = plan(snap(one, [job(1, queue="heavy", rank=9), job(2, queue="light", at=5)], usage=usage))
    assert bound(p) == {2: ("h0-0",)}


def test_fair_share_usage_decays_by_half_life() -> None:
    h = 3600.0
    assert accrue(100.0, 0, h, h) == pytest.approx(50.0)
    # Accrual in steps equals accrual at once.
    once = accrue(0.0, 4, 2 * h, h)
    steps = accrue(accrue(0.0, 4, h, h), 4, h, h)
    assert once == pytest.approx(steps) and 0 < once < 4 * 2 * h


def test_a_big_job_that_does_not_fit_does_not_block_small_ones() -> None:
    p = plan(snap(fleet(1, 2), [job(1, 4), job(2, 1)], reservations=0))
    assert bound(p) == {2: ("h0-0",)}
    assert "waiting for 4 board(s)" in p.reasons[1] and "2 free match now" in p.reasons[1]


# ---- gangs, topology, packing ---------------------------------------------------------------


def test_same_host_best_fit_keeps_big_holes_and_spread_takes_the_emptiest() -> None:
    boards = fleet(1, 4) + [BoardView(f"x-{s}", "x", "g1", slot=s) for s in range(2)]
    assert bound(plan(snap(boards, [job(1, 2, placement=Placement.SAME_HOST)]))) == {1: ("x-0", "x-1")}
    p = plan(snap(boards, [job(1, 2, placement=Placement.SAME_HOST, packing=Packing.SPREAD)]))
    assert bound(p) == {1: ("h0-0", "h0-1")}


def test_anywhere_gangs_pack_into_few_hosts_or_spread_one_per_host() -> None:
    boards = fleet(3, 2)
    assert set(bound(plan(snap(boards, [job(1, 4)])))[1]) == {"h0-0", "h0-1", "h1-0", "h1-1"}
    spread = bound(plan(snap(boards, [job(1, 3, packing=Packing.SPREAD)])))[1]
    assert {b.split("-")[0] for b in spread} == {"h0", "h1", "h2"}


def test_same_rack_required_or_preferred() -> None:
    boards = fleet(4, 2, racks=2)  # r0: h0, h2; r1: h1, h3 -> 4 boards a rack
    p = plan(snap(boards, [job(1, 4, placement=Placement.SAME_RACK)]))
    assert {b.split("-")[0] for b in bound(p)[1]} in ({"h0", "h2"}, {"h1", "h3"})
    p = plan(snap(boards, [job(1, 6, placement=Placement.SAME_RACK)], reservations=0))
    assert 1 not in bound(p) and "in one rack (at most 4 free in any rack)" in p.reasons[1]
    p = plan(snap(boards, [job(1, 6, placement=Placement.SAME_RACK, required=False)]))
    assert len(bound(p)[1]) == 6  # preferred: falls back to any rack


def test_constraints_firmware_exclusions_named_boards_labels() -> None:
    boards = [
        BoardView("a", "h", "g1", slot=0, firmware="1.9.0"),
        BoardView("b", "h", "g1", slot=1, firmware="1.10.0", labels={"pool": "ci"}),
        BoardView("c", "h", "g2", slot=2, firmware="2.0.0"),
    ]
    sel = FirmwareSelector.parse(">=1.10")
    assert bound(plan(snap(boards, [job(1, firmware=sel, gens=["g1"])]))) == {1: ("b",)}
    assert bound(plan(snap(boards, [job(1, exclude=frozenset({"a"}), gens=["g1"])]))) == {1: ("b",)}
    assert bound(plan(snap(boards, [job(1, only=frozenset({"c"}))]))) == {1: ("c",)}
    assert bound(plan(snap(boards, [job(1, labels=(("pool", "ci"),))]))) == {1: ("b",)}
    assert FirmwareSelector.parse("in 1.9.0, 2.0.0").matches("2.0.0")
    assert not FirmwareSelector.parse("!=1.9").matches("1.9.0")
    with pytest.raises(ValueError, match="bad firmware selector"):
        FirmwareSelector.parse("~1.0")


def test_warm_boards_come_first() -> None:
    boards = fleet(1, 3)
    boards[2] = BoardView("h0-2", "h0", "g1", slot=2, warm=frozenset({"abc"}))
    assert bound(plan(snap(boards, [job(1, artifact="abc")]))) == {1: ("h0-2",)}
    assert bound(plan(snap(boards, [job(1, artifact="other")]))) == {1: ("h0-0",)}


def test_boards_of_a_host_that_caches_the_artifact_come_next() -> None:
    boards = fleet(3, 2)
    cached = frozenset({"abc"})
    boards[2:4] = [BoardView(f"h1-{s}", "h1", "g1", slot=s, cached=cached) for s in range(2)]
    # No board has it loaded: a board of h1 (its blob is on h1's disk: no download).
    assert bound(plan(snap(boards, [job(1, artifact="abc")]))) == {1: ("h1-0",)}
    # Loaded beats cached.
    boards[5] = BoardView("h2-1", "h2", "g1", slot=1, warm=cached)
    assert bound(plan(snap(boards, [job(1, artifact="abc")]))) == {1: ("h2-1",)}
    # A gang on one host goes to the host that caches its artifact, if it fits there ...
    assert bound(plan(snap(boards, [job(1, 2, artifact="abc", placement=Placement.SAME_HOST)]))) == {
        1: ("h1-0", "h1-1")
    }
    # ... else where topology alone puts it; and a gang spread on purpose stays spread.
    busy = frozenset({"h1-0", "h2-0"})  # h1 and h2 have one board free each
    free = [b.id for b in boards if b.id not in busy]
    assert bound(plan(snap(boards, [job(1, 2, artifact="abc")], free=free))) == {1: ("h0-0", "h0-1")}
    spread = job(1, 3, artifact="abc", packing=Packing.SPREAD)
    assert sorted(bound(plan(snap(boards, [spread])))[1]) == ["h0-0", "h1-0", "h2-0"]


# ---- quotas -----------------------------------------------------------------------------------


def test_quota_nominal_then_borrowing_from_the_cohort_within_its_limit() -> None:
    queues = {
        "a": QueueSpec("a", {"g1": 2}, cohort="c", borrowing_limit={"g1": 1}),
        "b": QueueSpec("b", {"g1": 2}, cohort="c"),
        "solo": QueueSpec("solo", {"g1": 1}),
    }
    boards = fleet(1, 8)
    p = plan(snap(boards, [job(i, queue="a", at=i) for i in range(1, 6)], queues=queues))
    assert sorted(bound(p)) == [1, 2, 3]  # nominal 2 + borrow 1 (limit) of b's unused 2
    assert p.reasons[4].startswith("quota: needs 1 board(s) but queue a holds 3 of g1 (nominal 2, cohort lends")
    p = plan(snap(boards, [job(1, queue="solo"), job(2, queue="solo", at=1)], queues=queues))
    assert sorted(bound(p)) == [1]  # no cohort: nothing to borrow
    ledger = QuotaLedger(queues, {"b": {"g1": 1}})
    assert ledger.headroom("a", "g1") == 3 and ledger.lendable("a", "g1") == 1
    assert ledger.ceiling("a", "g1") == 3 and ledger.ceiling("nobody", "g1") > 10**9


def test_borrowers_are_preempted_first_when_a_queue_reclaims_its_nominal() -> None:
    queues = {"a": QueueSpec("a", {"g1": 2}, cohort="c"), "b": QueueSpec("b", {"g1": 2}, cohort="c")}
    boards = fleet(1, 4)
    running = [
        RunningJob(10, "b", ("h0-0", "h0-1"), started_at=1.0),
        RunningJob(11, "b", ("h0-2",), started_at=2.0),  # b borrows: 4 held of nominal 2
        RunningJob(12, "b", ("h0-3",), started_at=3.0),
    ]
    p = plan(snap(boards, [job(1, queue="a")], running=running, queues=queues))
    assert [(x.victim, x.for_job) for x in p.preemptions] == [(12, 1)]  # the newest borrower, only one
    assert "queue b borrows beyond its nominal quota" in p.preemptions[0].reason
    assert p.reasons[1] == "preempting job(s) 12 for their boards"
    # Next pass: the victim is stopping; no second victim is chosen for the same job.
    stopping = [*running[:2], RunningJob(12, "b", ("h0-3",), started_at=3.0, preempted_for=1)]
    p = plan(snap(boards, [job(1, queue="a")], running=stopping, queues=queues))
    assert not p.preemptions and "waiting for 1 preempted job(s) to stop" in p.reasons[1]


def test_lower_priority_in_the_same_queue_is_preempted_but_not_other_queues_within_nominal() -> None:
    boards = fleet(1, 2)
    running = [RunningJob(10, "t", ("h0-0",), priority=0), RunningJob(11, "t", ("h0-1",), priority=500)]
    p = plan(snap(boards, [job(1, prio=100)], running=running))
    assert [x.victim for x in p.preemptions] == [10]
    # Same priority: nobody is preempted.
    assert not plan(snap(boards, [job(1, prio=0)], running=running)).preemptions
    # Another queue within its nominal quota keeps its boards.
    queues = {"t": QueueSpec("t", {"g1": 1}), "o": QueueSpec("o", {"g1": 2})}
    running = [RunningJob(10, "o", ("h0-0", "h0-1"), priority=0)]
    assert not plan(snap(boards, [job(1, prio=1000)], running=running, queues=queues)).preemptions
    # Leases (not preemptible) keep their boards too.
    running = [RunningJob(10, "t", ("h0-0", "h0-1"), preemptible=False)]
    assert not plan(snap(boards, [job(1, prio=1000)], running=running)).preemptions


def test_a_queue_at_its_quota_runs_its_urgent_job_in_place_of_its_own_lower_priority_one() -> None:
    queues = {"a": QueueSpec("a", {"g1": 2}, cohort="c"), "b": QueueSpec("b", {"g1": 2}, cohort="c")}
    boards = fleet(1, 6)
    running = [
        RunningJob(10, "a", ("h0-0",), priority=100, started_at=1.0),
        RunningJob(11, "a", ("h0-1",), priority=0, started_at=2.0),  # a at its nominal 2
        RunningJob(12, "b", ("h0-2", "h0-3"), priority=0),  # b at its nominal 2
    ]
    # Two boards are free, but a's quota is spent (b lends nothing): the urgent job of a takes
    # the place of a's scavenger job, not one of b's within its nominal quota.
    free = ["h0-4", "h0-5"]
    p = plan(snap(boards, [job(1, queue="a", prio=1000)], running=running, queues=queues, free=free))
    assert [(x.victim, x.for_job) for x in p.preemptions] == [(11, 1)]
    assert "of higher priority in queue a" in p.preemptions[0].reason
    assert p.reasons[1] == "preempting job(s) 11 for their boards"
    # The next pass: it waits for its victim; then runs in its place.
    running[1] = RunningJob(11, "a", ("h0-1",), priority=0, started_at=2.0, preempted_for=1)
    p = plan(snap(boards, [job(1, queue="a", prio=1000)], running=running, queues=queues, free=free))
    assert not p.preemptions and p.reasons[1].startswith("waiting for 1 preempted job(s)")
    p = plan(snap(boards, [job(1, queue="a", prio=1000)], running=[running[0], running[2]], queues=queues, free=free))
    assert list(bound(p)) == [1]
    # A job of the same priority does not take another's place; nor a gang that would need a's
    # quota beyond what its own lower-priority jobs hold.
    running[1] = RunningJob(11, "a", ("h0-1",), priority=0, started_at=2.0)
    assert not plan(snap(boards, [job(1, queue="a", prio=0)], running=running, queues=queues, free=free)).preemptions
    gang = job(1, 3, queue="a", prio=1000)
    assert not plan(snap(boards, [gang], running=running, queues=queues, free=free)).preemptions


def test_a_queue_that_borrows_only_by_this_passs_bindings_is_reclaimed_from_next_pass() -> None:
    queues = {"a": QueueSpec("a", {"g1": 3}, cohort="c"), "b": QueueSpec("b", {"g1": 3}, cohort="c")}
    boards = fleet(3, 2)
    running = [
        RunningJob(10, "b", ("h2-0", "h2-1"), started_at=1.0),
        RunningJob(11, "b", ("h1-0",), started_at=2.0),  # b at its nominal 3
        RunningJob(12, "a", ("h0-1",), priority=100, started_at=3.0),
    ]
    urgent_b = job(1, queue="b", prio=1000)  # borrows a free board of a's nominal
    gang_a = job(2, 2, queue="a", prio=100, placement=Placement.SAME_HOST)  # fits on no host's free boards
    p = plan(snap(boards, [urgent_b, gang_a], running=running, queues=queues))
    assert bound(p) == {1: ("h0-0",)} and not p.preemptions  # b's older jobs are within its quota
    # The next pass: b borrows; a reclaims what its gang needs.
    running.append(RunningJob(1, "b", ("h0-0",), priority=1000, started_at=4.0))
    p = plan(snap(boards, [gang_a], running=running, queues=queues))
    assert [x.victim for x in p.preemptions] == [11] and "queue b borrows" in p.preemptions[0].reason


def test_a_borrowing_queue_swaps_one_own_job_for_an_urgent_one_and_reclaims_nothing() -> None:
    queues = {"a": QueueSpec("a", {"g1": 1}, cohort="c"), "b": QueueSpec("b", {"g1": 3}, cohort="c")}
    boards = fleet(1, 4)
    # a borrows 2 of b's nominal (b runs 1), and nothing is free.
    running = [RunningJob(10 + i, "a", (f"h0-{i}",), priority=0, started_at=float(i)) for i in range(3)]
    running.append(RunningJob(13, "b", ("h0-3",), priority=0))
    p = plan(snap(boards, [job(1, queue="a", prio=1000)], running=running, queues=queues))
    assert [x.victim for x in p.preemptions] == [12]  # one, its newest; a keeps borrowing as much


# ---- backfill ---------------------------------------------------------------------------------


def test_the_head_job_gets_a_reservation_and_only_short_jobs_backfill_onto_it() -> None:
    boards = fleet(1, 4)
    running = [RunningJob(10, "t", ("h0-0", "h0-1"), started_at=0.0, expected_end=100.0)]
    pending = [job(1, 4, at=0), job(2, 1, at=1, limit=500.0), job(3, 1, at=2, limit=50.0)]
    p = plan(snap(boards, pending, running=running, now=10.0))
    [res] = p.reservations
    assert res.job_id == 1 and set(res.board_ids) == {f"h0-{i}" for i in range(4)} and res.expected_start == 100.0
    assert bound(p) == {3: bound(p)[3]}  # only the job that ends before t=100
    assert "held for job 1's reservation" in p.reasons[2]
    assert "boards reserved for it, expected start in 90 s" in p.reasons[1]


def test_short_and_long_jobs_in_turn_backfill_only_where_they_end_in_time() -> None:
    """A 5-board gang waits for boards ending at t=100 and holds 3 of the 4 free ones. Short and
    long 1-board jobs come in turn: each short job takes a held board; the first long one takes
    the free board not held, the second waits (the held boards go in and out of the pass's pool
    as the jobs come)."""
    boards = fleet(3, 4)
    running = [RunningJob(10, "t", ("h0-0", "h0-1"), started_at=0.0, expected_end=100.0)]
    running += [RunningJob(11 + s, "t", (f"h{h}-{s}",), expected_end=5000.0) for h in (1, 2) for s in range(3)]
    pending = [job(1, 5, at=0, placement=Placement.SAME_RACK)]
    pending += [job(2 + i, 1, at=1 + i, limit=50.0 if i % 2 == 0 else 500.0) for i in range(4)]
    p = plan(snap(boards, pending, running=running, now=10.0))
    [res] = p.reservations
    assert res.job_id == 1 and res.expected_start == 100.0
    held = {"h0-2", "h0-3", "h1-3"}
    assert held == set(res.board_ids) - {"h0-0", "h0-1"}
    got = bound(p)
    assert set(got) == {2, 3, 4}, p.reasons
    assert {got[2][0], got[4][0]} <= held and got[3] == ("h2-3",)
    assert "held for job 1's reservation" in p.reasons[5]


def test_same_snapshot_same_plan() -> None:
    boards = fleet(3, 4, racks=2)
    pending = [job(i, k=1 + i % 5, at=i, placement=list(Placement)[i % 3], rank=i % 2) for i in range(30)]
    running = [RunningJob(100, "t", ("h0-0",), expected_end=50.0)]
    a = plan(snap(boards, pending, running=running))
    b = plan(snap(list(reversed(boards)), list(reversed(pending)), running=running))
    assert a.bindings == b.bindings and a.reasons == b.reasons and a.reservations == b.reservations


# ---- at submit --------------------------------------------------------------------------------


def test_why_unschedulable_names_the_constraint_topology_or_quota() -> None:
    fb = [FleetBoard(f"h{h}-{s}", f"h{h}", "g1", {}, "", "1.0", f"r{h}") for h in range(2) for s in range(2)]
    assert why_unschedulable(job(1, 4), fb) is None
    assert "unknown generation g7" in (why_unschedulable(job(1, gens=["g7"]), fb) or "")
    reason = why_unschedulable(job(1, 2, firmware=FirmwareSelector.parse(">=2")), fb) or ""
    assert "only 0 such boards (of 4: 4 by firmware excluded)" in reason
    assert "on one host but no host has more than 2" in (
        why_unschedulable(job(1, 3, placement=Placement.SAME_HOST), fb) or ""
    )
    assert "on one rack but no rack has more than 2" in (
        why_unschedulable(job(1, 3, placement=Placement.SAME_RACK), fb) or ""
    )
    assert why_unschedulable(job(1, 3, placement=Placement.SAME_RACK, required=False), fb) is None
    ledger = QuotaLedger({"t": QueueSpec("t", {"g1": 2})}, {})
    assert "queue t can never hold 3 boards of g1" in (why_unschedulable(job(1, 3), fb, ledger) or "")


def test_pending_job_from_a_spec() -> None:
    spec = JobSpec(boards=2, generations=["g2", "g1"], firmware=">= 1.2", exclude_boards=["x"], placement="same-rack")
    pj = pending_job(7, spec, queue="ai", priority=100)
    assert pj.shape.constraints.generations == {"g1", "g2"} and str(pj.shape.constraints.firmware) == ">=1.2"
    assert pj.shape.placement is Placement.SAME_RACK and pj.queue == "ai" and pj.priority == 100


def test_a_window_stops_the_pass_once_the_fleet_is_full() -> None:
    boards = fleet(1, 2)
    pending = [job(i, at=i) for i in range(1, 7)]
    full = plan(snap(boards, pending, reservations=0))
    assert sorted(bound(full)) == [1, 2] and sorted(full.reasons) == [3, 4, 5, 6]
    windowed = plan(snap(boards, pending, reservations=0, window=2))
    assert windowed.bindings == full.bindings and sorted(windowed.reasons) == [3, 4]  # 5, 6: a later pass


def test_past_its_window_a_pass_still_places_jobs_on_free_boards() -> None:
    boards = fleet(1, 2)
    # Two gangs too big for the fleet, then two single-board jobs.
    pending = [job(1, 3, at=1), job(2, 3, at=2), job(3, at=3), job(4, at=4)]
    p = plan(snap(boards, pending, reservations=0, window=1))
    assert sorted(bound(p)) == [3, 4]  # placed past the window, in order
    assert sorted(p.reasons) == [1]  # only the first job left waiting is explained
    assert p.reasons[1].startswith("waiting for 3 board(s)")


def test_past_its_window_a_pass_stops_once_no_queue_may_take_a_free_board() -> None:
    queues = {"a": QueueSpec("a", {"g1": 1})}
    boards = fleet(1, 2)
    running = [RunningJob(10, "a", ("h0-0",))]
    # Queue a's quota is spent: past the first job, the rest of its line is never looked at.
    line = Line(job(i, queue="a", at=i) for i in range(1, 6))
    walked: list[int] = []
    walk = line.walk
    line.walk = lambda *a: (walked.append(j.id) or j for j in walk(*a))  # type: ignore[method-assign]
    p = plan(snap(boards, line, running=running, queues=queues, reservations=0, window=1))
    assert not p.bindings and sorted(p.reasons) == [1] and p.reasons[1].startswith("quota:")
    assert walked == [1, 2]  # the second is where it stops


def test_a_lender_reclaims_before_a_borrower_takes_the_board_again() -> None:
    # Once a storm: b's preempted borrower, first in line, took back the freed board; a's job
    # preempted it again, and so on. Jobs within their queue's nominal quota now go first.
    queues = {"a": QueueSpec("a", {"g1": 1}, cohort="c"), "b": QueueSpec("b", {"g1": 1}, cohort="c")}
    boards = fleet(1, 2)
    running = [RunningJob(10, "b", ("h0-0",))]
    pending = [job(2, queue="b", at=0), job(3, queue="a", at=5)]
    p = plan(snap(boards, pending, running=running, queues=queues))
    assert bound(p) == {3: ("h0-1",)} and not p.preemptions
    assert p.reasons[2].startswith("quota: needs 1 board(s) but queue b holds 1 of g1 (nominal 1, cohort lends 0")


def test_within_nominal_first_does_not_let_small_jobs_starve_a_gang_of_the_same_queue() -> None:
    queues = {"a": QueueSpec("a", {"g1": 4})}
    boards = fleet(1, 4)
    running = [RunningJob(10, "a", ("h0-0", "h0-1"), expected_end=100.0)]
    pending = [job(1, 4, queue="a", at=0), job(2, 1, queue="a", at=1, limit=500.0)]
    p = plan(snap(boards, pending, running=running, queues=queues, now=10.0))
    # The gang is at the head: it reserves; the small job would overrun the reservation: it waits.
    assert [r.job_id for r in p.reservations] == [1] and not p.bindings


def test_a_gang_held_back_by_its_queues_quota_reserves_it_and_long_jobs_of_the_queue_wait() -> None:
    queues = {"a": QueueSpec("a", {"g1": 4})}
    boards = fleet(1, 6)
    running = [RunningJob(10, "a", ("h0-0", "h0-1"), expected_end=100.0)]
    pending = [
        job(1, 4, queue="a", at=0),
        job(2, 1, queue="a", at=1, limit=500.0),
        job(3, 1, queue="a", at=2, limit=50.0),
    ]
    p = plan(snap(boards, pending, running=running, queues=queues, now=10.0))
    [res] = p.reservations
    assert res.job_id == 1 and res.expected_start == 100.0 and "quota and boards reserved" in p.reasons[1]
    assert 2 not in bound(p) and "quota is held for job 1's reservation" in p.reasons[2]
    assert 3 in bound(p)  # short enough to end before the gang's start
