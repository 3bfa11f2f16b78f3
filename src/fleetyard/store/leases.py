"""Ending leases: the controller's expiry of leases whose TTL ran out, and the one way a lease
is stopped (release and expiry alike), shared with the server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.job import JobState
from fleetyard.policy.leases import LeaseView, expired, expires_at
from fleetyard.store import tables as t
from fleetyard.store.attempts import stop_job
from fleetyard.store.db import Store

LEASE_KIND = "lease"
ACTIVE = (str(JobState.QUEUED), str(JobState.RUNNING))


def lease_view(row: Any) -> LeaseView:
    """A jobs row (any select with id, spec, lease_expires_at, started_at) of a lease as the expiry policy sees it."""
    params = (row.spec or {}).get("params") or {}
    return LeaseView(
        job_id=row.id,
        lease_expires_at=row.lease_expires_at,
        started_at=row.started_at,
        ttl_s=float(params.get("ttl_s", 0.0)),
    )


def end_lease(conn: sa.Connection, job_id: int, *, at: float, message: str) -> None:
    """Stop a lease as a cancel does (each rank then ends as the workload says: success, "lease released")."""
    stop_job(conn, job_id, at=at, message=message)


def expiry_message(at: float) -> str:
    return f"lease expired at {datetime.fromtimestamp(at, UTC).isoformat(timespec='seconds')}"


def expire_leases(store: Store, now: float) -> list[int]:
    """End the leases whose time ran out by ``now``; their job ids.

    A lease still waiting for its boards never expires (its clock starts when they are
    granted). Rows are locked, so a renew racing this either lands first or finds the lease
    ending (and answers 409).
    """
    with store.write() as conn:
        rows = conn.execute(
            sa.select(t.jobs.c.id, t.jobs.c.spec, t.jobs.c.lease_expires_at, t.jobs.c.started_at)
            .where(
                t.jobs.c.kind == LEASE_KIND,
                t.jobs.c.state.in_(ACTIVE),
                t.jobs.c.started_at.is_not(None),
                sa.not_(t.jobs.c.cancel_requested),
                # The end is never before lease_expires_at: lock only the leases that may be due.
                sa.or_(t.jobs.c.lease_expires_at.is_(None), t.jobs.c.lease_expires_at <= now),
            )
            .with_for_update(key_share=True)
        ).all()
        views = {r.id: lease_view(r) for r in rows}
        ids = expired(list(views.values()), now)
        for job_id in ids:
            end_lease(conn, job_id, at=now, message=expiry_message(expires_at(views[job_id]) or now))
    return ids
