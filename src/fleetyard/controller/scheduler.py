"""The scheduler's shell: read a snapshot from the store, ask :func:`fleetyard.policy.scheduling.plan`,
apply the plan in one transaction.

What it writes: new attempts (bindings), preemptions (the victim attempt's ``preempted_for`` and
its ranks asked to stop; they end ``preempted`` and their jobs go back to the queue), the
reservation rows (only when they changed), each waiting job's ``pending_reason`` (a new job's at
once, a changed one at most every :data:`REASONS_REFRESH_S`; at most :data:`REASONS_PER_PASS` a
pass), and the queues' fair-share usage (every :data:`USAGE_EVERY_S`).

What it keeps from pass to pass (:class:`SchedulerShell`): the line of queued jobs and the boards
indexed, so that a pass reads and plans what changed; the specs it parsed; the reasons it wrote.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import BoardState
from fleetyard.domain.job import AttemptState, JobState, Outcome
from fleetyard.domain.spec import JobSpec
from fleetyard.pass_gc import PassCollector
from fleetyard.policy.fairshare import DEFAULT_HALF_LIFE_S, accrue
from fleetyard.policy.placement import BoardView
from fleetyard.policy.preemption_holds import PreemptionHolds, RunningAttempt
from fleetyard.policy.queues import PriorityClass
from fleetyard.policy.scheduling import Line, PendingJob, Plan, Pool, RunningJob, Snapshot, pending_job, plan
from fleetyard.store import tables as t
from fleetyard.store.attempts import NewAttempt, bind_many, lock_attempts, stop_ranks
from fleetyard.store.boards import board_view, is_free, schedulable_boards
from fleetyard.store.db import Store
from fleetyard.store.queues import read_priority_classes, read_queues

log = logging.getLogger(__name__)

REASONS_PER_PASS = 2000
# How many of the jobs a pass leaves waiting it explains (and preempts and reserves for): every
# REASONS_REFRESH_S a pass explains WINDOW of them; the passes between, FAST_WINDOW (most passes
# run as boards free or jobs come, and only the head of the line can change much). Past its
# window a pass only places jobs on free boards; the rest keep the reason they had.
WINDOW = REASONS_PER_PASS
FAST_WINDOW = 200
REASONS_REFRESH_S = 5.0
USAGE_EVERY_S = 10.0
ESTIMATES_EVERY_S = 60.0
HISTORY_RUNS = 1000  # the newest successful attempts read for runtime estimates
IDLE_PASS_EVERY_S = 2.0
QUEUE_RESYNC_S = 5.0  # read the queued jobs' ids at least this often, whatever their count and sum


@dataclass
class SchedulerShell:
    """Keeps, from pass to pass, what the policy needs whole: the line of queued jobs (a
    :class:`Line`) and the boards indexed (a :class:`Pool`). A pass reads what changed: the queued
    jobs' ids only when their count or sum moved (or every :data:`QUEUE_RESYNC_S`), the specs of
    jobs new to the line, the boards' rows without decoding what did not change."""

    store: Store
    half_life_s: float = DEFAULT_HALF_LIFE_S
    freeze_gc: bool = False  # the controller program sets it: see pass_
    holds: PreemptionHolds = field(default_factory=PreemptionHolds)  # what preemptions left between passes
    _line: Line = field(default_factory=Line)
    _pool: Pool | None = None
    _boards: dict[str, tuple[tuple[Any, ...], BoardView]] = field(default_factory=dict)  # id -> (row, view)
    _specs: dict[int, JobSpec] = field(default_factory=dict)  # the queued jobs'
    _running_specs: dict[int, JobSpec] = field(default_factory=dict)
    _attempts: dict[int, int] = field(default_factory=dict)  # queued job -> attempts so far
    _teams: dict[int, tuple[str, float]] = field(default_factory=dict)  # queued job -> (queue, submitted_at)
    # Class values (and each class's max_lost_s) as the line's views have them, and the default class's.
    _classes: tuple[dict[str, tuple[int, float | None]], tuple[int, float | None]] | None = None
    _queue_synced_at: float = -QUEUE_RESYNC_S
    _reasons: dict[int, str] = field(default_factory=dict)  # as last written
    _reservations: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    _reasons_at: float = 0.0
    _collector: PassCollector = field(default_factory=PassCollector)
    _last_full: float = 0.0
    _last_queued_max: int = 0
    _usage_at: float = 0.0
    _usage_seen: dict[str, tuple[float, float]] = field(default_factory=dict)
    _estimates: dict[tuple[str, str | None], float] = field(default_factory=dict)
    _estimates_at: float = -ESTIMATES_EVERY_S
    last_plan: Plan | None = None

    def pass_(self, now: float) -> int:
        """One scheduling pass; how many attempts started."""
        snap, ctx = self._snapshot(now)
        if snap is None:
            return 0
        if self.freeze_gc:
            self._collector.before_pass(now)  # the controller program's: see fleetyard.pass_gc
        result = plan(snap)
        self.last_plan = result
        self.holds.keep(result, now)
        return self._apply(result, snap, ctx, now)

    # ---- reading ---------------------------------------------------------------------------

    def _snapshot(self, now: float) -> tuple[Snapshot | None, dict[str, Any]]:
        with self.store.read() as conn:
            count, id_sum, queued_max = conn.execute(
                sa.select(sa.func.count(t.jobs.c.id), sa.func.sum(t.jobs.c.id), sa.func.max(t.jobs.c.id)).where(
                    _eligible(now)
                )
            ).one()
            if not count:
                self._forget_queue()
                return None, {}
            free_any = conn.execute(
                sa.select(
                    sa.select(t.boards.c.id)
                    .where(t.boards.c.state == str(BoardState.AVAILABLE), t.boards.c.drain_reason.is_(None))
                    .exists()
                )
            ).scalar()
            # Nothing free and nothing new: only preemption could change anything; look now and then.
            if not free_any and queued_max <= self._last_queued_max and now - self._last_full < IDLE_PASS_EVERY_S:
                return None, {}
            self._last_full, self._last_queued_max = now, queued_max
            classes = read_priority_classes(conn)
            queues = read_queues(conn)
            usage = {r.queue: (r.usage, r.updated_at) for r in conn.execute(sa.select(t.queue_usage))}
            self._sync_line(conn, count, int(id_sum), classes, now)
            running = conn.execute(
                sa.select(
                    t.jobs.c.id,
                    t.jobs.c.team,
                    t.attempts.c.id.label("attempt_id"),
                    t.attempts.c.created_at,
                    t.attempts.c.preempted_for,
                    t.jobs.c.lease_expires_at,
                )
                .join(
                    t.attempts,
                    sa.and_(t.attempts.c.job_id == t.jobs.c.id, t.attempts.c.state == str(AttemptState.RUNNING)),
                )
                .where(t.jobs.c.state == str(JobState.RUNNING))
            ).all()
            self._sync_running_specs(conn, [r.id for r in running])
            if now - self._estimates_at >= ESTIMATES_EVERY_S:
                self._estimates_at = now
                self._estimates = _runtime_estimates(conn)
            boards_of: dict[int, list[str]] = defaultdict(list)
            if running:
                for a in conn.execute(
                    sa.select(t.assignments.c.attempt_id, t.assignments.c.board_id, t.assignments.c.rank)
                    .where(t.assignments.c.attempt_id.in_([r.attempt_id for r in running]))
                    .order_by(t.assignments.c.attempt_id, t.assignments.c.rank)
                ):
                    boards_of[a.attempt_id].append(a.board_id)
            board_rows = schedulable_boards(conn, json_as_text=True)
        pool, free = self._sync_pool(board_rows)
        of_class, default_class = self._classes or ({}, (0, None))
        self._observe_holds(running, boards_of, now)
        running_views = []
        for run in running:
            spec = self._running_specs[run.id]
            running_views.append(
                RunningJob(
                    run.id,
                    run.team,
                    tuple(boards_of.get(run.attempt_id, ())),
                    priority=of_class.get(spec.priority_class or "", default_class)[0],
                    rank=spec.priority,
                    started_at=run.created_at,
                    # A lease ends when it expires (renewals move it), not at its 7-day time limit.
                    expected_end=run.lease_expires_at or run.created_at + self._runtime(spec),
                    preempted_for=run.preempted_for,
                    # An engineer's lease is not taken away, nor a board's health check.
                    preemptible=spec.kind not in ("lease", "health-check"),
                    protected_until=self.holds.protected_until(run.attempt_id),
                )
            )
        held: dict[str, int] = defaultdict(int)
        for rv in running_views:
            held[rv.queue] += len(rv.boards)
        decayed = self._usage(usage, held, now)
        snap = Snapshot(
            now=now,
            boards=pool,
            free=free,
            pending=self._line,
            running=running_views,
            queues=queues,
            usage={q: u for q, (u, _) in decayed.items()},
            window=WINDOW if self._explain_due(now) else FAST_WINDOW,
            held_for=self.holds.held_for(),
            search_after=self.holds.search_after(),
        )
        ctx = {
            "attempt_of": {r.id: r.attempt_id for r in running},
            "usage": decayed,
        }
        return snap, ctx

    def _observe_holds(self, running: Sequence[Any], boards_of: Mapping[int, list[str]], now: float) -> None:
        """Bring the preemption holds to the running attempts (:class:`PreemptionHolds`)."""

        def preempted_before(jobs: Sequence[int]) -> dict[int, int]:
            before: dict[int, int] = {}
            a = t.attempts.c
            with self.store.read() as conn:
                for part in (jobs[i : i + 5000] for i in range(0, len(jobs), 5000)):
                    rows = conn.execute(
                        sa.select(a.job_id, sa.func.count())
                        .where(
                            a.job_id.in_(part),
                            a.preempted_for.is_not(None),
                            a.state != str(AttemptState.RUNNING),
                        )
                        .group_by(a.job_id)
                    )
                    before.update({job_id: n for job_id, n in rows})
            return before

        attempts = [
            RunningAttempt(r.attempt_id, r.id, tuple(boards_of.get(r.attempt_id, ())), r.created_at, r.preempted_for)
            for r in running
        ]
        self.holds.observe(now, attempts, self._line.ids(), preempted_before)

    def _sync_line(
        self, conn: sa.Connection, count: int, id_sum: int, classes: Sequence[PriorityClass], now: float
    ) -> None:
        """Bring the line to the queued jobs in the store: read their ids when their count or sum
        differs from the line's (or every QUEUE_RESYNC_S), and the rows of those new to it."""
        of_class = {c.name: (c.value, c.max_lost_s) for c in classes}
        default_class = next(((c.value, c.max_lost_s) for c in classes if c.default), (0, None))
        if self._classes != (of_class, default_class):
            # A class changed (or this is the first pass): every view is rebuilt.
            self._classes = (of_class, default_class)
            self._line = Line(self._view(i, spec) for i, spec in self._specs.items())
        line = self._line
        if (count, id_sum) == (len(line), sum(line.ids())) and now - self._queue_synced_at < QUEUE_RESYNC_S:
            return
        self._queue_synced_at = now
        queued = set(conn.execute(sa.select(t.jobs.c.id).where(_eligible(now))).scalars())
        for gone in line.ids() - queued:
            self._leave(gone)
        new = sorted(queued - line.ids())
        for chunk in (new[i : i + 5000] for i in range(0, len(new), 5000)):
            for r in conn.execute(
                sa.select(t.jobs.c.id, t.jobs.c.team, t.jobs.c.submitted_at, t.jobs.c.attempts, t.jobs.c.spec).where(
                    t.jobs.c.id.in_(chunk), t.jobs.c.state == str(JobState.QUEUED)
                )
            ):
                spec = JobSpec.model_validate(r.spec)
                self._specs[r.id] = spec
                self._attempts[r.id] = r.attempts
                self._teams[r.id] = (r.team, r.submitted_at)
                line.add(self._view(r.id, spec))

    def _view(self, job_id: int, spec: JobSpec) -> PendingJob:
        of_class, default_class = self._classes or ({}, (0, None))
        team, submitted_at = self._teams[job_id]
        priority, max_lost_s = of_class.get(spec.priority_class or "", default_class)
        return pending_job(
            job_id,
            spec,
            queue=team,
            priority=priority,
            submitted_at=submitted_at,
            artifact=_artifact(spec),
            max_lost_s=max_lost_s,
        )

    def _leave(self, job_id: int) -> None:
        """A job is no longer queued (bound, cancelled): out of the line."""
        self._line.discard(job_id)
        spec = self._specs.pop(job_id, None)
        if spec is not None:
            self._running_specs[job_id] = spec  # most often it runs now: kept for the next read
        self._attempts.pop(job_id, None)
        self._teams.pop(job_id, None)
        self._reasons.pop(job_id, None)

    def _forget_queue(self) -> None:
        for job_id in list(self._line.ids()):
            self._leave(job_id)

    def _sync_running_specs(self, conn: sa.Connection, ids: list[int]) -> None:
        """Keep the specs of exactly these running jobs; read only those not known."""
        known = self._running_specs
        keep = {i: known[i] for i in ids if i in known}
        missing = [i for i in ids if i not in keep]
        for chunk in (missing[i : i + 5000] for i in range(0, len(missing), 5000)):
            for r in conn.execute(sa.select(t.jobs.c.id, t.jobs.c.spec).where(t.jobs.c.id.in_(chunk))):
                keep[r.id] = JobSpec.model_validate(r.spec)
        self._running_specs = keep

    def _sync_pool(self, rows: Sequence[Any]) -> tuple[Pool, frozenset[str]]:
        """The kept pool brought to these rows of :func:`schedulable_boards` (``json_as_text``):
        rebuilt when a board came, went or changed, else only what the boards have loaded."""
        cache, views = self._boards, []
        fresh: dict[str, tuple[tuple[Any, ...], BoardView]] = {}
        changed = len(rows) != len(cache)
        for r in rows:
            row = tuple(r[1:8])  # host, slot, generation, firmware, labels, warm, cached (as stored)
            hit = cache.get(r.id)
            if hit is None or hit[0] != row:
                labels, warm, cached = (json.loads(x) if x else None for x in (r.labels, r.warm, r.cached))
                hit = (row, board_view(r, labels or {}, warm or [], cached or []))
                changed = True
            fresh[r.id] = hit
            views.append(hit[1])
        self._boards = fresh
        free = frozenset(r.id for r in rows if is_free(r))
        if self._pool is None or (changed and not self._pool.same_boards(views)):
            self._pool = Pool(views, free)
        elif changed:
            self._pool.rewarm(views)
        return self._pool, free

    def _runtime(self, spec: JobSpec) -> float:
        """How long a running job is expected to hold its boards: its time limit, or less when
        the history of its kind and artifact says it usually ends sooner (reservations only;
        backfill always goes by a job's time limit, so an estimate that is wrong delays, never breaks)."""
        estimate = self._estimates.get((spec.kind, _artifact(spec)))
        return spec.time_limit_s if estimate is None else min(spec.time_limit_s, estimate)

    def _usage(
        self, stored: Mapping[str, tuple[float, float]], held: Mapping[str, int], now: float
    ) -> dict[str, tuple[float, float]]:
        """Each queue's decayed usage advanced to ``now`` from the newer of what is stored and what
        this controller computed last (written only every USAGE_EVERY_S)."""
        out: dict[str, tuple[float, float]] = {}
        for q in set(stored) | set(held) | set(self._usage_seen):
            known = [ua for ua in (stored.get(q), self._usage_seen.get(q)) if ua is not None]
            u, at = max(known, key=lambda ua: ua[1]) if known else (0.0, now)
            out[q] = (accrue(u, held.get(q, 0), now - at, self.half_life_s), now)
        self._usage_seen = out
        return out

    # ---- writing ---------------------------------------------------------------------------

    def _apply(self, p: Plan, snap: Snapshot, ctx: dict[str, Any], now: float) -> int:
        started = 0
        with self.store.write() as conn:
            if p.bindings:
                started = self._bind(conn, p, ctx, now)
            victims = (ctx["attempt_of"].get(pre.victim) for pre in p.preemptions)
            lock_attempts(conn, [a for a in victims if a is not None])  # in one order: see lock_attempts
            for pre in p.preemptions:
                attempt_id = ctx["attempt_of"].get(pre.victim)
                if attempt_id is None:
                    continue
                res = conn.execute(
                    t.attempts.update()
                    .where(
                        t.attempts.c.id == attempt_id,
                        t.attempts.c.state == str(AttemptState.RUNNING),
                        t.attempts.c.preempted_for.is_(None),
                    )
                    .values(preempted_for=pre.for_job, message=pre.reason)
                )
                if res.rowcount:
                    log.info("job %s: %s", pre.victim, pre.reason)
                    stop_ranks(conn, attempt_id, at=now, reason=pre.reason, outcome=Outcome.PREEMPTED)
            reservations = [(r.job_id, r.board_ids) for r in p.reservations]
            if reservations != self._reservations:
                conn.execute(t.reservations.delete())
                if p.reservations:
                    conn.execute(
                        t.reservations.insert(),
                        [
                            {
                                "job_id": r.job_id,
                                "boards": list(r.board_ids),
                                "expected_start": r.expected_start,
                                "created_at": now,
                            }
                            for r in p.reservations
                        ],
                    )
                self._reservations = reservations
            self._write_reasons(conn, p, now)
            if now - self._usage_at >= USAGE_EVERY_S:
                self._usage_at = now
                self._write_usage(conn, ctx["usage"])
        return started

    def _bind(self, conn: sa.Connection, p: Plan, ctx: dict[str, Any], now: float) -> int:
        # Hold what we bind. A drain, cancel or another binding that got in first drops it for this
        # pass; so does a board that moved to another host since the read (its rank would be
        # addressed to a host that no longer has it).
        boards, attempts = self._pool.boards if self._pool is not None else {}, self._attempts
        held_boards = self._hold(
            conn,
            t.boards.c.id,
            [i for b in p.bindings for i in b.board_ids],
            sa.and_(t.boards.c.state == str(BoardState.AVAILABLE), t.boards.c.drain_reason.is_(None)),
            same=(t.boards.c.host_id, {i: v.host for i, v in boards.items()}),
        )
        queued = t.jobs.c.state == str(JobState.QUEUED)
        held_jobs = self._hold(conn, t.jobs.c.id, [b.job_id for b in p.bindings], queued)
        new = [
            NewAttempt(b.job_id, attempts[b.job_id] + 1, tuple((i, boards[i].host) for i in b.board_ids))
            for b in p.bindings
            if b.job_id in held_jobs and held_boards.issuperset(b.board_ids)
        ]
        bind_many(conn, new, at=now)
        bound = {n.job_id for n in new}
        explained = sorted(j for j in bound if j in self._reasons)
        if explained:
            conn.execute(t.jobs.update().where(t.jobs.c.id.in_(explained)).values(pending_reason=None))
        for job_id in bound:
            self._leave(job_id)  # running once this commits (if it does not, the next read puts it back)
        return len(new)

    def _hold(
        self,
        conn: sa.Connection,
        key: Any,
        ids: Sequence[Any],
        still: Any,
        same: tuple[Any, Mapping[Any, Any]] | None = None,
    ) -> set[Any]:
        """Those of ``ids`` (of column ``key``) whose rows are still as the plan saw them, held for
        this transaction: ``still`` holds, and the column of ``same`` has the value it maps the id
        to. SQLite's write transaction holds the whole database (BEGIN IMMEDIATE): without
        ``same``, only the rows that changed are read back, not all of them."""
        out: set[Any] = set()
        ids = sorted(ids)  # taken in id order, as every writer of many rows takes them (lock_rows)
        col, seen = same if same is not None else (sa.null(), {})
        for part in (ids[i : i + 5000] for i in range(0, len(ids), 5000)):
            if self.store.sqlite and same is None:
                lost = set(conn.execute(sa.select(key).where(key.in_(part), sa.not_(still))).scalars())
                out.update(i for i in part if i not in lost)
                continue
            if self.store.sqlite:
                rows = conn.execute(sa.select(key, col, still).where(key.in_(part))).all()
                out.update(i for i, v, ok in rows if ok and seen.get(i) == v)
                continue
            held = sa.select(key, col).where(key.in_(part), still).order_by(key).with_for_update(key_share=True)
            out.update(i for i, v in conn.execute(held) if same is None or seen.get(i) == v)
        return out

    def _explain_due(self, now: float) -> bool:
        return now - self._reasons_at >= REASONS_REFRESH_S

    def _write_reasons(self, conn: sa.Connection, p: Plan, now: float) -> None:
        # A new job's reason is written at once (if its pass explained it); a changed one (most
        # change as the line moves: "behind N jobs") at most every REASONS_REFRESH_S, so a long
        # queue is not rewritten each pass.
        refresh = self._explain_due(now)
        if refresh:
            self._reasons_at = now
        changed = [
            (j, r) for j, r in p.reasons.items() if (j not in self._reasons or refresh) and self._reasons.get(j) != r
        ][:REASONS_PER_PASS]
        if not changed:
            return
        conn.execute(
            t.jobs.update()
            .where(t.jobs.c.id == sa.bindparam("j_id"), t.jobs.c.state == str(JobState.QUEUED))
            .values(pending_reason=sa.bindparam("j_reason")),
            [{"j_id": j, "j_reason": r} for j, r in changed],
        )
        self._reasons.update(changed)

    def _write_usage(self, conn: sa.Connection, usage: Mapping[str, tuple[float, float]]) -> None:
        if not usage:
            return
        known = set(conn.execute(sa.select(t.queue_usage.c.queue)).scalars())
        rows = [{"q": q, "u": u, "at": at} for q, (u, at) in usage.items()]
        old = [r for r in rows if r["q"] in known]
        new = [{"queue": r["q"], "usage": r["u"], "updated_at": r["at"]} for r in rows if r["q"] not in known]
        if old:
            conn.execute(
                t.queue_usage.update()
                .where(t.queue_usage.c.queue == sa.bindparam("q"))
                .values(usage=sa.bindparam("u"), updated_at=sa.bindparam("at")),
                old,
            )
        if new:
            conn.execute(t.queue_usage.insert(), new)


def _runtime_estimates(conn: sa.Connection) -> dict[tuple[str, str | None], float]:
    """(kind, artifact) -> a generous runtime estimate from recent successful attempts: the p90
    duration x 1.5 plus a minute, where there are at least 3 of them."""
    rows = conn.execute(
        sa.select(t.jobs.c.kind, t.jobs.c.spec, t.attempts.c.created_at, t.attempts.c.finished_at)
        .join(t.jobs, t.jobs.c.id == t.attempts.c.job_id)
        .where(t.attempts.c.outcome == str(Outcome.SUCCESS), t.attempts.c.finished_at.isnot(None))
        .order_by(t.attempts.c.id.desc())
        .limit(HISTORY_RUNS)
    ).all()
    durations: dict[tuple[str, str | None], list[float]] = defaultdict(list)
    for r in rows:
        artifact = (r.spec.get("params") or {}).get("artifact")
        durations[(r.kind, artifact if isinstance(artifact, str) else None)].append(r.finished_at - r.created_at)
    out = {}
    for key, ds in durations.items():
        if len(ds) >= 3:
            ds.sort()
            p90 = ds[min(len(ds) - 1, int(0.9 * len(ds)))]
            out[key] = p90 * 1.5 + 60.0
    return out


def _artifact(spec: JobSpec) -> str | None:
    value = spec.params.get("artifact")
    return value if isinstance(value, str) else None


def _eligible(now: float) -> sa.ColumnElement[bool]:
    """Queued jobs the scheduler may place now (a lost host's work waits out its grace)."""
    return sa.and_(
        t.jobs.c.state == str(JobState.QUEUED), sa.or_(t.jobs.c.not_before.is_(None), t.jobs.c.not_before <= now)
    )
