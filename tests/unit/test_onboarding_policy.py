"""The onboarding policy (pure): admission, inspection and each step's next act."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleetyard.policy.onboarding import (
    CheckView,
    Do,
    Facts,
    Inventoried,
    Limits,
    OpView,
    Queued,
    Record,
    Standard,
    Step,
    admit,
    inspect,
    next_act,
)

G2 = Facts("sim-g2", "r2", "2.1.0")


def test_admission_fills_the_free_places_oldest_first() -> None:
    queued = [Queued("c", 30.0, 3), Queued("a", 10.0, 5), Queued("b", 10.0, 4), Queued("d", 40.0, 6)]
    assert admit(queued, active=0, parallelism=2) == ["b", "a"]  # same time: the record made first
    assert admit(queued, active=1, parallelism=3) == ["b", "a"]
    assert admit(queued, active=3, parallelism=3) == []
    assert admit(queued, active=5, parallelism=3) == []  # over (the setting was lowered): none until below
    assert admit(queued, active=0, parallelism=10) == ["b", "a", "c", "d"]
    assert admit([], active=0, parallelism=4) == []


@given(
    st.lists(st.tuples(st.floats(0, 1e6), st.integers(0, 10**6)), max_size=60, unique_by=lambda x: x[1]),
    st.integers(0, 40),
    st.integers(0, 40),
)
def test_admission_never_lets_more_than_parallelism_past_queued(
    items: list[tuple[float, int]], active: int, parallelism: int
) -> None:
    queued = [Queued(f"b{i}", at, i) for at, i in items]
    got = admit(queued, active, parallelism)
    assert active + len(got) <= max(active, parallelism)
    assert len(got) == min(len(queued), max(0, parallelism - active))  # and it fills what is free
    by_board = {q.board: q for q in queued}
    left = [q for q in queued if q.board not in got]
    if got and left:  # nobody left waiting came before anybody admitted
        assert max((by_board[b].created_at, by_board[b].id) for b in got) <= min((q.created_at, q.id) for q in left)


def test_inspection_finds_what_does_not_match() -> None:
    assert inspect(G2) == []
    named = Facts("sim-g2", "r2", "2.1.0", inventory=Inventoried("sim-g2", "r2"))
    assert inspect(named) == []
    assert inspect(Facts("sim-g2", "r2", "2.1.0", inventory=Inventoried("sim-g2"))) == []  # the inventory is silent
    assert inspect(Facts("sim-g2", "r2", "2.1.0", inventory=Inventoried("sim-g3", "r3"))) == [
        "the inventory says generation sim-g3; the board reports sim-g2",
        "the inventory says hardware revision r3; the board reports r2",
    ]
    assert inspect(Facts("sim-g2", None, "2.1.0", inventory=Inventoried("sim-g2", "r2"))) == [
        "the inventory says hardware revision r2; the board reports none"
    ]
    unsupported = Facts("sim-g2", "r2", "2.1.0", standard=Standard("2.2.0", ("r3", "r4")))
    assert inspect(unsupported) == [
        "sim-g2's standard firmware 2.2.0 supports hardware revisions r3, r4, not this board's r2"
    ]
    assert inspect(Facts("sim-g2", "r2", "2.1.0", standard=Standard("2.2.0", ("r2",)))) == []
    assert inspect(Facts("sim-g2", "r2", "2.1.0", standard=Standard("2.2.0"))) == []  # supports every revision
    assert inspect(Facts("sim-g2", None, "2.1.0", standard=Standard("2.2.0", ("r3",)))) == []  # revision unknown


def test_inspect_decides_whether_to_flash() -> None:
    rec = Record("b", Step.INSPECT, 100.0)
    flash = next_act(rec, now=100.0, facts=Facts("sim-g2", "r2", "2.1.0", standard=Standard("2.2.0")))
    assert (flash.do, flash.step, flash.version) == (Do.FLASH, Step.FLASH, "2.2.0")
    assert flash.note == "runs firmware 2.1.0, not the standard 2.2.0: flash it"
    same = next_act(rec, now=100.0, facts=Facts("sim-g2", "r2", "2.2.0", standard=Standard("2.2.0")))
    assert (same.do, same.note) == (Do.BURN_IN, "flash skipped: runs the standard firmware 2.2.0 already")
    none = next_act(rec, now=100.0, facts=G2)
    assert (none.do, none.step) == (Do.BURN_IN, Step.BURN_IN)
    assert none.note == "flash skipped: no standard firmware registered for sim-g2 (runs 2.1.0)"
    bad = next_act(rec, now=100.0, facts=Facts("sim-g2", "r2", "2.1.0", inventory=Inventoried("sim-g1")))
    assert (bad.do, bad.step) == (Do.QUARANTINE, Step.FAILED)
    assert bad.note == "inspection failed: the inventory says generation sim-g1; the board reports sim-g2"
    assert bad.problems == ("the inventory says generation sim-g1; the board reports sim-g2",)


def test_inspect_waits_for_the_facts_until_its_deadline() -> None:
    rec = Record("b", Step.INSPECT, 100.0)
    limits = Limits(inspect_timeout_s=60.0)
    assert next_act(rec, now=150.0, limits=limits).do is Do.WAIT
    late = next_act(rec, now=161.0, limits=limits)
    assert (late.do, late.note) == (Do.QUARANTINE, "inspection: the board's identity was not read within 60 s")


def test_flash_goes_on_to_burn_in_or_quarantines_with_the_ops_message() -> None:
    rec = Record("b", Step.FLASH, 100.0)
    running = OpView(None, None, "2.2.0", deadline=1000.0)
    assert next_act(rec, now=500.0, op=running).do is Do.WAIT
    timed_out = next_act(rec, now=1001.0, op=running)
    assert timed_out.do is Do.QUARANTINE
    assert timed_out.note == "flash of firmware 2.2.0 timed out: no result from the agent by its deadline"
    failed = next_act(rec, now=200.0, op=OpView(False, "cannot flash: fell off the bus", "2.2.0", 1000.0))
    assert (failed.do, failed.note) == (Do.QUARANTINE, "flash of firmware 2.2.0 failed: cannot flash: fell off the bus")
    said = "flash of firmware 2.2.0 failed: verify mismatch at block 0x3f00"  # the sim driver's, whole
    assert next_act(rec, now=200.0, op=OpView(False, said, "2.2.0", 1000.0)).note == said
    late_ok = next_act(rec, now=2000.0, op=OpView(True, "firmware 2.2.0 flashed", "2.2.0", 1000.0))
    assert (late_ok.do, late_ok.step) == (Do.BURN_IN, Step.BURN_IN)  # a result wins over the deadline
    assert late_ok.note == "flashed firmware 2.2.0 (firmware 2.2.0 flashed)"
    # The op says it worked, but the board does not run it: no burn-in on the wrong firmware.
    liar = next_act(rec, now=200.0, op=OpView(True, None, "2.2.0", 1000.0), facts=G2)
    assert (liar.do, liar.note) == (Do.QUARANTINE, "flash of firmware 2.2.0 reported success but the board runs 2.1.0")
    assert next_act(rec, now=200.0).do is Do.QUARANTINE  # its op is gone


def test_burn_in_ends_in_service_or_quarantine() -> None:
    rec = Record("b", Step.BURN_IN, 100.0)
    limits = Limits(burn_in_timeout_s=3600.0)
    assert next_act(rec, now=3000.0, limits=limits).do is Do.WAIT
    passed = next_act(rec, now=3000.0, check=CheckView(True, ""), limits=limits)
    assert (passed.do, passed.step, passed.note) == (Do.AVAILABLE, Step.DONE, "passed its L3 burn-in")
    failed = next_act(rec, now=3000.0, check=CheckView(False, "output y differs at 3 of 64"), limits=limits)
    assert (failed.do, failed.note) == (Do.QUARANTINE, "L3 burn-in failed: output y differs at 3 of 64")
    stuck = next_act(rec, now=3701.0, limits=limits)
    assert (stuck.do, stuck.note) == (Do.QUARANTINE, "L3 burn-in did not finish within 3600 s")
    # A burn-in that could not run (its host lost) is no failure: it runs again.
    lost = next_act(rec, now=3000.0, check=CheckView(None, "host lost: no heartbeat for 60 s", 1), limits=limits)
    assert (lost.do, lost.step) == (Do.BURN_IN, Step.BURN_IN) and "could not run" in lost.note
    # The third that could not run fails it: something keeps the board from running it.
    third = next_act(rec, now=3000.0, check=CheckView(None, "agent error", 3), limits=limits)
    assert (third.do, third.note) == (Do.QUARANTINE, "L3 burn-in could not run 3 times (the last: agent error)")


def test_queued_and_finished_records_wait() -> None:
    for step in (Step.QUEUED, Step.DONE, Step.FAILED):
        assert next_act(Record("b", step, 0.0), now=1e9, facts=G2).do is Do.WAIT
