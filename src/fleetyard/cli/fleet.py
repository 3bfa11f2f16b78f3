"""``fleetyard fleet stats``: how available the fleet has been, from the board event log."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group
from rich.table import Table

from fleetyard.cli._common import JsonOpt, client, parse_duration
from fleetyard.cli._output import emit_json, fmt_duration, fmt_time, key_values, out, table
from fleetyard.client import FleetStatsOut
from fleetyard.protocol.api import BreakerOut

app = typer.Typer(help="The fleet as a whole: availability and incidents.", no_args_is_help=True)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.3f} %"


def stats_view(s: FleetStatsOut) -> Group:
    missed = s.faults_undetected
    summary = key_values(
        [
            ("window", f"{fmt_time(s.since)} → {fmt_time(s.until)}"),
            ("boards", f"{s.boards} ({s.board_days:.1f} board-days counted; planned maintenance excluded)"),
            ("availability", _pct(s.availability)),
            ("incidents", f"{s.incidents} ({s.incidents_per_1000_board_days or 0:.1f} per 1000 board-days)"),
            ("MTTR", fmt_duration(s.mttr_s) or "-"),
            ("MTBI", fmt_duration(s.mtbi_s) or "-"),
            ("MTTD", f"{fmt_duration(s.mttd_s) or '-'} ({s.faults_detected} injected faults seen, {missed} not)"),
        ]
    )
    parts = [
        summary,
        table(
            ["GENERATION", "BOARDS", "AVAILABILITY", "INCIDENTS"],
            [(g.generation, g.boards, _pct(g.availability), g.incidents) for g in s.by_generation],
        ),
    ]
    if s.by_cause:
        parts.append(table(["CAUSE", "INCIDENTS"], list(s.by_cause.items())))
    if s.worst_boards:
        parts.append(table(["LEAST AVAILABLE", "AVAILABILITY"], [(b, _pct(a)) for b, a in s.worst_boards]))
    return Group(*parts)


@app.command("stats")
def stats(
    ctx: typer.Context,
    since: Annotated[str, typer.Option("--since", help="The window, back from now: 90m, 12h, 7d.")] = "7d",
    as_json: JsonOpt = False,
) -> None:
    """Availability (in service over counted time), incidents by cause and generation, MTTR, MTBI, MTTD."""
    s = client(ctx).fleet_stats(parse_duration(since, "'--since'"))
    if as_json:
        emit_json(s)
        return
    out().print(stats_view(s))


def breakers_table(rows: list[BreakerOut]) -> Table:
    return table(
        ["GENERATION", "BREAKER", "SINCE", "REASON"],
        [
            (
                b.generation,
                "tripped" if b.tripped else ("reset" if b.reset_at else "closed"),
                fmt_time(b.tripped_at if b.tripped else b.reset_at),
                b.reason if b.tripped else (f"reset by {b.reset_by}: {b.reset_reason}" if b.reset_at else ""),
            )
            for b in rows
        ],
    )


@app.command("breakers")
def breakers(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Each generation's circuit breaker (tripped, it stops automatic remediation of the generation), and
    the control plane's: tripped while many hosts are silent together, no host is lost and no board taken out."""
    rows = client(ctx).breakers()
    if as_json:
        emit_json(rows)
        return
    out().print(breakers_table(rows))


@app.command("reset-breaker")
def reset_breaker(
    ctx: typer.Context,
    generation: Annotated[
        str, typer.Argument(help="The generation whose breaker tripped, or control-plane (its hosts may then be lost).")
    ],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why it is safe to go on (recorded).")],
    as_json: JsonOpt = False,
) -> None:
    """Let automatic remediation of a generation go on again, once the cause is understood."""
    b = client(ctx).reset_breaker(generation, reason)
    if as_json:
        emit_json(b)
        return
    out().print(breakers_table([b]))
