"""Staged firmware rollouts: start, list, status, pause, resume, abort."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from fleetyard.domain.auth import Principal
from fleetyard.protocol.api import ReasonIn, RolloutDetail, RolloutIn, RolloutOut
from fleetyard.server.auth import ANY, STAFF
from fleetyard.server.routers.deps import RowId, store
from fleetyard.server.services import rollouts as svc
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1/rollouts", tags=["firmware"])


@router.post("", response_model=RolloutDetail, status_code=201)
def start(body: RolloutIn, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> RolloutDetail:
    return svc.start(s, principal=p, req=body, at=now())


@router.get("", response_model=list[RolloutOut])
def list_rollouts(
    generation: str | None = None, active: bool = False, _: Principal = Depends(ANY), s: Store = Depends(store)
) -> list[RolloutOut]:
    return svc.list_rollouts(s, generation=generation, active=active)


@router.get("/{rollout_id}", response_model=RolloutDetail)
def get(rollout_id: RowId, _: Principal = Depends(ANY), s: Store = Depends(store)) -> RolloutDetail:
    return svc.get(s, rollout_id=rollout_id)


@router.post("/{rollout_id}/pause", response_model=RolloutDetail)
def pause(rollout_id: RowId, body: ReasonIn, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> RolloutDetail:
    return svc.pause(s, rollout_id=rollout_id, principal=p, reason=body.reason, at=now())


@router.post("/{rollout_id}/resume", response_model=RolloutDetail)
def resume(
    rollout_id: RowId, body: ReasonIn, p: Principal = Depends(STAFF), s: Store = Depends(store)
) -> RolloutDetail:
    return svc.resume(s, rollout_id=rollout_id, principal=p, reason=body.reason, at=now())


@router.post("/{rollout_id}/abort", response_model=RolloutDetail)
def abort(rollout_id: RowId, body: ReasonIn, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> RolloutDetail:
    return svc.abort(s, rollout_id=rollout_id, principal=p, reason=body.reason, at=now())
