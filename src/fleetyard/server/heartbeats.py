"""Heartbeats, absorbed in memory and written behind in batches.

A fleet of thousands of hosts heartbeating every few seconds is the server's hottest path. One
transaction per heartbeat would cap it at what the store commits per second; instead each
heartbeat lands in a buffer, and a flusher thread writes all buffered reports every
``flush_s`` in one transaction, then reads back, for all hosts at once, what agents must be
told: ranks to cancel, fault orders and board ops. A heartbeat's answer is therefore up to one
flush old. An op result is acked (``op_acks``) only by an answer given after the flush that
stored it, so an agent keeps sending it through a failed flush or a restarted server.
A board's warm list (the artifacts its worker holds loaded) and a host's cached list (the blobs
in its agent's cache) are written only when they changed, or every ``WARM_REFRESH_S`` (see there).

What a crash of the server loses: at most ``flush_s`` of telemetry, never a job or a result.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from prometheus_client import Histogram, disable_created_metrics

from fleetyard.domain.host import HostState
from fleetyard.domain.job import AssignmentState
from fleetyard.errors import StaleSession, StoreUnavailable
from fleetyard.protocol.agent import (
    CACHED_MAX,
    WARM_MAX,
    FaultOrder,
    HeartbeatRequest,
    HeartbeatResponse,
    OpOrder,
)
from fleetyard.store import board_ops
from fleetyard.store import tables as t
from fleetyard.store.db import Store, insert_ignore, is_retryable, is_unavailable, lock_rows, now
from fleetyard.store.hosts import LIVE, host_back
from fleetyard.store.outage import DEFAULT_OUTAGE_S, EXIT_STORE_UNAVAILABLE, Outage

log = logging.getLogger(__name__)
A = t.assignments

# A board's warm list (a host's cached list) is written when it changes, and at least this often while it does not:
# with several server replicas another one may have written an older list in between.
WARM_REFRESH_S = 60.0


@dataclass
class _Pending:
    at: float
    req: HeartbeatRequest


@dataclass
class _Answers:
    cancel: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    faults: dict[str, list[FaultOrder]] = field(default_factory=lambda: defaultdict(list))
    ops: dict[str, list[OpOrder]] = field(default_factory=lambda: defaultdict(list))
    # host -> ids of the op results it reported that are stored (or were never its to report).
    op_acks: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))


disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series say nothing a scrape needs

# Fine just past the usual intervals (0.5, 1 and 2 s), where jitter shows; coarse towards the timeouts.
GAP_BUCKETS_S = (
    0.25,
    0.5,
    0.6,
    0.75,
    1.0,
    1.1,
    1.25,
    1.5,
    2.0,
    2.1,
    2.25,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    15.0,
    30.0,
    60.0,
)


class HeartbeatSink:
    def __init__(self, store: Store, flush_s: float = 0.2, outage_s: float = DEFAULT_OUTAGE_S) -> None:
        self.store = store
        self.flush_s = flush_s
        self.outage_s = outage_s
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._sessions: dict[str, str] = {}
        self._answers = _Answers()
        self._delivered: set[int] = set()  # op ids handed to agents since the last flush
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # board id -> (warm list, when), host id -> (cached list, when), as this server last wrote
        # them; touched by flushes only.
        self._warm: dict[str, tuple[list[str], float]] = {}
        self._cached: dict[str, tuple[list[str], float]] = {}
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # When this process last heard each host, and the gaps between beats: the jitter that a
        # busy host or server adds to the interval, which the host timeouts must allow for.
        self._heard: dict[str, float] = {}
        self.gaps = Histogram(
            "fleetyard_heartbeat_gap_seconds",
            "Seconds between consecutive heartbeats of one host session, as this server process received them.",
            buckets=GAP_BUCKETS_S,
            registry=None,
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat-flusher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def registered(self, host: str, session: str) -> None:
        with self._lock:
            self._sessions[host] = session
            self._heard.pop(host, None)  # a new session: its first beat follows no other
            self._pending.pop(host, None)
            self._answers.cancel.pop(host, None)

    def knows(self, host: str, session: str) -> bool:
        """True if ``session`` is known to be the host's current one (no store access)."""
        return self._sessions.get(host) == session

    def check_session(self, host: str, session: str) -> None:
        """Raise :class:`StaleSession` unless the store says ``session`` is the host's current one."""
        if self.knows(host, session):
            return
        with self.store.read() as conn:
            current = conn.execute(sa.select(t.hosts.c.session).where(t.hosts.c.id == host)).scalar()
        if current != session:
            raise StaleSession(
                f"session {session} is not the current session of host {host}: register again",
                detail={"host": host},
            )
        with self._lock:
            self._sessions[host] = session

    def accept(self, host: str, req: HeartbeatRequest, *, at: float) -> HeartbeatResponse:
        """Buffer one heartbeat and answer from the last flush's view."""
        self.check_session(host, req.session)
        with self._lock:
            last, self._heard[host] = self._heard.get(host), at
            if last is not None:
                self.gaps.observe(max(0.0, at - last))
            prev = self._pending.get(host)
            # Two heartbeats in one flush: the newer reports, every ack and result of both.
            self._pending[host] = _Pending(at, req) if prev is None else _merged(prev, _Pending(at, req))
            req = self._pending[host].req
            cancel = sorted(self._answers.cancel.get(host, ()))
            acked = set(req.fault_acks)
            faults = [f for f in self._answers.faults.get(host, ()) if f.id not in acked]
            reported = {r.id for r in req.op_results}
            ops = [o for o in self._answers.ops.get(host, ()) if o.id not in reported]
            op_acks = sorted(reported & self._answers.op_acks.get(host, set()))
            self._delivered.update(o.id for o in ops)
        return HeartbeatResponse(cancel=cancel, faults=faults, ops=ops, op_acks=op_acks)

    def _run(self) -> None:
        # The flusher writes every flush_s, heartbeats or not (the servers row): it is the server's
        # watch on the store. Past the outage limit it gives up, and the process with it.
        outage = Outage(self.outage_s, what="the store")
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception as exc:  # keep absorbing: the next flush writes this one's batch too
                if not (is_unavailable(exc) or is_retryable(exc)):
                    log.exception("heartbeat flush failed; retrying")
                try:
                    outage.failed(exc)
                except StoreUnavailable as gone:
                    log.error("%s: the server stops (exit code %d)", gone.message, EXIT_STORE_UNAVAILABLE)
                    logging.shutdown()
                    os._exit(EXIT_STORE_UNAVAILABLE)
                continue
            outage.ok()

    def flush(self) -> None:
        """Write what was buffered. A flush that fails (the store is down, or aborted it for a
        deadlock more often than :meth:`Store.transact` retries) puts its batch back, under any
        heartbeat that came meanwhile: the next flush writes it, and no ack or result is lost."""
        with self._lock:
            batch, self._pending = self._pending, {}
            delivered, self._delivered = self._delivered, set()
        at = now()
        try:
            warm, cached = self.store.transact(lambda conn: self._write(conn, batch, at, delivered))
        except BaseException:
            with self._lock:
                for host, old in batch.items():
                    newer = self._pending.get(host)
                    self._pending[host] = old if newer is None else _merged(old, newer)
                self._delivered |= delivered
            raise
        # Only once committed: a failed flush writes the lists again next time.
        self._warm.update(warm)
        self._cached.update(cached)
        self._answers = self._read(batch, at)

    def _write(
        self, conn: sa.Connection, batch: dict[str, _Pending], at: float, delivered: set[int]
    ) -> tuple[dict[str, tuple[list[str], float]], dict[str, tuple[list[str], float]]]:
        """One flush's writes, in one transaction; the warm and cached lists it wrote.

        Rows are taken in one order, by id (hosts, then boards), as every other writer of many
        boards takes them (:mod:`fleetyard.store.boards`): two transactions then never wait on
        each other in a cycle."""
        hosts = sorted(batch)
        warm_written: dict[str, tuple[list[str], float]] = {}
        cached_written: dict[str, tuple[list[str], float]] = {}
        insert_ignore(conn, t.servers, [{"id": self.server_id, "started_at": at, "seen_at": at}])
        conn.execute(t.servers.update().where(t.servers.c.id == self.server_id).values(seen_at=at))
        board_ops.mark_delivered(conn, delivered, at=at)
        if not batch:
            return warm_written, cached_written
        # Every row this flush writes, held first, in id order.
        lock_rows(conn, t.hosts, hosts)
        lock_rows(conn, t.boards, [b.id for p in batch.values() for b in p.req.boards])
        offline = conn.execute(
            sa.select(t.hosts.c.id, t.hosts.c.offline_since).where(
                t.hosts.c.id.in_(hosts), t.hosts.c.state == str(HostState.OFFLINE)
            )
        ).all()
        # A beat that arrived before the host was declared lost (or left) is old news: written
        # behind, it must not bring back a host that an agent's clean stop just took offline.
        back = [h for h, since in offline if since is None or batch[h].at > since]
        for host in sorted(back):
            conn.execute(t.hosts.update().where(t.hosts.c.id == host).values(state=str(HostState.ONLINE)))
            host_back(conn, host, at=batch[host].at)
        # Unreachable is not lost: heard from again, the host simply takes work again.
        conn.execute(
            t.hosts.update()
            .where(t.hosts.c.id.in_(hosts), t.hosts.c.state == str(HostState.UNREACHABLE))
            .values(state=str(HostState.ONLINE))
        )
        beats: list[dict[str, Any]] = []
        cached_beats: list[dict[str, Any]] = []  # the same, and a cached list to write
        for h, p in batch.items():
            cached = p.req.cached[-CACHED_MAX:]
            if _due(self._cached, h, cached, at):
                cached_beats.append({"h_id": h, "h_at": p.at, "h_cached": cached})
                cached_written[h] = (cached, at)
            else:
                beats.append({"h_id": h, "h_at": p.at})
        beat = t.hosts.update().where(t.hosts.c.id == sa.bindparam("h_id"))
        if beats:
            conn.execute(beat.values(last_heartbeat_at=sa.bindparam("h_at")), beats)
        if cached_beats:
            conn.execute(
                beat.values(last_heartbeat_at=sa.bindparam("h_at"), cached=sa.bindparam("h_cached")), cached_beats
            )
        reports: list[dict[str, Any]] = []
        warm_reports: list[dict[str, Any]] = []  # the same, and a warm list to write
        for h, p in batch.items():
            for b in p.req.boards:
                row = {
                    "b_id": b.id,
                    "b_host": h,
                    "b_tel": b.telemetry,
                    "b_at": p.at,
                    "b_ok": b.ok,
                    "b_reason": b.reason,
                }
                warm = b.warm[-WARM_MAX:]
                if _due(self._warm, b.id, warm, at):
                    row["b_warm"] = warm
                    warm_reports.append(row)
                    warm_written[b.id] = (warm, at)
                else:
                    reports.append(row)
        update = t.boards.update().where(
            t.boards.c.id == sa.bindparam("b_id"), t.boards.c.host_id == sa.bindparam("b_host")
        )
        values: dict[str, Any] = {
            "telemetry": sa.bindparam("b_tel"),
            "telemetry_at": sa.bindparam("b_at"),
            "probe_ok": sa.bindparam("b_ok"),
            "probe_reason": sa.bindparam("b_reason"),
        }
        if reports:
            conn.execute(update.values(values), reports)
        if warm_reports:
            conn.execute(update.values({**values, "warm": sa.bindparam("b_warm")}), warm_reports)
        for h, p in batch.items():
            if p.req.fault_acks:
                # Only the host the order was sent to (its board's) may ack it.
                on_host = sa.select(t.boards.c.id).where(t.boards.c.host_id == h)
                conn.execute(
                    t.fault_orders.update()
                    .where(
                        t.fault_orders.c.id.in_(sorted(set(p.req.fault_acks))),
                        t.fault_orders.c.acked_at.is_(None),
                        t.fault_orders.c.board_id.in_(on_host),
                    )
                    .values(acked_at=p.at)
                )
        for h, p in batch.items():
            if p.req.op_results:
                board_ops.record_results(conn, p.req.op_results, at=p.at, host=h)
        return warm_written, cached_written

    def _read(self, batch: dict[str, _Pending], at: float) -> _Answers:
        answers = _Answers()
        with self.store.read() as conn:
            for r in conn.execute(sa.select(A.c.id, A.c.host_id).where(A.c.cancel_requested, A.c.state.in_(LIVE))):
                answers.cancel[r.host_id].add(r.id)
            # Ranks an agent runs that the server already ended (host lost, session replaced).
            running = {i: h for h, p in batch.items() for i in p.req.running}
            if running:
                live = set(
                    conn.execute(
                        sa.select(A.c.id).where(A.c.id.in_(list(running)), A.c.state != str(AssignmentState.EXITED))
                    ).scalars()
                )
                for i, h in running.items():
                    if i not in live:
                        answers.cancel[h].add(i)
            for o in conn.execute(
                sa.select(t.fault_orders, t.boards.c.host_id)
                .join(t.boards, t.boards.c.id == t.fault_orders.c.board_id)
                .where(t.fault_orders.c.acked_at.is_(None))
                .order_by(t.fault_orders.c.id)
            ):
                answers.faults[o.host_id].append(FaultOrder(id=o.id, board_id=o.board_id, kind=o.kind, action=o.action))
            for h, ops in board_ops.open_ops(conn, at=at).items():
                answers.ops[h] = [
                    OpOrder(
                        id=o.id, board_id=o.board_id, op=o.op, timeout_s=o.timeout_s, image=o.image, version=o.version
                    )
                    for o in ops
                ]
        # Written above (or not this host's to report): whatever is no longer open is acked.
        for h, p in batch.items():
            if p.req.op_results:
                still_open = {o.id for o in answers.ops.get(h, ())}
                answers.op_acks[h] = {r.id for r in p.req.op_results} - still_open
        # Cancels for ranks seen running in an earlier flush carry over until the agent stops reporting them;
        # so do acks for results a host reported before.
        with self._lock:
            for h, ids in self._answers.cancel.items():
                if h not in batch:
                    answers.cancel[h] |= ids
            for h, ids in self._answers.op_acks.items():
                if h not in batch:
                    answers.op_acks[h] |= ids
        return answers


def _merged(old: _Pending, new: _Pending) -> _Pending:
    """One host's two heartbeats as one: the newer reports, with every ack and op result of both."""
    results = {r.id: r for r in (*old.req.op_results, *new.req.op_results)}
    req = new.req.model_copy(
        update={"fault_acks": sorted({*old.req.fault_acks, *new.req.fault_acks}), "op_results": list(results.values())}
    )
    return _Pending(new.at, req)


def _due(written: dict[str, tuple[list[str], float]], key: str, value: list[str], at: float) -> bool:
    """Whether to write a board's warm list (a host's cached list): it changed since this server
    last wrote it, or that was long enough ago that another replica's write may have replaced it since."""
    last = written.get(key)
    return last is None or last[0] != value or at - last[1] >= WARM_REFRESH_S
