"""Hosts and boards."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from fleetyard.domain.auth import Principal
from fleetyard.domain.board import BoardState
from fleetyard.domain.host import HostState
from fleetyard.errors import BadRequest
from fleetyard.protocol.api import (
    BoardEventOut,
    BoardOpIn,
    BoardOpOut,
    BoardOut,
    BreakerOut,
    FaultIn,
    FaultOrderOut,
    FleetStatsOut,
    HostOut,
    ReasonIn,
    RepairOut,
)
from fleetyard.server.auth import ANY, STAFF
from fleetyard.server.routers.deps import store
from fleetyard.server.services import boards as svc
from fleetyard.server.services import stats
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1", tags=["fleet"])


@router.get("/fleet/stats", response_model=FleetStatsOut)
def fleet_stats(
    since_s: float = Query(7 * 86400.0, gt=0, description="the window: this many seconds back from now"),
    _: Principal = Depends(ANY),
    s: Store = Depends(store),
) -> FleetStatsOut:
    at = now()
    return stats.fleet_stats(s, since=at - since_s, until=at)


@router.get("/fleet/breakers", response_model=list[BreakerOut])
def list_breakers(_: Principal = Depends(ANY), s: Store = Depends(store)) -> list[BreakerOut]:
    return stats.list_breakers(s)


@router.post("/fleet/breakers/{generation}/reset", response_model=BreakerOut)
def reset_breaker(
    generation: str, body: ReasonIn, p: Principal = Depends(STAFF), s: Store = Depends(store)
) -> BreakerOut:
    return stats.reset_breaker(s, generation=generation, principal=p, reason=body.reason, at=now())


@router.get("/hosts", response_model=list[HostOut])
def list_hosts(state: HostState | None = None, _: Principal = Depends(ANY), s: Store = Depends(store)) -> list[HostOut]:
    return svc.list_hosts(s, state=state)


@router.get("/hosts/{host_id}", response_model=HostOut)
def get_host(host_id: str, _: Principal = Depends(ANY), s: Store = Depends(store)) -> HostOut:
    return svc.get_host(s, host_id=host_id)


def _labels(raw: list[str]) -> dict[str, str]:
    out = {}
    for item in raw:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise BadRequest(f"label filter {item!r} must look like key=value", detail={"field": "label"})
        out[k] = v
    return out


@router.get("/boards", response_model=list[BoardOut])
def list_boards(
    state: BoardState | None = None,
    host: str | None = None,
    generation: str | None = None,
    label: list[str] = Query(default_factory=list),
    _: Principal = Depends(ANY),
    s: Store = Depends(store),
) -> list[BoardOut]:
    return svc.list_boards(s, state=state, host=host, generation=generation, labels=_labels(label))


@router.get("/boards/{board_id}", response_model=BoardOut)
def get_board(board_id: str, _: Principal = Depends(ANY), s: Store = Depends(store)) -> BoardOut:
    return svc.get_board(s, board_id=board_id)


@router.post("/boards/{board_id}/drain", response_model=BoardOut)
def drain(board_id: str, body: ReasonIn, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> BoardOut:
    return svc.drain(s, board_id=board_id, reason=body.reason, principal=p, at=now())


@router.post("/boards/{board_id}/release", response_model=BoardOut)
def release(board_id: str, body: ReasonIn, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> BoardOut:
    return svc.release(s, board_id=board_id, reason=body.reason, principal=p, at=now())


@router.post("/boards/{board_id}/repaired", response_model=BoardOut)
def repaired(board_id: str, body: ReasonIn, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> BoardOut:
    return svc.repaired(s, board_id=board_id, reason=body.reason, principal=p, at=now())


@router.post("/boards/{board_id}/undrain", response_model=BoardOut)
def undrain(board_id: str, body: ReasonIn, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> BoardOut:
    return svc.undrain(s, board_id=board_id, reason=body.reason, principal=p, at=now())


@router.get("/boards/{board_id}/history", response_model=list[BoardEventOut])
def history(
    board_id: str,
    limit: int = Query(100, ge=1, le=10000),
    _: Principal = Depends(ANY),
    s: Store = Depends(store),
) -> list[BoardEventOut]:
    return svc.history(s, board_id=board_id, limit=limit)


@router.get("/boards/{board_id}/repairs", response_model=list[RepairOut])
def repairs(
    board_id: str,
    limit: int = Query(20, ge=1, le=1000),
    _: Principal = Depends(ANY),
    s: Store = Depends(store),
) -> list[RepairOut]:
    return svc.repairs(s, board_id=board_id, limit=limit)


@router.post("/boards/{board_id}/ops", response_model=BoardOpOut, status_code=201)
def order_op(board_id: str, body: BoardOpIn, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> BoardOpOut:
    return svc.order_op(
        s,
        board_id=board_id,
        op=body.op,
        reason=body.reason,
        principal=p,
        at=now(),
        timeout_s=body.timeout_s,
        version=body.version,
        take_over=body.take_over,
    )


@router.get("/boards/{board_id}/ops", response_model=list[BoardOpOut])
def list_ops(
    board_id: str,
    limit: int = Query(100, ge=1, le=10000),
    _: Principal = Depends(ANY),
    s: Store = Depends(store),
) -> list[BoardOpOut]:
    return svc.list_ops(s, board_id=board_id, at=now(), limit=limit)


@router.get("/admin/boards/{board_id}/faults", response_model=list[FaultOrderOut])
def list_faults(
    board_id: str,
    limit: int = Query(100, ge=1, le=10000),
    _: Principal = Depends(STAFF),
    s: Store = Depends(store),
) -> list[FaultOrderOut]:
    return svc.list_faults(s, board_id=board_id, limit=limit)


@router.post("/admin/boards/{board_id}/faults", response_model=FaultOrderOut, status_code=201)
def fault(board_id: str, body: FaultIn, p: Principal = Depends(STAFF), s: Store = Depends(store)) -> FaultOrderOut:
    return svc.order_fault(s, board_id=board_id, kind=body.kind, action=body.action, principal=p, at=now())
