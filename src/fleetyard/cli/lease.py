"""``fleetyard lease …``: take, renew, release and list leases (boards held for an engineer)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Group, RenderableType

from fleetyard.cli._common import JsonOpt, client, parse_duration, parse_labels
from fleetyard.cli._follow import EXIT_WAIT_TIMED_OUT
from fleetyard.cli._output import emit_json, err, fmt_duration, fmt_time, key_values, note, out, styled, table
from fleetyard.protocol.api import LeaseOut

app = typer.Typer(help="Hold boards for yourself for a while: take, renew, release, list.", no_args_is_help=True)


def parse_ttl(text: str) -> float:
    """``90m``, ``2h``, ``1d``, ``45s`` or plain seconds → seconds."""
    return parse_duration(text, "'--ttl'")


TtlOpt = Annotated[str, typer.Option("--ttl", help="How long: 90m, 2h, 1d, or seconds; counts from when granted.")]


def _left(lease: LeaseOut) -> str:
    if lease.expires_at is None:
        return ""
    return fmt_duration(max(0.0, lease.expires_at - time.time()))


def leases_table(leases: list[LeaseOut]) -> RenderableType:
    rows = [
        (
            x.id,
            styled(x.state),
            x.owner,
            x.team,
            " ".join(b.board_id for b in x.boards) or f"({x.boards_wanted} wanted)",
            " ".join(sorted({b.host_id for b in x.boards})),
            fmt_time(x.expires_at),
            _left(x),
            x.note or x.pending_reason or "",
        )
        for x in leases
    ]
    return table(("ID", "STATE", "OWNER", "TEAM", "BOARDS", "HOSTS", "EXPIRES", "LEFT", "NOTE"), rows)


def show_lease(lease: LeaseOut) -> None:
    pairs: list[tuple[str, object]] = [
        ("lease", lease.id),
        ("state", styled(lease.state) if not lease.ended else f"{lease.state} ({lease.ended})"),
        ("team / owner", f"{lease.team} / {lease.owner}"),
        ("note", lease.note),
        ("ttl", fmt_duration(lease.ttl_s)),
        ("expires", f"{fmt_time(lease.expires_at)} (in {_left(lease)})" if lease.expires_at else "when granted + ttl"),
        ("waiting", lease.pending_reason),
        ("message", lease.message),
    ]
    parts: list[RenderableType] = [key_values([(k, v) for k, v in pairs if v not in (None, "")])]
    for b in lease.boards:
        parts.append("")
        parts.append(f"[bold]board {b.board_id}[/] ({b.device or '?'}) on host [bold]{b.host_id}[/]: {b.state}")
        if b.access:
            parts.append(key_values([("on the host", b.access.get("shell")), ("from afar", b.access.get("ssh"))]))
    out().print(Group(*parts))


@app.command("take")
def take(
    ctx: typer.Context,
    ttl: TtlOpt,
    boards: Annotated[int, typer.Option("--boards", "-n", min=1, help="How many boards, all at once.")] = 1,
    gen: Annotated[list[str] | None, typer.Option("--gen", help="Board generation (repeat: any of them).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Board label KEY=VALUE (repeat).")] = None,
    board: Annotated[list[str] | None, typer.Option("--board", help="Only this board (repeat).")] = None,
    note_: Annotated[str | None, typer.Option("--note", help="What the boards are for.")] = None,
    team: Annotated[str | None, typer.Option("--team")] = None,
    priority_class: Annotated[str | None, typer.Option("--priority-class")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once queued; do not wait for boards.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Wait at most this many seconds (exit 124).")] = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Take a lease of boards; waits until they are yours and prints how to reach each one."""
    with client(ctx) as fy:
        lease = fy.take_lease(
            parse_ttl(ttl),
            boards=boards,
            generations=gen or [],
            labels=parse_labels(label),
            board_ids=board or [],
            note=note_,
            team=team,
            priority_class=priority_class,
        )
        note(f"lease {lease.id} taken; release it with `fleetyard lease release {lease.id}`")
        if not no_wait:
            with err().status(f"waiting for the boards of lease {lease.id}"):
                lease = fy.wait_lease(lease.id, timeout=timeout)
    if as_json:
        emit_json(lease)
    else:
        show_lease(lease)
    if lease.ended:
        raise typer.Exit(1)
    if not no_wait and not (lease.boards and all(b.access for b in lease.boards)):
        note(f"lease {lease.id} is still waiting for boards", style="yellow")
        raise typer.Exit(EXIT_WAIT_TIMED_OUT)


@app.command("renew")
def renew(
    ctx: typer.Context,
    lease_id: Annotated[int, typer.Argument()],
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="From now: 90m, 2h, 1d or seconds; default: its TTL.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a lease end later: its TTL (or --ttl) from now."""
    with client(ctx) as fy:
        lease = fy.renew_lease(lease_id, parse_ttl(ttl) if ttl is not None else None)
    if as_json:
        emit_json(lease)
    else:
        out().print(f"lease {lease.id}: expires {fmt_time(lease.expires_at) or 'ttl after its boards are granted'}")


@app.command("release")
def release(ctx: typer.Context, lease_id: Annotated[int, typer.Argument()], as_json: JsonOpt = False) -> None:
    """Give a lease's boards back."""
    with client(ctx) as fy:
        lease = fy.release_lease(lease_id)
    if as_json:
        emit_json(lease)
    else:
        done = "released" if lease.ended else "releasing: its boards return once their agent has stopped it"
        out().print(f"lease {lease.id}: {done}")


@app.command("ls")
def ls(
    ctx: typer.Context,
    mine: Annotated[bool, typer.Option("--mine", help="Only leases taken with this token.")] = False,
    team: Annotated[str | None, typer.Option("--team")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List active leases (queued or running)."""
    with client(ctx) as fy:
        leases = fy.leases(mine=mine, team=team)
    if as_json:
        emit_json(leases)
    elif not leases:
        note("no active leases")
    else:
        out().print(leases_table(leases))


@app.command("show")
def show(ctx: typer.Context, lease_id: Annotated[int, typer.Argument()], as_json: JsonOpt = False) -> None:
    """One lease and how to reach its boards."""
    with client(ctx) as fy:
        lease = fy.lease(lease_id)
    if as_json:
        emit_json(lease)
    else:
        show_lease(lease)
