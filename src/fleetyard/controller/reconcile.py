"""The controller's reconcile steps: load a snapshot, ask the policy, apply in one transaction."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa

from fleetyard.controller.scheduler import SchedulerShell
from fleetyard.domain.board import Actor, BoardState
from fleetyard.policy.brakes import LEMON_WINDOW_S, BreakerLimits, Intake, lemon_reason, take_out
from fleetyard.policy.liveness import HostView, SuspectView, lost_hosts, suspects_to_release, watching_since
from fleetyard.policy.uptime import Incident, uptime
from fleetyard.policy.watchdog import DEFAULT_TIMEOUTS_S, Overdue, StateView, overdue
from fleetyard.store import tables as t
from fleetyard.store.boards import switch_board_state, transitions
from fleetyard.store.breakers import open_breakers, taken_out_since, trip
from fleetyard.store.db import Store
from fleetyard.store.hosts import lose_host
from fleetyard.store.leases import expire_leases

log = logging.getLogger(__name__)


class HealthPass(NamedTuple):
    failing: list[str]  # became suspect
    released: list[str]  # back in service
    quarantined: list[str]  # lemons
    tripped: list[str]  # generations whose breaker tripped in this pass


@dataclass
class Reconciler:
    store: Store
    host_timeout_s: float = 10.0
    suspect_cooldown_s: float = 2.0
    watching_since: float = 0.0
    breaker: BreakerLimits = field(default_factory=BreakerLimits)
    timeouts: Mapping[BoardState, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS_S))
    scheduler: SchedulerShell = field(init=False)

    def __post_init__(self) -> None:
        self.scheduler = SchedulerShell(self.store)

    def schedule(self, now: float) -> int:
        """One scheduling pass (:class:`~fleetyard.controller.scheduler.SchedulerShell`); how many attempts started."""
        return self.scheduler.pass_(now)

    def leases(self, now: float) -> list[int]:
        """End the leases whose time is up (their boards go back to the fleet)."""
        ended = expire_leases(self.store, now)
        if ended:
            log.info("leases expired: %s", ", ".join(map(str, ended)))
        return ended

    def liveness(self, now: float) -> list[str]:
        """Declare hosts lost whose heartbeats stopped; their work is re-queued."""
        with self.store.write() as conn:
            newest = conn.execute(sa.select(sa.func.max(t.servers.c.seen_at))).scalar()
            self.watching_since = watching_since(
                self.watching_since, newest_server_seen=newest, now=now, timeout_s=self.host_timeout_s
            )
            hosts = [
                HostView(r.id, r.state == "online", r.last_heartbeat_at, r.registered_at)
                for r in conn.execute(sa.select(t.hosts))
            ]
            lost = lost_hosts(hosts, now=now, timeout_s=self.host_timeout_s, watching_since=self.watching_since)
            for host_id in lost:
                log.warning("host %s lost: no heartbeat for %.0f s", host_id, self.host_timeout_s)
                lose_host(conn, host_id, reason=f"host lost: no heartbeat for {self.host_timeout_s:.0f} s", at=now)
        return lost

    def health(self, now: float) -> HealthPass:
        """Available boards that fail their probe become suspect; suspects that pass return to
        service, but lemons go to quarantine. A generation's circuit breaker bounds how many of
        its boards are taken out at once; tripped, it stops both until an operator resets it
        (:mod:`fleetyard.policy.brakes`)."""
        with self.store.write() as conn:
            failing = conn.execute(
                sa.select(t.boards.c.id, t.boards.c.probe_reason, t.boards.c.generation).where(
                    t.boards.c.state == str(BoardState.AVAILABLE), t.boards.c.probe_ok.is_(False)
                )
            ).all()
            tripped = set(open_breakers(conn))
            intake = self._intake(conn, failing, tripped, now)
            tripped |= set(intake.trips)
            why_failing = {b.id: b.probe_reason for b in failing}
            for board_id in intake.boards:
                switch_board_state(
                    conn,
                    board_id,
                    BoardState.SUSPECT,
                    current=BoardState.AVAILABLE,
                    reason=f"failed its probe: {why_failing[board_id] or 'no reason given'}",
                    actor=Actor.POLICY,
                    at=now,
                )
            suspects = conn.execute(
                sa.select(
                    t.boards.c.id,
                    t.boards.c.generation,
                    t.boards.c.state_changed_at,
                    t.boards.c.probe_ok,
                    t.boards.c.telemetry_at,
                    t.hosts.c.state.label("host_state"),
                )
                .join(t.hosts, t.hosts.c.id == t.boards.c.host_id)
                .where(t.boards.c.state == str(BoardState.SUSPECT), t.boards.c.drain_reason.is_(None))
            ).all()
            views = [
                SuspectView(s.id, s.host_state == "online", s.state_changed_at, s.probe_ok, s.telemetry_at)
                for s in suspects
            ]
            passed = suspects_to_release(views, now=now, cooldown_s=self.suspect_cooldown_s)
            lemons = self._lemons(conn, passed, now)
            generation_of = {s.id: s.generation for s in suspects}
            released, quarantined = [], []
            for board_id in passed:
                if board_id in lemons:
                    if generation_of[board_id] in tripped:
                        continue  # held as suspect: neither back in service nor quarantined
                    for to in (BoardState.REMEDIATING, BoardState.QUARANTINED):
                        switch_board_state(conn, board_id, to, reason=lemons[board_id], actor=Actor.POLICY, at=now)
                    log.warning("board %s quarantined: %s", board_id, lemons[board_id])
                    quarantined.append(board_id)
                    continue
                switch_board_state(
                    conn,
                    board_id,
                    BoardState.AVAILABLE,
                    current=BoardState.SUSPECT,
                    reason="passed its probe after the cooldown",
                    actor=Actor.POLICY,
                    at=now,
                )
                released.append(board_id)
        return HealthPass(intake.boards, released, quarantined, sorted(intake.trips))

    def watchdog(self, now: float) -> list[Overdue]:
        """Fail boards stuck in a transitional state safely (:mod:`fleetyard.policy.watchdog`);
        not those of a generation whose circuit breaker is tripped."""
        timed = tuple(str(s) for s in self.timeouts)
        with self.store.write() as conn:
            tripped = set(open_breakers(conn))
            rows = conn.execute(
                sa.select(t.boards.c.id, t.boards.c.state, t.boards.c.state_changed_at, t.boards.c.generation).where(
                    t.boards.c.state.in_(timed)
                )
            ).all()
            views = [
                StateView(r.id, BoardState(r.state), r.state_changed_at) for r in rows if r.generation not in tripped
            ]
            due = overdue(views, now=now, timeouts=self.timeouts)
            for o in due:
                for to in o.path:
                    switch_board_state(conn, o.board, to, reason=o.reason, actor=Actor.POLICY, at=now)
                log.warning("board %s: %s", o.board, o.reason)
        return due

    def _intake(self, conn: sa.Connection, failing: Sequence[Any], tripped: set[str], now: float) -> Intake:
        """Which failing boards the breaker lets the policy take out; trips it where it must."""
        if not failing:
            return Intake([], {})
        candidates: dict[str, list[str]] = defaultdict(list)
        for b in failing:
            candidates[b.generation].append(b.id)
        counts = conn.execute(
            sa.select(t.boards.c.generation, sa.func.count())
            .where(t.boards.c.state != str(BoardState.RETIRED))
            .group_by(t.boards.c.generation)
        )
        recent = taken_out_since(conn, window_start=now - self.breaker.window_s)
        intake = take_out(
            candidates, recent=recent, sizes={g: n for g, n in counts}, tripped=tripped, limits=self.breaker
        )
        for gen, why in sorted(intake.trips.items()):
            trip(conn, gen, why, at=now)
            log.error("generation %s: %s", gen, why)
        return intake

    def _lemons(self, conn: sa.Connection, boards: list[str], now: float) -> dict[str, str]:
        """Those of ``boards`` (about to return to service) that are lemons, with why."""
        if not boards:
            return {}
        since = now - LEMON_WINDOW_S
        events = transitions(conn, since=since, until=now, boards=boards)
        figures = uptime(events, dict.fromkeys(boards, ""), since=since, until=now)
        incidents: dict[str, list[Incident]] = defaultdict(list)
        for i in figures.incidents:
            incidents[i.board].append(i)
        found = {b: lemon_reason(incidents[b], now=now) for b in boards}
        return {b: why for b, why in found.items() if why is not None}
