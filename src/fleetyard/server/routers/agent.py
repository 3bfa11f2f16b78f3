"""The agent protocol."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from fleetyard.domain.auth import Principal
from fleetyard.protocol.agent import (
    AssignmentBatch,
    EventAck,
    EventBatch,
    HeartbeatRequest,
    HeartbeatResponse,
    LeaveRequest,
    RegisterRequest,
    RegisterResponse,
)
from fleetyard.server.auth import AGENT
from fleetyard.server.big_body import openapi_body, parsed_off_loop
from fleetyard.server.feed import AssignmentFeed
from fleetyard.server.heartbeats import HeartbeatSink
from fleetyard.server.routers.deps import store
from fleetyard.server.services import agents as svc
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1/agent", tags=["agent"])


@router.post("/register", response_model=RegisterResponse)
def register(
    body: RegisterRequest, request: Request, p: Principal = Depends(AGENT), s: Store = Depends(store)
) -> RegisterResponse:
    svc.register(s, principal=p, req=body, at=now())
    request.app.state.heartbeats.registered(body.host, body.session)
    return RegisterResponse(host=body.host, heartbeat_interval_s=request.app.state.heartbeat_interval_s)


@router.post("/heartbeat", response_model=HeartbeatResponse)
async def heartbeat(body: HeartbeatRequest, request: Request, p: Principal = Depends(AGENT)) -> HeartbeatResponse:
    # The hottest endpoint: it stays in the event loop unless the session must be read from the store.
    sink: HeartbeatSink = request.app.state.heartbeats
    host = svc.agent_host(p)
    if not sink.knows(host, body.session):
        await run_in_threadpool(sink.check_session, host, body.session)
    return sink.accept(host, body, at=now())


@router.get("/assignments", response_model=AssignmentBatch)
async def assignments(
    request: Request,
    session: str,
    wait: float = Query(25.0, ge=0, le=60),
    p: Principal = Depends(AGENT),
    s: Store = Depends(store),
) -> AssignmentBatch:
    feed: AssignmentFeed = request.app.state.feed
    host = svc.agent_host(p)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    ev = feed.subscribe(host)
    try:
        while True:
            ev.clear()
            got = await run_in_threadpool(svc.take_assignments, s, principal=p, session=session, at=now())
            remaining = deadline - loop.time()
            if got or remaining <= 0:
                return AssignmentBatch(assignments=got)
            try:
                await asyncio.wait_for(ev.wait(), timeout=remaining)
            except TimeoutError:
                pass
    finally:
        feed.unsubscribe(host)


@router.post("/leave", status_code=204)
def leave(body: LeaveRequest, p: Principal = Depends(AGENT), s: Store = Depends(store)) -> Response:
    svc.leave(s, principal=p, session=body.session, at=now())
    return Response(status_code=204)


@router.post("/events", response_model=EventAck, openapi_extra=openapi_body(EventBatch))
def events(
    p: Principal = Depends(AGENT),
    body: EventBatch = Depends(parsed_off_loop(EventBatch, "events")),
    s: Store = Depends(store),
) -> EventAck:
    applied, cancel = svc.apply_events(s, principal=p, session=body.session, events=body.events, at=now())
    return EventAck(applied=applied, cancel=cancel)
