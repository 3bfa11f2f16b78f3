"""How fast the scheduler decides, and how fast a pass lands in the store, on a 10,000-board fleet
with 100,000 jobs queued.

    python bench/scheduler.py [--quick] [--seed N] [--postgres | --no-postgres] [--no-store] [--profile]

Fleet: 1,250 hosts x 8 boards (``--quick``: 125 hosts), 25 hosts a rack (label ``rack``), each rack
of one of 3 generations. Teams: queues ``compiler``, ``ai``, ``robotics`` in one cohort, nominal
quotas per generation of 40/35/25 % of that generation's boards (summing to the fleet), borrowing
limits on ``ai`` and ``robotics``. Queue: 10 jobs per board (100,000; ``--quick`` 10,000), seeded:
70 % single-board, 20 % 2-8 boards on one host, 10 % gangs of 16-64 boards in one rack; priority
classes ci-gate/interactive/batch/scavenger (2/10/68/20 %), one generation, two, or any; submit
times over the last day; time limits 10 min to 4 h.

1. ``placements_per_s``: bindings / wall time of :func:`plan` as the controller runs it: on the
   state it keeps from pass to pass (the boards indexed, a :class:`Pool`; the queued jobs in line,
   a :class:`Line`), every board free, with its explaining ``WINDOW`` (the best of ``--repeat``
   passes, 3). ``boards_placed_per_s`` and ``pending_jobs_per_s`` too; and, once each, the same
   pass from plain lists (a controller's first: ``cold_plan_s``), a pass that explains every job
   (no window: ``explain_all_plan_s``), and the time to build the kept state (``kept_state_build_s``).
   Peer, on the same input in the same run: a plain greedy scheduler written here (priority-sorted
   list, a linear scan of the free boards per job, same host / same rack by grouping the scan; no
   quotas, preemption, reservations or explanations): ``greedy_placements_per_s``,
   ``ratio_to_greedy``.
2. ``placements_per_s_sqlite`` (and ``_postgres``): a fresh store (migrations), hosts, boards, queues
   and queued jobs inserted in bulk; a ``SchedulerShell`` (GC frozen, as the controller runs it)
   makes one pass with every board drained (it reads the queue, parsing every spec: ``_first_read_s``),
   the boards come back, and its next ``pass_()`` is timed: read what changed, plan, apply; read and
   apply timed from inside (``<store>_read_s``, ``_plan_s``, ``_apply_s``).
   PostgreSQL runs when ``--postgres`` is given, or when ``initdb`` is on PATH (the integration
   harness's throwaway cluster); ``--no-postgres`` skips it (the metric is then null).
3. ``p50_single_job_ms``/``p99_single_job_ms``: the fleet full but 16 boards, held by running jobs of
   8 boards, the whole queue pending, on kept state; one new ci-gate job of one board joins the line
   and :func:`plan` runs as between explanations (``FAST_WINDOW``); timed from the job joining the
   line to the plan. ``--reps`` times (50), alternating with passes that explain (``WINDOW``:
   ``p50_single_job_explaining_ms``, ``p99_...``); each pass meets the same line and free boards (the
   new job leaves the line after it; fewer reps, at least 5, once ``--latency-budget`` seconds (60)
   have passed: ``single_job_reps``). Most running jobs are ci-gate class; every eighth host's is
   batch, so the passes before preempt those for the queue's ci-gate and interactive jobs
   (``single_job_pass_preemptions``), as a real controller would have, and the measured passes meet
   them stopping.
4. Sweep: the pure pass (best of ``--repeat``) at 1,000 / 2,500 / 5,000 / 10,000 boards, 10 jobs per board
   (``--quick``: 250 / 500 / 1,000): placements/s and microseconds of pass per placement;
   ``cost_ratio_10k_to_1k`` (the largest over the smallest size with ``--quick``, as
   ``cost_ratio_largest_to_smallest``).

Targets: ``placements_per_s`` >= 20,000, ``placements_per_s_sqlite`` >= 5,000, ``p99_single_job_ms``
<= 5, ``cost_ratio_10k_to_1k`` <= 2. Progress on stderr; the last stdout line is the JSON object.
Not a test: it exits 0 either way.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import io
import pstats
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import database, emit, interrupts_unwind, percentile, ratio, rnd, say, target, use_repo_root
from fleetyard.controller.scheduler import FAST_WINDOW, WINDOW
from fleetyard.domain.spec import JobSpec, Placement
from fleetyard.policy.placement import BoardView
from fleetyard.policy.queues import DEFAULT_PRIORITY_CLASSES, QueueSpec
from fleetyard.policy.scheduling import Line, PendingJob, Plan, Pool, RunningJob, Snapshot, pending_job, plan

BENCH = "scheduler"
GENERATIONS = ("g1", "g2", "g3")
PER_HOST = 8
HOSTS_PER_RACK = 25
QUEUES = (("compiler", 0.40), ("ai", 0.35), ("robotics", 0.25))
CLASSES = (("ci-gate", 0.02), ("interactive", 0.10), ("batch", 0.68), ("scavenger", 0.20))
CLASS_VALUE = {c.name: c.value for c in DEFAULT_PRIORITY_CLASSES}
TIME_LIMITS = (600.0, 1800.0, 3600.0, 7200.0, 14400.0)
NOW = 1_000_000.0
TARGETS = {"placements_per_s": 20_000, "placements_per_s_sqlite": 5_000, "p99_single_job_ms": 5.0, "cost_ratio": 2.0}


# ---- the workload -------------------------------------------------------------------------------


@dataclass
class Workload:
    boards: list[BoardView]
    queues: dict[str, QueueSpec]
    specs: list[tuple[int, str, float, JobSpec]]  # id, queue, submitted_at, spec
    pending: list[PendingJob]

    def snapshot(self, **kw: Any) -> Snapshot:
        kw.setdefault("free", frozenset(b.id for b in self.boards))
        kw.setdefault("pending", self.pending)
        kw.setdefault("boards", self.boards)
        return Snapshot(now=NOW, queues=self.queues, **kw)


def pick(rng: random.Random, weighted: Sequence[tuple[str, float]]) -> str:
    return rng.choices([n for n, _ in weighted], [w for _, w in weighted])[0]


def make_fleet(boards: int) -> list[BoardView]:
    out = []
    for h in range(max(1, boards // PER_HOST)):
        rack = h // HOSTS_PER_RACK
        gen = GENERATIONS[rack % len(GENERATIONS)]
        labels = {"rack": f"r{rack:03d}"}
        for s in range(PER_HOST):
            out.append(
                BoardView(f"h{h:05d}-{s}", f"h{h:05d}", gen, slot=s, rack=f"r{rack:03d}", firmware="1.2", labels=labels)
            )
    return out


def make_queues(boards: Sequence[BoardView]) -> dict[str, QueueSpec]:
    per_gen = {g: sum(1 for b in boards if b.generation == g) for g in GENERATIONS}
    nominal: dict[str, dict[str, int]] = {q: {} for q, _ in QUEUES}
    for g, n in per_gen.items():
        hosts = n // PER_HOST
        given = 0
        for q, share in QUEUES[1:]:
            nominal[q][g] = int(hosts * share) * PER_HOST
            given += nominal[q][g]
        nominal["compiler"][g] = n - given  # the rest: quotas sum to the fleet
    limits = {
        "compiler": {},
        "ai": {"g1": per_gen["g1"] // 20},
        "robotics": {g: n // 10 for g, n in per_gen.items()},
    }
    return {q: QueueSpec(q, nominal=nominal[q], cohort="eng", borrowing_limit=limits[q]) for q, _ in QUEUES}


def make_workload(n_boards: int, n_jobs: int, seed: int) -> Workload:
    rng = random.Random(seed)
    boards = make_fleet(n_boards)
    queues = make_queues(boards)
    specs = []
    for i in range(1, n_jobs + 1):
        x = rng.random()
        if x < 0.70:
            k, placement = 1, Placement.ANY
        elif x < 0.90:
            k, placement = rng.randint(2, 8), Placement.SAME_HOST
        else:
            k, placement = rng.randint(16, 64), Placement.SAME_RACK
        y = rng.random()
        gens = [rng.choice(GENERATIONS)] if y < 0.55 else (sorted(rng.sample(GENERATIONS, 2)) if y < 0.65 else [])
        spec = JobSpec.model_validate(
            {
                "kind": "command",
                "boards": k,
                "generations": gens,
                "placement": str(placement),
                "priority_class": pick(rng, CLASSES),
                "priority": rng.choice((-1, 0, 0, 0, 1)),
                "time_limit_s": rng.choice(TIME_LIMITS),
                "params": {"command": "true"},
            }
        )
        specs.append((i, pick(rng, QUEUES), NOW - rng.uniform(0, 86400.0), spec))
    return Workload(boards, queues, specs, [as_pending(*s) for s in specs])


def as_pending(job_id: int, queue: str, at: float, spec: JobSpec) -> PendingJob:
    return pending_job(job_id, spec, queue=queue, priority=CLASS_VALUE[spec.priority_class or "batch"], submitted_at=at)


# ---- the peer: a plain greedy scheduler ---------------------------------------------------------


def greedy(boards: Sequence[BoardView], jobs: Sequence[PendingJob]) -> int:
    """Priority order, then for each job one linear scan of the free boards (in host order, so a
    host's and a rack's boards are consecutive): the first that fit. Returns the bindings."""
    free = {b.id: b for b in sorted(boards, key=lambda b: (b.rack, b.host, b.slot))}
    bound = 0
    for job in sorted(jobs, key=lambda j: (-j.priority, -j.rank, j.submitted_at, j.id)):
        gens = job.shape.constraints.generations
        k = job.boards
        group_of = None
        if job.shape.placement is Placement.SAME_HOST:
            group_of = "host"
        elif job.shape.placement is Placement.SAME_RACK:
            group_of = "rack"
        got: list[str] = []
        group = None
        for b in free.values():
            if gens and b.generation not in gens:
                continue
            if group_of is not None:
                g = getattr(b, group_of)
                if g != group:
                    group, got = g, []
            got.append(b.id)
            if len(got) == k:
                break
        if len(got) == k:
            for i in got:
                del free[i]
            bound += 1
    return bound


# ---- pure decision throughput -------------------------------------------------------------------


def timed_plan(snap: Snapshot) -> tuple[Plan, float]:
    t0 = time.perf_counter()
    p = plan(snap)
    return p, time.perf_counter() - t0


@dataclass
class Kept:
    """What the controller keeps from pass to pass: the boards indexed and the line of queued jobs."""

    pool: Pool
    line: Line

    @classmethod
    def of(cls, w: Workload) -> Kept:
        pool, line = Pool(w.boards, ()), Line(w.pending)
        for c in {j.shape.constraints for j in w.pending}:
            pool.index(c)  # built by the controller's first pass
        return cls(pool, line)


def pure(w: Workload, label: str, repeat: int) -> dict[str, Any]:
    """The controller's pass on kept state (every board free, the whole queue in line, the
    controller's window), the best of ``repeat`` (this machine is shared: the best is the
    steadiest figure); and, once each, the same pass from plain lists (a controller's first) and
    a pass that explains every job (no window)."""
    t0 = time.perf_counter()
    kept = Kept.of(w)
    build_s = time.perf_counter() - t0
    every = frozenset(b.id for b in w.boards)
    runs = []
    for _ in range(repeat):
        kept.pool.reset(every)  # the boards freed: the controller's pool learns it as they do
        runs.append(timed_plan(w.snapshot(boards=kept.pool, pending=kept.line, window=WINDOW)))
    p, s = min(runs, key=lambda r: r[1])
    n = len(p.bindings)
    boards = sum(len(b.board_ids) for b in p.bindings)
    _, cold_s = timed_plan(w.snapshot(window=WINDOW))
    kept.pool.reset(every)
    explain, explain_s = timed_plan(w.snapshot(boards=kept.pool, pending=kept.line))
    say(
        f"{label}: plan() {s * 1e3:.0f} ms on kept state, {n} bindings ({boards} boards), {n / s:,.0f} placements/s; "
        f"from plain lists {cold_s * 1e3:.0f} ms; explaining all {len(explain.reasons)} waiting "
        f"{explain_s * 1e3:.0f} ms; "
        f"kept state built in {build_s * 1e3:.0f} ms"
    )
    return {
        "seconds": s,
        "bindings": n,
        "boards_bound": boards,
        "per_s": n / s,
        "cold_s": cold_s,
        "explain_s": explain_s,
        "build_s": build_s,
    }


def profile(w: Workload) -> None:
    kept = Kept.of(w)
    kept.pool.reset(frozenset(b.id for b in w.boards))
    snap = w.snapshot(boards=kept.pool, pending=kept.line, window=WINDOW)
    prof = cProfile.Profile()
    prof.enable()
    plan(snap)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(15)
    say("cProfile of one pure pass (top 15 by cumulative time):\n" + out.getvalue())


# ---- single-job latency -------------------------------------------------------------------------


def latency(w: Workload, reps: int, budget_s: float, free_hosts: int = 2) -> dict[str, Any]:
    """The fleet full but ``free_hosts`` hosts, each host held by one running 8-board job of the
    queue that host's share of its generation belongs to; the whole queue pending. Stops after
    ``reps`` passes, or after ``budget_s`` seconds once 5 are done."""
    rng = random.Random(7)
    hosts: dict[str, list[BoardView]] = {}
    for b in w.boards:
        hosts.setdefault(b.host, []).append(b)
    running: list[RunningJob] = []
    free: set[str] = set()
    for g in GENERATIONS:
        of_gen = [h for h, bs in hosts.items() if bs[0].generation == g]
        start = 0
        for q, _ in reversed(QUEUES):  # compiler last: it gets the rest, and the free hosts
            n = len(of_gen) - start if q == "compiler" else w.queues[q].nominal_of(g) // PER_HOST
            for h in of_gen[start : start + n]:
                if q == "compiler" and g == "g1" and len(free) < free_hosts * PER_HOST:
                    free.update(b.id for b in hosts[h])
                    continue
                started = NOW - rng.uniform(0, 3600.0)
                running.append(
                    RunningJob(
                        len(w.specs) + 10_000 + len(running),
                        q,
                        tuple(b.id for b in hosts[h]),
                        # Top-priority work (no queued job outranks it), but for every eighth host's.
                        priority=CLASS_VALUE["batch" if len(running) % 8 == 0 else "ci-gate"],
                        rank=1,
                        started_at=started,
                        expected_end=started + rng.choice(TIME_LIMITS),
                    )
                )
            start += n
    urgent = JobSpec.model_validate({"kind": "command", "boards": 1, "priority_class": "ci-gate", "priority": 1000})
    kept = Kept.of(w)
    every = frozenset(free)

    def one_pass(extra: PendingJob | None, window: int = WINDOW) -> tuple[Plan, float]:
        """A controller's pass: the new job joins the line, plan; then the new job leaves the line
        and the preempted jobs are stopping, as its next read would show. The other jobs it bound
        stay in line (each pass meets the same line and the same free boards: a steady state)."""
        nonlocal running
        t0 = time.perf_counter()
        if extra is not None:
            kept.line.add(extra)
        p = plan(w.snapshot(boards=kept.pool, free=every, pending=kept.line, running=running, window=window))
        took = time.perf_counter() - t0
        if extra is not None:
            kept.line.discard(extra.id)
        victims = {v.victim: v.for_job for v in p.preemptions}
        running = [dataclasses.replace(r, preempted_for=victims[r.id]) if r.id in victims else r for r in running]
        return p, took

    # The passes before: they preempt for the queue's ci-gate and interactive jobs (the running
    # jobs are batch) and bind what fits; a steady controller has made these already.
    gc.collect()
    gc.freeze()  # as the controller's shell does before it plans (controller/scheduler.py)
    first, _ = one_pass(None)
    one_pass(None)
    # A controller's first pass, for comparison: the snapshot from plain lists (a fresh pool and line).
    cold = [timed_plan(w.snapshot(free=every, pending=list(kept.line), running=running, window=WINDOW))[1]]
    # The passes between explanations (FAST_WINDOW), then those that explain (WINDOW), alternating.
    times: dict[int, list[float]] = {FAST_WINDOW: [], WINDOW: []}
    placed, preempted = 0, 0
    t_start = time.perf_counter()
    for i in range(reps):
        if i >= 5 and time.perf_counter() - t_start > budget_s:
            break
        for window in times:
            job = as_pending(len(w.specs) + 1 + 2 * i + (window == WINDOW), "compiler", NOW, urgent)
            p, s = one_pass(job, window)
            times[window].append(s)
            placed += any(b.job_id == job.id for b in p.bindings)
            preempted += len(p.preemptions)
    fast, explaining = (
        (percentile(times[x], 50) * 1e3, percentile(times[x], 99) * 1e3)  # type: ignore[operator]
        for x in (FAST_WINDOW, WINDOW)
    )
    n = len(times[WINDOW])
    say(
        f"single job: {len(running)} running jobs ({len(first.preemptions)} preempted by the first pass), "
        f"{len(free)} boards free, {len(kept.line)} pending; plan() on kept state p50 {fast[0]:.1f} ms, "
        f"p99 {fast[1]:.1f} ms (window {FAST_WINDOW}); explaining (window {WINDOW}) p50 {explaining[0]:.1f} ms, "
        f"p99 {explaining[1]:.1f} ms; from plain lists {cold[0] * 1e3:.0f} ms; the new job placed in {placed}/{2 * n}"
    )
    return {
        "p50_ms": fast[0],
        "p99_ms": fast[1],
        "explaining_p50_ms": explaining[0],
        "explaining_p99_ms": explaining[1],
        "cold_ms": cold[0] * 1e3,
        "placed": placed,
        "reps": n,
        "preemptions": len(first.preemptions),
        "preemptions_later": preempted,
        "running": len(running),
        "free": len(free),
    }


# ---- through the store --------------------------------------------------------------------------


def fill_store(url: str, w: Workload) -> None:
    import sqlalchemy as sa

    from fleetyard.store import tables as t
    from fleetyard.store.db import Store
    from fleetyard.store.migrate import upgrade

    upgrade(url)
    store = Store(url)
    try:
        with store.write() as conn:
            hosts = sorted({b.host: b for b in w.boards}.values(), key=lambda b: b.host)
            conn.execute(
                t.hosts.insert(),
                [
                    {
                        "id": b.host,
                        "state": "online",
                        "driver": f"sim:{PER_HOST}:{b.generation}",
                        "labels": {},
                        "registered_at": NOW,
                        "last_heartbeat_at": NOW,
                    }
                    for b in hosts
                ],
            )
            rows = [
                {
                    "id": b.id,
                    "host_id": b.host,
                    "slot": b.slot,
                    "generation": b.generation,
                    "firmware": b.firmware,
                    "device": f"sim:{b.slot}",
                    "labels": dict(b.labels),
                    "state": "available",
                    "state_changed_at": NOW,
                    "telemetry": {},
                    "warm": [],
                }
                for b in w.boards
            ]
            for i in range(0, len(rows), 5000):
                conn.execute(t.boards.insert(), rows[i : i + 5000])
            conn.execute(
                t.queues.insert(),
                [
                    {
                        "name": q.name,
                        "cohort": q.cohort,
                        "nominal": dict(q.nominal or {}),
                        "borrowing_limit": dict(q.borrowing_limit),
                        "updated_at": NOW,
                        "updated_by": "bench",
                    }
                    for q in w.queues.values()
                ],
            )
            jobs = [
                {
                    "id": i,
                    "kind": spec.kind,
                    "state": "queued",
                    "team": queue,
                    "owner": "bench",
                    "priority": spec.priority,
                    "spec": spec.model_dump(mode="json"),
                    "submitted_at": at,
                }
                for i, queue, at, spec in w.specs
            ]
            for i in range(0, len(jobs), 5000):
                conn.execute(t.jobs.insert(), jobs[i : i + 5000])
        if not store.sqlite:
            with store.write() as conn:
                conn.execute(sa.text("ANALYZE"))
    finally:
        store.dispose()


def _timed(fn: Callable[..., Any], name: str, into: dict[str, float]) -> Callable[..., Any]:
    def timed(*args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            into[name] = into.get(name, 0.0) + time.perf_counter() - t0

    return timed


def drain(store: Any, reason: str | None, at: float) -> None:
    """Every board drained (``reason``) or back in service (None)."""
    import sqlalchemy as sa

    from fleetyard.store import tables as t

    with store.write() as conn:
        conn.execute(sa.update(t.boards).values(drain_reason=reason, state_changed_at=at))


def through_store(kind: str, w: Workload) -> dict[str, Any]:
    from fleetyard.controller.scheduler import SchedulerShell
    from fleetyard.store.db import Store

    work = Path(tempfile.mkdtemp(prefix=f"fy-bench-scheduler-{kind}-"))
    out: dict[str, Any] = {}
    try:
        with database(kind, work) as db:
            t0 = time.perf_counter()
            fill_store(db.url, w)
            took = time.perf_counter() - t0
            say(f"{kind}: {len(w.boards)} boards and {len(w.specs)} queued jobs inserted in {took:.1f}s")
            store = Store(db.url)
            try:
                shell = SchedulerShell(store, freeze_gc=True)  # as the controller program runs it
                phases: dict[str, float] = {}
                for name in ("_snapshot", "_apply"):
                    setattr(shell, name, _timed(getattr(shell, name), name, phases))
                # The controller has been running: a pass while every board was drained read the
                # queue (parsing every spec), explained the head of the line, built its indexes.
                drain(store, "bench: the fleet busy", NOW)
                shell.pass_(NOW)
                first_read = phases.pop("_snapshot")
                phases.clear()
                # The boards free; the measured pass reads what changed (the boards), plans, applies.
                drain(store, None, NOW)
                t0 = time.perf_counter()
                started = shell.pass_(NOW + 1.0)
                pass_s = time.perf_counter() - t0
            finally:
                store.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    read_s, apply_s = phases["_snapshot"], phases["_apply"]
    plan_s = pass_s - read_s - apply_s
    say(
        f"{kind}: pass_() {pass_s:.3f}s for {started} attempts ({started / pass_s:,.0f}/s): read {read_s:.3f}s, "
        f"plan {plan_s:.3f}s, apply {apply_s:.3f}s; a controller's first read (every spec parsed) {first_read:.2f}s"
    )
    out.update(
        placements_per_s=rnd(started / pass_s),
        attempts=started,
        pass_s=rnd(pass_s, 3),
        read_s=rnd(read_s, 3),
        plan_s=rnd(plan_s, 3),
        apply_s=rnd(apply_s, 3),
        first_read_s=rnd(first_read, 3),
    )
    return out


# ---- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 boards and 10,000 jobs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--boards", type=int, default=None, help="fleet size (10,000; --quick 1,000), a multiple of 8")
    ap.add_argument("--jobs-per-board", type=int, default=10)
    ap.add_argument("--reps", type=int, default=50, help="repetitions of the single-job latency")
    ap.add_argument("--latency-budget", type=float, default=60.0, help="s; fewer reps (at least 5) past it")
    ap.add_argument("--repeat", type=int, default=3, help="pure passes per size; the best counts (3)")
    pg = ap.add_mutually_exclusive_group()
    pg.add_argument("--postgres", action="store_true", help="also through PostgreSQL (default: if initdb is found)")
    pg.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-store", action="store_true", help="skip the store passes")
    ap.add_argument("--profile", action="store_true", help="cProfile one pure pass (top 15 to stderr)")
    args = ap.parse_args(argv)
    if args.boards is None:
        args.boards = 1000 if args.quick else 10_000
    if not (8 <= args.boards <= 100_000 and args.boards % PER_HOST == 0):
        ap.error("--boards: 8..100000, a multiple of 8")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_repo_root()
    metrics: dict[str, Any] = {
        "quick": args.quick,
        "boards": args.boards,
        "jobs": args.boards * args.jobs_per_board,
        "seed": args.seed,
    }
    with interrupts_unwind():
        t0 = time.perf_counter()
        w = make_workload(args.boards, args.boards * args.jobs_per_board, args.seed)
        say(f"workload: {len(w.boards)} boards, {len(w.pending)} jobs, built in {time.perf_counter() - t0:.1f}s")

        # 1. pure decision throughput, and the peer on the same input.
        main_run = pure(w, f"{args.boards} boards", args.repeat)
        t0 = time.perf_counter()
        g_bound = greedy(w.boards, w.pending)
        g_s = time.perf_counter() - t0
        say(f"greedy peer: {g_s:.2f}s, {g_bound} bindings, {g_bound / g_s:,.0f} placements/s")
        metrics.update(
            placements_per_s=rnd(main_run["per_s"]),
            boards_placed_per_s=rnd(main_run["boards_bound"] / main_run["seconds"]),
            pending_jobs_per_s=rnd(len(w.pending) / main_run["seconds"]),
            plan_s=rnd(main_run["seconds"], 3),
            cold_plan_s=rnd(main_run["cold_s"], 3),
            explain_all_plan_s=rnd(main_run["explain_s"], 3),
            kept_state_build_s=rnd(main_run["build_s"], 3),
            bindings=main_run["bindings"],
            boards_bound=main_run["boards_bound"],
            greedy_placements_per_s=rnd(g_bound / g_s),
            greedy_bindings=g_bound,
            greedy_s=rnd(g_s, 3),
            ratio_to_greedy=ratio(main_run["per_s"], g_bound / g_s),
        )
        if args.profile:
            profile(w)

        # 2. through the store.
        stores = [] if args.no_store else ["sqlite"]
        if not args.no_store and not args.no_postgres and (args.postgres or shutil.which("initdb")):
            stores.append("postgres")
        metrics["placements_per_s_postgres"] = None
        for kind in stores:
            for k, v in through_store(kind, w).items():
                metrics[f"placements_per_s_{kind}" if k == "placements_per_s" else f"{kind}_{k}"] = v
        metrics.setdefault("placements_per_s_sqlite", None)

        # 3. single-job latency with the fleet nearly full.
        lat = latency(w, args.reps, args.latency_budget)
        metrics.update(
            p50_single_job_ms=rnd(lat["p50_ms"], 2),
            p99_single_job_ms=rnd(lat["p99_ms"], 2),
            p50_single_job_explaining_ms=rnd(lat["explaining_p50_ms"], 2),
            p99_single_job_explaining_ms=rnd(lat["explaining_p99_ms"], 2),
            single_job_placed=lat["placed"],
            single_job_reps=lat["reps"],
            single_job_cold_ms=rnd(lat["cold_ms"], 1),
            single_job_pass_preemptions=lat["preemptions"],
            single_job_later_preemptions=lat["preemptions_later"],
            single_job_running_jobs=lat["running"],
            single_job_free_boards=lat["free"],
        )

        # 4. the sweep.
        sizes = (250, 500, 1000) if args.quick else (1000, 2500, 5000, 10_000)
        cost: dict[int, float] = {}
        for n in sizes:
            r = (
                main_run
                if n == args.boards
                else pure(make_workload(n, n * args.jobs_per_board, args.seed), f"sweep {n}", args.repeat)
            )
            cost[n] = r["seconds"] / max(1, r["bindings"])
            metrics[f"sweep_{n}_placements_per_s"] = rnd(r["per_s"])
            metrics[f"sweep_{n}_us_per_placement"] = rnd(cost[n] * 1e6, 2)
        metrics["cost_ratio_largest_to_smallest"] = ratio(cost[sizes[-1]], cost[sizes[0]])
        metrics["cost_ratio_10k_to_1k"] = ratio(cost.get(10_000), cost.get(1000))
    cost_key = (
        "cost_ratio_10k_to_1k" if metrics["cost_ratio_10k_to_1k"] is not None else "cost_ratio_largest_to_smallest"
    )
    targets = {
        "placements_per_s": target(metrics["placements_per_s"], at_least=TARGETS["placements_per_s"]),
        "placements_per_s_sqlite": target(
            metrics["placements_per_s_sqlite"], at_least=TARGETS["placements_per_s_sqlite"]
        ),
        "p99_single_job_ms": target(metrics["p99_single_job_ms"], at_most=TARGETS["p99_single_job_ms"]),
        cost_key: target(metrics[cost_key], at_most=TARGETS["cost_ratio"]),
    }
    emit(BENCH, metrics, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
