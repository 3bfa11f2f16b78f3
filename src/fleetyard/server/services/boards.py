"""Hosts and boards: inventory views, drain and undrain, history, fault injection, board ops."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleetyard.domain.auth import Principal
from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.job import Cause, JobState
from fleetyard.errors import BadRequest, Conflict, NotFound
from fleetyard.policy.remediation import TAKEN_OVER, by_hand
from fleetyard.protocol.agent import BoardOp, FaultAction, FaultKind
from fleetyard.protocol.api import BoardEventOut, BoardOpOut, BoardOut, FaultOrderOut, HostOut, RepairOut
from fleetyard.server.services.audit import note
from fleetyard.server.services.views import board_out, event_out, host_out
from fleetyard.store import board_ops, healing
from fleetyard.store import tables as t
from fleetyard.store.attempts import stop_job
from fleetyard.store.boards import switch_board_state
from fleetyard.store.db import Store, lock_rows
from fleetyard.store.hosts import end_live_ranks


def list_hosts(store: Store, *, state: str | None = None) -> list[HostOut]:
    counts = sa.select(t.boards.c.host_id, sa.func.count().label("n")).group_by(t.boards.c.host_id).subquery()
    q = (
        sa.select(t.hosts, sa.func.coalesce(counts.c.n, 0).label("n"))
        .outerjoin(counts, counts.c.host_id == t.hosts.c.id)
        .order_by(t.hosts.c.id)
    )
    if state:
        q = q.where(t.hosts.c.state == state)
    with store.read() as conn:
        return [host_out(r, r.n) for r in conn.execute(q)]


def get_host(store: Store, *, host_id: str) -> HostOut:
    with store.read() as conn:
        row = conn.execute(sa.select(t.hosts).where(t.hosts.c.id == host_id)).first()
        if row is None:
            raise NotFound(f"no host {host_id!r}")
        n = conn.execute(sa.select(sa.func.count()).where(t.boards.c.host_id == host_id)).scalar_one()
    return host_out(row, n)


def list_boards(
    store: Store,
    *,
    state: str | None = None,
    host: str | None = None,
    generation: str | None = None,
    labels: dict[str, str] | None = None,
) -> list[BoardOut]:
    q = sa.select(t.boards).order_by(t.boards.c.host_id, t.boards.c.slot)
    if state:
        q = q.where(t.boards.c.state == state)
    if host:
        q = q.where(t.boards.c.host_id == host)
    if generation:
        q = q.where(t.boards.c.generation == generation)
    with store.read() as conn:
        rows = conn.execute(q).all()
    wanted = labels or {}
    return [board_out(r) for r in rows if all(r.labels.get(k) == v for k, v in wanted.items())]


def _board(conn: sa.Connection, board_id: str) -> sa.Row[Any]:
    row = conn.execute(sa.select(t.boards).where(t.boards.c.id == board_id)).first()
    if row is None:
        raise NotFound(f"no board {board_id!r}")
    return row


def get_board(store: Store, *, board_id: str) -> BoardOut:
    with store.read() as conn:
        return board_out(_board(conn, board_id))


def drain(store: Store, *, board_id: str, reason: str, principal: Principal, at: float) -> BoardOut:
    """Keep new work off a board. An allocated board finishes its attempt first."""

    def drain_in(conn: sa.Connection) -> BoardOut:
        lock_rows(conn, t.boards, [board_id])  # the state read below is the one written from
        b = _board(conn, board_id)
        why = f"drained by {principal.name}: {reason}"
        conn.execute(t.boards.update().where(t.boards.c.id == board_id).values(drain_reason=why))
        state = BoardState(b.state)
        if state in (BoardState.AVAILABLE, BoardState.SUSPECT):
            switch_board_state(
                conn, board_id, BoardState.DRAINED, current=state, reason=why, actor=Actor.OPERATOR, at=at
            )
        note(conn, principal, "board.drain", board_id, at=at, reason=reason, detail={"state": str(state)})
        return board_out(_board(conn, board_id))

    return store.transact(drain_in)  # run again if PostgreSQL aborts it for a deadlock


def undrain(store: Store, *, board_id: str, reason: str, principal: Principal, at: float) -> BoardOut:
    """Return a drained (or suspect) board to service."""

    def undrain_in(conn: sa.Connection) -> BoardOut:
        lock_rows(conn, t.boards, [board_id])  # the state read below is the one written from
        b = _board(conn, board_id)
        state = BoardState(b.state)
        why = f"undrained by {principal.name}: {reason}"
        if state in (BoardState.DRAINED, BoardState.SUSPECT):
            switch_board_state(
                conn, board_id, BoardState.AVAILABLE, current=state, reason=why, actor=Actor.OPERATOR, at=at
            )
        elif b.drain_reason is None:
            raise Conflict(
                f"board {board_id} is {state}, not drained or suspect: nothing to undrain",
                detail={"state": str(state)},
            )
        conn.execute(t.boards.update().where(t.boards.c.id == board_id).values(drain_reason=None))
        note(conn, principal, "board.undrain", board_id, at=at, reason=reason, detail={"state": str(state)})
        return board_out(_board(conn, board_id))

    return store.transact(undrain_in)  # run again if PostgreSQL aborts it for a deadlock


def release(store: Store, *, board_id: str, reason: str, principal: Principal, at: float) -> BoardOut:
    """Let a board go from its host, to be moved to another: a rank it runs ends (its job runs
    again) and it goes offline. The agent of the host it turns up on may then claim it; until
    then (or its host is offline) no other host may (``register`` answers 409)."""

    def release_in(conn: sa.Connection) -> BoardOut:
        b = _board(conn, board_id)
        why = f"released by {principal.name} to move it to another host: {reason}"
        end_live_ranks(conn, b.host_id, boards=[board_id], reason=why, at=at, cause=Cause.BOARD_GONE)
        lock_rows(conn, t.boards, [board_id])  # after the attempt (end_live_ranks' order)
        b = _board(conn, board_id)
        state = BoardState(b.state)
        if state in (BoardState.QUARANTINED, BoardState.RETIRED):
            raise Conflict(
                f"board {board_id} is {state}: it leaves for repair (or is gone), not for another host",
                detail={"state": str(state)},
            )
        if state is not BoardState.OFFLINE:
            switch_board_state(
                conn, board_id, BoardState.OFFLINE, current=state, reason=why, actor=Actor.OPERATOR, at=at
            )
        note(conn, principal, "board.release", board_id, at=at, reason=reason, detail={"host": b.host_id})
        return board_out(_board(conn, board_id))

    return store.transact(release_in)  # run again if PostgreSQL aborts it for a deadlock


def repaired(store: Store, *, board_id: str, reason: str, principal: Principal, at: float) -> BoardOut:
    """A quarantined board came back from repair: it goes through onboarding (inspect, flash to
    the standard firmware, L3 burn-in: the controller's) before it serves again."""
    with store.write() as conn:
        b = _board(conn, board_id)
        state = BoardState(b.state)
        if state is not BoardState.QUARANTINED:
            raise Conflict(
                f"board {board_id} is {state}, not quarantined: only a quarantined board comes back from repair",
                detail={"state": str(state)},
            )
        why = f"repaired, by {principal.name}: {reason}; onboarding (inspect, flash, burn-in) before service"
        switch_board_state(
            conn, board_id, BoardState.ONBOARDING, current=state, reason=why, actor=Actor.OPERATOR, at=at
        )
        note(conn, principal, "board.repaired", board_id, at=at, reason=reason)
        return board_out(_board(conn, board_id))


def history(store: Store, *, board_id: str, limit: int = 100) -> list[BoardEventOut]:
    with store.read() as conn:
        _board(conn, board_id)
        rows = conn.execute(
            sa.select(t.board_events)
            .where(t.board_events.c.board_id == board_id)
            .order_by(t.board_events.c.id.desc())
            .limit(limit)
        ).all()
    return [event_out(r) for r in rows]


def order_fault(
    store: Store, *, board_id: str, kind: FaultKind | None, action: FaultAction, principal: Principal, at: float
) -> FaultOrderOut:
    """Queue a fault order; the board's agent applies it on its next heartbeat."""
    with store.write() as conn:
        _board(conn, board_id)
        if action is FaultAction.INJECT and kind is None:
            raise BadRequest("injecting a fault needs its kind", detail={"field": "kind"})
        order_id = conn.execute(
            t.fault_orders.insert()
            .values(board_id=board_id, kind=kind and str(kind), action=str(action), created_at=at)
            .returning(t.fault_orders.c.id)
        ).scalar_one()
        detail = {"kind": kind and str(kind), "action": str(action), "order_id": order_id}
        note(conn, principal, "board.fault", board_id, at=at, detail=detail)
    return FaultOrderOut(id=order_id, board_id=board_id, kind=kind and str(kind), action=str(action), created_at=at)


def list_faults(store: Store, *, board_id: str, limit: int) -> list[FaultOrderOut]:
    """A board's fault orders, newest first, each with when its agent applied it."""
    f = t.fault_orders.c
    with store.read() as conn:
        _board(conn, board_id)
        rows = conn.execute(sa.select(t.fault_orders).where(f.board_id == board_id).order_by(f.id.desc()).limit(limit))
        return [
            FaultOrderOut(
                id=r.id, board_id=r.board_id, kind=r.kind, action=r.action, created_at=r.created_at, acked_at=r.acked_at
            )
            for r in rows
        ]


def op_out(o: board_ops.OpRecord, at: float) -> BoardOpOut:
    return BoardOpOut(
        id=o.id,
        board_id=o.board_id,
        op=str(o.op),
        state=str(o.state(at)),
        reason=o.reason,
        actor=o.actor,
        ordered_at=o.ordered_at,
        timeout_s=o.timeout_s,
        delivered_at=o.delivered_at,
        started_at=o.started_at,
        finished_at=o.finished_at,
        ok=o.ok,
        message=o.message,
        version=o.version,
    )


def order_op(
    store: Store,
    *,
    board_id: str,
    op: BoardOp,
    reason: str,
    principal: Principal,
    at: float,
    timeout_s: float | None = None,
    version: str | None = None,
    take_over: bool = False,
) -> BoardOpOut:
    """Order a board op by hand; the board's agent carries it out after its next heartbeat (a
    flash: the registered ``version`` of the board's generation). A board the op touches that is
    under automatic remediation refuses it, unless ``take_over``
    (:func:`~fleetyard.policy.remediation.by_hand`)."""
    why = f"ordered by {principal.name}" + (f": {reason}" if reason else "")

    def order_in(conn: sa.Connection) -> BoardOpOut:
        board = _board(conn, board_id)
        image = _image(conn, board, op, version)
        touched = [board_id]
        if op is BoardOp.HOST_REBOOT:
            touched = list(conn.execute(sa.select(t.boards.c.id).where(t.boards.c.host_id == board.host_id)).scalars())
        # Each case's check is stopped before the boards are locked (an attempt is locked before
        # its board, as every path takes them); then, under the locks, each case is taken over
        # (one opened meanwhile too) or the op refused.
        for c in healing.open_cases(conn, touched):
            _stop_check(conn, c, _by_hand(c, op, take_over, principal, reason)[1], at)
        lock_rows(conn, t.boards, touched)
        for c in healing.open_cases(conn, touched):
            _take_over(conn, c, _by_hand(c, op, take_over, principal, reason), op=op, principal=principal, at=at)
        op_id = board_ops.order_op(
            conn,
            board_id,
            op,
            reason=why,
            at=at,
            actor=str(Actor.OPERATOR),
            timeout_s=timeout_s,
            image=image,
            version=version if image else None,
        )
        detail = {"op": str(op), "timeout_s": timeout_s, "op_id": op_id, "version": version}
        note(conn, principal, "board.op", board_id, at=at, reason=reason, detail=detail)
        record = board_ops.get_op(conn, op_id)
        assert record is not None
        return op_out(record, at)

    return store.transact(order_in)  # run again if PostgreSQL aborts it for a deadlock


def _by_hand(
    c: healing.CaseRow, op: BoardOp, take_over: bool, principal: Principal, reason: str
) -> tuple[BoardState, str]:
    """Where a board under remediation goes when the operator takes it over, and why; or the
    refusal (:func:`~fleetyard.policy.remediation.by_hand`)."""
    verdict = by_hand(c.case, op=str(op), take_over=take_over, by=principal.name, reason=reason)
    if isinstance(verdict, str):
        raise Conflict(verdict, detail={"board": c.case.board, "case": c.id, "cause": c.case.cause})
    return verdict


def _stop_check(conn: sa.Connection, c: healing.CaseRow, why: str, at: float) -> None:
    if c.check_job_id is None:
        return
    job = conn.execute(
        sa.select(t.jobs.c.state, t.jobs.c.cancel_requested).where(t.jobs.c.id == c.check_job_id)
    ).first()
    if job is not None and not JobState(job.state).finished and not job.cancel_requested:
        stop_job(conn, c.check_job_id, at=at, message=why)


def _take_over(
    conn: sa.Connection,
    c: healing.CaseRow,
    verdict: tuple[BoardState, str],
    *,
    op: BoardOp,
    principal: Principal,
    at: float,
) -> None:
    """Close a board's open case as taken over (the operator's op would fight it), its check
    stopped, the board drained in the operator's hands, audited."""
    to, why = verdict
    _stop_check(conn, c, why, at)
    evidence = {"steps": list(c.case.evidence), "tier": str(c.case.tier)}
    healing.close_case(conn, c.id, outcome=TAKEN_OVER, reason=why, evidence=evidence, at=at)
    b = _board(conn, c.case.board)
    conn.execute(t.boards.update().where(t.boards.c.id == b.id).values(drain_reason=why))
    if BoardState(b.state) in (BoardState.SUSPECT, BoardState.REMEDIATING):
        switch_board_state(conn, b.id, to, current=BoardState(b.state), reason=why, actor=Actor.OPERATOR, at=at)
    detail = {"case": c.id, "op": str(op), "cause": c.case.cause, "state": b.state}
    note(conn, principal, "board.take_over", b.id, at=at, reason=why, detail=detail)


def _image(conn: sa.Connection, board: Any, op: BoardOp, version: str | None) -> str | None:
    """A flash's image: the registered ``version`` of the board's generation (None for other ops)."""
    if op is not BoardOp.FLASH:
        if version is not None:
            raise BadRequest(f"only a flash takes a version; {op} does not")
        return None
    if not version:
        raise BadRequest(
            f"a flash needs a version: one of {board.generation}'s (fleetyard firmware ls --gen {board.generation})"
        )
    f = t.firmware_images.c
    sha = conn.execute(sa.select(f.sha256).where(f.generation == board.generation, f.version == version)).scalar()
    if sha is None:
        raise NotFound(
            f"no {board.generation} firmware {version} to flash on {board.id}: push it first "
            f"(fleetyard firmware push IMAGE --gen {board.generation} --version {version})",
            detail={"generation": board.generation, "version": version},
        )
    return str(sha)


def list_ops(store: Store, *, board_id: str, at: float, limit: int = 100) -> list[BoardOpOut]:
    """A board's ops, newest first."""
    with store.read() as conn:
        _board(conn, board_id)
        return [op_out(o, at) for o in board_ops.ops_for(conn, board_id, limit=limit)]


def repairs(store: Store, *, board_id: str, limit: int = 20) -> list[RepairOut]:
    """A board's remediation cases, newest first."""
    with store.read() as conn:
        _board(conn, board_id)
        return [RepairOut.model_validate(r) for r in healing.repairs_of(conn, board_id, limit=limit)]
