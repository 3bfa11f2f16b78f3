"""Board ops (:class:`~fleetyard.protocol.agent.BoardOp`): remediation steps ordered for a board
and carried out by its host's agent, which reports each one's result in a heartbeat.

The controller (or an operator) orders an op with :func:`order_op`; the heartbeat sink delivers
:func:`open_ops` to the agents, :func:`mark_delivered` once, and stores their reports with
:func:`record_results`, which keeps the first result of an op and ignores any repeat. An op with no
result by ``ordered_at + timeout_s`` has failed: :func:`overdue_ops` finds those, and it is no
longer delivered (a reset that arrives after the controller moved on would only get in the way).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from fleetyard.protocol.agent import OP_TIMEOUT_S, BoardOp, OpResult
from fleetyard.store import tables as t

__all__ = [
    "MESSAGE_MAX",
    "OpRecord",
    "OpState",
    "get_op",
    "latest_ops",
    "mark_delivered",
    "open_ops",
    "ops_for",
    "order_op",
    "overdue_ops",
    "record_results",
]

OPS = t.board_ops
# An agent's message is kept to this many characters (a driver may print a whole log).
MESSAGE_MAX = 4000


class OpState(StrEnum):
    ORDERED = "ordered"  # not yet handed to an agent
    DELIVERED = "delivered"  # an agent has it; no result yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the agent says it did not work
    TIMED_OUT = "timed_out"  # no result by its deadline


@dataclass(frozen=True)
class OpRecord:
    id: int
    board_id: str
    op: BoardOp
    reason: str
    actor: str
    ordered_at: float
    timeout_s: float
    delivered_at: float | None
    started_at: float | None
    finished_at: float | None
    reported_at: float | None
    ok: bool | None
    message: str | None
    image: str | None = None  # flash: the image's sha256
    version: str | None = None  # flash: its version

    @property
    def deadline(self) -> float:
        return self.ordered_at + self.timeout_s

    def state(self, at: float) -> OpState:
        """Where the op stands at ``at``; a result wins over the deadline, even a late one."""
        if self.finished_at is not None:
            return OpState.SUCCEEDED if self.ok else OpState.FAILED
        if at > self.deadline:
            return OpState.TIMED_OUT
        return OpState.ORDERED if self.delivered_at is None else OpState.DELIVERED


def _record(r: sa.Row[Any]) -> OpRecord:
    return OpRecord(
        id=r.id,
        board_id=r.board_id,
        op=BoardOp(r.op),
        reason=r.reason,
        actor=r.actor,
        ordered_at=r.ordered_at,
        timeout_s=r.timeout_s,
        delivered_at=r.delivered_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        reported_at=r.reported_at,
        ok=r.ok,
        message=r.message,
        image=r.image,
        version=r.version,
    )


def order_op(
    conn: sa.Connection,
    board_id: str,
    op: BoardOp,
    *,
    reason: str,
    at: float,
    actor: str,
    timeout_s: float | None = None,
    image: str | None = None,
    version: str | None = None,
) -> int:
    """Order ``op`` on a board (it must exist); its id. ``timeout_s`` defaults to the op's own;
    a flash names its image (sha256) and version."""
    return int(
        conn.execute(
            OPS.insert()
            .values(
                board_id=board_id,
                op=str(op),
                reason=reason,
                actor=actor,
                ordered_at=at,
                timeout_s=OP_TIMEOUT_S[op] if timeout_s is None else timeout_s,
                image=image,
                version=version,
            )
            .returning(OPS.c.id)
        ).scalar_one()
    )


def get_op(conn: sa.Connection, op_id: int) -> OpRecord | None:
    row = conn.execute(sa.select(OPS).where(OPS.c.id == op_id)).first()
    return None if row is None else _record(row)


def open_ops(conn: sa.Connection, *, at: float) -> dict[str, list[OpRecord]]:
    """host id -> the ops of its boards with no result and within their deadline, oldest first."""
    rows = conn.execute(
        sa.select(OPS, t.boards.c.host_id)
        .join(t.boards, t.boards.c.id == OPS.c.board_id)
        .where(OPS.c.finished_at.is_(None), OPS.c.ordered_at + OPS.c.timeout_s >= at)
        .order_by(OPS.c.id)
    ).all()
    out: dict[str, list[OpRecord]] = defaultdict(list)
    for r in rows:
        out[r.host_id].append(_record(r))
    return dict(out)


def mark_delivered(conn: sa.Connection, ids: Iterable[int], *, at: float) -> None:
    """Note when each op first reached an agent (a later delivery keeps the first time)."""
    wanted = sorted(set(ids))
    if wanted:
        conn.execute(OPS.update().where(OPS.c.id.in_(wanted), OPS.c.delivered_at.is_(None)).values(delivered_at=at))


def record_results(conn: sa.Connection, results: Iterable[OpResult], *, at: float, host: str | None = None) -> int:
    """Store each op's first result; a repeat, or (with ``host``) an op of a board that is not on
    that host, changes nothing. Returns how many were stored."""
    stored = 0
    for r in results:
        q = OPS.update().where(OPS.c.id == r.id, OPS.c.finished_at.is_(None))
        if host is not None:
            q = q.where(OPS.c.board_id.in_(sa.select(t.boards.c.id).where(t.boards.c.host_id == host)))
        message = None if r.message is None else r.message[:MESSAGE_MAX]
        res = conn.execute(
            q.values(
                ok=r.ok, message=message, started_at=r.started_at, finished_at=r.finished_at, reported_at=at
            ).returning(OPS.c.board_id, OPS.c.op, OPS.c.version)
        )
        for board_id, op, version in res.all():
            stored += 1
            if op == BoardOp.FLASH and r.ok and version:  # the board runs it now
                conn.execute(t.boards.update().where(t.boards.c.id == board_id).values(firmware=version))
    return stored


def ops_for(conn: sa.Connection, board_id: str, *, limit: int = 100) -> list[OpRecord]:
    """A board's ops, newest first."""
    rows = conn.execute(sa.select(OPS).where(OPS.c.board_id == board_id).order_by(OPS.c.id.desc()).limit(limit)).all()
    return [_record(r) for r in rows]


def latest_ops(conn: sa.Connection, board_ids: Iterable[str], *, op: BoardOp | None = None) -> dict[str, OpRecord]:
    """board id -> its newest op (of kind ``op`` if given): what became of the step last ordered."""
    wanted = sorted(set(board_ids))
    if not wanted:
        return {}
    newest = sa.select(sa.func.max(OPS.c.id)).where(OPS.c.board_id.in_(wanted)).group_by(OPS.c.board_id)
    if op is not None:
        newest = newest.where(OPS.c.op == str(op))
    rows = conn.execute(sa.select(OPS).where(OPS.c.id.in_(newest))).all()
    return {r.board_id: _record(r) for r in rows}


def overdue_ops(conn: sa.Connection, *, at: float) -> list[OpRecord]:
    """Ops with no result past their deadline (``ordered_at + timeout_s < at``): failed."""
    rows = conn.execute(
        sa.select(OPS).where(OPS.c.finished_at.is_(None), OPS.c.ordered_at + OPS.c.timeout_s < at).order_by(OPS.c.id)
    ).all()
    return [_record(r) for r in rows]
