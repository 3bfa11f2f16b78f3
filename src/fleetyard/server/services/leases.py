"""Leases: an engineer's reservation of K boards with a TTL, held by a job of kind ``lease``.

Taking a lease submits that job (every submit check applies); releasing it cancels the job;
the controller ends it when its TTL runs out (:func:`fleetyard.store.leases.expire_leases`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from fleetyard.domain.auth import Principal, Role, may_read
from fleetyard.domain.job import AssignmentState, JobState
from fleetyard.domain.spec import MAX_TIME_LIMIT_S, JobSpec
from fleetyard.errors import BadRequest, Conflict, Forbidden, NotFound
from fleetyard.policy.leases import expires_at
from fleetyard.protocol.api import LeaseBoardOut, LeaseIn, LeaseOut
from fleetyard.server.services import jobs
from fleetyard.server.services.audit import note
from fleetyard.store import tables as t
from fleetyard.store.blobs import BlobStore
from fleetyard.store.db import Store
from fleetyard.store.leases import ACTIVE, LEASE_KIND, end_lease, expiry_message, lease_view
from fleetyard.workloads.lease import access_info, parse_access_line

Row = sa.Row[Any]


def take(
    store: Store,
    *,
    principal: Principal,
    lease: LeaseIn,
    at: float,
    fleet: jobs.FleetView | None = None,
    blobs: BlobStore | None = None,
) -> LeaseOut:
    """Queue the lease's job; its TTL clock starts when the scheduler grants its boards."""
    try:
        spec = JobSpec(
            kind=LEASE_KIND,
            name=f"lease by {principal.name}",
            boards=lease.boards,
            generations=lease.generations,
            labels=lease.labels,
            board_ids=lease.board_ids,
            priority_class=lease.priority_class,
            team=lease.team,
            # The longest a lease may last; the TTL (lease_expires_at) ends it well before.
            time_limit_s=MAX_TIME_LIMIT_S,
            # A board fault ends the lease rather than moving the engineer to another board unasked.
            max_infra_retries=0,
            params={"ttl_s": lease.ttl_s, "note": lease.note},
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadRequest(f"invalid lease: {first['msg']}", detail=[{"message": e["msg"]} for e in exc.errors()])
    [job_id] = jobs.submit(store, principal=principal, specs=[spec], at=at, fleet=fleet, blobs=blobs)
    with store.write() as conn:
        conn.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(lease_expires_at=at + lease.ttl_s))
    return get(store, lease_id=job_id, reader=principal)


def _lease_row(conn: sa.Connection, lease_id: int, *, lock: bool = False) -> Row:
    q = sa.select(t.jobs).where(t.jobs.c.id == lease_id, t.jobs.c.kind == LEASE_KIND)
    row = conn.execute(q.with_for_update(key_share=True) if lock else q).first()
    if row is None:
        raise NotFound(f"no lease {lease_id}")
    return row


def get(store: Store, *, lease_id: int, reader: Principal) -> LeaseOut:
    with store.read() as conn:
        row = _lease_row(conn, lease_id)
        return _for(reader, _leases_out(conn, [row]))[0]


def list_leases(
    store: Store, *, reader: Principal, owner: str | None = None, team: str | None = None
) -> list[LeaseOut]:
    """Active leases (queued or running), oldest first."""
    q = sa.select(t.jobs).where(t.jobs.c.kind == LEASE_KIND, t.jobs.c.state.in_(ACTIVE)).order_by(t.jobs.c.id)
    if owner:
        q = q.where(t.jobs.c.owner == owner)
    if team:
        q = q.where(t.jobs.c.team == team)
    with store.read() as conn:
        return _for(reader, _leases_out(conn, conn.execute(q).all()))


def _for(reader: Principal, leases: list[LeaseOut]) -> list[LeaseOut]:
    """Another team's lease shows which boards it holds and until when, not what they are for."""
    for lease in leases:
        if not may_read(reader, lease.team, False):
            lease.note = lease.message = None
    return leases


def _may_change(principal: Principal, job: Row, what: str) -> None:
    if principal.role is Role.AGENT or (principal.role is Role.USER and job.team != principal.team):
        raise Forbidden(f"token {principal.name!r} may not {what} lease {job.id} of team {job.team!r}")


def renew(store: Store, *, principal: Principal, lease_id: int, ttl_s: float | None, at: float) -> LeaseOut:
    """Move the lease's end to ``at + ttl_s`` (its own TTL by default); 409 once it is ending."""
    with store.write() as conn:
        job = _lease_row(conn, lease_id, lock=True)
        _may_change(principal, job, "renew")
        if JobState(job.state).finished or job.cancel_requested:
            raise Conflict(f"lease {lease_id} has ended ({job.message or job.state}); take a new one")
        view = lease_view(job)
        until = at + (ttl_s if ttl_s is not None else view.ttl_s)
        if job.started_at is not None:
            # The job's time limit stops its ranks then, whatever the lease says.
            until = min(until, job.started_at + float(job.spec.get("time_limit_s", MAX_TIME_LIMIT_S)))
        conn.execute(t.jobs.update().where(t.jobs.c.id == lease_id).values(lease_expires_at=until))
        if principal.name != job.owner:
            detail = {"owner": job.owner, "team": job.team, "until": until}
            note(conn, principal, "lease.renew", str(lease_id), at=at, detail=detail)
    return get(store, lease_id=lease_id, reader=principal)


def release(store: Store, *, principal: Principal, lease_id: int, at: float) -> LeaseOut:
    """Give the boards back: the lease's job is canceled (its ranks end as "lease released")."""
    with store.write() as conn:
        job = _lease_row(conn, lease_id, lock=True)
        _may_change(principal, job, "release")
        end_lease(conn, lease_id, at=at, message=f"released by {principal.name}")
        # Only another's lease, and only one not yet ending: releasing one's own is ordinary use.
        if principal.name != job.owner and not (JobState(job.state).finished or job.cancel_requested):
            note(conn, principal, "lease.release", str(lease_id), at=at, detail={"owner": job.owner, "team": job.team})
    return get(store, lease_id=lease_id, reader=principal)


def _leases_out(conn: sa.Connection, rows: Sequence[Row]) -> list[LeaseOut]:
    if not rows:
        return []
    ids = [r.id for r in rows]
    # Each lease's boards: the ranks of its newest attempt.
    newest = (
        sa.select(t.attempts.c.job_id, sa.func.max(t.attempts.c.id).label("attempt_id"))
        .where(t.attempts.c.job_id.in_(ids))
        .group_by(t.attempts.c.job_id)
        .subquery()
    )
    ranks = conn.execute(
        sa.select(t.assignments, t.boards.c.device)
        .join(newest, newest.c.attempt_id == t.assignments.c.attempt_id)
        .outerjoin(t.boards, t.boards.c.id == t.assignments.c.board_id)
        .order_by(t.assignments.c.job_id, t.assignments.c.rank)
    ).all()
    # While a rank runs, its log is where its access info is (a result comes only at its end).
    logged: dict[int, dict[str, Any]] = {}
    live = [r.id for r in ranks if r.state != AssignmentState.EXITED and r.started_at is not None]
    if live:
        for chunk in conn.execute(
            sa.select(t.logs.c.assignment_id, t.logs.c.data)
            .where(t.logs.c.assignment_id.in_(live))
            .order_by(t.logs.c.id)
        ):
            if chunk.assignment_id not in logged and (info := parse_access_line(chunk.data)) is not None:
                logged[chunk.assignment_id] = info
    by_job: dict[int, list[LeaseBoardOut]] = {}
    for r in ranks:
        access: dict[str, Any] | None = None
        if r.started_at is not None:
            access = logged.get(r.id) or (r.result if r.result.get("shell") else None)
            if access is None:  # e.g. its log line is not in yet: what the server knows
                access = access_info(board_id=r.board_id, host=r.host_id, device=r.device or "", lease_id=r.job_id)
        by_job.setdefault(r.job_id, []).append(
            LeaseBoardOut(
                rank=r.rank, board_id=r.board_id, host_id=r.host_id, device=r.device, state=r.state, access=access
            )
        )
    return [_lease_out(row, by_job.get(row.id, [])) for row in rows]


def _lease_out(row: Row, boards: list[LeaseBoardOut]) -> LeaseOut:
    view = lease_view(row)
    end = expires_at(view)
    state = JobState(row.state)
    ended: str | None = None
    message = row.message
    if state.finished:
        if row.cancel_requested and end is not None and row.finished_at is not None and end <= row.finished_at:
            # Its ranks report "lease released" as they stop; say why they were stopped.
            ended, message = "expired", expiry_message(end)
        elif state is JobState.FAILED:
            ended = "failed"
        else:
            ended = "released"
    params = (row.spec or {}).get("params") or {}
    return LeaseOut(
        id=row.id,
        state=row.state,
        active=not state.finished and not row.cancel_requested,
        ended=ended,
        team=row.team,
        owner=row.owner,
        note=params.get("note"),
        boards_wanted=int((row.spec or {}).get("boards", 1)),
        ttl_s=view.ttl_s,
        submitted_at=row.submitted_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        expires_at=end,
        pending_reason=row.pending_reason if state is JobState.QUEUED else None,
        message=message,
        boards=boards,
    )
