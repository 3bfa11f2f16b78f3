"""The declared inventory (diff, sync, show) and approving discovered boards into onboarding."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from fleetyard.domain.auth import Principal
from fleetyard.protocol.api import ApproveIn, BoardOut, InventoryDiffOut, InventoryIn, InventoryOut, InventorySyncOut
from fleetyard.server.auth import ANY, STAFF
from fleetyard.server.routers.deps import store
from fleetyard.server.services import inventory as svc
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1", tags=["inventory"])


@router.get("/inventory", response_model=InventoryOut)
def show(_: Principal = Depends(ANY), s: Store = Depends(store)) -> InventoryOut:
    return svc.show(s)


@router.post("/inventory/diff", response_model=InventoryDiffOut)
def diff(body: InventoryIn, _: Principal = Depends(STAFF), s: Store = Depends(store)) -> InventoryDiffOut:
    return svc.diff_text(s, text=body.text)


@router.post("/inventory/sync", response_model=InventorySyncOut)
def sync(body: InventoryIn, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> InventorySyncOut:
    return svc.sync_text(s, text=body.text, dry_run=body.dry_run, principal=p, at=now())


@router.post("/boards/approve", response_model=list[BoardOut])
def approve(body: ApproveIn, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> list[BoardOut]:
    return svc.approve(s, serials=body.boards, batch=body.batch, reason=body.reason, principal=p, at=now())
