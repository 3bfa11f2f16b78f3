"""How the CLI talks to people (Rich tables on stdout, errors in red on stderr) and scripts (JSON)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import typer
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fleetyard.errors import FleetyardError

STATE_STYLES: dict[str, str] = {
    # boards and hosts
    "available": "green",
    "online": "green",
    "allocated": "cyan",
    "drained": "yellow",
    "suspect": "yellow",
    "discovered": "blue",
    "onboarding": "blue",
    "servicing": "blue",
    "remediating": "magenta",
    "quarantined": "red",
    "offline": "red",
    "retired": "dim",
    # jobs
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "canceled": "dim",
    # outcomes
    "success": "green",
    "user_error": "red",
    "infra_error": "magenta",
    "timeout": "red",
    "preempted": "yellow",
    "config_error": "red",
    # board ops (succeeded and failed as jobs)
    "ordered": "yellow",
    "delivered": "cyan",
    "timed_out": "red",
}


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    # Piped output is read by grep and people's scrollback, not a terminal: never squeeze or
    # colour it to an imagined 80 columns.
    width = max(int(os.environ.get("COLUMNS", "0") or 0), 200)
    return Console(stderr=stderr, width=width, no_color=True, highlight=False)


def out() -> Console:
    """The console for data (stdout); made on each use so that redirected streams are honoured."""
    return _console(stderr=False)


def err() -> Console:
    """The console for progress, notes and errors (stderr)."""
    return _console(stderr=True)


def emit_json(data: Any) -> None:
    """Print data as JSON for scripts: models, lists of models, or plain values."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list):
        data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    typer.echo(json.dumps(to_jsonable_python(data), indent=2))


def compact(value: Any, limit: int = 600) -> str:
    text = json.dumps(to_jsonable_python(value, fallback=str), separators=(",", ":"), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_error(exc: FleetyardError) -> None:
    """An error as people want it: its message, then its detail compactly, in red; no traceback."""
    console = err()
    console.print(f"error: {exc.message}", style="bold red", markup=False, highlight=False, soft_wrap=True)
    detail = exc.detail
    if detail in (None, {}, []):
        return
    if isinstance(detail, list) and all(isinstance(d, Mapping) and "message" in d for d in detail):
        for d in detail[:20]:
            where = d.get("field") or d.get("loc") or ""
            console.print(f"  - {where}: {d['message']}", style="red", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(f"  {compact(detail)}", style="red", markup=False, highlight=False, soft_wrap=True)


def note(message: str, style: str = "dim") -> None:
    """A remark for people, on stderr so that stdout stays data."""
    err().print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def styled(value: str | None) -> Text:
    """A state or outcome, coloured."""
    if value is None:
        return Text("")
    return Text(value, style=STATE_STYLES.get(value, ""))


def _cell(value: Any) -> Text:
    # Cells hold data, never markup: a label like "[red]" must print as itself.
    if isinstance(value, Text):
        return value
    return Text("" if value is None else str(value))


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return ""
    return fmt_duration(max(0.0, (now if now is not None else time.time()) - ts)) + " ago"


def fmt_labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> Table:
    t = Table(*columns, title=title, header_style="bold", box=None, pad_edge=False)
    for row in rows:
        t.add_row(*(_cell(v) for v in row))
    return t


def key_values(pairs: Iterable[tuple[str, Any]], title: str | None = None) -> Table:
    t = Table(show_header=False, box=None, title=title, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for key, value in pairs:
        t.add_row(key, _cell(value))
    return t
