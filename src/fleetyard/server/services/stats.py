"""Fleet statistics: uptime accounting over a window of the board event log."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleetyard.domain.auth import Principal
from fleetyard.errors import NotFound
from fleetyard.policy.uptime import Fault, FleetUptime, uptime
from fleetyard.protocol.agent import FaultAction
from fleetyard.protocol.api import BreakerOut, FleetStatsOut, GenerationStatsOut, IncidentOut
from fleetyard.server.services.audit import note
from fleetyard.store import breakers
from fleetyard.store import tables as t
from fleetyard.store.boards import transitions
from fleetyard.store.db import Store

WORST = 10  # boards listed, least available first
RECENT = 20  # incidents listed, newest first


def fleet_stats(store: Store, *, since: float, until: float) -> FleetStatsOut:
    with store.read() as conn:
        generation_of = {r.id: r.generation for r in conn.execute(sa.select(t.boards.c.id, t.boards.c.generation))}
        events = transitions(conn, since=since, until=until)
        faults = [
            Fault(r.board_id, r.created_at, r.kind or "")
            for r in conn.execute(
                sa.select(t.fault_orders.c.board_id, t.fault_orders.c.created_at, t.fault_orders.c.kind).where(
                    t.fault_orders.c.action == str(FaultAction.INJECT),
                    t.fault_orders.c.created_at >= since,
                    t.fault_orders.c.created_at <= until,
                )
            )
        ]
    return stats_out(uptime(events, generation_of, since=since, until=until, faults=faults))


def stats_out(f: FleetUptime) -> FleetStatsOut:
    rated = [(b.board, b.availability) for b in f.boards if b.availability is not None]
    worst = sorted(((board, a) for board, a in rated if a is not None and a < 1.0), key=lambda ba: (ba[1], ba[0]))
    recent = sorted(f.incidents, key=lambda i: (-i.start, i.board))[:RECENT]
    return FleetStatsOut(
        since=f.since,
        until=f.until,
        boards=len(f.boards),
        availability=f.availability,
        board_days=f.counted_s / 86400.0,
        incidents=len(f.incidents),
        incidents_per_1000_board_days=f.incidents_per_1000_board_days,
        mttr_s=f.mttr_s,
        mtbi_s=f.mtbi_s,
        mttd_s=f.mttd_s,
        faults_detected=f.faults_detected,
        faults_undetected=f.faults_undetected,
        by_cause=f.by_cause,
        by_generation=[GenerationStatsOut(generation=g, **v) for g, v in f.by_generation.items()],
        worst_boards=worst[:WORST],
        recent_incidents=[
            IncidentOut(
                board=i.board,
                generation=i.generation,
                start=i.start,
                end=i.end,
                state=str(i.state),
                cause=i.cause,
                repaired=i.repaired,
            )
            for i in recent
        ],
    )


def _breaker_out(generation: str, r: sa.Row[Any] | None) -> BreakerOut:
    if r is None:
        return BreakerOut(generation=generation, tripped=False, tripped_at=None, reason=None)
    return BreakerOut(
        generation=generation,
        tripped=r.reset_at is None,
        tripped_at=r.tripped_at,
        reason=r.reason,
        reset_at=r.reset_at,
        reset_by=r.reset_by,
        reset_reason=r.reset_reason,
    )


def list_breakers(store: Store) -> list[BreakerOut]:
    """Every generation's breaker: its last trip (tripped or reset since), or never tripped."""
    with store.read() as conn:
        gens = sorted(set(conn.execute(sa.select(t.boards.c.generation).distinct()).scalars()))
        last = {
            r.generation: r
            for r in conn.execute(sa.select(t.breakers).order_by(t.breakers.c.id))  # the last trip wins
        }
    return [_breaker_out(g, last.get(g)) for g in sorted(set(gens) | set(last))]


def reset_breaker(store: Store, *, generation: str, principal: Principal, reason: str, at: float) -> BreakerOut:
    with store.write() as conn:
        if not breakers.reset(conn, generation, by=principal.name, reason=reason, at=at):
            raise NotFound(
                f"the breaker of generation {generation!r} is not tripped (fleetyard fleet breakers lists them)",
                detail={"generation": generation},
            )
        note(conn, principal, "breaker.reset", generation, at=at, reason=reason)
        row = conn.execute(
            sa.select(t.breakers).where(t.breakers.c.generation == generation).order_by(t.breakers.c.id.desc())
        ).first()
    return _breaker_out(generation, row)
