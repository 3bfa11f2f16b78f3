"""The one writer of a board's state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import SCHEDULABLE_SOMEDAY, Actor, BoardState, check_transition
from fleetyard.errors import Conflict, NotFound
from fleetyard.policy.placement import BoardView
from fleetyard.policy.uptime import Transition
from fleetyard.store import tables as t


def switch_board_state(
    conn: sa.Connection,
    board_id: str,
    to: BoardState,
    *,
    reason: str,
    actor: Actor,
    at: float,
    current: BoardState | None = None,
    job_id: int | None = None,
    attempt_id: int | None = None,
    **values: Any,
) -> BoardState:
    """Move a board to ``to`` if the lifecycle allows it, and append the transition to board_events.

    ``current`` is the state the caller read; the update only applies if the board is still in
    it (a concurrent change raises :class:`Conflict`). Returns the state the board left.
    """
    if current is None:
        found = conn.execute(sa.select(t.boards.c.state).where(t.boards.c.id == board_id)).scalar()
        if found is None:
            raise NotFound(f"no board {board_id!r}")
        current = BoardState(found)
    check_transition(current, to, board_id=board_id)
    if to is BoardState.ALLOCATED:
        values.update(attempt_id=attempt_id, job_id=job_id)
    else:
        values.update(attempt_id=None, job_id=None)
    res = conn.execute(
        t.boards.update()
        .where(t.boards.c.id == board_id, t.boards.c.state == str(current))
        .values(state=str(to), state_reason=reason, state_changed_at=at, **values)
    )
    if res.rowcount != 1:
        raise Conflict(f"board {board_id} changed state concurrently; try again")
    conn.execute(
        t.board_events.insert().values(
            board_id=board_id,
            at=at,
            from_state=str(current),
            to_state=str(to),
            reason=reason,
            actor=str(actor),
            job_id=job_id,
            attempt_id=attempt_id,
        )
    )
    return current


def allocate_ranks(conn: sa.Connection, attempt_ids: Sequence[int], *, at: float) -> None:
    """available → allocated for the boards of these attempts' ranks (just written), with their
    events: set-based, two statements per 5,000 attempts whatever the boards (the scheduler's hot
    path; the caller holds the boards' rows and has read them as available).

    The reason, as :func:`switch_board_state` would write it: ``job J attempt N``."""
    if not attempt_ids:
        return
    check_transition(BoardState.AVAILABLE, BoardState.ALLOCATED, board_id="")
    a, att = t.assignments, t.attempts
    reason = (
        sa.literal("job ", sa.String)
        + sa.cast(a.c.job_id, sa.String)
        + sa.literal(" attempt ", sa.String)
        + sa.cast(att.c.number, sa.String)
    )
    for part in (attempt_ids[i : i + 5000] for i in range(0, len(attempt_ids), 5000)):
        conn.execute(
            t.board_events.insert().from_select(
                ["board_id", "at", "from_state", "to_state", "reason", "actor", "job_id", "attempt_id"],
                sa.select(
                    a.c.board_id,
                    sa.literal(at, t.Time),
                    sa.literal(str(BoardState.AVAILABLE), sa.String),
                    sa.literal(str(BoardState.ALLOCATED), sa.String),
                    reason,
                    sa.literal(str(Actor.POLICY), sa.String),
                    a.c.job_id,
                    a.c.attempt_id,
                )
                .join(att, att.c.id == a.c.attempt_id)
                .where(a.c.attempt_id.in_(part))
                .order_by(a.c.attempt_id, a.c.rank),
            )
        )
        conn.execute(
            t.boards.update()
            .where(t.boards.c.id == a.c.board_id, att.c.id == a.c.attempt_id, a.c.attempt_id.in_(part))
            .values(
                state=str(BoardState.ALLOCATED),
                state_reason=reason,
                state_changed_at=at,
                attempt_id=a.c.attempt_id,
                job_id=a.c.job_id,
            )
        )


def record_arrival(conn: sa.Connection, board_id: str, to: BoardState, *, reason: str, actor: Actor, at: float) -> None:
    """The first event of a board's history: it came into the inventory in state ``to``."""
    conn.execute(
        t.board_events.insert().values(
            board_id=board_id, at=at, from_state=None, to_state=str(to), reason=reason, actor=str(actor)
        )
    )


def schedulable_boards(conn: sa.Connection, *, json_as_text: bool = False) -> Sequence[Any]:
    """Every board that could run work someday (not retired or quarantined), with what the
    scheduler and the submit checks look at, and its host's state (``host_state``).

    ``json_as_text``: ``labels``, ``warm`` and ``cached`` (the host's) as stored, undecoded (the
    scheduler decodes only the rows that changed since its last pass)."""
    labels: sa.ColumnElement[Any] = t.boards.c.labels
    warm: sa.ColumnElement[Any] = t.boards.c.warm
    cached: sa.ColumnElement[Any] = t.hosts.c.cached
    if json_as_text:
        labels, warm = sa.cast(labels, sa.Text).label("labels"), sa.cast(warm, sa.Text).label("warm")
        cached = sa.cast(cached, sa.Text).label("cached")
    return conn.execute(
        sa.select(
            t.boards.c.id,
            t.boards.c.host_id,
            t.boards.c.slot,
            t.boards.c.generation,
            t.boards.c.firmware,
            labels,
            warm,
            cached,
            t.boards.c.state,
            t.boards.c.drain_reason,
            t.hosts.c.state.label("host_state"),
            t.boards.c.device,
            t.boards.c.check_due,
        )
        .join(t.hosts, t.hosts.c.id == t.boards.c.host_id)
        .where(t.boards.c.state.in_([str(s) for s in SCHEDULABLE_SOMEDAY]))
    ).all()


def board_view(
    r: sa.Row[Any],
    labels: dict[str, Any] | None = None,
    warm: Sequence[str] | None = None,
    cached: Sequence[str] | None = None,
) -> BoardView:
    """The scheduler's view of a row of :func:`schedulable_boards` (its rack is the ``rack`` label);
    ``labels``, ``warm`` and ``cached`` decoded already where the row has them as text."""
    labels = (r.labels or {}) if labels is None else labels
    return BoardView(
        r.id,
        r.host_id,
        r.generation,
        slot=r.slot,
        rack=str(labels.get("rack", "")),
        firmware=r.firmware,
        labels=labels,
        warm=frozenset((r.warm or ()) if warm is None else warm),
        cached=frozenset((r.cached or ()) if cached is None else cached),
    )


def is_free(r: sa.Row[Any]) -> bool:
    """Whether a row of :func:`schedulable_boards` can take work now (a board whose health check
    is due takes none: its check goes first)."""
    return (
        r.state == BoardState.AVAILABLE and r.drain_reason is None and r.host_state == "online" and r.check_due is None
    )


def transitions(
    conn: sa.Connection, *, since: float, until: float, boards: Sequence[str] | None = None
) -> list[Transition]:
    """Every board's (or these ``boards``') transitions in [since, until], and each one's last
    before ``since`` (its state when the window opens): what :func:`fleetyard.policy.uptime.uptime` reads."""
    e = t.board_events
    of = e.c.board_id.in_(boards) if boards is not None else sa.true()
    last = sa.select(sa.func.max(e.c.id).label("id")).where(e.c.at < since, of).group_by(e.c.board_id).subquery()
    cols = (e.c.board_id, e.c.at, e.c.to_state, e.c.actor, e.c.reason)
    rows = [
        *conn.execute(sa.select(*cols).join(last, last.c.id == e.c.id)),
        *conn.execute(sa.select(*cols).where(e.c.at >= since, e.c.at <= until, of).order_by(e.c.id)),
    ]
    return [Transition(r.board_id, r.at, BoardState(r.to_state), Actor(r.actor), r.reason) for r in rows]
