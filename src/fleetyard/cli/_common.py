"""What many commands share: the client the root options select, option parsing, data paths."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

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
