"""Attempts and their ranks: binding boards, ending ranks, and settling what an attempt's end means.

Shared by the server (agents report ranks' ends) and the controller (binding, lost hosts), so
that both apply the same pure decisions from :mod:`fleetyard.policy.outcomes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.job import AssignmentState, AttemptState, JobState, Outcome, attempt_outcome
from fleetyard.policy.outcomes import board_after_rank, job_after_attempt
from fleetyard.store import tables as t
from fleetyard.store.boards import switch_board_state

A = t.assignments


def bind(conn: sa.Connection, job: sa.Row[Any], boards: Sequence[sa.Row[Any]], *, at: float) -> int:
    """Start a new attempt of a queued job on ``boards`` (rank = position). Returns the attempt id."""
    number = job.attempts + 1
    attempt_id: int = conn.execute(
        t.attempts.insert()
        .values(job_id=job.id, number=number, state=str(AttemptState.RUNNING), created_at=at)
        .returning(t.attempts.c.id)
    ).scalar_one()
    conn.execute(
        A.insert(),
        [
            {
                "attempt_id": attempt_id,
                "job_id": job.id,
                "rank": rank,
                "board_id": b.id,
                "host_id": b.host_id,
                "state": str(AssignmentState.PENDING),
                "created_at": at,
                "result": {},
                "outputs": {},
            }
            for rank, b in enumerate(boards)
        ],
    )
    for b in boards:
        switch_board_state(
            conn,
            b.id,
            BoardState.ALLOCATED,
            current=BoardState.AVAILABLE,
            reason=f"job {job.id} attempt {number}",
            actor=Actor.POLICY,
            at=at,
            job_id=job.id,
            attempt_id=attempt_id,
        )
    res = conn.execute(
        t.jobs.update()
        .where(t.jobs.c.id == job.id, t.jobs.c.state == str(JobState.QUEUED))
        .values(state=str(JobState.RUNNING), attempts=number)
    )
    if res.rowcount != 1:
        raise sa.exc.InvalidRequestError(f"job {job.id} left the queue while being bound")
    return attempt_id


def end_rank(
    conn: sa.Connection,
    a: sa.Row[Any],
    *,
    outcome: Outcome,
    at: float,
    exit_code: int | None = None,
    message: str | None = None,
    board_ok: bool = True,
    result: dict[str, Any] | None = None,
    outputs: dict[str, str] | None = None,
) -> list[int]:
    """End one live rank and release its board. Returns sibling ranks that must now be stopped.

    A rank that already ended (a concurrent writer got there first) is left as it is.
    """
    res = conn.execute(
        A.update()
        .where(A.c.id == a.id, A.c.state != str(AssignmentState.EXITED))
        .values(
            state=str(AssignmentState.EXITED),
            outcome=str(outcome),
            exit_code=exit_code,
            message=message,
            finished_at=at,
            result=result or {},
            outputs=outputs or {},
        )
    )
    if res.rowcount != 1:
        return []
    board = conn.execute(
        sa.select(t.boards.c.state, t.boards.c.attempt_id, t.boards.c.drain_reason).where(t.boards.c.id == a.board_id)
    ).first()
    if board is not None and board.attempt_id == a.attempt_id:
        if board.state == BoardState.ALLOCATED:
            to, why = board_after_rank(outcome, board_ok=board_ok, drain_requested=board.drain_reason is not None)
            switch_board_state(
                conn,
                a.board_id,
                to,
                current=BoardState.ALLOCATED,
                reason=f"{why} (job {a.job_id}, {outcome})" + (f": {message}" if message else ""),
                actor=Actor.POLICY,
                at=at,
                job_id=a.job_id,
            )
        else:  # e.g. offline: the board keeps its state, but no longer holds the attempt
            conn.execute(t.boards.update().where(t.boards.c.id == a.board_id).values(attempt_id=None, job_id=None))
    if outcome is Outcome.SUCCESS:
        return []
    return stop_ranks(conn, a.attempt_id, at=at, reason=f"rank {a.rank} ended with {outcome}")


def stop_ranks(conn: sa.Connection, attempt_id: int, *, at: float, reason: str) -> list[int]:
    """Ask an attempt's live ranks to stop. Ranks no agent has seen yet end at once."""
    live = conn.execute(
        sa.select(A).where(A.c.attempt_id == attempt_id, A.c.state != str(AssignmentState.EXITED))
    ).all()
    to_stop: list[int] = []
    for s in live:
        if s.state == AssignmentState.PENDING:
            end_rank(conn, s, outcome=Outcome.CANCELED, at=at, message=reason)
        else:
            to_stop.append(s.id)
    if to_stop:
        conn.execute(A.update().where(A.c.id.in_(to_stop)).values(cancel_requested=True))
    return to_stop


def settle(conn: sa.Connection, attempt_id: int, *, at: float) -> JobState | None:
    """If every rank of the attempt has ended, end the attempt and decide its job's next state."""
    ranks = conn.execute(sa.select(A.c.state, A.c.outcome, A.c.message).where(A.c.attempt_id == attempt_id)).all()
    if not ranks or any(r.state != AssignmentState.EXITED for r in ranks):
        return None
    outcome = attempt_outcome([Outcome(r.outcome) for r in ranks])
    message = next((r.message for r in ranks if r.outcome == outcome and r.message), None)
    res = conn.execute(
        t.attempts.update()
        .where(t.attempts.c.id == attempt_id, t.attempts.c.state == str(AttemptState.RUNNING))
        .values(state=str(AttemptState.FINISHED), outcome=str(outcome), message=message, finished_at=at)
        .returning(t.attempts.c.job_id)
    )
    job_id = res.scalar()
    if job_id is None:  # settled already
        return None
    job = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).one()
    nxt = job_after_attempt(
        outcome, infra_retries=job.infra_retries, max_infra_retries=int(job.spec.get("max_infra_retries", 3))
    )
    state = nxt.state
    if job.cancel_requested and state is JobState.QUEUED:
        state = JobState.CANCELED
    values: dict[str, Any] = {
        "state": str(state),
        "outcome": str(outcome),
        "message": nxt.message or message,
    }
    if nxt.infra_retry:
        values["infra_retries"] = job.infra_retries + 1
    if state.finished:
        values["finished_at"] = at
    conn.execute(t.jobs.update().where(t.jobs.c.id == job.id).values(**values))
    return state
