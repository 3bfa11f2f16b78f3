"""Fleet-wide settings an operator changes without restarting anything (``settings`` table): one
JSON value per key, e.g. ``onboarding.parallelism``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleetyard.store import tables as t

__all__ = ["get_setting", "put_setting"]

S = t.settings


def get_setting(conn: sa.Connection, key: str, default: Any) -> Any:
    """The value of ``key``; ``default`` when it was never set."""
    row = conn.execute(sa.select(S.c.value).where(S.c.key == key)).first()
    return default if row is None else row.value


def put_setting(conn: sa.Connection, key: str, value: Any, *, by: str, at: float) -> None:
    """Set ``key`` to ``value`` (any JSON value), noting who and when."""
    done = conn.execute(S.update().where(S.c.key == key).values(value=value, updated_at=at, updated_by=by))
    if done.rowcount == 0:
        conn.execute(S.insert().values(key=key, value=value, updated_at=at, updated_by=by))
