"""How soon the second job of the same artifact on a warm board starts computing: the board's
worker keeps the loaded model in its session cache, so a warm job skips the load.

    python bench/warm.py [--quick] [--jobs N] [--layers N] [--width N]

The model: an MLP built at run time with ``onnx.helper`` (``overhead.py``'s builder: ``--layers``
MatMul+Add+Relu layers of ``--width`` x ``--width`` seeded float32 weights; 8 x 1024 by default,
32 MB), so that ONNX Runtime takes tens of milliseconds to load it. Nothing is downloaded.

Direct, first (the peer): a plain script in a subprocess, numpy and onnxruntime only, pinned to
this process's cores, times ``import onnxruntime``, then ``onnxruntime.InferenceSession(...)`` of
the same file with what a ``cpu`` board's session uses (``intra_op_num_threads`` = the cores,
``inter_op_num_threads`` = 1, CPU provider), then its first ``run``: what loading costs with no
Fleetyard at all. (A board's worker imports onnxruntime at its first ONNX job, so a cold job's
``load_s`` holds the import too: compare it with import + load.)

Fleetyard, then: a fresh SQLite store and real processes on 127.0.0.1 (the integration harness's
``Stack``: server, controller, one agent with driver ``cpu``: one board of every core). The model
is pushed as a blob and registered as an artifact; then 1 + ``--jobs`` ``run`` jobs of it
(generated inputs, batch 1, ``repeat`` 1) go one at a time to the one board, each submitted once
the last finished. The first is cold (its worker has never loaded the model, and its agent must
download the blob); the rest should find the model in the worker's session cache.

Per job, from ``GET /v1/jobs/{id}/results``: the rank's ``created_at`` (the controller bound it to
the board), ``delivered_at`` (the agent's long poll took it) and the result's ``timing``
(``rank_started_at``: the workload began in the worker; ``load_s``: getting the model from the
session cache; ``compute_started_at``: its first ``model.run`` began; ``session``: "cached" or
"loaded"). All are ``time.time()`` on this one machine, so they compare directly:

    assign_to_compute   = compute_started_at - created_at     (the figure judged)
    assign_to_deliver   = delivered_at - created_at           (the server's feed + the long poll)
    deliver_to_rank     = rank_started_at - delivered_at      (long-poll answer, agent: blob cache,
                                                               pipe to the worker, params, env)
    rank_to_compute     = compute_started_at - rank_started_at (cache lookup or load, inputs)
    deliver_to_compute  = compute_started_at - delivered_at

Metrics: ``warm_assign_to_compute_p50_ms`` (target ≤ 50 ms) and ``_max_ms`` over the warm jobs,
the p50 of every stage above for the warm jobs and each stage of the cold job, ``warm_cached_fraction``
(warm jobs whose session was "cached"; 1.0 when the cache works), ``direct_import_ms``,
``direct_load_ms`` and ``direct_first_run_ms`` (the peer). Not a test: it prints one JSON line last and exits 0 whether
or not the target is met.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import emit, interrupts_unwind, ms, percentile, rnd, say, target, use_repo_root
from overhead import build_model

BENCH = "warm"
TARGET_MS = 50.0
MAX_BLOB_MB = 256

# The plain script: numpy and onnxruntime only. argv[1] is a JSON object of settings.
DIRECT_SCRIPT = r"""
import json, os, sys, time
cfg = json.loads(sys.argv[1])
os.sched_setaffinity(0, set(cfg["cores"]))
import numpy as np
t0 = time.perf_counter()
import onnxruntime as ort
import_s = time.perf_counter() - t0

so = ort.SessionOptions()
so.log_severity_level = 3
so.intra_op_num_threads = cfg["threads"]
so.inter_op_num_threads = 1
t0 = time.perf_counter()
sess = ort.InferenceSession(cfg["model"], sess_options=so, providers=["CPUExecutionProvider"])
load_s = time.perf_counter() - t0
feeds = {"x": np.random.default_rng(0).standard_normal((1, cfg["width"])).astype(np.float32)}
t0 = time.perf_counter()
sess.run(None, feeds)
first_s = time.perf_counter() - t0
out = {"import_s": import_s, "load_s": load_s, "first_run_s": first_s, "onnxruntime": ort.__version__}
print(json.dumps(out), flush=True)
"""


def direct(model: Path, width: int, cores: list[int]) -> dict[str, Any]:
    """The peer: load the model with onnxruntime in a plain subprocess; its one JSON line."""
    cfg = {"model": str(model), "width": width, "cores": cores, "threads": len(cores)}
    threads = str(len(cores))
    env = {**os.environ, **dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), threads)}
    proc = subprocess.run(
        [sys.executable, "-c", DIRECT_SCRIPT, json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"direct script failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def stages(rank: dict[str, Any]) -> dict[str, Any]:
    """One rank's stamps and stages (seconds) from its RankOut."""
    timing = rank["result"]["timing"]
    created, delivered = rank["created_at"], rank["delivered_at"]
    rank_at, compute_at = timing["rank_started_at"], timing["compute_started_at"]
    return {
        "session": timing["session"],
        "load_s": timing["load_s"],
        "assign_to_compute": compute_at - created,
        "assign_to_deliver": delivered - created,
        "deliver_to_rank": rank_at - delivered,
        "rank_to_compute": compute_at - rank_at,
        "deliver_to_compute": compute_at - delivered,
    }


STAGES = (
    "assign_to_compute",
    "assign_to_deliver",
    "deliver_to_rank",
    "rank_to_compute",
    "deliver_to_compute",
)


def fleetyard(work: Path, model: Path, jobs: int) -> list[dict[str, Any]]:
    """A stack with one ``cpu`` board; 1 + ``jobs`` run jobs of the model, one after another."""
    use_repo_root()
    from tests.integration.harness import Stack

    work.mkdir(parents=True, exist_ok=True)
    stack = Stack(f"sqlite:///{work / 'fleetyard.db'}", work, max_blob_mb=MAX_BLOB_MB)  # the model is > 1 MB
    try:
        stack.setup()
        stack.start_server()
        stack.start_controller()
        stack.start_agent("h1", "cpu")
        [board] = stack.boards(host="h1")
        data = model.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        stack.ok("PUT", f"/v1/blobs/{sha}", as_="alice", content=data)
        stack.ok("POST", "/v1/artifacts", as_="alice", json={"sha256": sha, "name": "warm-mlp"})
        say(f"fleetyard: board {board['id']} up, model pushed")
        params = {"artifact": sha, "dims": {"batch": 1}, "repeat": 1}
        out: list[dict[str, Any]] = []
        for i in range(1 + jobs):
            job = stack.wait_job(stack.submit(kind="run", params=params), timeout=120)
            if job["state"] != "succeeded":
                raise RuntimeError(f"run job {job['id']} {job['state']}: {job}\n{stack.logs()}")
            [rank] = stack.ok("GET", f"/v1/jobs/{job['id']}/results")["ranks"]
            s = stages(rank)
            say(
                f"job {i} ({'cold' if i == 0 else 'warm'}): {s['session']}, assign->compute "
                f"{s['assign_to_compute'] * 1000:.1f} ms (load {s['load_s'] * 1000:.1f} ms)"
            )
            out.append(s)
        return out
    except Exception:
        print(stack.logs(), file=sys.stderr)  # the processes' own account of what went wrong
        raise
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 cold + 4 warm jobs (default 1 + 10)")
    ap.add_argument("--jobs", type=int, default=None, help="warm jobs after the cold one (10; --quick 4)")
    ap.add_argument("--layers", type=int, default=8, help="MLP layers (8)")
    ap.add_argument("--width", type=int, default=1024, help="MLP width (1024)")
    args = ap.parse_args(argv)
    jobs = args.jobs if args.jobs is not None else (4 if args.quick else 10)
    if not 1 <= jobs <= 1000:
        ap.error("--jobs: 1..1000")
    cores = sorted(os.sched_getaffinity(0))

    work = Path(tempfile.mkdtemp(prefix="fy-bench-warm-"))
    try:
        with interrupts_unwind():
            model = work / "mlp.onnx"
            build_model(model, layers=args.layers, width=args.width)
            size_mb = model.stat().st_size / 1e6
            say(f"model {size_mb:.1f} MB, cores {cores}")
            d = direct(model, args.width, cores)
            say(
                f"direct: import onnxruntime {d['import_s'] * 1000:.1f} ms, load {d['load_s'] * 1000:.1f} ms, "
                f"first run {d['first_run_s'] * 1000:.1f} ms"
            )
            runs = fleetyard(work / "stack", model, jobs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cold, warm = runs[0], runs[1:]
    metrics: dict[str, Any] = {}
    value = ms(percentile([w["assign_to_compute"] for w in warm], 50))
    metrics["warm_assign_to_compute_p50_ms"] = value
    metrics["warm_assign_to_compute_max_ms"] = ms(max(w["assign_to_compute"] for w in warm))
    for name in STAGES[1:]:
        metrics[f"warm_{name}_p50_ms"] = ms(percentile([w[name] for w in warm], 50))
    metrics["warm_load_p50_ms"] = ms(percentile([w["load_s"] for w in warm], 50))
    metrics["warm_cached_fraction"] = rnd(sum(w["session"] == "cached" for w in warm) / len(warm), 4)
    for name in STAGES:
        metrics[f"cold_{name}_ms"] = ms(cold[name])
    metrics["cold_load_ms"] = ms(cold["load_s"])
    metrics["cold_session"] = cold["session"]
    metrics["direct_import_ms"] = ms(d["import_s"])
    metrics["direct_load_ms"] = ms(d["load_s"])
    metrics["direct_first_run_ms"] = ms(d["first_run_s"])
    metrics.update(
        warm_jobs=len(warm),
        cores=len(cores),
        model=f"mlp {args.layers}x{args.width}, batch 1",
        model_mb=rnd(size_mb, 1),
        onnxruntime=d["onnxruntime"],
    )
    emit(BENCH, metrics, {"warm_assign_to_compute_p50_ms": target(value, at_most=TARGET_MS)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
