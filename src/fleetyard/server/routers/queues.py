"""Team queues and priority classes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from fleetyard.domain.auth import Principal
from fleetyard.domain.queue_config import QueueConfig, QueueQuota
from fleetyard.protocol.api import PriorityClassOut, QueueOut
from fleetyard.server.auth import ANY, STAFF
from fleetyard.server.routers.deps import store
from fleetyard.server.services import queues as svc
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1", tags=["queues"])


@router.get("/queues", response_model=list[QueueOut])
def list_queues(_: Principal = Depends(ANY), s: Store = Depends(store)) -> list[QueueOut]:
    return svc.list_queues(s)


@router.put("/queues", response_model=list[QueueOut])
def apply_config(body: QueueConfig, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> list[QueueOut]:
    return svc.apply_config(s, config=body, principal=p, at=now())


@router.get("/queues/{name}", response_model=QueueOut)
def get_queue(name: str, _: Principal = Depends(ANY), s: Store = Depends(store)) -> QueueOut:
    return svc.get_queue(s, name=name)


@router.put("/queues/{name}", response_model=QueueOut)
def put_queue(name: str, body: QueueQuota, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> QueueOut:
    return svc.put_queue(s, name=name, quota=body, principal=p, at=now())


@router.delete("/queues/{name}", status_code=204)
def delete_queue(name: str, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> Response:
    svc.delete_queue(s, name=name, principal=p, at=now())
    return Response(status_code=204)


@router.get("/priority-classes", response_model=list[PriorityClassOut])
def priority_classes(_: Principal = Depends(ANY), s: Store = Depends(store)) -> list[PriorityClassOut]:
    return svc.priority_classes(s)
