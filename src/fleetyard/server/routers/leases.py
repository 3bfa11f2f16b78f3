"""Leases: boards held for an engineer (jobs of kind ``lease``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from fleetyard.domain.auth import Principal
from fleetyard.protocol.api import LeaseIn, LeaseOut, LeaseRenewIn
from fleetyard.server.auth import ANY, PEOPLE
from fleetyard.server.routers.deps import RowId, store
from fleetyard.server.services import leases as svc
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1/leases", tags=["leases"])


@router.post("", response_model=LeaseOut, status_code=201)
def take(body: LeaseIn, request: Request, p: Principal = Depends(PEOPLE), s: Store = Depends(store)) -> LeaseOut:
    state = request.app.state
    return svc.take(s, principal=p, lease=body, at=now(), fleet=state.fleet_view, blobs=state.blobs)


@router.get("", response_model=list[LeaseOut])
def list_leases(
    mine: bool = False, team: str | None = None, p: Principal = Depends(ANY), s: Store = Depends(store)
) -> list[LeaseOut]:
    return svc.list_leases(s, reader=p, owner=p.name if mine else None, team=team)


@router.get("/{lease_id}", response_model=LeaseOut)
def get_lease(lease_id: RowId, p: Principal = Depends(ANY), s: Store = Depends(store)) -> LeaseOut:
    return svc.get(s, lease_id=lease_id, reader=p)


@router.post("/{lease_id}/renew", response_model=LeaseOut)
def renew(
    lease_id: RowId,
    body: LeaseRenewIn | None = None,
    p: Principal = Depends(PEOPLE),
    s: Store = Depends(store),
) -> LeaseOut:
    return svc.renew(s, principal=p, lease_id=lease_id, ttl_s=body.ttl_s if body else None, at=now())


@router.delete("/{lease_id}", response_model=LeaseOut)
def release(lease_id: RowId, p: Principal = Depends(PEOPLE), s: Store = Depends(store)) -> LeaseOut:
    return svc.release(s, principal=p, lease_id=lease_id, at=now())
