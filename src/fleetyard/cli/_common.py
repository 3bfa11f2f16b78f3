"""What many commands share: the client the root options select, option parsing, data paths."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from fleetyard.cli._output import print_error
from fleetyard.domain.health_config import DEFAULT_HEALTH, HealthConfig, parse_health_config
from fleetyard.errors import BadRequest, FleetyardError

if TYPE_CHECKING:
    from fleetyard.client import Client

DEFAULT_DATA_DIR = Path(".fleetyard")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Store URL (sqlite:///… or postgresql://…); default: SQLite in --data-dir."),
]
DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="Folder for the SQLite store, blobs, logs and locks.")]


@dataclass
class CliState:
    """The root options, handed to every command through ``ctx.obj``."""

    server: str | None = None
    token: str | None = None


def client(ctx: typer.Context) -> Client:
    """A client for the server the root options, environment or config file select."""
    from fleetyard.client import Client

    state = ctx.find_root().obj
    if not isinstance(state, CliState):
        state = CliState()
    return Client(server=state.server, token=state.token)


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_duration(text: str, option: str) -> float:
    """``90m``, ``2h``, ``7d``, ``45s`` or plain seconds → seconds (a bad one names ``option``)."""
    m = _DURATION.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"expected a duration like 90m, 2h, 7d or seconds, got {text!r}", param_hint=option)
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_labels(items: Iterable[str] | None) -> dict[str, str]:
    """``["k=v", …]`` → ``{"k": "v"}``; anything else is a usage error."""
    labels: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="'--label'")
        labels[key.strip()] = value.strip()
    return labels


def db_url(db: str | None, data_dir: Path) -> str:
    """The store URL: ``--db`` wins, else SQLite in the data dir."""
    from fleetyard.store.db import resolve_db_url

    return resolve_db_url(db, data_dir)


def read_health_config(path: Path | None) -> HealthConfig:
    """The health configuration in ``path`` (YAML), or the default when there is none."""
    if path is None:
        return DEFAULT_HEALTH
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadRequest(f"cannot read the health config {path}: {exc.strerror}; pass a readable YAML file") from None
    return parse_health_config(text, source=str(path))


class RootGroup(TyperGroup):
    """The root group: turns a FleetyardError from any command into a red message and exit 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except FleetyardError as exc:
            print_error(exc)
            raise typer.Exit(1) from None
        except BrokenPipeError:
            # `fleetyard jobs ls | head`: the reader left; end quietly, as Unix tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(141) from None
