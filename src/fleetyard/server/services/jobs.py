"""Jobs: submit, list, show, cancel, logs, results."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleetyard.domain.auth import Principal, Role
from fleetyard.domain.job import JobState
from fleetyard.domain.spec import JobSpec
from fleetyard.errors import Forbidden, NotFound
from fleetyard.protocol.api import JobDetail, JobOut, LogChunk, LogsOut, ResultsOut
from fleetyard.server.services.audit import note
from fleetyard.server.services.views import job_detail, job_out, rank_out, readable
from fleetyard.store import tables as t
from fleetyard.store.admission import FleetView, StoreRegistry, check_jobs
from fleetyard.store.attempts import stop_job
from fleetyard.store.blobs import BlobStore
from fleetyard.store.db import Store

__all__ = ["FleetView", "cancel", "get", "get_brief", "list_jobs", "logs", "results", "submit"]


def _team_for(principal: Principal, spec: JobSpec) -> str:
    if principal.role is Role.USER:
        if spec.team and spec.team != principal.team:
            raise Forbidden(
                f"token {principal.name!r} belongs to team {principal.team!r} and cannot submit for team {spec.team!r}",
                detail={"field": "team"},
            )
        return principal.team or "default"
    if principal.role is Role.AGENT:
        raise Forbidden("agent tokens cannot submit jobs")
    return spec.team or principal.team or "ops"


def submit(
    store: Store,
    *,
    principal: Principal,
    specs: list[JobSpec],
    at: float,
    fleet: FleetView | None = None,
    blobs: BlobStore | None = None,
) -> list[int]:
    """Queue jobs, all or none. A spec that can never run on this fleet is refused, saying why;
    so is one whose kind's checks refuse it (an artifact never pushed, inputs that do not fit)."""
    view = fleet or FleetView()
    registry = StoreRegistry(store, view, blobs) if blobs is not None else None
    _, teams = check_jobs(
        store,
        specs,
        lambda spec: _team_for(principal, spec),
        view=view,
        registry=registry,
        team_blobs_only=principal.role is Role.USER,
    )
    rows: list[dict[str, Any]] = [
        {
            "name": spec.name,
            "kind": spec.kind,
            "state": str(JobState.QUEUED),
            "team": team,
            "owner": principal.name,
            "priority": spec.priority,
            "spec": spec.model_dump(mode="json"),
            "submitted_at": at,
        }
        for spec, team in zip(specs, teams, strict=True)
    ]
    with store.write() as conn:
        ids = conn.execute(t.jobs.insert().returning(t.jobs.c.id, sort_by_parameter_order=True), rows)
        return [r[0] for r in ids]


def _job_row(conn: sa.Connection, job_id: int) -> sa.Row[Any]:
    row = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).first()
    if row is None:
        raise NotFound(f"no job {job_id}")
    return row


def _readable_row(conn: sa.Connection, job_id: int, reader: Principal) -> sa.Row[Any]:
    row = _job_row(conn, job_id)
    if not readable(row, reader):
        raise Forbidden(
            f"job {job_id} is team {row.team!r}'s: its spec, logs and results are that team's "
            "(a team shares a job with 'visibility: fleet')"
        )
    return row


def get(store: Store, *, job_id: int, reader: Principal) -> JobDetail:
    with store.read() as conn:
        return job_detail(conn, _readable_row(conn, job_id, reader), reader)


def get_brief(store: Store, *, job_id: int, reader: Principal) -> JobOut:
    with store.read() as conn:
        return job_out(_job_row(conn, job_id), reader)


def list_jobs(
    store: Store,
    *,
    state: str | None = None,
    team: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    before: int | None = None,
    reader: Principal,
) -> list[JobOut]:
    q = sa.select(t.jobs).order_by(t.jobs.c.id.desc()).limit(limit)
    if state:
        q = q.where(t.jobs.c.state == state)
    if team:
        q = q.where(t.jobs.c.team == team)
    if kind:
        q = q.where(t.jobs.c.kind == kind)
    if before:
        q = q.where(t.jobs.c.id < before)
    with store.read() as conn:
        return [job_out(r, reader) for r in conn.execute(q)]


def cancel(store: Store, *, principal: Principal, job_id: int, at: float) -> JobOut:
    """Cancel a queued job at once; a running one stops when its agents have killed its ranks."""

    def cancel_in(conn: sa.Connection) -> JobOut:
        job = _job_row(conn, job_id)
        if principal.role is Role.AGENT or (principal.role is Role.USER and job.team != principal.team):
            raise Forbidden(f"token {principal.name!r} may not cancel job {job_id} of team {job.team!r}")
        if JobState(job.state).finished:
            return job_out(job, principal)
        stop_job(conn, job_id, at=at, message=f"canceled by {principal.name}")
        if principal.name != job.owner and not job.cancel_requested:
            # Cancelling one's own job is ordinary use; cancelling another's is an action to account
            # for (once: a second cancel of a running job that is stopping changes nothing).
            note(conn, principal, "job.cancel", str(job_id), at=at, detail={"owner": job.owner, "team": job.team})
        return job_out(_job_row(conn, job_id), principal)

    return store.transact(cancel_in)


def logs(store: Store, *, job_id: int, reader: Principal, after: int = 0, limit: int = 5000) -> LogsOut:
    with store.read() as conn:
        job = _readable_row(conn, job_id, reader)
        rows = conn.execute(
            sa.select(t.logs).where(t.logs.c.job_id == job_id, t.logs.c.id > after).order_by(t.logs.c.id).limit(limit)
        ).all()
    chunks = [LogChunk(attempt_id=r.attempt_id, rank=r.rank, seq=r.seq, at=r.at, data=r.data) for r in rows]
    return LogsOut(
        job_id=job_id,
        chunks=chunks,
        cursor=rows[-1].id if rows else after,
        finished=JobState(job.state).finished,
    )


def results(store: Store, *, job_id: int, reader: Principal) -> ResultsOut:
    with store.read() as conn:
        job = _readable_row(conn, job_id, reader)
        attempt_id = conn.execute(sa.select(sa.func.max(t.attempts.c.id)).where(t.attempts.c.job_id == job_id)).scalar()
        ranks = (
            conn.execute(
                sa.select(t.assignments).where(t.assignments.c.attempt_id == attempt_id).order_by(t.assignments.c.rank)
            ).all()
            if attempt_id
            else []
        )
    return ResultsOut(
        job_id=job_id,
        state=job.state,
        outcome=job.outcome,
        attempt_id=attempt_id,
        ranks=[rank_out(r) for r in ranks],
    )
