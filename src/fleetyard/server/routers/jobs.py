"""Jobs."""

from __future__ import annotations

import asyncio
import functools

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from fleetyard.domain.auth import Principal
from fleetyard.domain.job import JobState
from fleetyard.domain.spec import JobSpec
from fleetyard.protocol.api import JobBatchIn, JobBatchOut, JobDetail, JobOut, LogsOut, ResultsOut, WhyOut
from fleetyard.server.auth import ANY, PEOPLE
from fleetyard.server.big_body import openapi_body, parsed_off_loop
from fleetyard.server.routers.deps import MAX_ID, RowId, store
from fleetyard.server.services import jobs as svc
from fleetyard.server.services import why as why_svc
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
POLL_S = 0.1


@router.post("", response_model=JobOut, status_code=201)
def submit(spec: JobSpec, request: Request, p: Principal = Depends(PEOPLE), s: Store = Depends(store)) -> JobOut:
    state = request.app.state
    [job_id] = svc.submit(s, principal=p, specs=[spec], at=now(), fleet=state.fleet_view, blobs=state.blobs)
    return svc.get_brief(s, job_id=job_id, reader=p)


@router.post("/batch", response_model=JobBatchOut, status_code=201, openapi_extra=openapi_body(JobBatchIn))
def submit_batch(
    request: Request,
    p: Principal = Depends(PEOPLE),
    body: JobBatchIn = Depends(parsed_off_loop(JobBatchIn, "jobs")),
    s: Store = Depends(store),
) -> JobBatchOut:
    state = request.app.state
    return JobBatchOut(
        ids=svc.submit(s, principal=p, specs=body.jobs, at=now(), fleet=state.fleet_view, blobs=state.blobs)
    )


@router.get("", response_model=list[JobOut])
def list_jobs(
    state: JobState | None = None,
    team: str | None = None,
    kind: str | None = None,
    limit: int = Query(100, ge=1, le=10000),
    before: int | None = Query(None, ge=0, le=MAX_ID),
    p: Principal = Depends(ANY),
    s: Store = Depends(store),
) -> list[JobOut]:
    return svc.list_jobs(s, state=state, team=team, kind=kind, limit=limit, before=before, reader=p)


@router.get("/{job_id}/why", response_model=WhyOut)
def why(job_id: RowId, _: Principal = Depends(ANY), s: Store = Depends(store)) -> WhyOut:
    return why_svc.why(s, job_id=job_id)


@router.get("/{job_id}", response_model=JobDetail)
def get_job(job_id: RowId, p: Principal = Depends(ANY), s: Store = Depends(store)) -> JobDetail:
    return svc.get(s, job_id=job_id, reader=p)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel(job_id: RowId, p: Principal = Depends(PEOPLE), s: Store = Depends(store)) -> JobOut:
    return svc.cancel(s, principal=p, job_id=job_id, at=now())


@router.get("/{job_id}/wait", response_model=JobOut)
async def wait(
    job_id: RowId,
    timeout: float = Query(30.0, ge=0, le=60),
    p: Principal = Depends(ANY),
    s: Store = Depends(store),
) -> JobOut:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        job = await run_in_threadpool(functools.partial(svc.get_brief, s, job_id=job_id, reader=p))
        if JobState(job.state).finished or loop.time() >= deadline:
            return job
        await asyncio.sleep(POLL_S)


@router.get("/{job_id}/logs", response_model=LogsOut)
async def logs(
    job_id: RowId,
    after: int = Query(0, ge=0, le=MAX_ID),
    wait: float = Query(0.0, ge=0, le=60),
    p: Principal = Depends(ANY),
    s: Store = Depends(store),
) -> LogsOut:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        out = await run_in_threadpool(functools.partial(svc.logs, s, job_id=job_id, after=after, reader=p))
        if out.chunks or out.finished or loop.time() >= deadline:
            return out
        await asyncio.sleep(POLL_S)


@router.get("/{job_id}/results", response_model=ResultsOut)
def results(job_id: RowId, p: Principal = Depends(ANY), s: Store = Depends(store)) -> ResultsOut:
    return svc.results(s, job_id=job_id, reader=p)
