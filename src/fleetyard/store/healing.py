"""Health checks and remediation cases in the store (the controller's healing shell writes them).

A health check is a job of kind ``health-check`` pinned to one board, bound by the controller
at once, ahead of any user job: an available board is allocated to it as to any job; a board
out of service (suspect, remediating) keeps its state and holds the check's attempt
(``boards.attempt_id``) while it runs. Checks are recorded under the :data:`HEALTH_TEAM` queue,
are never retried elsewhere (a check is about its board) and never preempted.

A remediation case (:class:`~fleetyard.policy.remediation.Case`) is a ``remediations`` row,
open until the board is healed or quarantined; closed, it is the board's repair record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import BoardState
from fleetyard.domain.health_config import CheckTier, GenerationHealth
from fleetyard.domain.job import Cause, JobState, Outcome
from fleetyard.domain.spec import JobSpec
from fleetyard.errors import Conflict
from fleetyard.policy.outcomes import check_verdict
from fleetyard.policy.remediation import Case, Phase
from fleetyard.store import tables as t
from fleetyard.store.attempts import NewAttempt, bind_many

__all__ = [
    "CHECK_KIND",
    "HEALTH_TEAM",
    "CaseRow",
    "CheckResult",
    "check_result",
    "close_case",
    "open_cases",
    "repairs_of",
    "save_case",
    "start_check",
]

CHECK_KIND = "health-check"
HEALTH_TEAM = "fleet-health"
R = t.remediations


def start_check(
    conn: sa.Connection, board_id: str, *, tier: CheckTier, policy: GenerationHealth, reason: str, at: float
) -> int:
    """Start a ``tier`` check on the board now; the check's job id."""
    board = conn.execute(
        sa.select(t.boards.c.state, t.boards.c.host_id).where(t.boards.c.id == board_id).with_for_update(key_share=True)
    ).one()
    limits = policy.tier(tier)
    params: dict[str, Any] = {"tier": str(tier)}
    if tier is CheckTier.L1:
        params["repeat"] = policy.l1.repeat
    else:
        params["duration_s"] = limits.duration_s
    spec = JobSpec(
        name=f"{tier} check of {board_id}",
        kind=CHECK_KIND,
        params=params,
        board_ids=[board_id],
        time_limit_s=limits.timeout_s,
        max_infra_retries=0,
        team=HEALTH_TEAM,
    )
    job_id: int = conn.execute(
        t.jobs.insert()
        .values(
            name=spec.name,
            kind=CHECK_KIND,
            state=str(JobState.QUEUED),
            team=HEALTH_TEAM,
            owner="controller",
            priority=0,
            spec=spec.model_dump(mode="json"),
            submitted_at=at,
            pending_reason=reason,
        )
        .returning(t.jobs.c.id)
    ).scalar_one()
    # Out of service, the board keeps its state: it only holds the check's attempt.
    allocate = board.state == BoardState.AVAILABLE
    bind_many(conn, [NewAttempt(job_id, 1, ((board_id, board.host_id),))], at=at, allocate=allocate)
    return job_id


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    detail: str  # why it failed ("" when it passed)
    outputs: dict[str, str]  # the failing outputs (name -> blob sha256): evidence
    # False: it could not run (its host lost, its agent stopped, canceled): no verdict on the
    # board, and it is run again (policy.outcomes.check_verdict).
    ran: bool = True


def check_result(conn: sa.Connection, job_id: int) -> CheckResult | None:
    """How a check job ended; None while it has not."""
    job = conn.execute(sa.select(t.jobs.c.state, t.jobs.c.message).where(t.jobs.c.id == job_id)).first()
    if job is None:
        return CheckResult(False, f"check job {job_id} is gone", {})
    if not JobState(job.state).finished:
        return None
    if job.state == JobState.SUCCEEDED:
        return CheckResult(True, "", {})
    rank = conn.execute(
        sa.select(t.assignments.c.message, t.assignments.c.outcome, t.assignments.c.cause, t.assignments.c.outputs)
        .where(t.assignments.c.job_id == job_id)
        .order_by(t.assignments.c.id.desc())
        .limit(1)
    ).first()
    if rank is None:
        return CheckResult(False, job.message or str(job.state), {}, ran=job.state != JobState.CANCELED)
    detail = rank.message or job.message or str(rank.outcome or job.state)
    verdict = check_verdict(
        None if rank.outcome is None else Outcome(rank.outcome), None if rank.cause is None else Cause(rank.cause)
    )
    return CheckResult(False, detail, dict(rank.outputs or {}), ran=verdict is not None)


@dataclass(frozen=True)
class CaseRow:
    id: int
    case: Case
    opened_at: float
    op_id: int | None
    check_job_id: int | None


def open_cases(conn: sa.Connection, boards: Iterable[str] | None = None) -> list[CaseRow]:
    """The open cases (of ``boards``, else all), by board."""
    q = sa.select(R).where(R.c.closed_at.is_(None)).order_by(R.c.board_id)
    if boards is not None:
        q = q.where(R.c.board_id.in_(list(boards)))
    rows = conn.execute(q).all()
    return [
        CaseRow(
            r.id,
            Case(
                r.board_id,
                r.cause,
                r.step,
                Phase(r.phase),
                r.since,
                r.deadline,
                tuple((r.evidence or {}).get("steps", ())),
                CheckTier((r.evidence or {}).get("tier", "L2")),
            ),
            r.opened_at,
            r.op_id,
            r.check_job_id,
        )
        for r in rows
    ]


def save_case(
    conn: sa.Connection,
    case: Case,
    *,
    row_id: int | None,
    at: float,
    op_id: int | None = None,
    check_job_id: int | None = None,
) -> int:
    """Write a case as it goes on (a new row when ``row_id`` is None); its row id."""
    values = {
        "cause": case.cause,
        "step": case.step,
        "phase": str(case.phase),
        "since": case.since,
        "deadline": case.deadline,
        "evidence": {"steps": list(case.evidence), "tier": str(case.tier)},
        "op_id": op_id,
        "check_job_id": check_job_id,
    }
    if row_id is None:
        new_id: int = conn.execute(
            R.insert().values(board_id=case.board, opened_at=at, **values).returning(R.c.id)
        ).scalar_one()
        return new_id
    _still_open(conn.execute(R.update().where(R.c.id == row_id, R.c.closed_at.is_(None)).values(**values)), row_id)
    return row_id


def close_case(
    conn: sa.Connection, row_id: int, *, outcome: str, reason: str, evidence: dict[str, Any], at: float
) -> None:
    """End a case: ``healed``, ``quarantined``, ``abandoned`` (the board left the ladder another way)
    or ``taken_over`` (by an operator: :func:`~fleetyard.policy.remediation.by_hand`)."""
    res = conn.execute(
        R.update()
        .where(R.c.id == row_id, R.c.closed_at.is_(None))
        .values(closed_at=at, outcome=outcome, reason=reason, evidence=evidence)
    )
    _still_open(res, row_id)


def _still_open(res: sa.CursorResult[Any], row_id: int) -> None:
    """A case closed since it was read (an operator took it over, the healer ended it) is not
    written again: the writer's transaction is rolled back, and its next pass reads afresh."""
    if res.rowcount != 1:
        raise Conflict(f"remediation case {row_id} was closed meanwhile; try again", detail={"case": row_id})


def repairs_of(conn: sa.Connection, board_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """A board's cases, newest first: its repair records."""
    rows = conn.execute(sa.select(R).where(R.c.board_id == board_id).order_by(R.c.id.desc()).limit(limit)).all()
    return [
        {
            "id": r.id,
            "board_id": r.board_id,
            "opened_at": r.opened_at,
            "cause": r.cause,
            "step": r.step,
            "phase": r.phase,
            "closed_at": r.closed_at,
            "outcome": r.outcome,
            "reason": r.reason,
            "evidence": r.evidence or {},
        }
        for r in rows
    ]
