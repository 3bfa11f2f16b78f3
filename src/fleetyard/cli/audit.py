"""``fleetyard audit ls``: the operator actions recorded by the server (admin, operator)."""

from __future__ import annotations

from typing import Annotated

import typer

from fleetyard.cli._common import JsonOpt, client, parse_duration
from fleetyard.cli._output import compact, emit_json, fmt_time, out, table

app = typer.Typer(help="The audit log: who did what to which target, when and why.", no_args_is_help=True)


@app.command("ls")
def ls(
    ctx: typer.Context,
    since: Annotated[str, typer.Option("--since", help="How far back from now: 90m, 12h, 7d.")] = "7d",
    actor: Annotated[str | None, typer.Option("--actor", help="Only this token's actions.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action, e.g. board.drain.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Only actions on this board, queue, token…")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000, help="At most this many, newest first.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Operator actions, newest first: drains, board ops, breaker resets, queue and token changes."""
    with client(ctx) as fy:
        entries = fy.audit(
            since_s=parse_duration(since, "'--since'"), actor=actor, action=action, target=target, limit=limit
        )
    if as_json:
        emit_json(entries)
        return
    rows = [
        (
            fmt_time(e.at),
            e.actor,
            e.role,
            e.action,
            e.target or "",
            e.reason or "",
            compact(e.detail, 120) if e.detail else "",
        )
        for e in entries
    ]
    out().print(table(("WHEN", "ACTOR", "ROLE", "ACTION", "TARGET", "REASON", "DETAIL"), rows))
