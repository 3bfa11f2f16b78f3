"""``fleetyard queues …``: team queues (quotas per generation, borrowing in cohorts) and priority classes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from fleetyard.cli._common import JsonOpt, client
from fleetyard.cli._output import emit_json, fmt_time, key_values, note, out, table
from fleetyard.domain import plain_yaml
from fleetyard.domain.queue_config import QueueConfig, parse_queue_config
from fleetyard.errors import BadRequest
from fleetyard.protocol.api import QueueOut

app = typer.Typer(help="Team queues, quotas and priority classes: list, show, apply a config.", no_args_is_help=True)

COLUMNS = ["QUEUE", "COHORT", "GEN", "NOMINAL", "BORROWING LIMIT", "IN USE", "BORROWED", "PENDING JOBS/BOARDS", "USAGE"]


def _n(value: int | None, none: str) -> str:
    return none if value is None else str(value)


def queue_rows(queues: list[QueueOut]) -> list[tuple[Any, ...]]:
    """One row per queue and generation; a queue with no generation in play gets one row."""
    rows: list[tuple[Any, ...]] = []
    for q in queues:
        usage = f"{q.usage:,.0f}"
        cohort = q.cohort or ""
        if not q.generations:
            nominal = "unlimited" if q.nominal is None else "0"
            rows.append((q.name, cohort, "-", nominal, "-", 0, 0, f"{q.pending_jobs}/{q.pending_boards}", usage))
        for g in q.generations:
            rows.append(
                (
                    q.name,
                    cohort,
                    g.generation,
                    _n(g.nominal, "unlimited"),
                    _n(g.borrowing_limit, "-"),
                    g.in_use,
                    g.borrowed,
                    f"{g.pending_jobs}/{g.pending_boards}",
                    usage,
                )
            )
    return rows


def load_config(path: Path) -> QueueConfig:
    """A queue config from a YAML (or JSON) file, validated here: errors name the file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadRequest(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{path}: cannot read it: {exc}") from None
    try:
        data = plain_yaml.load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadRequest(f"{path}: not valid YAML: {first}") from None
    if data is None:
        raise BadRequest(f"{path}: empty; expected a mapping with 'queues' (see examples/config/queues.yaml)")
    return parse_queue_config(data, where=str(path))


@app.command("ls")
def ls(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every team's queue: quota per generation, boards in use and borrowed, pending work, usage."""
    with client(ctx) as fy:
        queues = fy.queues()
    if as_json:
        emit_json(queues)
        return
    out().print(table(COLUMNS, queue_rows(queues)))


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The queue (a team's name).")],
    as_json: JsonOpt = False,
) -> None:
    """One queue in detail, with the headroom it has now per generation."""
    with client(ctx) as fy:
        q = fy.queue(name)
    if as_json:
        emit_json(q)
        return
    facts = [
        ("queue", q.name),
        ("configured", "yes" if q.configured else "no (a team with jobs: unlimited)"),
        ("cohort", q.cohort or ""),
        ("usage", f"{q.usage:,.0f} board-seconds (decayed)"),
        ("pending", f"{q.pending_jobs} jobs, {q.pending_boards} boards"),
    ]
    if q.updated_by:
        facts.append(("updated", f"{fmt_time(q.updated_at)} by {q.updated_by}"))
    out().print(key_values(facts))
    rows = [
        (
            g.generation,
            _n(g.nominal, "unlimited"),
            _n(g.borrowing_limit, "-"),
            g.in_use,
            g.borrowed,
            _n(g.headroom, "unlimited"),
            f"{g.pending_jobs}/{g.pending_boards}",
        )
        for g in q.generations
    ]
    out().print(
        table(["GEN", "NOMINAL", "BORROWING LIMIT", "IN USE", "BORROWED", "HEADROOM", "PENDING JOBS/BOARDS"], rows)
    )


@app.command("apply")
def apply(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A YAML file of queues and priority classes (examples/config/).")],
    as_json: JsonOpt = False,
) -> None:
    """Replace every queue and priority class with the file's (admin, operator); checked here first."""
    config = load_config(path)
    with client(ctx) as fy:
        queues = fy.apply_queues(config)
    if as_json:
        emit_json(queues)
        return
    classes = "the default priority classes" if config.priority_classes is None else "its priority classes"
    note(f"applied {path}: {len(config.queues)} queues and {classes}")
    out().print(table(COLUMNS, queue_rows(queues)))


@app.command("classes")
def classes(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The priority classes, highest first; a job that names none gets the default."""
    with client(ctx) as fy:
        found = fy.priority_classes()
    if as_json:
        emit_json(found)
        return
    rows = [
        (c.name, c.value, "yes" if c.default else "", "-" if c.max_lost_s is None else f"{c.max_lost_s:g} s")
        for c in found
    ]
    # MAX LOST: the most work a job of the class may throw away by preempting, per board it needs.
    out().print(table(["CLASS", "VALUE", "DEFAULT", "MAX LOST"], rows))
