"""The audit log: who did what to which target, when and why.

Callers write an entry with :func:`record` on the connection of the action itself, so the entry
and the action commit (or roll back) together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from fleetyard.store import tables as t

A = t.audit


def record(
    conn: sa.Connection,
    *,
    actor: str,
    role: str,
    action: str,
    target: str | None,
    reason: str | None = None,
    detail: Mapping[str, Any] | None = None,
    at: float,
) -> None:
    """Append one entry. ``detail`` must be JSON-ready and hold no secret."""
    conn.execute(
        A.insert().values(
            at=at,
            actor=actor,
            role=role,
            action=action,
            target=target,
            reason=reason or None,
            detail=dict(detail or {}),
        )
    )


def entries(
    conn: sa.Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    limit: int = 100,
) -> list[sa.Row[Any]]:
    """Entries matching every filter given (exact matches), newest first."""
    q = sa.select(A).order_by(A.c.at.desc(), A.c.id.desc()).limit(limit)
    if since is not None:
        q = q.where(A.c.at >= since)
    if until is not None:
        q = q.where(A.c.at <= until)
    if actor is not None:
        q = q.where(A.c.actor == actor)
    if action is not None:
        q = q.where(A.c.action == action)
    if target is not None:
        q = q.where(A.c.target == target)
    return list(conn.execute(q).all())
