"""Artifacts."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from fleetyard.domain.auth import Principal
from fleetyard.protocol.api import ArtifactIn, ArtifactOut
from fleetyard.server.auth import ANY, PEOPLE
from fleetyard.server.routers.deps import store
from fleetyard.server.services import artifacts as svc
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])


@router.post("", response_model=ArtifactOut, status_code=201)
def push(body: ArtifactIn, request: Request, p: Principal = Depends(PEOPLE), s: Store = Depends(store)) -> ArtifactOut:
    return svc.push(s, request.app.state.blobs, principal=p, req=body, at=now())


@router.get("", response_model=list[ArtifactOut])
def list_artifacts(
    name: str | None = None,
    limit: int = Query(100, ge=1, le=10000),
    _: Principal = Depends(ANY),
    s: Store = Depends(store),
) -> list[ArtifactOut]:
    return svc.list_artifacts(s, name=name, limit=limit)


@router.get("/{sha256}", response_model=ArtifactOut)
def get(sha256: str, _: Principal = Depends(ANY), s: Store = Depends(store)) -> ArtifactOut:
    return svc.get(s, sha256=sha256)
