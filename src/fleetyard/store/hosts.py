"""Hosts coming and going: what happens to their boards and running work."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.host import HostState
from fleetyard.domain.job import AssignmentState, Cause, Outcome
from fleetyard.policy.liveness import back_from_offline
from fleetyard.store import tables as t
from fleetyard.store.attempts import end_rank, lock_attempts, settle
from fleetyard.store.boards import switch_board_state
from fleetyard.store.healing import open_cases

A = t.assignments
LIVE = [str(AssignmentState.PENDING), str(AssignmentState.DELIVERED), str(AssignmentState.RUNNING)]


def end_live_ranks(
    conn: sa.Connection,
    host_id: str,
    *,
    reason: str,
    at: float,
    outcome: Outcome = Outcome.INFRA_ERROR,
    cause: Cause = Cause.HOST_LOST,
    requeue_grace_s: float = 0.0,
    boards: Sequence[str] | None = None,
) -> None:
    """End every live rank on a host (only those on ``boards``, when given) as an infra error
    unless told otherwise, and settle their attempts; jobs that run again wait ``requeue_grace_s``."""
    where = [A.c.host_id == host_id, A.c.state.in_(LIVE)]
    if boards is not None:
        where.append(A.c.board_id.in_(boards))
    live = conn.execute(sa.select(A).where(*where).order_by(A.c.id)).all()
    lock_attempts(conn, {a.attempt_id for a in live})
    attempts = set()
    for a in live:
        end_rank(conn, a, outcome=outcome, at=at, message=reason, cause=cause)
        attempts.add(a.attempt_id)
    for attempt_id in sorted(attempts):
        settle(conn, attempt_id, at=at, requeue_at=at + requeue_grace_s if requeue_grace_s > 0 else None)


def lose_host(
    conn: sa.Connection,
    host_id: str,
    *,
    reason: str,
    at: float,
    outcome: Outcome = Outcome.INFRA_ERROR,
    cause: Cause = Cause.HOST_LOST,
    requeue_grace_s: float = 0.0,
) -> None:
    """A host stopped answering (or its agent left): boards go offline (a quarantined one stays
    quarantined: it must not come back through a check), live ranks end with ``outcome``, and
    their jobs wait ``requeue_grace_s`` before they run elsewhere: a host cut off by the network
    may still be running them, and its agent gets that long again to notice and stop."""
    conn.execute(t.hosts.update().where(t.hosts.c.id == host_id).values(state=str(HostState.OFFLINE), offline_since=at))
    boards = conn.execute(
        sa.select(t.boards.c.id, t.boards.c.state).where(
            t.boards.c.host_id == host_id,
            t.boards.c.state.notin_([str(BoardState.OFFLINE), str(BoardState.RETIRED), str(BoardState.QUARANTINED)]),
        )
    ).all()
    for b in boards:
        switch_board_state(
            conn,
            b.id,
            BoardState.OFFLINE,
            current=BoardState(b.state),
            reason=reason,
            actor=Actor.POLICY,
            at=at,
        )
    end_live_ranks(conn, host_id, reason=reason, at=at, outcome=outcome, cause=cause, requeue_grace_s=requeue_grace_s)


def host_back(conn: sa.Connection, host_id: str, *, at: float) -> None:
    """A lost host answers again: each offline board goes where it was headed
    (:func:`~fleetyard.policy.liveness.back_from_offline`)."""
    offline = conn.execute(
        sa.select(t.boards.c.id).where(t.boards.c.host_id == host_id, t.boards.c.state == str(BoardState.OFFLINE))
    ).scalars()
    for board_id in list(offline):
        board_back(conn, board_id, actor=Actor.POLICY, at=at)


def board_back(conn: sa.Connection, board_id: str, *, actor: Actor, at: float) -> None:
    """An offline board is back: where it goes depends on the state it left for offline."""
    in_case = bool(open_cases(conn, [board_id]))
    to, why = back_from_offline(state_before_offline(conn, board_id), board_id, in_case=in_case)
    switch_board_state(conn, board_id, to, current=BoardState.OFFLINE, reason=why, actor=actor, at=at)


def state_before_offline(conn: sa.Connection, board_id: str) -> BoardState | None:
    """The state an offline board left when it went offline (its last transition into offline)."""
    e = t.board_events.c
    found = conn.execute(
        sa.select(e.from_state)
        .where(e.board_id == board_id, e.to_state == str(BoardState.OFFLINE), e.from_state != str(BoardState.OFFLINE))
        .order_by(e.id.desc())
        .limit(1)
    ).scalar()
    return None if found is None else BoardState(found)
