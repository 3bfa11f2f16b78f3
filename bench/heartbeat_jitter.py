"""How late a busy host's heartbeats arrive: the jitter that host timeouts must allow for.

    python bench/heartbeat_jitter.py [--quick] [--seconds S] [--hogs N] [--interval S]

A fresh SQLite store and real processes on 127.0.0.1 (the integration harness's ``Stack``):
server (``--heartbeat-interval`` S, default 1 s), controller, and two agents: ``h-cpu`` (driver
``cpu``, this machine's cores as one board) and ``h-sim`` (driver ``sim:4``). Work runs all the
time: ONNX ``run`` jobs of a small MLP (built at run time, nothing downloaded; each of a freshly
pushed artifact, so the board's worker loads a model while the agent beats) on the ``cpu`` board,
and shell jobs on the simulated boards.

Three phases, with the same work:

0. warmup (15 s): the first jobs. The server imports the ONNX runtimes at its first artifact push,
   and the first ``run`` job starts the board's worker and loads onnxruntime in it: one-time costs,
   reported apart (``warmup_``) so that they neither hide in nor inflate the steady state;
1. quiet (the peer, ``--seconds``): nothing else runs;
2. hog (``--seconds``): ``--hogs`` busy-looping processes (default twice the cores) at the agents'
   own priority.

The server records, per host session, the gap between two heartbeats as it received them
(``fleetyard_heartbeat_gap_seconds``, a histogram on ``GET /metrics``); each phase's figures
are the difference of two scrapes. A beat is late by ``gap - interval``.

Metrics per phase (``warmup_``, ``quiet_``, ``hog_``): ``beats``; ``gap_p50_s`` and ``gap_p99_s`` (the upper
bound of the histogram bucket holding that percentile); ``late_over_0_5_s`` (beats that came more
than 0.5 s late: the target is none with the hog running); ``max_gap_bound_s`` (the upper bound of
the highest bucket used); ``jobs`` finished. Not a test: it prints one JSON line last and exits 0
whether or not the target is met.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from _common import emit, interrupts_unwind, say, target, use_repo_root
from overhead import build_model

BENCH = "heartbeat_jitter"
LATE_S = 0.5
WARMUP_S = 15.0
GAP = "fleetyard_heartbeat_gap_seconds"


def _hog() -> None:
    while True:
        pass


def scrape(stack: Any) -> dict[float, float]:
    """The gap histogram's cumulative bucket counts, by upper bound (inf included)."""
    text = stack.http("GET", "/metrics").text
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == GAP:
            for s in family.samples:
                if s.name == f"{GAP}_bucket":
                    out[float(s.labels["le"])] = s.value
    return out


def figures(before: dict[float, float], after: dict[float, float], interval: float) -> dict[str, Any]:
    """One phase's figures from two scrapes of the cumulative buckets."""
    bounds = sorted(after)
    counts = {b: after[b] - before.get(b, 0.0) for b in bounds}
    total = counts[bounds[-1]]

    def bound_at(q: float) -> float | None:
        if not total:
            return None
        return next(b for b in bounds if counts[b] >= q * total)

    # Beats later than interval + 0.5 s: the histogram needs a bound there (GAP_BUCKETS_S has 1.5, 2.5).
    edge = interval + LATE_S
    on_time = counts.get(edge)
    used = [b for i, b in enumerate(bounds) if counts[b] > (counts[bounds[i - 1]] if i else 0)]
    return {
        "beats": int(total),
        "gap_p50_s": bound_at(0.5),
        "gap_p99_s": bound_at(0.99),
        "late_over_0_5_s": None if on_time is None else int(total - on_time),
        "max_gap_bound_s": used[-1] if used else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 s phases (default 60 s)")
    ap.add_argument("--seconds", type=float, default=None, help="length of each phase (60; --quick 20)")
    ap.add_argument("--hogs", type=int, default=None, help="busy processes in the hog phase (2 x cores)")
    ap.add_argument("--interval", type=float, default=1.0, choices=(1.0, 2.0), help="heartbeat interval, s")
    args = ap.parse_args(argv)
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    cores = len(os.sched_getaffinity(0))
    hogs = args.hogs if args.hogs is not None else 2 * cores
    use_repo_root()
    from tests.integration.harness import Stack

    work = Path(tempfile.mkdtemp(prefix="fy-bench-jitter-"))
    stack = Stack(f"sqlite:///{work / 'fleetyard.db'}", work, heartbeat_s=args.interval, max_blob_mb=16)
    procs: list[mp.Process] = []
    phases: dict[str, dict[str, Any]] = {}
    try:
        with interrupts_unwind():
            stack.setup()
            stack.start_server()
            stack.start_controller()
            stack.start_agent("h-cpu", "cpu")
            stack.start_agent("h-sim", "sim:4:sim-g1")
            models = work / "models"
            models.mkdir()
            n_model = 0

            def new_artifact() -> str:
                nonlocal n_model
                n_model += 1
                path = models / f"mlp-{n_model}.onnx"
                build_model(path, layers=4, width=256 + n_model)  # another model: another load
                data = path.read_bytes()
                stack.push_artifact(data, path.name)
                return hashlib.sha256(data).hexdigest()

            for phase in ("warmup", "quiet", "hog"):
                if phase == "hog":
                    procs = [mp.Process(target=_hog, daemon=True) for _ in range(hogs)]
                    for p in procs:
                        p.start()
                length = WARMUP_S if phase == "warmup" else seconds
                say(f"{phase}: {length:.0f} s of work" + (f" beside {hogs} busy processes" if procs else ""))
                before = scrape(stack)
                end = time.monotonic() + length
                done = 0
                live: list[int] = []
                while time.monotonic() < end:
                    if len(live) < 6:
                        live.append(stack.submit(kind="run", params={"artifact": new_artifact(), "repeat": 20}))
                        live += [stack.submit(params={"command": "sleep 0.5"}) for _ in range(2)]
                    states = {j: stack.job(j)["state"] for j in live}
                    finished = [j for j, s in states.items() if s in ("succeeded", "failed", "canceled")]
                    done += len(finished)
                    live = [j for j in live if j not in finished]
                    time.sleep(0.5)
                phases[phase] = {**figures(before, scrape(stack), args.interval), "jobs": done}
                say(f"{phase}: {phases[phase]}")
                for p in procs:
                    p.kill()
                procs = []
    except Exception:
        print(stack.logs(), file=sys.stderr)
        raise
    finally:
        for p in procs:
            p.kill()
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)

    metrics: dict[str, Any] = {f"{phase}_{k}": v for phase, f in phases.items() for k, v in f.items()}
    metrics.update(interval_s=args.interval, seconds=seconds, hogs=hogs, cores=cores)
    late = phases["hog"]["late_over_0_5_s"]
    emit(BENCH, metrics, {"hog_late_over_0_5_s": target(late, at_most=0)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
