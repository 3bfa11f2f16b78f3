"""The audit log of operator actions (staff only: it names who did what)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from fleetyard.domain.auth import Principal
from fleetyard.protocol.api import AuditEntryOut
from fleetyard.server.auth import STAFF
from fleetyard.server.routers.deps import store
from fleetyard.server.services import audit as svc
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit", response_model=list[AuditEntryOut])
def list_audit(
    since_s: float | None = Query(None, gt=0, description="only this many seconds back from now (default: all)"),
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    limit: int = Query(100, ge=1, le=10000),
    _: Principal = Depends(STAFF),
    s: Store = Depends(store),
) -> list[AuditEntryOut]:
    since = None if since_s is None else now() - since_s
    return svc.entries(s, since=since, actor=actor, action=action, target=target, limit=limit)
