"""The declared inventory (diff, sync, show) and approving discovered boards into onboarding."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from fleetyard.domain.auth import Principal
from fleetyard.domain.inventory import DEFAULT_PARALLELISM, DeclaredBoard, parse_inventory
from fleetyard.policy.inventory import InventoryDiff, diff
from fleetyard.protocol.api import (
    ApprovedBoardOut,
    BoardOut,
    FoundBoardOut,
    InventoryBoardOut,
    InventoryDiffOut,
    InventoryHostOut,
    InventoryOut,
    InventorySyncOut,
    MismatchedBoardOut,
    MissingBoardOut,
    MovedBoardOut,
)
from fleetyard.server.services.audit import note
from fleetyard.server.services.views import board_out
from fleetyard.store import inventory
from fleetyard.store import tables as t
from fleetyard.store.db import Store
from fleetyard.store.settings import get_setting

SOURCE = "inventory"


def _board(d: DeclaredBoard) -> InventoryBoardOut:
    return InventoryBoardOut(
        serial=d.serial,
        site=d.site,
        rack=d.rack,
        host=d.host,
        slot=d.slot,
        generation=d.generation,
        hardware_revision=d.hardware_revision,
    )


def diff_out(d: InventoryDiff) -> InventoryDiffOut:
    return InventoryDiffOut(
        new=[_board(b) for b in d.new],
        removed=[_board(b) for b in d.removed],
        changed=[_board(b) for b in d.changed],
        missing=[MissingBoardOut(**_board(m.board).model_dump(), why=m.why) for m in d.missing],
        moved=[
            MovedBoardOut(
                serial=m.serial, from_host=m.from_host, from_slot=m.from_slot, to_host=m.to_host, to_slot=m.to_slot
            )
            for m in d.moved
        ],
        unexpected=[
            FoundBoardOut(
                serial=f.serial,
                host=f.host,
                slot=f.slot,
                generation=f.generation,
                hardware_revision=f.hardware_revision,
                state=str(f.state),
            )
            for f in d.unexpected
        ],
        mismatched=[
            MismatchedBoardOut(serial=m.serial, field=m.field, declared=m.declared, found=m.found) for m in d.mismatched
        ],
        counts=dict(d.counts),
    )


def diff_text(store: Store, *, text: str) -> InventoryDiffOut:
    """What syncing ``text`` would change, and where the fleet disagrees with it."""
    inv = parse_inventory(text, source=SOURCE)
    with store.read() as conn:
        return diff_out(diff(inv.boards(), inventory.stored_boards(conn), inventory.found_boards(conn)))


def sync_text(store: Store, *, text: str, dry_run: bool, principal: Principal, at: float) -> InventorySyncOut:
    """Make ``text`` the stored inventory, and let the discovered boards it names onboard; one
    transaction, with its audit entry."""
    inv = parse_inventory(text, source=SOURCE)
    with store.read() if dry_run else store.write() as conn:
        res = inventory.sync(conn, inv, by=principal.name, at=at, dry_run=dry_run)
        if not dry_run:
            d = res.diff
            detail = {
                "boards": len(inv.boards()),
                "hosts": len(inv.hosts()),
                "new": len(d.new),
                "removed": len(d.removed),
                "changed": len(d.changed),
                "approved": [s for s, _ in res.approved],
                "auto_approve": list(inv.auto_approve),
                "parallelism": inv.onboarding.parallelism,
            }
            note(conn, principal, "inventory.sync", None, at=at, detail=detail)
    return InventorySyncOut(
        diff=diff_out(res.diff),
        approved=[ApprovedBoardOut(serial=s, batch=a.batch, reason=a.reason) for s, a in res.approved],
        dry_run=dry_run,
        synced_at=res.synced_at,
    )


def show(store: Store) -> InventoryOut:
    """The stored inventory and its settings."""
    s = t.settings.c
    with store.read() as conn:
        synced_by = conn.execute(sa.select(s.updated_by).where(s.key == inventory.SYNCED_AT)).scalar()
        boards = inventory.stored_boards(conn)
        hosts = inventory.stored_hosts(conn)
        per_host: dict[str, int] = {}
        for b in boards:
            per_host[b.host] = per_host.get(b.host, 0) + 1
        return InventoryOut(
            synced_at=get_setting(conn, inventory.SYNCED_AT, None),
            synced_by=synced_by,
            auto_approve=inventory.auto_approve(conn),
            parallelism=int(get_setting(conn, inventory.PARALLELISM, DEFAULT_PARALLELISM)),
            hosts=[InventoryHostOut(id=h.id, site=h.site, rack=h.rack, boards=per_host.get(h.id, 0)) for h in hosts],
            boards=[_board(b) for b in boards],
        )


def default_batch(at: float) -> str:
    """``approved-YYYYmmddTHHMM`` (UTC): boards approved in the same minute share a batch."""
    return "approved-" + dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y%m%dT%H%M")


def approve(
    store: Store, *, serials: list[str], batch: str | None, reason: str, principal: Principal, at: float
) -> list[BoardOut]:
    """discovered → onboarding for every board named, as one batch; all or none."""
    batch = batch or default_batch(at)
    why = f"approved by {principal.name}: {reason}"
    with store.write() as conn:
        inventory.approve(conn, serials, batch=batch, reason=why, at=at)
        for serial in dict.fromkeys(serials):
            note(conn, principal, "board.approve", serial, at=at, reason=reason, detail={"batch": batch})
        rows = conn.execute(sa.select(t.boards).where(t.boards.c.id.in_(serials)).order_by(t.boards.c.id)).all()
    return [board_out(r) for r in rows]
