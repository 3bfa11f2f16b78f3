"""Why a job is pending (``GET /v1/jobs/{id}/why``), with the numbers.

Two sources: what the scheduler said at its last pass (``jobs.pending_reason``: quota, waiting
for a gang, behind N jobs, preempting, boards reserved) and a fresh look at the fleet: how many
boards match each of the job's constraints and are free now, its queue's quota per generation,
and any reservation held for it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleetyard.domain.job import JobState
from fleetyard.domain.spec import JobSpec
from fleetyard.errors import NotFound
from fleetyard.policy.queues import QuotaLedger
from fleetyard.policy.scheduling import constraints_of
from fleetyard.protocol.api import WhyOut
from fleetyard.store import tables as t
from fleetyard.store.boards import board_view, is_free, schedulable_boards
from fleetyard.store.db import Store
from fleetyard.store.queues import boards_held, read_queues


def why(store: Store, *, job_id: int) -> WhyOut:
    with store.read() as conn:
        job = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).first()
        if job is None:
            raise NotFound(f"no job {job_id}")
        spec = JobSpec.model_validate(job.spec)
        if job.state != JobState.QUEUED:
            return WhyOut(job_id=job_id, state=job.state, summary=_not_pending(job))
        boards = schedulable_boards(conn)
        queues = read_queues(conn)
        used = boards_held(conn)
        reservation = conn.execute(sa.select(t.reservations).where(t.reservations.c.job_id == job_id)).first()
    c = constraints_of(spec)
    views = [board_view(b) for b in boards]
    matching, turned_away = c.rejections(views)
    free = {b.id for b in boards if is_free(b)}
    free_matching = sum(1 for v in views if v.id in free and c.admits(v))
    ledger = QuotaLedger(queues, used)
    gens = sorted(spec.generations or {b.generation for b in boards})
    quota = [ledger.describe(job.team, g) + f"; headroom {_n(ledger.headroom(job.team, g))}" for g in gens]
    details: dict[str, Any] = {
        "boards_wanted": spec.boards,
        "constraints": c.describe(),
        "boards_in_fleet": len(views),
        "boards_matching": matching,
        "excluded_by": turned_away,
        "boards_matching_free_now": free_matching,
        "placement": f"{spec.placement} ({'required' if spec.placement_required else 'preferred'}), {spec.packing}",
        "quota": quota,
    }
    summary = job.pending_reason or "not looked at by the scheduler yet (it runs every fraction of a second)"
    res = None
    if reservation is not None:
        res = {"boards": list(reservation.boards), "expected_start": reservation.expected_start}
    return WhyOut(job_id=job_id, state=job.state, summary=summary, details=details, reservation=res)


def _n(x: int) -> str:
    return "unlimited" if x >= 1 << 40 else str(x)


def _not_pending(job: Any) -> str:
    if job.state == JobState.RUNNING:
        return "it is running"
    what = f"it {job.state}" + (f" ({job.outcome})" if job.outcome else "")
    return what + (f": {job.message}" if job.message else "")
