"""Attempts and their ranks: binding boards, ending ranks, and settling what an attempt's end means.

Shared by the server (agents report ranks' ends) and the controller (binding, lost hosts), so
that both apply the same pure decisions from :mod:`fleetyard.policy.outcomes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.job import AssignmentState, AttemptState, Cause, JobState, Outcome, attempt_outcome
from fleetyard.policy.outcomes import (
    COMPARING_KINDS,
    board_after_rank,
    board_in_question,
    job_after_attempt,
    mismatch_blamed,
    rank_end_reason,
)
from fleetyard.policy.peers import PeerOutputs, compare_peers, peer_group
from fleetyard.store import blob_readers
from fleetyard.store import tables as t
from fleetyard.store.boards import allocate_ranks, switch_board_state
from fleetyard.store.db import insert_many, lock_rows

A = t.assignments
_LOCKED = "fleetyard.locked_attempts"  # conn.info: (transaction, attempt ids it holds)
# The settings key counting the attempts that only the controller's sweeper settled (settle_ended).
SWEPT_KEY = "attempts.swept"


def lock_attempts(conn: sa.Connection, attempt_ids: Iterable[int]) -> None:
    """Hold these attempts' rows until the transaction ends, taken in id order.

    Every path that ends a rank or settles an attempt takes its attempt first: under PostgreSQL's
    READ COMMITTED, two transactions that each ended one rank of the same attempt would otherwise
    each see the other's rank still running, and neither would settle it. Held, the second to
    come reads the first one's committed end. Taken in one order (by id), two transactions that
    end ranks of several attempts wait on each other, never in a cycle. SQLite has one writer at
    a time: nothing to take there.
    """
    if conn.dialect.name != "postgresql":
        return
    txn = conn.get_transaction()
    held_by, held = conn.info.get(_LOCKED, (None, set()))
    if held_by is not txn:
        held = set()
    want = sorted(set(attempt_ids) - held)
    if not want:
        return
    lock_rows(conn, t.attempts, want)
    conn.info[_LOCKED] = (txn, held | set(want))


@dataclass(frozen=True)
class NewAttempt:
    job_id: int
    number: int  # 1 for a job's first attempt
    boards: tuple[tuple[str, str], ...]  # (board id, host id); index = rank


def bind_many(conn: sa.Connection, new: Sequence[NewAttempt], *, at: float, allocate: bool = True) -> list[int]:
    """Start attempts of queued jobs on available boards, in a few statements for all of them.

    The caller holds the rows: every job is queued and every board available (read in this
    transaction with ``FOR UPDATE``). Returns the attempt ids, in order. ``allocate=False``: the
    boards keep their state and only hold the attempt (a health check on a board out of service).
    """
    if not new:
        return []
    insert_many(
        conn,
        t.attempts.insert().values(state=str(AttemptState.RUNNING), created_at=at),
        [{"job_id": n.job_id, "number": n.number} for n in new],
    )
    # Their ids, by (job, number): unique, and the caller holds the jobs. (A RETURNING in
    # parameter order costs SQLite one statement per row.)
    id_of: dict[tuple[int, int], int] = {}
    jobs = [n.job_id for n in new]
    for part in (jobs[i : i + 5000] for i in range(0, len(jobs), 5000)):
        for r in conn.execute(
            sa.select(t.attempts.c.id, t.attempts.c.job_id, t.attempts.c.number).where(t.attempts.c.job_id.in_(part))
        ):
            id_of[r.job_id, r.number] = r.id
    attempt_ids = [id_of[n.job_id, n.number] for n in new]
    # The empty JSON objects inline: one bound per row would be serialized per row.
    insert_many(
        conn,
        A.insert().values(
            state=str(AssignmentState.PENDING),
            created_at=at,
            result=sa.literal_column("'{}'"),
            outputs=sa.literal_column("'{}'"),
        ),
        [
            {"attempt_id": attempt_id, "job_id": n.job_id, "rank": rank, "board_id": board_id, "host_id": host_id}
            for n, attempt_id in zip(new, attempt_ids, strict=True)
            for rank, (board_id, host_id) in enumerate(n.boards)
        ],
    )
    if allocate:
        allocate_ranks(conn, attempt_ids, at=at)
    else:
        conn.execute(
            t.boards.update()
            .where(t.boards.c.id == A.c.board_id, A.c.attempt_id.in_(attempt_ids))
            .values(attempt_id=A.c.attempt_id, job_id=A.c.job_id)
        )
    for part in (attempt_ids[i : i + 5000] for i in range(0, len(attempt_ids), 5000)):
        conn.execute(
            t.jobs.update()
            .where(t.jobs.c.id == t.attempts.c.job_id, t.attempts.c.id.in_(part))
            .values(state=str(JobState.RUNNING), attempts=t.attempts.c.number)
        )
    return attempt_ids


def end_rank(
    conn: sa.Connection,
    a: sa.Row[Any],
    *,
    outcome: Outcome,
    at: float,
    exit_code: int | None = None,
    message: str | None = None,
    board_ok: bool = True,
    probe_reason: str | None = None,
    result: dict[str, Any] | None = None,
    outputs: dict[str, str] | None = None,
    stop_siblings: bool = True,
    cause: Cause | None = None,
) -> list[int]:
    """End one live rank and release its board. Returns sibling ranks that must now be stopped.
    ``cause``: what ended it (None: not known, from an agent older than causes).

    A rank that already ended (a concurrent writer got there first) is left as it is.
    """
    lock_attempts(conn, [a.attempt_id])
    res = conn.execute(
        A.update()
        .where(A.c.id == a.id, A.c.state != str(AssignmentState.EXITED))
        .values(
            state=str(AssignmentState.EXITED),
            outcome=str(outcome),
            cause=None if cause is None else str(cause),
            exit_code=exit_code,
            message=message,
            finished_at=at,
            result=result or {},
            outputs=outputs or {},
        )
    )
    if res.rowcount != 1:
        return []
    if outputs:
        _grant_outputs(conn, a.job_id, outputs.values())
    # The board held as it is read (after the attempt, as every path takes them): a drain or
    # undrain committed meanwhile is seen here, not overwritten.
    board = conn.execute(
        sa.select(t.boards.c.state, t.boards.c.attempt_id, t.boards.c.drain_reason, t.boards.c.check_job_id)
        .where(t.boards.c.id == a.board_id)
        .with_for_update(key_share=True)
    ).first()
    if board is not None and board.attempt_id == a.attempt_id:
        if board.state == BoardState.ALLOCATED:
            to, why = board_after_rank(
                outcome,
                board_ok=board_ok,
                drain_requested=board.drain_reason is not None,
                probe_reason=probe_reason,
                cause=cause,
            )
            # A user job counts towards the board's next L1 check (its own check does not).
            counted: dict[str, Any] = (
                {} if board.check_job_id == a.job_id else {"jobs_since_l1": t.boards.c.jobs_since_l1 + 1}
            )
            switch_board_state(
                conn,
                a.board_id,
                to,
                current=BoardState.ALLOCATED,
                reason=rank_end_reason(why, a.job_id, outcome, message),
                # A drain an operator asked for while the board ran is theirs: planned maintenance
                # in the uptime accounting, not a board the policy took out.
                actor=Actor.OPERATOR if to is BoardState.DRAINED else Actor.POLICY,
                at=at,
                job_id=a.job_id,
                **counted,
            )
        else:  # e.g. offline: the board keeps its state, but no longer holds the attempt
            conn.execute(t.boards.update().where(t.boards.c.id == a.board_id).values(attempt_id=None, job_id=None))
    if outcome is Outcome.SUCCESS or not stop_siblings:
        return []
    return stop_ranks(conn, a.attempt_id, at=at, reason=f"rank {a.rank} ended with {outcome}")


def stop_ranks(
    conn: sa.Connection, attempt_id: int, *, at: float, reason: str, outcome: Outcome = Outcome.CANCELED
) -> list[int]:
    """Ask an attempt's live ranks to stop. Ranks no agent has seen yet end at once, as ``outcome``."""
    lock_attempts(conn, [attempt_id])
    live = conn.execute(
        sa.select(A).where(A.c.attempt_id == attempt_id, A.c.state != str(AssignmentState.EXITED))
    ).all()
    to_stop: list[int] = []
    for s in live:
        if s.state == AssignmentState.PENDING:
            cause = Cause.PREEMPTED if outcome is Outcome.PREEMPTED else Cause.CANCELED
            end_rank(conn, s, outcome=outcome, at=at, message=reason, stop_siblings=False, cause=cause)
        else:
            to_stop.append(s.id)
    if to_stop:
        conn.execute(A.update().where(A.c.id.in_(to_stop)).values(cancel_requested=True))
    return to_stop


def stop_job(conn: sa.Connection, job_id: int, *, at: float, message: str) -> None:
    """Cancel a job: a queued one ends now; a running one ends when its agents have stopped its
    ranks (ranks no agent has seen yet end at once). A finished job is left as it is.

    The job is held first: a scheduler binding it, or an attempt settling it, cannot change it
    between this read and the writes below. (Settling takes the attempt, then the job: a cancel
    racing a settle may deadlock, and the one PostgreSQL aborts runs again: ``Store.transact``.)"""
    job = conn.execute(sa.select(t.jobs.c.state).where(t.jobs.c.id == job_id).with_for_update(key_share=True)).first()
    if job is None or JobState(job.state).finished:
        return
    if job.state == JobState.QUEUED:
        conn.execute(
            t.jobs.update()
            .where(t.jobs.c.id == job_id)
            .values(
                state=str(JobState.CANCELED),
                outcome=str(Outcome.CANCELED),
                message=message,
                finished_at=at,
                cancel_requested=True,
            )
        )
        return
    conn.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(cancel_requested=True, message=message))
    live = sorted(
        conn.execute(
            sa.select(t.attempts.c.id).where(
                t.attempts.c.job_id == job_id, t.attempts.c.state == str(AttemptState.RUNNING)
            )
        ).scalars()
    )
    lock_attempts(conn, live)
    for attempt_id in live:
        stop_ranks(conn, attempt_id, at=at, reason=message)
        settle(conn, attempt_id, at=at)


def settle(conn: sa.Connection, attempt_id: int, *, at: float, requeue_at: float | None = None) -> JobState | None:
    """If every rank of the attempt has ended, end the attempt and decide its job's next state
    (a job that runs again waits until ``requeue_at`` when given)."""
    lock_attempts(conn, [attempt_id])  # see lock_attempts: the ranks are read after every earlier end
    ranks = conn.execute(sa.select(A.c.state, A.c.outcome, A.c.message).where(A.c.attempt_id == attempt_id)).all()
    if not ranks or any(r.state != AssignmentState.EXITED for r in ranks):
        return None
    if len(ranks) >= 3 and _blame_odd_peers(conn, attempt_id, at=at):  # a majority takes three
        ranks = conn.execute(sa.select(A.c.state, A.c.outcome, A.c.message).where(A.c.attempt_id == attempt_id)).all()
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
    if state is JobState.QUEUED and requeue_at is not None and requeue_at > at:
        values["not_before"] = requeue_at
        values["pending_reason"] = (
            f"re-queued after its host was lost; runs again after a grace of {requeue_at - at:.0f} s"
        )
    if state.finished:
        values["finished_at"] = at
    conn.execute(t.jobs.update().where(t.jobs.c.id == job.id).values(**values))
    return state


def _blame_odd_peers(conn: sa.Connection, attempt_id: int, *, at: float) -> bool:
    """A comparing job's ranks that found a mismatch where their peers' outputs agree, bit for bit,
    on something else (:func:`~fleetyard.policy.peers.compare_peers`): each becomes an infra error
    of its board (the attempt runs again elsewhere), and the board takes an L1 check before its
    next job. Not taken out at once: the outputs a rank reports come from the job's own process,
    so a job must not be able to send a healthy board to the ladder (and towards lemon
    quarantine) by lying about them; the check decides. Whether any rank changed."""
    job_of = sa.select(t.attempts.c.job_id).where(t.attempts.c.id == attempt_id).scalar_subquery()
    kind = conn.execute(sa.select(t.jobs.c.kind).where(t.jobs.c.id == job_of)).scalar()
    if kind not in COMPARING_KINDS:
        return False  # before reading the ranks' results: a 256-board gang's settle reads none
    ranks = conn.execute(sa.select(A).where(A.c.attempt_id == attempt_id).order_by(A.c.rank)).all()
    verdicts = compare_peers(
        PeerOutputs(r.id, peer_group(r.result or {}), (r.outputs or {}).get("candidate.npz")) for r in ranks
    )
    changed = False
    for r in ranks:
        v = verdicts.get(r.id)
        cause = None if r.cause is None else Cause(r.cause)
        if v is None or not v.differs or cause not in (None, Cause.WORKLOAD):
            continue
        if not board_in_question(kind, Outcome(r.outcome), r.result or {}):
            continue
        why = f"its outputs differ bit for bit from those {v.agreeing} of {v.of} peer boards computed on the same"
        why += " inputs"
        outcome, new_cause, message = mismatch_blamed(r.message, why)
        conn.execute(
            A.update().where(A.c.id == r.id).values(outcome=str(outcome), cause=str(new_cause), message=message)
        )
        conn.execute(
            t.boards.update()
            .where(t.boards.c.id == r.board_id, t.boards.c.check_due.is_(None))
            .values(check_due=f"job {r.job_id}: its outputs differed from its peers' on the same inputs")
        )
        changed = True
    return changed


def settle_ended(conn: sa.Connection, *, at: float) -> list[int]:
    """Settle every attempt of a running job whose ranks have all ended but that was never
    settled: defence in depth, should a path that ends ranks ever miss it (on PostgreSQL, two
    ranks ending at the same moment once left jobs running for good). Returns those it settled."""
    at_, a, j = t.attempts.c, A.c, t.jobs.c
    live_rank = sa.select(a.id).where(a.attempt_id == at_.id, a.state != str(AssignmentState.EXITED)).exists()
    ended = sorted(
        conn.execute(
            sa.select(at_.id)
            .join(t.jobs, j.id == at_.job_id)
            .where(j.state == str(JobState.RUNNING), at_.state == str(AttemptState.RUNNING), ~live_rank)
        ).scalars()
    )
    lock_attempts(conn, ended)
    return [attempt_id for attempt_id in ended if settle(conn, attempt_id, at=at) is not None]


def _grant_outputs(conn: sa.Connection, job_id: int, shas: Iterable[str]) -> None:
    """A rank's outputs are read by its job's team, and by every team if the job is shared."""
    job = conn.execute(sa.select(t.jobs.c.team, t.jobs.c.spec).where(t.jobs.c.id == job_id)).first()
    if job is None:
        return
    if (job.spec or {}).get("visibility") == "fleet":
        blob_readers.grant(conn, shas, blob_readers.EVERY_TEAM)
    elif job.team is not None:
        blob_readers.grant(conn, shas, job.team)
