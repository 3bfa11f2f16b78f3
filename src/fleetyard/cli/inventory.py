"""``fleetyard inventory …``: the declared inventory (which boards each host should hold) and what differs.

fleetyard inventory diff examples/config/inventory.yaml   # new, removed, missing, moved, unexpected, mismatched
fleetyard inventory sync examples/config/inventory.yaml   # store it; discovered boards it names onboard
fleetyard inventory sync FILE --dry-run              # what it would do
fleetyard inventory show
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fleetyard.cli._common import JsonOpt, client
from fleetyard.cli._output import emit_json, fmt_time, key_values, note, out, table
from fleetyard.errors import BadRequest
from fleetyard.protocol.api import InventoryDiffOut, InventorySyncOut

app = typer.Typer(help="The declared inventory: diff it against the fleet, sync it, show it.", no_args_is_help=True)

FileArg = Annotated[
    Path, typer.Argument(dir_okay=False, help="The inventory (YAML; see examples/config/inventory.yaml).")
]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadRequest(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{path}: cannot read it: {exc}") from None


def _named(path: Path, exc: BadRequest) -> BadRequest:
    """The server's complaint about the text, with the file's name in front."""
    return BadRequest(f"{path}: {exc.message.removeprefix('inventory: ')}", detail=exc.detail)


def _where(host: str, slot: int) -> str:
    return f"{host} slot {slot}"


def diff_rows(d: InventoryDiffOut) -> list[tuple[Any, ...]]:
    """One row per finding: (WHAT, SERIAL, WHERE, DETAIL)."""
    rows: list[tuple[Any, ...]] = []
    rows += [("new", b.serial, _where(b.host, b.slot), f"{b.generation}, {b.site}/{b.rack}") for b in d.new]
    rows += [("removed", b.serial, _where(b.host, b.slot), "no longer declared") for b in d.removed]
    rows += [("changed", b.serial, _where(b.host, b.slot), f"now declared {b.generation}") for b in d.changed]
    rows += [("missing", b.serial, _where(b.host, b.slot), b.why) for b in d.missing]
    rows += [
        ("moved", m.serial, _where(m.to_host, m.to_slot), f"declared on {_where(m.from_host, m.from_slot)}")
        for m in d.moved
    ]
    rows += [
        ("unexpected", f.serial, _where(f.host, f.slot), f"{f.generation}, {f.state}: not declared")
        for f in d.unexpected
    ]
    rows += [
        ("mismatched", m.serial, "", f"{m.field}: declared {m.declared or '-'}, found {m.found or '-'}")
        for m in d.mismatched
    ]
    return rows


def _print_diff(d: InventoryDiffOut) -> None:
    rows = diff_rows(d)
    if rows:
        out().print(table(("WHAT", "SERIAL", "WHERE", "DETAIL"), rows))
    kinds = ("new", "removed", "changed", "missing", "moved", "unexpected", "mismatched")
    counts = ", ".join(f"{len(getattr(d, k))} {k}" for k in kinds if getattr(d, k))
    c = d.counts
    note(
        f"{c.get('declared', 0)} boards declared, {c.get('stored', 0)} stored, {c.get('found', 0)} found by agents"
        + (f": {counts}" if counts else "; no differences")
    )


@app.command("diff")
def diff(ctx: typer.Context, path: FileArg, as_json: JsonOpt = False) -> None:
    """What syncing FILE would change, and where the fleet disagrees with it (nothing is written)."""
    text = _read(path)
    try:
        d = client(ctx).inventory_diff(text)
    except BadRequest as exc:
        raise _named(path, exc) from None
    if as_json:
        emit_json(d)
    else:
        _print_diff(d)


@app.command("sync")
def sync(
    ctx: typer.Context,
    path: FileArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what it would do; change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Store FILE as the inventory: boards waiting in discovered that it names (or auto-approves) onboard."""
    text = _read(path)
    try:
        res: InventorySyncOut = client(ctx).sync_inventory(text, dry_run=dry_run)
    except BadRequest as exc:
        raise _named(path, exc) from None
    if as_json:
        emit_json(res)
        return
    _print_diff(res.diff)
    if res.approved:
        out().print(table(("ONBOARDS", "BATCH", "WHY"), [(a.serial, a.batch or "", a.reason) for a in res.approved]))
    verb = "would onboard" if dry_run else "onboarding"
    note(f"{len(res.approved)} discovered boards {verb}")
    note("dry run: nothing changed" if dry_run else f"synced at {fmt_time(res.synced_at)}")


@app.command("show")
def show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The stored inventory: hosts and boards by site and rack, auto-approve rules, onboarding parallelism."""
    inv = client(ctx).inventory()
    if as_json:
        emit_json(inv)
        return
    if inv.synced_at is None:
        note(
            "no inventory synced: the fleet is open (a board an agent finds serves at once); "
            "fleetyard inventory sync FILE"
        )
        return
    out().print(
        key_values(
            [
                ("synced", f"{fmt_time(inv.synced_at)} by {inv.synced_by or '?'}"),
                ("auto-approve", ", ".join(inv.auto_approve) or "none"),
                ("onboarding parallelism", inv.parallelism),
                ("hosts / boards", f"{len(inv.hosts)} / {len(inv.boards)}"),
            ]
        )
    )
    rows = [(b.site, b.rack, b.host, b.slot, b.serial, b.generation, b.hardware_revision or "") for b in inv.boards]
    if rows:
        out().print()
        out().print(table(("SITE", "RACK", "HOST", "SLOT", "SERIAL", "GEN", "HW REV"), rows))
    empty = [h.id for h in inv.hosts if not h.boards]
    if empty:
        note(f"hosts declared with no boards: {', '.join(empty)}")
