"""The declared inventory in the store: read it, sync it from a file, approve boards into onboarding.

``inventory_hosts`` and ``inventory_boards`` hold the last synced file; the settings
``inventory.auto_approve``, ``onboarding.parallelism`` and ``inventory.synced_at`` hold the rest.
A fleet whose inventory was never synced (no ``inventory.synced_at``) is the open fleet: a board
an agent finds serves at once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.inventory import DeclaredBoard, Inventory
from fleetyard.errors import Conflict, NotFound
from fleetyard.policy.inventory import Admission, FoundBoard, InventoryDiff, approvals, diff
from fleetyard.store import tables as t
from fleetyard.store.boards import switch_board_state
from fleetyard.store.settings import get_setting, put_setting

__all__ = [
    "AUTO_APPROVE",
    "PARALLELISM",
    "SYNCED_AT",
    "SyncResult",
    "approve",
    "auto_approve",
    "declared_for",
    "found_boards",
    "hold_for_arrivals",
    "is_synced",
    "stored_boards",
    "stored_hosts",
    "sync",
]

AUTO_APPROVE = "inventory.auto_approve"
PARALLELISM = "onboarding.parallelism"
SYNCED_AT = "inventory.synced_at"

IH, IB = t.inventory_hosts, t.inventory_boards
_PG_SYNC_LOCK = 0x466C656574_10  # "Fleet", as store.migrate's and controller.leader's keys


def hold_for_arrivals(conn: sa.Connection, serials: Collection[str]) -> None:
    """Before a register reads the inventory to admit boards no agent reported before: wait for
    a sync under way, and hold the next one off until this transaction ends (the shared form of
    the sync's lock: registers do not wait for each other). The register then admits its new
    boards under one whole inventory, and the sync after it finds them. Taken first, before any
    row, so that no sync waits on a row this transaction holds while it waits for the sync.
    Nothing to take when every board is known already (boards are never deleted) or on SQLite
    (one writer at a time)."""
    if conn.dialect.name != "postgresql" or not serials:
        return
    known = conn.execute(
        sa.select(sa.func.count()).select_from(t.boards).where(t.boards.c.id.in_(list(serials)))
    ).scalar_one()
    if known < len(set(serials)):
        conn.execute(sa.text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _PG_SYNC_LOCK})


def is_synced(conn: sa.Connection) -> bool:
    """Whether an inventory was ever synced (else the fleet is open)."""
    return get_setting(conn, SYNCED_AT, None) is not None


def auto_approve(conn: sa.Connection) -> list[str]:
    return list(get_setting(conn, AUTO_APPROVE, []) or [])


def _declared(conn: sa.Connection, where: sa.ColumnElement[bool] | None = None) -> list[DeclaredBoard]:
    q = (
        sa.select(IB, IH.c.site, IH.c.rack)
        .outerjoin(IH, IH.c.id == IB.c.host_id)
        .order_by(IH.c.site, IH.c.rack, IB.c.host_id, IB.c.slot)
    )
    if where is not None:
        q = q.where(where)
    return [
        DeclaredBoard(r.serial, r.host_id, r.slot, r.generation, r.hardware_revision, r.site or "", r.rack or "")
        for r in conn.execute(q)
    ]


def stored_boards(conn: sa.Connection) -> list[DeclaredBoard]:
    """The stored inventory's boards, by site, rack, host and slot."""
    return _declared(conn)


def stored_hosts(conn: sa.Connection) -> list[sa.Row[Any]]:
    """The stored inventory's hosts (id, site, rack, synced_at), by site, rack and id."""
    return list(conn.execute(sa.select(IH).order_by(IH.c.site, IH.c.rack, IH.c.id)).all())


def declared_for(conn: sa.Connection, serials: Collection[str]) -> dict[str, DeclaredBoard]:
    """The stored inventory's entries for these serials (those it names)."""
    if not serials:
        return {}
    return {d.serial: d for d in _declared(conn, IB.c.serial.in_(list(serials)))}


def found_boards(conn: sa.Connection) -> list[FoundBoard]:
    """Every board row, as :func:`fleetyard.policy.inventory.diff` compares it."""
    b = t.boards.c
    rows = conn.execute(sa.select(b.id, b.host_id, b.slot, b.generation, b.hardware_revision, b.state))
    return [FoundBoard(r.id, r.host_id, r.slot, r.generation, r.hardware_revision, BoardState(r.state)) for r in rows]


@dataclass(frozen=True)
class SyncResult:
    diff: InventoryDiff  # against what was stored before
    approved: list[tuple[str, Admission]]  # discovered boards that now onboard
    synced_at: float | None  # None: a dry run, nothing written


def sync(conn: sa.Connection, inv: Inventory, *, by: str, at: float, dry_run: bool = False) -> SyncResult:
    """Make ``inv`` the stored inventory and let the discovered boards it names (or auto-approves)
    onboard. The caller's transaction holds it all: the tables, the settings, the approvals."""
    if not dry_run and conn.dialect.name == "postgresql":
        # Two syncs at once would both empty the tables and then insert the same serials; on
        # SQLite the write transaction already serialises them. Held until this one commits; a
        # register admitting new boards holds the shared form (hold_for_arrivals).
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SYNC_LOCK})
    declared = inv.boards()
    found = found_boards(conn)
    result = diff(declared, stored_boards(conn), found)
    approved = approvals(found, {d.serial: d for d in declared}, inv.auto_approve)
    if dry_run:
        return SyncResult(result, approved, None)
    # The file is the whole truth: replace what was stored (a few thousand rows at most).
    conn.execute(IB.delete())
    conn.execute(IH.delete())
    hosts = [{"id": h, "site": s, "rack": r, "synced_at": at} for h, (s, r) in inv.hosts().items()]
    if hosts:
        conn.execute(IH.insert(), hosts)
    rows = [
        {
            "serial": d.serial,
            "host_id": d.host,
            "slot": d.slot,
            "generation": d.generation,
            "hardware_revision": d.hardware_revision,
            "synced_at": at,
        }
        for d in declared
    ]
    for i in range(0, len(rows), 5000):
        conn.execute(IB.insert(), rows[i : i + 5000])
    put_setting(conn, AUTO_APPROVE, list(inv.auto_approve), by=by, at=at)
    put_setting(conn, PARALLELISM, inv.onboarding.parallelism, by=by, at=at)
    put_setting(conn, SYNCED_AT, at, by=by, at=at)
    for serial, a in approved:
        switch_board_state(
            conn,
            serial,
            BoardState.ONBOARDING,
            current=BoardState.DISCOVERED,
            reason=f"{a.reason}, synced by {by}",
            actor=Actor.OPERATOR,
            at=at,
            onboard_batch=a.batch,
        )
    return SyncResult(result, approved, at)


def approve(conn: sa.Connection, serials: Sequence[str], *, batch: str, reason: str, at: float) -> None:
    """discovered → onboarding for each board, in ``batch``; all or none (an unknown board raises
    :class:`NotFound`, one not waiting in discovered :class:`Conflict`)."""
    b = t.boards.c
    states = dict(conn.execute(sa.select(b.id, b.state).where(b.id.in_(list(serials)))).all())
    unknown = [s for s in serials if s not in states]
    if unknown:
        raise NotFound(
            f"no board {', '.join(unknown)}: an agent must find a board before it is approved (fleetyard boards ls)",
            detail={"boards": unknown},
        )
    busy = {s: states[s] for s in serials if states[s] != BoardState.DISCOVERED}
    if busy:
        listed = ", ".join(f"{s} is {st}" for s, st in busy.items())
        raise Conflict(
            f"only a board waiting in discovered is approved: {listed}",
            detail={"boards": busy},
        )
    for serial in dict.fromkeys(serials):
        switch_board_state(
            conn,
            serial,
            BoardState.ONBOARDING,
            current=BoardState.DISCOVERED,
            reason=reason,
            actor=Actor.OPERATOR,
            at=at,
            onboard_batch=batch,
        )
