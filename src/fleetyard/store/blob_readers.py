"""Which teams may read a blob: a team reads its own uploads, its jobs' outputs and registered
artifacts, never another team's inputs or outputs (staff and agents read every blob)."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from fleetyard.store import tables as t
from fleetyard.store.db import insert_ignore

__all__ = ["EVERY_TEAM", "grant", "readable"]

EVERY_TEAM = "*"


def grant(conn: sa.Connection, shas: Iterable[str], team: str) -> None:
    """Let ``team`` (or EVERY_TEAM) read these blobs."""
    insert_ignore(conn, t.blob_readers, [{"sha256": sha, "team": team} for sha in sorted(set(shas))])


def readable(conn: sa.Connection, sha256: str, team: str | None) -> bool:
    """Whether a user of ``team`` may read the blob: granted to the team or to every team, or a
    registered artifact (the registry is the fleet's)."""
    teams = [EVERY_TEAM] if team is None else [EVERY_TEAM, team]
    granted = sa.select(t.blob_readers.c.sha256).where(
        t.blob_readers.c.sha256 == sha256, t.blob_readers.c.team.in_(teams)
    )
    artifact = sa.select(t.artifacts.c.sha256).where(t.artifacts.c.sha256 == sha256)
    return conn.execute(granted.union_all(artifact).limit(1)).first() is not None
