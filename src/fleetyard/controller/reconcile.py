"""The controller's reconcile steps: load a snapshot, ask the policy, apply in one transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.job import JobState
from fleetyard.domain.spec import JobSpec
from fleetyard.policy.liveness import HostView, SuspectView, lost_hosts, suspects_to_release, watching_since
from fleetyard.policy.scheduling import FreeBoard, PendingJob, pending_job, schedule
from fleetyard.store import tables as t
from fleetyard.store.attempts import NewAttempt, bind_many
from fleetyard.store.boards import switch_board_state
from fleetyard.store.db import Store
from fleetyard.store.hosts import lose_host

log = logging.getLogger(__name__)

# How many queued jobs one scheduling pass considers (highest priority, oldest first).
SCHEDULE_WINDOW = 2000


@dataclass
class Reconciler:
    store: Store
    host_timeout_s: float = 10.0
    suspect_cooldown_s: float = 2.0
    watching_since: float = 0.0
    _spec_cache: dict[int, JobSpec] = field(default_factory=dict)

    def schedule(self, now: float) -> int:
        """Bind queued jobs to free boards. Returns how many attempts started."""
        with self.store.read() as conn:
            # Most passes find nothing to do: answer that without the write lock.
            queued_any = sa.select(t.jobs.c.id).where(t.jobs.c.state == str(JobState.QUEUED)).limit(1)
            free_any = (
                sa.select(t.boards.c.id)
                .where(t.boards.c.state == str(BoardState.AVAILABLE), t.boards.c.drain_reason.is_(None))
                .limit(1)
            )
            gate = conn.execute(sa.select(queued_any.exists(), free_any.exists())).one()
            if not all(gate):
                return 0
            # The snapshot is read without the write lock; what it binds is checked again under it.
            queued = conn.execute(
                sa.select(t.jobs.c.id, t.jobs.c.priority, t.jobs.c.submitted_at, t.jobs.c.attempts)
                .where(t.jobs.c.state == str(JobState.QUEUED))
                .order_by(t.jobs.c.priority.desc(), t.jobs.c.id)
                .limit(SCHEDULE_WINDOW)
            ).all()
            self._load_specs(conn, [r.id for r in queued])
            free_rows = conn.execute(
                sa.select(t.boards.c.id, t.boards.c.host_id, t.boards.c.slot, t.boards.c.generation, t.boards.c.labels)
                .join(t.hosts, t.hosts.c.id == t.boards.c.host_id)
                .where(
                    t.boards.c.state == str(BoardState.AVAILABLE),
                    t.boards.c.drain_reason.is_(None),
                    t.hosts.c.state == "online",
                )
            ).all()
            pending = [self._pending(r.id, r.priority, r.submitted_at) for r in queued]
            free = [FreeBoard(r.id, r.host_id, r.slot, r.generation, r.labels) for r in free_rows]
        bindings = schedule(pending, free)
        if not bindings:
            return 0
        with self.store.write() as conn:
            # Hold what we bind. A drain, cancel or another binding that got in first drops it for this pass.
            chosen = [i for b in bindings for i in b.board_ids]
            held_boards = set(
                conn.execute(
                    sa.select(t.boards.c.id)
                    .where(
                        t.boards.c.id.in_(chosen),
                        t.boards.c.state == str(BoardState.AVAILABLE),
                        t.boards.c.drain_reason.is_(None),
                    )
                    .with_for_update()
                ).scalars()
            )
            held_jobs = set(
                conn.execute(
                    sa.select(t.jobs.c.id)
                    .where(t.jobs.c.id.in_([b.job_id for b in bindings]), t.jobs.c.state == str(JobState.QUEUED))
                    .with_for_update()
                ).scalars()
            )
            host_of = {r.id: r.host_id for r in free_rows}
            attempts = {r.id: r.attempts for r in queued}
            new = [
                NewAttempt(b.job_id, attempts[b.job_id] + 1, tuple((i, host_of[i]) for i in b.board_ids))
                for b in bindings
                if b.job_id in held_jobs and held_boards.issuperset(b.board_ids)
            ]
            bind_many(conn, new, at=now)
            return len(new)

    def _load_specs(self, conn: sa.Connection, queued_ids: list[int]) -> None:
        """Keep the parsed specs of exactly the queued jobs; parse only the newcomers'."""
        keep = {i: self._spec_cache[i] for i in queued_ids if i in self._spec_cache}
        missing = [i for i in queued_ids if i not in keep]
        if missing:
            for r in conn.execute(sa.select(t.jobs.c.id, t.jobs.c.spec).where(t.jobs.c.id.in_(missing))):
                keep[r.id] = JobSpec.model_validate(r.spec)
        self._spec_cache = keep

    def _pending(self, job_id: int, priority: int, submitted_at: float) -> PendingJob:
        return pending_job(job_id, self._spec_cache[job_id], priority=priority, submitted_at=submitted_at)

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

    def health(self, now: float) -> tuple[list[str], list[str]]:
        """Available boards that fail their probe become suspect; suspects that pass return."""
        with self.store.write() as conn:
            failing = conn.execute(
                sa.select(t.boards.c.id, t.boards.c.probe_reason).where(
                    t.boards.c.state == str(BoardState.AVAILABLE), t.boards.c.probe_ok.is_(False)
                )
            ).all()
            for b in failing:
                switch_board_state(
                    conn,
                    b.id,
                    BoardState.SUSPECT,
                    current=BoardState.AVAILABLE,
                    reason=f"failed its probe: {b.probe_reason or 'no reason given'}",
                    actor=Actor.POLICY,
                    at=now,
                )
            suspects = conn.execute(
                sa.select(
                    t.boards.c.id,
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
            released = suspects_to_release(views, now=now, cooldown_s=self.suspect_cooldown_s)
            for board_id in released:
                switch_board_state(
                    conn,
                    board_id,
                    BoardState.AVAILABLE,
                    current=BoardState.SUSPECT,
                    reason="passed its probe after the cooldown",
                    actor=Actor.POLICY,
                    at=now,
                )
        return [b.id for b in failing], released
