"""Rows to API models."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleetyard.domain.auth import Principal, masked, may_read
from fleetyard.domain.spec import JobSpec, Visibility
from fleetyard.protocol.api import (
    AttemptOut,
    BoardEventOut,
    BoardOut,
    HostOut,
    JobDetail,
    JobOut,
    RankOut,
)
from fleetyard.store import tables as t

Row = sa.Row[Any]


def host_out(r: Row, boards: int) -> HostOut:
    return HostOut(
        id=r.id,
        state=r.state,
        driver=r.driver,
        agent_version=r.agent_version,
        labels=r.labels,
        last_heartbeat_at=r.last_heartbeat_at,
        registered_at=r.registered_at,
        boards=boards,
        cached=r.cached,
    )


def board_out(r: Row) -> BoardOut:
    return BoardOut(
        id=r.id,
        host_id=r.host_id,
        slot=r.slot,
        generation=r.generation,
        firmware=r.firmware,
        device=r.device,
        state=r.state,
        state_reason=r.state_reason,
        drain_reason=r.drain_reason,
        labels=r.labels,
        attempt_id=r.attempt_id,
        job_id=r.job_id,
        telemetry=r.telemetry,
        telemetry_at=r.telemetry_at,
        probe_ok=r.probe_ok,
        probe_reason=r.probe_reason,
        warm=r.warm,
        hardware_revision=r.hardware_revision,
        onboard_batch=r.onboard_batch,
    )


def event_out(r: Row) -> BoardEventOut:
    return BoardEventOut(
        id=r.id,
        board_id=r.board_id,
        at=r.at,
        from_state=r.from_state,
        to_state=r.to_state,
        reason=r.reason,
        actor=r.actor,
        job_id=r.job_id,
    )


def job_out(r: Row, reader: Principal) -> JobOut:
    return JobOut(**_job_fields(r, reader))


def readable(r: Row, reader: Principal) -> bool:
    """Whether ``reader`` may read this job's spec, logs and results (:func:`may_read`)."""
    return may_read(reader, r.team, (r.spec or {}).get("visibility") == Visibility.FLEET)


def _job_fields(r: Row, reader: Principal) -> dict[str, Any]:
    spec = JobSpec.model_validate(r.spec)
    # Another team's parameters are its own (a user sees that the job exists, not what it runs);
    # secret-looking env values are masked for everyone.
    params = masked(spec.params) if readable(r, reader) else {}
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "state": r.state,
        "team": r.team,
        "owner": r.owner,
        "priority": r.priority,
        "spec": spec.model_copy(update={"params": params}),
        "submitted_at": r.submitted_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "outcome": r.outcome,
        "message": r.message,
        "attempts": r.attempts,
        "infra_retries": r.infra_retries,
        "pending_reason": r.pending_reason if r.state == "queued" else None,
    }


def rank_out(r: Row) -> RankOut:
    return RankOut(
        assignment_id=r.id,
        rank=r.rank,
        board_id=r.board_id,
        host_id=r.host_id,
        state=r.state,
        outcome=r.outcome,
        cause=r.cause,
        exit_code=r.exit_code,
        message=r.message,
        created_at=r.created_at,
        delivered_at=r.delivered_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        result=r.result,
        outputs=r.outputs,
    )


def job_detail(conn: sa.Connection, r: Row, reader: Principal) -> JobDetail:
    attempts = conn.execute(
        sa.select(t.attempts).where(t.attempts.c.job_id == r.id).order_by(t.attempts.c.number)
    ).all()
    ranks = conn.execute(
        sa.select(t.assignments).where(t.assignments.c.job_id == r.id).order_by(t.assignments.c.rank)
    ).all()
    by_attempt: dict[int, list[RankOut]] = {}
    for a in ranks:
        by_attempt.setdefault(a.attempt_id, []).append(rank_out(a))
    return JobDetail(
        **_job_fields(r, reader),
        attempt_list=[
            AttemptOut(
                id=a.id,
                number=a.number,
                state=a.state,
                outcome=a.outcome,
                message=a.message,
                created_at=a.created_at,
                finished_at=a.finished_at,
                ranks=by_attempt.get(a.id, []),
            )
            for a in attempts
        ],
    )
