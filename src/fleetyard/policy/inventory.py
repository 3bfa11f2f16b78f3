"""The declared inventory against the stored one and against what agents find (pure).

- :func:`diff`: what ``fleetyard inventory diff`` shows before a sync: boards the file adds or
  drops, and where the fleet disagrees with it (missing, moved, unexpected, mismatched).
- :func:`admit`: what a board an agent finds for the first time becomes (the open fleet's
  ``available``; with an inventory, ``onboarding`` when named or auto-approved, else ``discovered``).
- :func:`approvals`: the discovered boards a newly synced inventory lets onboard.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from fleetyard.domain.board import BoardState
from fleetyard.domain.inventory import DeclaredBoard

__all__ = [
    "GONE",
    "Admission",
    "FoundBoard",
    "InventoryDiff",
    "Mismatched",
    "Missing",
    "Moved",
    "admit",
    "approvals",
    "diff",
]

S = BoardState
# A board in these states is not where any agent finds it now.
GONE = frozenset({S.OFFLINE, S.RETIRED})


@dataclass(frozen=True)
class FoundBoard:
    """A board row: where an agent last found it, what it reported, and its state."""

    serial: str
    host: str
    slot: int
    generation: str
    hardware_revision: str | None = None
    state: BoardState = S.AVAILABLE


@dataclass(frozen=True)
class Missing:
    board: DeclaredBoard
    why: str  # "no agent has found it", "offline (…)", "retired"


@dataclass(frozen=True)
class Moved:
    """Declared at ``from_host``/``from_slot``, found at ``to_host``/``to_slot``."""

    serial: str
    from_host: str
    from_slot: int
    to_host: str
    to_slot: int


@dataclass(frozen=True)
class Mismatched:
    serial: str
    field: str  # generation or hardware_revision
    declared: str | None
    found: str | None


@dataclass(frozen=True)
class InventoryDiff:
    """Each list sorted by serial."""

    new: tuple[DeclaredBoard, ...] = ()  # declared, not in the stored inventory yet
    removed: tuple[DeclaredBoard, ...] = ()  # stored, no longer declared
    changed: tuple[DeclaredBoard, ...] = ()  # stored and declared, declared differently now (as declared)
    missing: tuple[Missing, ...] = ()  # declared, no agent finds it
    moved: tuple[Moved, ...] = ()  # found on another host or slot than declared
    unexpected: tuple[FoundBoard, ...] = ()  # found by agents, not declared
    mismatched: tuple[Mismatched, ...] = ()  # found with another generation or hardware revision
    counts: dict[str, int] = field(default_factory=dict)  # declared, stored, found

    @property
    def empty(self) -> bool:
        """Nothing to sync and nothing out of place."""
        return not (
            self.new or self.removed or self.changed or self.missing or self.moved or self.unexpected or self.mismatched
        )


_B = TypeVar("_B", DeclaredBoard, FoundBoard)


def _by_serial(items: Iterable[_B]) -> dict[str, _B]:
    return {i.serial: i for i in items}


def diff(
    declared: Sequence[DeclaredBoard], known: Sequence[DeclaredBoard], found: Sequence[FoundBoard]
) -> InventoryDiff:
    """Compare the declared inventory with the stored one (``known``) and with the board rows
    (``found``). A board offline or retired counts as missing, never as moved or unexpected."""
    want, have, rows = _by_serial(declared), _by_serial(known), _by_serial(found)
    live = {s: b for s, b in rows.items() if b.state not in GONE}
    missing: list[Missing] = []
    moved: list[Moved] = []
    mismatched: list[Mismatched] = []
    for serial in sorted(want):
        d = want[serial]
        row = rows.get(serial)
        if row is None:
            missing.append(Missing(d, "no agent has found it"))
            continue
        if row.state in GONE:
            missing.append(Missing(d, f"{row.state} (last on {row.host} slot {row.slot})"))
            continue
        if (row.host, row.slot) != (d.host, d.slot):
            moved.append(Moved(serial, d.host, d.slot, row.host, row.slot))
        if row.generation != d.generation:
            mismatched.append(Mismatched(serial, "generation", d.generation, row.generation))
        if d.hardware_revision is not None and row.hardware_revision != d.hardware_revision:
            mismatched.append(Mismatched(serial, "hardware_revision", d.hardware_revision, row.hardware_revision))
    return InventoryDiff(
        new=tuple(want[s] for s in sorted(want.keys() - have.keys())),
        removed=tuple(have[s] for s in sorted(have.keys() - want.keys())),
        changed=tuple(want[s] for s in sorted(want.keys() & have.keys()) if want[s] != have[s]),
        missing=tuple(missing),
        moved=tuple(moved),
        unexpected=tuple(live[s] for s in sorted(live.keys() - want.keys())),
        mismatched=tuple(mismatched),
        counts={"declared": len(want), "stored": len(have), "found": len(live)},
    )


@dataclass(frozen=True)
class Admission:
    """What a newly found board becomes; ``batch`` is the onboarding batch (for onboarding)."""

    state: BoardState
    reason: str
    batch: str | None = None


def admit(
    serial: str,
    generation: str,
    *,
    host: str,
    synced: bool,
    declared: DeclaredBoard | None,
    auto_approve: Collection[str],
) -> Admission:
    """The state a board the agent of ``host`` finds for the first time enters.

    No inventory ever synced: the open fleet, it serves at once. Otherwise a board the inventory
    names (with the generation the agent reports) onboards in its rack's batch; one of an
    auto-approved generation onboards in its host's batch; any other waits for an operator."""
    if not synced:
        return Admission(S.AVAILABLE, f"found by the agent of {host}")
    approve = f"approve it with fleetyard boards approve {serial}"
    if declared is not None:
        if declared.generation != generation:
            return Admission(
                S.DISCOVERED,
                f"found by the agent of {host}; the inventory names it as {declared.generation} but the agent "
                f"reports {generation}: fix the inventory (fleetyard inventory sync) and the board is approved, "
                f"or {approve}",
            )
        return Admission(S.ONBOARDING, f"named in the inventory ({declared.batch})", declared.batch)
    if generation in auto_approve:
        return Admission(S.ONBOARDING, f"generation {generation} is auto-approved in the inventory", f"auto/{host}")
    return Admission(S.DISCOVERED, f"found by the agent of {host}; not in the inventory: {approve}")


def approvals(
    discovered: Iterable[FoundBoard], declared: Mapping[str, DeclaredBoard], auto_approve: Collection[str]
) -> list[tuple[str, Admission]]:
    """The boards waiting in ``discovered`` that an inventory (just synced) lets onboard, by serial."""
    out = []
    for b in sorted(discovered, key=lambda b: b.serial):
        if b.state is not S.DISCOVERED:
            continue
        a = admit(
            b.serial, b.generation, host=b.host, synced=True, declared=declared.get(b.serial), auto_approve=auto_approve
        )
        if a.state is S.ONBOARDING:
            out.append((b.serial, a))
    return out
