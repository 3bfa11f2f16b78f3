"""How fast no-op jobs go through the whole stack: HTTP submit -> server -> store -> controller ->
agents -> results, on 8 hosts x 8 simulated boards, on SQLite and on PostgreSQL.

    python bench/dispatch.py [--quick] [--store sqlite|postgres|both] [--jobs N]

Per store, a fresh store and real processes on 127.0.0.1 (the integration harness's ``Stack``:
``python -m fleetyard server|controller|agent``, agents with driver ``sim:8:<gen>``). Every job is
``{"kind": "command", "params": {"command": "true"}}``, submitted through the SDK
(``Client.submit_many``: one ``POST /v1/jobs/batch`` per batch). A closed loop keeps at most
``window`` jobs unfinished: it submits in batches as fast as the stack absorbs them and learns what
finished from one page of ``GET /v1/jobs`` over the oldest unfinished ids. Two phases (after a
warm-up of one job per board):

- latency: ``window`` = the number of boards, so every job finds a free board and submit->start is
  the dispatch path alone (controller, assignment long-poll, worker start, started event);
- throughput: ``--jobs`` jobs with ``window`` 512 (8x the boards): the sustained rate. Here a job
  also waits in the queue behind ~450 others, so its submit->start is mostly queueing (Little's
  law: window / rate); it is reported as ``saturated_*``.

Times come from the server's own stamps on each job (``submitted_at``, ``started_at``,
``finished_at``, read back through ``GET /v1/jobs``). ``jobs_per_s`` = jobs finished / (last
``finished_at`` - first ``submitted_at``) of the throughput phase. To show where the time goes, the
latency phase is also cut into stages from the store's stamps on each job's rank (``submit_to_bind``:
the controller; ``bind_to_deliver``: the agent's long poll; ``deliver_to_start``: the agent and its
worker, up to the server applying the started event; ``start_to_finish``), and the CPU seconds of
the server, the controller, the agents (with their workers) and PostgreSQL's processes are divided
by the jobs of the throughput phase (``*_cpu_ms_per_job``).

Peer, in the same run: the direct runtime. The same N ``/bin/sh -c true`` commands (what the
``command`` workload runs) from 64 local threads through ``subprocess``, no Fleetyard.

Metrics are flat: ``<store>_<metric>`` per store, and the unprefixed ``jobs_per_s``,
``p50_submit_to_start_ms`` and ``p99_submit_to_start_ms`` are the worst over the stores measured.
Not a test: it prints one JSON line last and exits 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    Database,
    database,
    emit,
    interrupts_unwind,
    ms,
    percentile,
    ratio,
    rnd,
    say,
    target,
    tree_cpu_s,
    use_repo_root,
    worst,
)

BENCH = "dispatch"
NOOP = {"kind": "command", "params": {"command": "true"}}
DIRECT_ARGV = ["/bin/sh", "-c", "true"]  # what the command workload runs for NOOP
GENERATIONS = ("sim-g1", "sim-g2", "sim-g3")
FINISHED = ("succeeded", "failed", "canceled")
POLL_S = 0.05  # pause before each look at the oldest unfinished jobs (when the window is full)
TARGETS = {"jobs_per_s": 500.0, "p50_submit_to_start_ms": 50.0, "p99_submit_to_start_ms": 250.0}


# ---- the peer: the direct runtime -------------------------------------------------------------


def direct_runtime(n: int, threads: int) -> float:
    """Run ``n`` no-op commands from ``threads`` threads, no Fleetyard; return commands per second."""
    left = [n]
    lock = threading.Lock()
    failures = [0]

    def worker() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            if subprocess.run(DIRECT_ARGV, stdin=subprocess.DEVNULL, check=False).returncode != 0:
                with lock:
                    failures[0] += 1

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures[0]:
        raise RuntimeError(f"{failures[0]} direct commands failed")
    return n / elapsed


# ---- the stack --------------------------------------------------------------------------------


def start_fleet(stack: Any, hosts: int, boards_per_host: int) -> None:
    """Server, controller, and ``hosts`` agents started together; wait until every board is available."""
    from tests.integration.harness import wait_for

    stack.setup()
    stack.start_server()
    stack.start_controller()
    for i in range(hosts):
        gen = GENERATIONS[i % len(GENERATIONS)]
        stack.start_agent(f"h{i + 1}", f"sim:{boards_per_host}:{gen}", wait=False)
    want = hosts * boards_per_host
    wait_for(lambda: len(stack.boards(state="available")) >= want, timeout=180, interval=0.5, what=f"{want} boards")


# ---- the closed loop ----------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    jobs: int
    window: int  # most jobs unfinished at once
    batch: int  # jobs per POST /v1/jobs/batch (fewer only for the last one)
    timeout_s: float

    @property
    def poll_rows(self) -> int:
        return max(2 * self.batch, 64)


@dataclass
class PhaseRun:
    ids: list[int]
    client_wall_s: float
    submits: int  # POST /v1/jobs/batch requests
    polls: int  # looks at the oldest unfinished jobs (one GET /v1/jobs each)


def drop_finished(http: Any, live: set[int], rows: int) -> None:
    """Remove from ``live`` the jobs that finished among its ``rows`` oldest.

    Jobs start in FIFO order (one priority), so the oldest live jobs are the next to finish, and
    ids are contiguous (only this client submits): one ``GET /v1/jobs?before=&limit=`` page of about
    ``rows`` jobs tells. Listing every queued and running job instead costs the server ~1000 rows
    per look, which would be a large part of what this measures. A job that finishes out of order
    counts as live until it is among the oldest: the window is never exceeded, only under-filled.
    """
    oldest = sorted(live)[:rows]
    lo, hi = oldest[0], oldest[-1]
    r = http.get("/v1/jobs", params={"before": hi + 1, "limit": min(hi - lo + 1, 10000)})
    r.raise_for_status()
    live.difference_update(j["id"] for j in r.json() if j["state"] in FINISHED)


def run_closed_loop(sdk: Any, http: Any, phase: Phase) -> PhaseRun:
    """Submit ``phase.jobs`` no-op jobs keeping at most ``phase.window`` unfinished; wait for all."""
    submitted: list[int] = []
    live: set[int] = set()
    submits = polls = 0
    t0 = time.perf_counter()
    deadline = t0 + phase.timeout_s
    while True:
        free = phase.window - len(live)
        left = phase.jobs - len(submitted)
        n = min(phase.batch, left, free)
        if n > 0 and (n == phase.batch or n == left):
            ids = sdk.submit_many([NOOP] * n)  # one POST /v1/jobs/batch
            submitted += ids
            live.update(ids)
            submits += 1
            continue
        if not left and not live:
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{phase.name}: {len(live)} of {len(submitted)} jobs unfinished at the deadline")
        time.sleep(POLL_S)
        drop_finished(http, live, phase.poll_rows)
        polls += 1
    return PhaseRun(submitted, time.perf_counter() - t0, submits, polls)


def fetch_jobs(client: Any, ids: list[int]) -> list[dict[str, Any]]:
    """The JobOut of every job in ``ids`` (newest first pages of GET /v1/jobs)."""
    want, lo = set(ids), min(ids)
    out: list[dict[str, Any]] = []
    before = max(ids) + 1
    while before > lo:
        r = client.get("/v1/jobs", params={"limit": 10000, "before": before})
        r.raise_for_status()
        page = r.json()
        if not page:
            break
        out += [j for j in page if j["id"] in want]
        before = min(j["id"] for j in page)
    return out


def job_stats(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates and latencies from the server's stamps."""
    done = [j for j in jobs if j["state"] in FINISHED and j["finished_at"] is not None]
    started = [j for j in done if j["started_at"] is not None]
    to_start = [j["started_at"] - j["submitted_at"] for j in started]
    to_finish = [j["finished_at"] - j["submitted_at"] for j in done]
    span = (max(j["finished_at"] for j in done) - min(j["submitted_at"] for j in jobs)) if done else 0.0
    return {
        "jobs": len(jobs),
        "jobs_per_s": rnd(len(done) / span if span > 0 else None),
        "p50_submit_to_start_ms": ms(percentile(to_start, 50)),
        "p99_submit_to_start_ms": ms(percentile(to_start, 99)),
        "p50_submit_to_finish_ms": ms(percentile(to_finish, 50)),
        "p99_submit_to_finish_ms": ms(percentile(to_finish, 99)),
        "failed_jobs": sum(1 for j in jobs if j["state"] != "succeeded"),
        "retried_jobs": sum(1 for j in jobs if j["attempts"] > 1),
        "span_s": rnd(span, 3),
    }


STAGES = (  # consecutive stamps of one job's (first) rank, as the store holds them
    ("submit_to_bind", "submitted_at", "created_at"),  # queued until the controller binds a board
    ("bind_to_deliver", "created_at", "delivered_at"),  # until the agent's long poll takes it
    ("deliver_to_start", "delivered_at", "started_at"),  # worker start + the started event's trip
    ("start_to_finish", "started_at", "finished_at"),  # the command, the finished event, settling
)


def stage_breakdown(db_url: str, ids: list[int]) -> dict[str, Any]:
    """p50/p99 of each stage between submit and finish, read from the store after the phase."""
    import sqlalchemy as sa

    from fleetyard.store import tables as t
    from fleetyard.store.db import Store

    a, j = t.assignments, t.jobs
    store = Store(db_url)
    try:
        with store.read() as conn:
            rows = conn.execute(
                sa.select(j.c.submitted_at, a.c.created_at, a.c.delivered_at, a.c.started_at, a.c.finished_at)
                .join(a, a.c.job_id == j.c.id)
                .where(j.c.id.between(min(ids), max(ids)), a.c.rank == 0)
            ).all()
    finally:
        store.dispose()
    out: dict[str, Any] = {}
    for name, t0, t1 in STAGES:
        pairs = [(getattr(r, t0), getattr(r, t1)) for r in rows]
        xs = [b - a for a, b in pairs if a is not None and b is not None]
        out[f"p50_{name}_ms"] = ms(percentile(xs, 50))
        out[f"p99_{name}_ms"] = ms(percentile(xs, 99))
    return out


# ---- one store ---------------------------------------------------------------------------------


def cpu_by_role(stack: Any, db: Database) -> dict[str, float]:
    """CPU seconds so far of the server, the controller, all agents with their board workers, and
    (PostgreSQL only: SQLite runs inside the other processes) the database's own processes."""
    out = {"server": 0.0, "controller": 0.0, "agents": 0.0}
    for name, proc in stack.procs.items():
        role = "agents" if name.startswith("agent-") else name
        if proc.popen is not None and role in out:
            out[role] += tree_cpu_s(proc.popen.pid) or 0.0
    if db.server_pid is not None:
        out["db"] = tree_cpu_s(db.server_pid) or 0.0
    return out


def measure_store(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from tests.integration.harness import Stack

    from fleetyard.client import Client

    boards = args.hosts * args.boards_per_host
    phase_timeout = 120.0 + args.jobs * 0.2
    phases = [
        Phase("warm-up", boards, boards, min(args.latency_batch, boards), phase_timeout),
        Phase("latency", args.latency_jobs, boards, min(args.latency_batch, boards), phase_timeout),
        Phase("throughput", args.jobs, args.window, min(args.batch, args.window), phase_timeout),
    ]
    work = Path(tempfile.mkdtemp(prefix=f"fy-bench-dispatch-{kind}-"))
    out: dict[str, Any] = {}
    try:
        with database(kind, work) as db:
            db_url = db.url
            stack = Stack(db_url, work, host_timeout_s=args.host_timeout, heartbeat_s=args.heartbeat)
            try:
                say(f"{kind}: starting server, controller and {args.hosts} agents x {args.boards_per_host} boards")
                t0 = time.perf_counter()
                start_fleet(stack, args.hosts, args.boards_per_host)
                say(f"{kind}: {boards} boards available after {time.perf_counter() - t0:.1f}s")
                # Jobs go in through the SDK (what users call); the bench's own looks at job states
                # use plain HTTP, which spares the client the SDK's model validation.
                headers = {"Authorization": f"Bearer {stack.tokens['alice']}"}
                with (
                    Client(stack.url, stack.tokens["alice"], timeout=60) as sdk,
                    httpx.Client(base_url=stack.url, headers=headers, timeout=60) as http,
                ):
                    for phase in phases:
                        cpu0 = cpu_by_role(stack, db)
                        run = run_closed_loop(sdk, http, phase)
                        cpu1 = cpu_by_role(stack, db)
                        stats = job_stats(fetch_jobs(http, run.ids))
                        stages = stage_breakdown(db_url, run.ids)
                        say(
                            f"{kind}: {phase.name}: {stats['jobs']} jobs (window {phase.window}) in "
                            f"{run.client_wall_s:.1f}s: {stats['jobs_per_s']} jobs/s, submit->start p50 "
                            f"{stats['p50_submit_to_start_ms']} ms p99 {stats['p99_submit_to_start_ms']} ms, "
                            f"{stats['failed_jobs']} failed, {run.submits} submits, {run.polls} polls"
                        )
                        say(f"{kind}: {phase.name}: stages " + ", ".join(f"{k} {v}" for k, v in stages.items()))
                        if phase.name == "latency":
                            out.update({k: stats[k] for k in stats if "submit_to" in k})
                            out.update(stages)
                            out["latency_phase_jobs_per_s"] = stats["jobs_per_s"]
                        elif phase.name == "throughput":
                            out["jobs_per_s"] = stats["jobs_per_s"]
                            out.update({f"saturated_{k}": v for k, v in stats.items() if "submit_to" in k})
                            out["throughput_jobs"] = stats["jobs"]
                            out["throughput_span_s"] = stats["span_s"]
                            out["client_wall_s"] = rnd(run.client_wall_s, 3)
                            done = max(stats["jobs"], 1)
                            for role in cpu0:
                                out[f"{role}_cpu_ms_per_job"] = rnd(1000 * (cpu1[role] - cpu0[role]) / done, 3)
                        if phase.name != "warm-up":
                            out["failed_jobs"] = out.get("failed_jobs", 0) + stats["failed_jobs"]
                            out["retried_jobs"] = out.get("retried_jobs", 0) + stats["retried_jobs"]
                dead = [p.name for p in stack.procs.values() if not p.alive]
                if dead:
                    raise RuntimeError(f"processes died during the run: {dead}")
            except Exception:
                print(stack.logs(), file=sys.stderr)  # the processes' own account of what went wrong
                raise
            finally:
                stack.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


# ---- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1000 jobs (300 in the latency phase), under two minutes")
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--jobs", type=int, default=None, help="jobs in the throughput phase (default 5000; --quick 1000)")
    ap.add_argument("--latency-jobs", type=int, default=None, help="jobs in the latency phase (1000; --quick 300)")
    ap.add_argument("--window", type=int, default=512, help="most unfinished jobs in the throughput phase")
    ap.add_argument("--batch", type=int, default=50, help="jobs per submit request in the throughput phase")
    ap.add_argument("--latency-batch", type=int, default=16, help="jobs per submit request in the latency phase")
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--boards-per-host", type=int, default=8)
    ap.add_argument("--threads", type=int, default=64, help="threads of the direct-runtime peer")
    ap.add_argument("--heartbeat", type=float, default=2.0, help="agent heartbeat interval, s")
    ap.add_argument("--host-timeout", type=float, default=10.0, help="controller's host-loss timeout, s")
    args = ap.parse_args(argv)
    if args.jobs is None:
        args.jobs = 1000 if args.quick else 5000
    if args.latency_jobs is None:
        args.latency_jobs = 300 if args.quick else 1000
    if not (1 <= args.jobs <= 100_000 and 1 <= args.latency_jobs <= 100_000):
        ap.error("--jobs and --latency-jobs: 1..100000")
    if not (1 <= args.batch <= 1000 and 1 <= args.latency_batch <= 1000 and args.window >= 1):
        ap.error("--batch and --latency-batch: 1..1000; --window >= 1")
    if not (1 <= args.hosts <= 64 and 1 <= args.boards_per_host <= 64):
        ap.error("--hosts and --boards-per-host: 1..64")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_repo_root()
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    metrics: dict[str, Any] = {
        "jobs": args.jobs,
        "latency_jobs": args.latency_jobs,
        "hosts": args.hosts,
        "boards": args.hosts * args.boards_per_host,
        "window": args.window,
        "batch": args.batch,
    }
    results: dict[str, dict[str, Any]] = {}
    with interrupts_unwind():
        say(f"direct runtime: {args.jobs} x {' '.join(DIRECT_ARGV)} from {args.threads} threads")
        direct = direct_runtime(args.jobs, args.threads)
        say(f"direct runtime: {direct:.0f} commands/s")
        metrics["direct_jobs_per_s"] = rnd(direct)
        for kind in stores:
            results[kind] = measure_store(kind, args)
            results[kind]["ratio_to_direct"] = ratio(results[kind]["jobs_per_s"], direct)
            metrics.update({f"{kind}_{k}": v for k, v in results[kind].items()})
    for key, higher in (
        ("jobs_per_s", True),
        ("p50_submit_to_start_ms", False),
        ("p99_submit_to_start_ms", False),
        ("p50_submit_to_finish_ms", False),
        ("p99_submit_to_finish_ms", False),
    ):
        metrics[key] = worst([r.get(key) for r in results.values()], higher_is_better=higher)
    metrics["ratio_fleetyard_to_direct"] = ratio(metrics["jobs_per_s"], direct)
    targets = {
        "jobs_per_s": target(metrics["jobs_per_s"], at_least=TARGETS["jobs_per_s"]),
        "p50_submit_to_start_ms": target(metrics["p50_submit_to_start_ms"], at_most=TARGETS["p50_submit_to_start_ms"]),
        "p99_submit_to_start_ms": target(metrics["p99_submit_to_start_ms"], at_most=TARGETS["p99_submit_to_start_ms"]),
    }
    emit(BENCH, metrics, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
