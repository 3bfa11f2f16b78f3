"""``fleetyard boards …`` and ``fleetyard hosts …``: look at the fleet and take boards in and out."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import typer
from rich.table import Table

from fleetyard.cli._common import JsonOpt, client, parse_labels
from fleetyard.cli._output import (
    emit_json,
    fmt_ago,
    fmt_labels,
    fmt_time,
    key_values,
    note,
    out,
    styled,
    table,
)
from fleetyard.client import BoardOp, BoardOpOut, BoardOut, FaultAction, FaultKind, HostOut
from fleetyard.domain.board import BoardState
from fleetyard.domain.host import HostState

boards_app = typer.Typer(
    help="Look at boards; drain, undrain, reset or reflash them, inject faults.", no_args_is_help=True
)
hosts_app = typer.Typer(help="Look at hosts.", no_args_is_help=True)

ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in the board's history).")]


def _reading(board: BoardOut, key: str, fmt: str) -> str:
    value = board.telemetry.get(key)
    return "" if value is None else format(value, fmt)


def boards_table(boards: list[BoardOut]) -> Table:
    rows = [
        (
            b.id,
            b.host_id,
            b.slot,
            b.generation,
            b.firmware,
            styled(b.state),
            b.drain_reason or b.state_reason or "",
            "" if b.job_id is None else b.job_id,
            _reading(b, "temperature_c", ".0f"),
            _reading(b, "utilization_pct", ".0f"),
            fmt_labels(b.labels),
        )
        for b in boards
    ]
    cols = ("ID", "HOST", "SLOT", "GEN", "FIRMWARE", "STATE", "REASON", "JOB", "TEMP_C", "UTIL_%", "LABELS")
    return table(cols, rows)


def _state_summary(states: list[str]) -> str:
    counts = Counter(states)
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@boards_app.command("ls")
def boards_ls(
    ctx: typer.Context,
    state: Annotated[BoardState | None, typer.Option("--state", help="e.g. available, allocated, drained")] = None,
    host: Annotated[str | None, typer.Option("--host")] = None,
    gen: Annotated[str | None, typer.Option("--gen", help="Board generation, e.g. sim-g2.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="KEY=VALUE; repeat to match all.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List boards."""
    labels = parse_labels(label)
    with client(ctx) as fy:
        boards = fy.boards(state=state, host=host, generation=gen, labels=labels)
    if as_json:
        emit_json(boards)
        return
    if not boards:
        note("no boards match")
        return
    out().print(boards_table(boards))
    note(f"{len(boards)} boards: {_state_summary([b.state for b in boards])}")


def show_board(board: BoardOut) -> None:
    pairs: list[tuple[str, object]] = [
        ("id", board.id),
        ("host / slot", f"{board.host_id} / {board.slot}"),
        ("device", board.device),
        ("generation", board.generation),
        ("hardware revision", board.hardware_revision),
        ("firmware", board.firmware),
        ("state", styled(board.state)),
        ("state reason", board.state_reason),
        ("drain reason", board.drain_reason),
        ("onboarding batch", board.onboard_batch),
        ("job / attempt", "" if board.job_id is None else f"{board.job_id} / {board.attempt_id}"),
        ("labels", fmt_labels(board.labels)),
        ("probe", "" if board.probe_ok is None else ("ok" if board.probe_ok else f"FAIL {board.probe_reason}")),
        ("warm", ", ".join(sha[:12] for sha in board.warm)),
        ("telemetry at", fmt_time(board.telemetry_at)),
    ]
    pairs += [(f"  {k}", f"{v:g}") for k, v in sorted(board.telemetry.items())]
    out().print(key_values(pairs))


@boards_app.command("show")
def boards_show(ctx: typer.Context, board_id: Annotated[str, typer.Argument()], as_json: JsonOpt = False) -> None:
    """One board, with its telemetry."""
    with client(ctx) as fy:
        board = fy.board(board_id)
    if as_json:
        emit_json(board)
    else:
        show_board(board)


def _print_board_state(board: BoardOut, as_json: bool) -> None:
    if as_json:
        emit_json(board)
    else:
        reason = board.drain_reason or board.state_reason
        out().print(f"{board.id}: ", styled(board.state), f" ({reason})" if reason else "", sep="")


@boards_app.command("drain")
def boards_drain(
    ctx: typer.Context, board_id: Annotated[str, typer.Argument()], reason: ReasonOpt, as_json: JsonOpt = False
) -> None:
    """Take a board out of service (an allocated board drains when its job ends)."""
    with client(ctx) as fy:
        _print_board_state(fy.drain(board_id, reason), as_json)


@boards_app.command("undrain")
def boards_undrain(
    ctx: typer.Context, board_id: Annotated[str, typer.Argument()], reason: ReasonOpt, as_json: JsonOpt = False
) -> None:
    """Return a drained or suspect board to service."""
    with client(ctx) as fy:
        _print_board_state(fy.undrain(board_id, reason), as_json)


@boards_app.command("release")
def boards_release(
    ctx: typer.Context, board_id: Annotated[str, typer.Argument()], reason: ReasonOpt, as_json: JsonOpt = False
) -> None:
    """Let a board go from its host to move it to another (its rank there ends; it waits offline)."""
    with client(ctx) as fy:
        _print_board_state(fy.release(board_id, reason), as_json)


@boards_app.command("repaired")
def boards_repaired(
    ctx: typer.Context, board_id: Annotated[str, typer.Argument()], reason: ReasonOpt, as_json: JsonOpt = False
) -> None:
    """A quarantined board is back from repair: it serves again once it passes its L3 burn-in."""
    with client(ctx) as fy:
        _print_board_state(fy.repaired(board_id, reason), as_json)


@boards_app.command("approve")
def boards_approve(
    ctx: typer.Context,
    serials: Annotated[
        list[str],
        typer.Argument(
            metavar="SERIAL...", help="Boards waiting in discovered (fleetyard boards ls --state discovered)."
        ),
    ],
    batch: Annotated[
        str | None, typer.Option("--batch", help="Their onboarding batch (default approved-YYYYmmddTHHMM).")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in each board's history).")] = "approved",
    as_json: JsonOpt = False,
) -> None:
    """Let boards waiting in discovered onboard (inspect, flash, burn-in, then service), as one batch."""
    with client(ctx) as fy:
        boards = fy.approve_boards(serials, reason, batch=batch)
    if as_json:
        emit_json(boards)
        return
    for b in boards:
        out().print(f"{b.id}: ", styled(b.state), f" (batch {b.onboard_batch})" if b.onboard_batch else "", sep="")


@boards_app.command("history")
def boards_history(
    ctx: typer.Context,
    board_id: Annotated[str, typer.Argument()],
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """A board's state transitions, newest first."""
    with client(ctx) as fy:
        events = fy.board_history(board_id, limit=limit)
    if as_json:
        emit_json(events)
        return
    rows = [
        (
            fmt_time(e.at),
            e.from_state or "",
            styled(e.to_state),
            e.actor,
            "" if e.job_id is None else e.job_id,
            e.reason,
        )
        for e in events
    ]
    out().print(table(("AT", "FROM", "TO", "ACTOR", "JOB", "REASON"), rows))


@boards_app.command("fault")
def boards_fault(
    ctx: typer.Context,
    board_id: Annotated[str, typer.Argument()],
    kind: Annotated[
        FaultKind | None, typer.Argument(help="Fault to inject (or clear); with --clear and no KIND: all.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Clear the fault instead of injecting it.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Have a simulated board's agent inject (or clear) a fault: hang, crash, ecc_storm, …"""
    if kind is None and not clear:
        raise typer.BadParameter("name the fault to inject, or pass --clear", param_hint="KIND")
    action = FaultAction.CLEAR if clear else FaultAction.INJECT
    with client(ctx) as fy:
        order = fy.inject_fault(board_id, kind, action)
    if as_json:
        emit_json(order)
    else:
        what = order.kind or "all faults"
        out().print(f"fault order {order.id}: {order.action} {what} on {order.board_id}", markup=False)


@boards_app.command("op")
def boards_op(
    ctx: typer.Context,
    board_id: Annotated[str, typer.Argument()],
    op: Annotated[BoardOp, typer.Argument(help="host_reboot acts on every board of the board's host.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept with the op).")] = "",
    version: Annotated[
        str | None, typer.Option("--version", help="flash: a registered firmware version (fleetyard firmware ls).")
    ] = None,
    take_over: Annotated[
        bool,
        typer.Option(
            "--take-over",
            help="The board is under automatic remediation: close its case as taken over by you (audited);"
            " it stays drained until `fleetyard boards undrain`.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Have the board's agent carry out an op: soft_reset, hard_reset, reflash, host_reboot, or flash --version V.

    The board's running job (every job on the host, for host_reboot) ends as an infra error.
    A board under automatic remediation refuses ops by hand unless --take-over.
    `fleetyard boards ops BOARD` shows how it went."""
    with client(ctx) as fy:
        order = fy.order_board_op(board_id, op, reason, version=version, take_over=take_over)
    if as_json:
        emit_json(order)
    else:
        out().print(f"op {order.id}: {order.op} on {order.board_id} ({order.state})", markup=False)


def _op_duration(o: BoardOpOut) -> str:
    if o.started_at is None or o.finished_at is None:
        return ""
    return f"{o.finished_at - o.started_at:.1f}s"


@boards_app.command("ops")
def boards_ops(
    ctx: typer.Context,
    board_id: Annotated[str, typer.Argument()],
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """A board's ops (resets, reflashes, host reboots) and how each went, newest first."""
    with client(ctx) as fy:
        ops = fy.board_ops(board_id, limit=limit)
    if as_json:
        emit_json(ops)
        return
    rows = [
        (o.id, fmt_time(o.ordered_at), o.op, styled(o.state), _op_duration(o), o.actor, o.reason, o.message or "")
        for o in ops
    ]
    out().print(table(("ID", "ORDERED", "OP", "STATE", "TOOK", "ACTOR", "REASON", "MESSAGE"), rows))


@boards_app.command("repairs")
def boards_repairs(
    ctx: typer.Context,
    board_id: Annotated[str, typer.Argument()],
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 5,
    as_json: JsonOpt = False,
) -> None:
    """A board's remediation cases, newest first: why it left service, each step and check, and how it ended."""
    with client(ctx) as fy:
        cases = fy.repairs(board_id, limit=limit)
    if as_json:
        emit_json(cases)
        return
    rows = [
        (
            c.id,
            fmt_time(c.opened_at),
            styled(c.outcome or "open"),
            c.cause,
            "\n".join(c.evidence.get("steps", [])) or "-",
            c.reason or "",
        )
        for c in cases
    ]
    out().print(table(("ID", "OPENED", "OUTCOME", "CAUSE", "STEPS", "ENDED"), rows))


def hosts_table(hosts: list[HostOut]) -> Table:
    rows = [
        (
            h.id,
            styled(h.state),
            h.driver,
            h.boards,
            h.agent_version or "",
            fmt_ago(h.last_heartbeat_at),
            fmt_time(h.registered_at),
            fmt_labels(h.labels),
        )
        for h in hosts
    ]
    return table(("ID", "STATE", "DRIVER", "BOARDS", "AGENT", "HEARTBEAT", "REGISTERED", "LABELS"), rows)


@hosts_app.command("ls")
def hosts_ls(
    ctx: typer.Context,
    state: Annotated[HostState | None, typer.Option("--state")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List hosts."""
    with client(ctx) as fy:
        hosts = fy.hosts(state=state)
    if as_json:
        emit_json(hosts)
    elif not hosts:
        note("no hosts; start agents with `fleetyard agent` (or a local fleet with `fleetyard up`)")
    else:
        out().print(hosts_table(hosts))
        note(f"{len(hosts)} hosts, {sum(h.boards for h in hosts)} boards: {_state_summary([h.state for h in hosts])}")


@hosts_app.command("show")
def hosts_show(ctx: typer.Context, host_id: Annotated[str, typer.Argument()], as_json: JsonOpt = False) -> None:
    """One host and its boards."""
    with client(ctx) as fy:
        host = fy.host(host_id)
        boards = fy.boards(host=host_id)
    if as_json:
        emit_json({"host": host.model_dump(mode="json"), "boards": [b.model_dump(mode="json") for b in boards]})
        return
    out().print(hosts_table([host]))
    if boards:
        out().print()
        out().print(boards_table(boards))
