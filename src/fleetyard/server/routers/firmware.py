"""The firmware registry."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from fleetyard.domain.auth import Principal
from fleetyard.protocol.api import FirmwareIn, FirmwareOut
from fleetyard.server.auth import ANY, STAFF
from fleetyard.server.routers.deps import store
from fleetyard.server.services import firmware as svc
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1/firmware", tags=["firmware"])


@router.post("", response_model=FirmwareOut, status_code=201)
def push(body: FirmwareIn, request: Request, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> FirmwareOut:
    return svc.push(s, request.app.state.blobs, principal=p, req=body, at=now())


@router.get("", response_model=list[FirmwareOut])
def list_images(
    generation: str | None = None, _: Principal = Depends(ANY), s: Store = Depends(store)
) -> list[FirmwareOut]:
    return svc.list_images(s, generation=generation)


@router.get("/{generation}/{version}", response_model=FirmwareOut)
def get(generation: str, version: str, _: Principal = Depends(ANY), s: Store = Depends(store)) -> FirmwareOut:
    return svc.get(s, generation=generation, version=version)


@router.post("/{generation}/{version}/standard", response_model=FirmwareOut)
def set_standard(
    generation: str, version: str, p: Principal = Depends(STAFF), s: Store = Depends(store)
) -> FirmwareOut:
    return svc.set_standard(s, generation=generation, version=version, principal=p, at=now())
