"""The inventory diff accounts for every board exactly where it belongs, whatever the fleet."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetyard.domain.board import BoardState
from fleetyard.domain.inventory import DeclaredBoard
from fleetyard.policy.inventory import GONE, FoundBoard, admit, approvals, diff

SERIALS = [f"SG-{i}" for i in range(12)]
HOSTS = ["h1", "h2", "h3"]
GENS = ["sim-g1", "sim-g2"]
REVS = [None, "r1", "r2"]

declared_board = st.builds(
    DeclaredBoard,
    serial=st.sampled_from(SERIALS),
    host=st.sampled_from(HOSTS),
    slot=st.integers(0, 3),
    generation=st.sampled_from(GENS),
    hardware_revision=st.sampled_from(REVS),
    site=st.just("s"),
    rack=st.sampled_from(["r1", "r2"]),
)
found_board = st.builds(
    FoundBoard,
    serial=st.sampled_from(SERIALS),
    host=st.sampled_from(HOSTS),
    slot=st.integers(0, 3),
    generation=st.sampled_from(GENS),
    hardware_revision=st.sampled_from(REVS),
    state=st.sampled_from(list(BoardState)),
)


def unique(items: list, key: str = "serial") -> list:  # type: ignore[type-arg]
    return list({getattr(i, key): i for i in items}.values())


@settings(max_examples=300, deadline=None)
@given(
    declared=st.lists(declared_board, max_size=12).map(unique),
    known=st.lists(declared_board, max_size=12).map(unique),
    found=st.lists(found_board, max_size=12).map(unique),
)
def test_every_board_lands_where_it_belongs(
    declared: list[DeclaredBoard], known: list[DeclaredBoard], found: list[FoundBoard]
) -> None:
    d = diff(declared, known, found)
    want = {b.serial for b in declared}
    have = {b.serial for b in known}
    rows = {b.serial: b for b in found}
    live = {s for s, b in rows.items() if b.state not in GONE}
    # The stored side: every serial is new, removed, or in both.
    assert {b.serial for b in d.new} == want - have
    assert {b.serial for b in d.removed} == have - want
    assert {b.serial for b in d.changed} <= want & have
    # The fleet side: a declared board is missing exactly when no agent finds it now.
    missing = {m.board.serial for m in d.missing}
    assert missing == want - live
    assert {u.serial for u in d.unexpected} == live - want
    # Moves and mismatches only of declared boards an agent finds, each saying what differs.
    by_decl = {b.serial: b for b in declared}
    for m in d.moved:
        assert m.serial in want & live
        assert (m.from_host, m.from_slot) == (by_decl[m.serial].host, by_decl[m.serial].slot)
        assert (m.to_host, m.to_slot) == (rows[m.serial].host, rows[m.serial].slot) != (m.from_host, m.from_slot)
    for x in d.mismatched:
        assert x.serial in want & live and x.declared != x.found
    # Sorted, so that a diff reads the same every time.
    for part in (d.new, d.removed, d.unexpected, d.moved):
        serials = [getattr(p, "serial") for p in part]  # noqa: B009
        assert serials == sorted(serials)
    # Against itself, with every board found where declared as declared, nothing differs.
    same = [FoundBoard(b.serial, b.host, b.slot, b.generation, b.hardware_revision) for b in declared]
    assert diff(declared, declared, same).empty


@settings(max_examples=300, deadline=None)
@given(
    declared=st.lists(declared_board, max_size=12).map(unique),
    found=st.lists(found_board, max_size=12).map(unique),
    auto=st.lists(st.sampled_from(GENS), max_size=2),
)
def test_a_sync_approves_exactly_what_registration_would_admit(
    declared: list[DeclaredBoard], found: list[FoundBoard], auto: list[str]
) -> None:
    by_serial = {b.serial: b for b in declared}
    got = dict(approvals(found, by_serial, auto))
    for b in found:
        a = admit(b.serial, b.generation, host=b.host, synced=True, declared=by_serial.get(b.serial), auto_approve=auto)
        approved = b.state is BoardState.DISCOVERED and a.state is BoardState.ONBOARDING
        assert (b.serial in got) == approved
        if approved:
            assert got[b.serial] == a and a.batch
