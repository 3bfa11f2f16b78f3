"""The agent protocol's server side: register, heartbeat, assignments, events.

Every write here is idempotent: a replayed batch (same assignment ids and sequence numbers)
changes nothing the first delivery did not.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleetyard.domain.auth import Principal
from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.host import HostState
from fleetyard.domain.inventory import DeclaredBoard
from fleetyard.domain.job import AssignmentState, Cause, Outcome
from fleetyard.errors import BadRequest, Conflict, Forbidden, StaleSession
from fleetyard.policy.inventory import admit
from fleetyard.protocol.agent import (
    Assignment,
    BoardInfo,
    Event,
    EventType,
    RegisterRequest,
)
from fleetyard.store import inventory
from fleetyard.store import tables as t
from fleetyard.store.attempts import end_rank, lock_attempts, settle
from fleetyard.store.boards import record_arrival, switch_board_state
from fleetyard.store.db import Store, insert_ignore, lock_rows
from fleetyard.store.hosts import LIVE, board_back, end_live_ranks, host_back, lose_host

A = t.assignments
# A delivered assignment whose agent never said it started is handed out again after this long
# (the answer carrying it may have been lost); agents ignore ids they already have.
REDELIVER_AFTER_S = 10.0


def agent_host(principal: Principal, host: str | None = None) -> str:
    if principal.host is None:
        raise Forbidden(f"token {principal.name!r} is not an agent token bound to a host")
    if host is not None and host != principal.host:
        raise Forbidden(f"token {principal.name!r} is bound to host {principal.host!r}, not {host!r}")
    return principal.host


def register(store: Store, *, principal: Principal, req: RegisterRequest, at: float) -> None:
    host_id = agent_host(principal, req.host)
    serials = [b.serial for b in req.boards]
    if len(set(serials)) != len(serials):
        raise BadRequest("the agent reported the same board serial twice", detail={"serials": serials})

    def write(conn: sa.Connection) -> None:
        # New boards are admitted against the inventory: no sync may change it under this read.
        inventory.hold_for_arrivals(conn, serials)
        host = conn.execute(sa.select(t.hosts).where(t.hosts.c.id == host_id)).first()
        values = {
            "state": str(HostState.ONLINE),
            "driver": req.driver,
            "agent_version": req.agent_version,
            "labels": req.labels,
            "session": req.session,
            "last_heartbeat_at": at,
        }
        if host is None:
            conn.execute(t.hosts.insert().values(id=host_id, registered_at=at, **values))
        else:
            if host.session != req.session:
                end_live_ranks(
                    conn, host_id, reason="agent restarted: its running work was lost", at=at,
                    cause=Cause.AGENT_STOPPED,
                )  # fmt: skip
            conn.execute(t.hosts.update().where(t.hosts.c.id == host_id).values(**values))
            if host.state == HostState.OFFLINE:
                host_back(conn, host_id, at=at)
        # Held before they are read: two hosts claiming one released board at once would each
        # read it free (READ COMMITTED) and both take it.
        lock_rows(conn, t.boards, serials)
        known = {r.id: r for r in conn.execute(sa.select(t.boards).where(t.boards.c.id.in_(serials)))}
        _check_claims(conn, host_id, [r for r in known.values() if r.host_id != host_id])
        new = [b for b in req.boards if b.serial not in known]
        # Only a fleet with a synced inventory holds new boards back (the open fleet serves them).
        synced = bool(new) and inventory.is_synced(conn)
        declared = inventory.declared_for(conn, [b.serial for b in new]) if synced else {}
        auto = inventory.auto_approve(conn) if synced else []
        for b in req.boards:
            row = known.get(b.serial)
            fields = {
                "host_id": host_id,
                "slot": b.slot,
                "generation": b.generation,
                "firmware": b.firmware,
                "device": b.device,
                "labels": b.labels,
                "hardware_revision": b.hardware_revision,
            }
            if row is None:
                _arrive(conn, b, host_id, fields, synced=synced, declared=declared, auto=auto, at=at)
                continue
            conn.execute(t.boards.update().where(t.boards.c.id == b.serial).values(**fields))
            if row.host_id != host_id:
                moved = f"moved from host {row.host_id} to {host_id}"
                conn.execute(
                    t.board_events.insert().values(
                        board_id=b.serial,
                        at=at,
                        from_state=row.state,
                        to_state=row.state,
                        reason=moved,
                        actor=str(Actor.AGENT),
                    )
                )
                # A rank addressed to the old host cannot run there any more: it ends, and its job
                # runs again (the old host's agent is told to stop it if it still has it).
                end_live_ranks(
                    conn, row.host_id, boards=[b.serial], reason=f"its board {moved}", at=at, cause=Cause.BOARD_GONE
                )
            if row.state == BoardState.OFFLINE:
                board_back(conn, b.serial, actor=Actor.AGENT, at=at)
        missing = conn.execute(
            sa.select(t.boards.c.id, t.boards.c.state).where(
                t.boards.c.host_id == host_id,
                t.boards.c.id.notin_(serials),
                t.boards.c.state.notin_([str(BoardState.OFFLINE), str(BoardState.RETIRED)]),
            )
        ).all()
        for m in missing:
            switch_board_state(
                conn,
                m.id,
                BoardState.OFFLINE,
                current=BoardState(m.state),
                reason=f"the agent of {host_id} no longer finds it",
                actor=Actor.AGENT,
                at=at,
            )

    try:
        store.transact(write)  # run again if PostgreSQL aborts it for a deadlock
    except sa.exc.IntegrityError as exc:
        # Another register committed the first registration of this host, or of one of its
        # boards, while this one inserted it too (PostgreSQL; on SQLite one writes at a time):
        # the key refused this insert. Once more: the row is there now, and this register updates
        # it as any later one does (the last register of a host wins).
        if getattr(exc.orig, "sqlstate", None) != "23505":  # unique_violation
            raise
        store.transact(write)


def _check_claims(conn: sa.Connection, host_id: str, moving: list[sa.Row[Any]]) -> None:
    """A host may report a board another host has only once that host is offline, or the board
    is (its host no longer finds it, or an operator released it): else two hosts claim one board,
    and one of them is wrong or lying."""
    if not moving:
        return
    held_by = sa.select(t.hosts.c.id, t.hosts.c.state).where(t.hosts.c.id.in_({b.host_id for b in moving}))
    hosts = {r.id: r.state for r in conn.execute(held_by)}
    for b in moving:
        if hosts.get(b.host_id) == HostState.OFFLINE or b.state in (BoardState.OFFLINE, BoardState.RETIRED):
            continue
        raise Conflict(
            f"board {b.id} is on host {b.host_id}, which is {hosts.get(b.host_id)} and reports it; "
            f"host {host_id} may report it once {b.host_id} is offline or an operator releases it "
            f"(fleetyard boards release {b.id})",
            detail={"board": b.id, "hosts": [b.host_id, host_id]},
        )


def _arrive(
    conn: sa.Connection,
    b: BoardInfo,
    host_id: str,
    fields: dict[str, Any],
    *,
    synced: bool,
    declared: dict[str, DeclaredBoard],
    auto: list[str],
    at: float,
) -> None:
    """A board no agent reported before: the open fleet serves it at once; with an inventory it
    arrives discovered and onboards at once if the inventory names or auto-approves it."""
    a = admit(b.serial, b.generation, host=host_id, synced=synced, declared=declared.get(b.serial), auto_approve=auto)
    if a.state is BoardState.AVAILABLE:
        conn.execute(
            t.boards.insert().values(
                id=b.serial,
                state=str(BoardState.AVAILABLE),
                state_reason=a.reason,
                state_changed_at=at,
                telemetry={},
                l1_at=at,  # its L1 clock starts as it enters service
                **fields,
            )
        )
        record_arrival(conn, b.serial, BoardState.AVAILABLE, reason=a.reason, actor=Actor.AGENT, at=at)
        return
    found = f"found by the agent of {host_id}"
    waits = a.state is BoardState.DISCOVERED
    conn.execute(
        t.boards.insert().values(
            id=b.serial,
            state=str(BoardState.DISCOVERED),
            state_reason=a.reason if waits else found,
            state_changed_at=at,
            telemetry={},
            **fields,
        )
    )
    record_arrival(conn, b.serial, BoardState.DISCOVERED, reason=a.reason if waits else found, actor=Actor.AGENT, at=at)
    if not waits:
        switch_board_state(
            conn,
            b.serial,
            BoardState.ONBOARDING,
            current=BoardState.DISCOVERED,
            reason=a.reason,
            actor=Actor.POLICY,
            at=at,
            onboard_batch=a.batch,
        )


def _check_session(conn: sa.Connection, host_id: str, session: str) -> sa.Row[Any]:
    host = conn.execute(sa.select(t.hosts).where(t.hosts.c.id == host_id)).first()
    if host is None or host.session != session:
        raise StaleSession(
            f"session {session} is not the current session of host {host_id}: register again",
            detail={"host": host_id},
        )
    return host


def _to_cancel(conn: sa.Connection, host_id: str) -> set[int]:
    """Live ranks on this host that the server wants stopped."""
    return set(
        conn.execute(
            sa.select(A.c.id).where(A.c.host_id == host_id, A.c.state.in_(LIVE), A.c.cancel_requested)
        ).scalars()
    )


def leave(store: Store, *, principal: Principal, session: str, at: float) -> None:
    """The agent stops on purpose: no more work goes to its boards; what still runs there is
    re-queued as preempted (neither the job's nor the board's fault)."""
    host_id = agent_host(principal)

    def write(conn: sa.Connection) -> None:
        # The session is checked with the host row held (PostgreSQL): a register of a new session
        # commits before this read or waits for this leave, so a late leave of an old agent
        # process is refused rather than take the new session's host offline.
        lock_rows(conn, t.hosts, [host_id])
        _check_session(conn, host_id, session)
        lose_host(
            conn, host_id, reason="its agent stopped", at=at, outcome=Outcome.PREEMPTED, cause=Cause.AGENT_STOPPED
        )

    store.transact(write)  # run again if PostgreSQL aborts it for a deadlock


def hosts_with_pending(store: Store) -> set[str]:
    with store.read() as conn:
        return set(
            conn.execute(sa.select(A.c.host_id).where(A.c.state == str(AssignmentState.PENDING)).distinct()).scalars()
        )


def take_assignments(store: Store, *, principal: Principal, session: str, at: float) -> list[Assignment]:
    """Hand this host its new assignments (and any delivered long ago but never started)."""
    host_id = agent_host(principal)
    due = sa.and_(
        A.c.host_id == host_id,
        sa.or_(
            A.c.state == str(AssignmentState.PENDING),
            sa.and_(A.c.state == str(AssignmentState.DELIVERED), A.c.delivered_at < at - REDELIVER_AFTER_S),
        ),
    )
    with store.read() as conn:
        # Most polls find nothing: answer those without the write lock.
        _check_session(conn, host_id, session)
        if conn.execute(sa.select(A.c.id).where(due).limit(1)).first() is None:
            return []
    with store.write() as conn:
        rows = conn.execute(
            sa.select(A, t.jobs.c.kind, t.jobs.c.spec, t.jobs.c.team)
            .join(t.jobs, t.jobs.c.id == A.c.job_id)
            .where(due)
            .order_by(A.c.id)
            .with_for_update(of=A, skip_locked=True, key_share=True)
        ).all()
        if not rows:
            return []
        conn.execute(
            A.update()
            .where(A.c.id.in_([r.id for r in rows]))
            .values(state=str(AssignmentState.DELIVERED), delivered_at=at)
        )
        sizes: dict[int, int] = dict(
            conn.execute(
                sa.select(A.c.attempt_id, sa.func.count())
                .where(A.c.attempt_id.in_({r.attempt_id for r in rows}))
                .group_by(A.c.attempt_id)
            ).all()
        )
    return [
        Assignment(
            id=r.id,
            attempt_id=r.attempt_id,
            job_id=r.job_id,
            rank=r.rank,
            world_size=sizes[r.attempt_id],
            board_id=r.board_id,
            kind=r.kind,
            params=r.spec.get("params", {}),
            time_limit_s=float(r.spec.get("time_limit_s", 3600.0)),
            team=r.team,
        )
        for r in rows
    ]


def apply_events(
    store: Store, *, principal: Principal, session: str, events: list[Event], at: float
) -> tuple[int, list[int]]:
    """Apply a batch of rank events; returns how many changed something, and ranks to stop.
    A transaction aborted for a deadlock is run again (:meth:`Store.transact`): no event is lost."""
    host_id = agent_host(principal)
    ids = sorted({e.assignment_id for e in events})

    def apply(conn: sa.Connection) -> tuple[int, list[int]]:
        applied = 0
        _check_session(conn, host_id, session)
        rows = {r.id: r for r in conn.execute(sa.select(A).where(A.c.id.in_(ids)))}
        foreign = [i for i in ids if i not in rows or rows[i].host_id != host_id]
        if foreign:
            raise Forbidden(f"assignments {foreign} do not belong to host {host_id}", detail={"ids": foreign})
        if conn.dialect.name == "postgresql":
            # Their attempts first, in one order (see lock_attempts); then the ranks as they are now.
            lock_attempts(conn, {r.attempt_id for r in rows.values()})
            rows = {r.id: r for r in conn.execute(sa.select(A).where(A.c.id.in_(ids)))}
        # A rank stopped because its attempt was preempted reports "canceled": it ends preempted.
        preempted = dict(
            conn.execute(
                sa.select(t.attempts.c.id, t.attempts.c.message).where(
                    t.attempts.c.id.in_({r.attempt_id for r in rows.values()}), t.attempts.c.preempted_for.isnot(None)
                )
            ).all()
        )
        logs: list[dict[str, Any]] = []
        to_settle: set[int] = set()
        stop: set[int] = set()
        started_jobs: set[int] = set()
        for e in sorted(events, key=lambda e: (e.assignment_id, e.seq)):
            a = rows[e.assignment_id]
            if e.type is EventType.STARTED:
                if a.state in (AssignmentState.PENDING, AssignmentState.DELIVERED):
                    conn.execute(
                        A.update().where(A.c.id == a.id).values(state=str(AssignmentState.RUNNING), started_at=at)
                    )
                    started_jobs.add(a.job_id)
                    applied += 1
                elif a.state == AssignmentState.EXITED:
                    stop.add(a.id)  # ended on our side (canceled, host lost): the agent must stop it
            elif e.type is EventType.LOG:
                logs.append(
                    {
                        "assignment_id": a.id,
                        "seq": e.seq,
                        "job_id": a.job_id,
                        "attempt_id": a.attempt_id,
                        "rank": a.rank,
                        "at": e.at,
                        "data": e.data or "",
                    }
                )
            elif e.type is EventType.FINISHED:
                if a.state == AssignmentState.EXITED:
                    continue
                # Siblings asked to stop here reach their agents through _to_cancel below.
                outcome, message, cause = e.outcome or Outcome.INFRA_ERROR, e.message, e.cause
                if a.attempt_id in preempted and outcome is Outcome.CANCELED:
                    outcome, message, cause = Outcome.PREEMPTED, preempted[a.attempt_id], Cause.PREEMPTED
                end_rank(
                    conn,
                    a,
                    outcome=outcome,
                    at=at,
                    exit_code=e.exit_code,
                    message=message,
                    board_ok=e.board_ok,
                    probe_reason=e.probe_reason,
                    result=e.result,
                    outputs=e.outputs,
                    cause=cause,
                )
                to_settle.add(a.attempt_id)
                applied += 1
        applied += insert_ignore(conn, t.logs, logs)
        if started_jobs:
            conn.execute(
                t.jobs.update()
                .where(t.jobs.c.id.in_(started_jobs), t.jobs.c.started_at.is_(None))
                .values(started_at=at)
            )
        for attempt_id in sorted(to_settle):
            settle(conn, attempt_id, at=at)
        stop |= _to_cancel(conn, host_id)
        return applied, sorted(stop)

    return store.transact(apply)
