"""Circuit breakers per generation (:mod:`fleetyard.policy.brakes`): trips, resets, and how many
boards the policy took out of service lately."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.policy.brakes import Tripped
from fleetyard.store import tables as t

B = t.breakers
POLICY_RESET = "policy"  # reset_by of a breaker the policy reset itself (the control plane's, once hosts answer)
IN_SERVICE = (BoardState.AVAILABLE, BoardState.ALLOCATED)


def open_breakers(conn: sa.Connection) -> dict[str, sa.Row[Any]]:
    """generation -> its tripped breaker (not reset)."""
    rows = conn.execute(sa.select(B).where(B.c.reset_at.is_(None)).order_by(B.c.id)).all()
    return {r.generation: r for r in rows}


def tripped(conn: sa.Connection) -> Tripped:
    """The generations whose breaker is tripped (all, while the control plane's is)."""
    return Tripped(frozenset(open_breakers(conn)))


def last_trip(conn: sa.Connection, key: str) -> sa.Row[Any] | None:
    """``key``'s breaker's last trip (open while it has no ``reset_at``), or None."""
    return conn.execute(sa.select(B).where(B.c.generation == key).order_by(B.c.id.desc()).limit(1)).first()


def trip(conn: sa.Connection, generation: str, reason: str, *, at: float) -> None:
    conn.execute(B.insert().values(generation=generation, tripped_at=at, reason=reason))


def reset(conn: sa.Connection, generation: str, *, by: str, reason: str, at: float) -> bool:
    """Reset a generation's tripped breaker; False if it was not tripped."""
    res = conn.execute(
        B.update()
        .where(B.c.generation == generation, B.c.reset_at.is_(None))
        .values(reset_at=at, reset_by=by, reset_reason=reason)
    )
    return bool(res.rowcount)


def taken_out_since(conn: sa.Connection, *, window_start: float) -> dict[str, int]:
    """generation -> boards the policy or an agent took out of service (from available or
    allocated to anything else, offline aside: a lost host has its own brake) since
    ``window_start``, or since the generation's breaker was last reset if later. A board coming
    back (offline to suspect, until it passes a check) is not one taken out."""
    last_reset = conn.execute(sa.select(B.c.generation, sa.func.max(B.c.reset_at)).group_by(B.c.generation))
    resets: Mapping[str, float | None] = {gen: at for gen, at in last_reset}
    e = t.board_events
    rows = conn.execute(
        sa.select(t.boards.c.generation, e.c.board_id, e.c.at)
        .join(t.boards, t.boards.c.id == e.c.board_id)
        .where(
            e.c.at >= window_start,
            e.c.from_state.in_([str(s) for s in IN_SERVICE]),
            e.c.to_state.notin_([*(str(s) for s in IN_SERVICE), str(BoardState.OFFLINE), str(BoardState.RETIRED)]),
            e.c.actor != str(Actor.OPERATOR),
        )
    ).all()
    out: dict[str, set[str]] = defaultdict(set)
    for gen, board, at in rows:
        if at >= (resets.get(gen) or window_start):
            out[gen].add(board)
    return {g: len(b) for g, b in out.items()}
