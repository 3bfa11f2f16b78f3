"""Pipeline runs: start, list, show, cancel."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request

from fleetyard.domain.auth import Principal
from fleetyard.protocol.api import PipelineIn, PipelineRunOut
from fleetyard.server.auth import ANY, PEOPLE
from fleetyard.server.routers.deps import RowId, store
from fleetyard.server.services import pipelines as svc
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])


@router.post("", response_model=PipelineRunOut, status_code=201)
def start(
    body: PipelineIn, request: Request, p: Principal = Depends(PEOPLE), s: Store = Depends(store)
) -> PipelineRunOut:
    state = request.app.state
    return svc.start(s, principal=p, req=body, at=now(), fleet=state.fleet_view, blobs=state.blobs)


@router.get("", response_model=list[PipelineRunOut])
def list_runs(
    state: Literal["running", "succeeded", "failed", "gated", "timed_out", "canceled"] | None = None,
    limit: int = Query(50, ge=1, le=10000),
    p: Principal = Depends(ANY),
    s: Store = Depends(store),
) -> list[PipelineRunOut]:
    return svc.list_runs(s, reader=p, state=state, limit=limit)


@router.get("/{run_id}", response_model=PipelineRunOut)
def get(run_id: RowId, p: Principal = Depends(ANY), s: Store = Depends(store)) -> PipelineRunOut:
    return svc.get(s, run_id=run_id, reader=p)


@router.post("/{run_id}/cancel", response_model=PipelineRunOut)
def cancel(run_id: RowId, p: Principal = Depends(PEOPLE), s: Store = Depends(store)) -> PipelineRunOut:
    return svc.cancel(s, principal=p, run_id=run_id, at=now())
