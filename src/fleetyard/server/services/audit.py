"""The audit log: recording operator actions (in their own transaction) and reading them back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.auth import Principal
from fleetyard.protocol.api import AuditEntryOut
from fleetyard.store import audit
from fleetyard.store.db import Store


def note(
    conn: sa.Connection,
    principal: Principal,
    action: str,
    target: str | None,
    *,
    at: float,
    reason: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Record ``principal``'s action on ``conn``, the action's own transaction: if the action
    fails, its entry rolls back with it."""
    audit.record(
        conn,
        actor=principal.name,
        role=str(principal.role),
        action=action,
        target=target,
        reason=reason,
        detail=detail,
        at=at,
    )


def entries(
    store: Store,
    *,
    since: float | None = None,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    limit: int = 100,
) -> list[AuditEntryOut]:
    with store.read() as conn:
        rows = audit.entries(conn, since=since, actor=actor, action=action, target=target, limit=limit)
    return [AuditEntryOut.model_validate(r._asdict()) for r in rows]
