"""What running an ONNX model through Fleetyard on a ``cpu`` board costs, against ONNX Runtime
called directly in a plain script on the same cores.

    python bench/overhead.py [--quick] [--duration S] [--layers N] [--width N] [--batch N]

The model: an MLP built at run time with ``onnx.helper`` (``--layers`` MatMul+Add+Relu layers of
``--width`` x ``--width`` seeded float32 weights; 4 x 1024 by default), input float32[batch, width]
with ``--batch`` 64 rows, so one query takes a few milliseconds on one core. The inputs are seeded
too and saved as an ``.npz``; both sides run exactly those arrays. Nothing is downloaded.

Direct, first (nothing else of this benchmark running): a plain script in a subprocess, which
imports only numpy and onnxruntime, pins itself with ``os.sched_setaffinity`` to this process's
cores (the cores a ``cpu`` board gets: the agent inherits them) and builds an
``InferenceSession`` with what a ``cpu`` board's session uses (``intra_op_num_threads`` = the
board's cores, ``inter_op_num_threads`` = 1, CPU provider; ``OMP_NUM_THREADS`` and friends set
alike). It warms up and measures like the ``bench`` job kind: ``time.perf_counter_ns`` around each
``session.run``, queries back to back until both the duration and the query count are met.

Fleetyard, then: a fresh SQLite store and real processes on 127.0.0.1 (the integration harness's
``Stack``: server, controller, one agent with driver ``cpu``, one board of every core). The model
and inputs are pushed as blobs, the model registered as an artifact, and two ``bench`` jobs
submitted, ``offline`` then ``single-stream``, with the same warm-up and duration; the figures
are the jobs' results (measured in the board's worker process, around ``LoadedModel.run``).

Metrics: ``ratio_onnx`` = Fleetyard offline samples/s / direct offline samples/s; ``ratio`` = the
lower of the ONNX and IREE ratios, and with no IREE side measured here (``ratio_iree`` is null)
it is ``ratio_onnx``; ``p50_overhead_us`` = Fleetyard single-stream p50 - direct single-stream
p50, in microseconds. Both sides' absolute figures are reported too. Not a test: it prints one
JSON line last and exits 0 whether or not the target is met.
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

import numpy as np

from _common import emit, interrupts_unwind, ratio, rnd, say, target, use_repo_root

BENCH = "overhead"
TARGET_RATIO = 0.97
SEED = 0
MAX_BLOB_MB = 256

# The plain script: numpy and onnxruntime only, no Fleetyard. argv[1] is a JSON object of settings.
DIRECT_SCRIPT = r"""
import json, math, os, sys, time
cfg = json.loads(sys.argv[1])
os.sched_setaffinity(0, set(cfg["cores"]))
import numpy as np
import onnxruntime as ort

so = ort.SessionOptions()
so.log_severity_level = 3
so.intra_op_num_threads = cfg["threads"]
so.inter_op_num_threads = 1
sess = ort.InferenceSession(cfg["model"], sess_options=so, providers=["CPUExecutionProvider"])
with np.load(cfg["inputs"]) as z:
    feeds = {k: z[k] for k in z.files}
names = [o.name for o in sess.get_outputs()]
samples = int(next(iter(feeds.values())).shape[0])
out = {"onnxruntime": ort.__version__, "providers": sess.get_providers()}
for scenario in cfg["scenarios"]:
    end = time.perf_counter() + cfg["warmup_s"]
    n = 0
    while n < 1 or time.perf_counter() < end:
        sess.run(names, feeds)
        n += 1
    min_ns, min_q = int(cfg["min_duration_s"] * 1e9), cfg["min_queries"]
    lat = []
    clock, run = time.perf_counter_ns, sess.run
    start = now = clock()
    while not (now - start >= min_ns and len(lat) >= min_q):
        t0 = clock()
        run(names, feeds)
        now = clock()
        lat.append(now - t0)
    dur = (now - start) / 1e9
    ordered = sorted(lat)
    rank = max(1, math.ceil(round(0.5 * len(ordered), 9)))
    out[scenario] = {
        "queries": len(lat),
        "duration_s": dur,
        "samples_per_s": len(lat) * samples / dur,
        "p50_ms": ordered[rank - 1] / 1e6,
        "p99_ms": ordered[max(1, math.ceil(round(0.99 * len(ordered), 9))) - 1] / 1e6,
        "mean_ms": sum(lat) / len(lat) / 1e6,
    }
print(json.dumps(out), flush=True)
"""


def build_model(path: Path, *, layers: int, width: int) -> None:
    """An MLP of ``layers`` x (MatMul, Add, Relu), seeded weights, symbolic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    nodes, inits = [], []
    prev = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        b = rng.standard_normal(width).astype(np.float32) * np.float32(0.01)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "y" if i == layers - 1 else f"h{i}"
        nodes += [
            helper.make_node("MatMul", [prev, f"W{i}"], [f"mm{i}"], name=f"matmul{i}"),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"], name=f"add{i}"),
            helper.make_node("Relu", [f"add{i}"], [out], name=f"relu{i}"),
        ]
        prev = out
    graph = helper.make_graph(
        nodes,
        "overhead_mlp",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fleetyard-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def direct(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run the plain script in a subprocess; its one JSON line."""
    env = {
        **os.environ,
        **dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), str(cfg["threads"])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", DIRECT_SCRIPT, json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"direct script failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def fleetyard(work: Path, model: Path, inputs: Path, job: dict[str, Any], cores: list[int]) -> dict[str, Any]:
    """A stack with one ``cpu`` board; bench jobs offline then single-stream; their results."""
    use_repo_root()
    import httpx
    from tests.integration.harness import Proc, Stack, wait_for

    class BigBlobStack(Stack):
        """The harness's stack with a blob limit that fits the model (the harness sets 1 MB)."""

        def start_server(self, workers: int = 1) -> None:
            args = ["server", "--workers", str(workers), "--db", self.db_url, "--data-dir", str(self.dir)]
            args += ["--port", str(self.port), "--heartbeat-interval", str(self.heartbeat_s)]
            args += ["--max-blob-mb", str(MAX_BLOB_MB)]
            self.procs["server"] = p = Proc("server", args, self.dir / "server.log")
            p.start()
            wait_for(lambda: httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200, what="server ready")

    work.mkdir(parents=True, exist_ok=True)
    stack = BigBlobStack(f"sqlite:///{work / 'fleetyard.db'}", work)
    try:
        stack.setup()
        stack.start_server()
        stack.start_controller()
        stack.start_agent("h1", "cpu")
        [board] = stack.boards(host="h1")
        say(f"fleetyard: board {board.get('serial', board.get('id'))} up")

        def put(path: Path) -> str:
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            stack.ok("PUT", f"/v1/blobs/{sha}", as_="alice", content=data)
            return sha

        art = stack.ok("POST", "/v1/artifacts", as_="alice", json={"sha256": put(model), "name": "overhead-mlp"})
        inputs_sha = put(inputs)
        out: dict[str, Any] = {}
        for scenario in ("offline", "single-stream"):
            params = {"artifact": art["sha256"], "inputs": inputs_sha, "scenario": scenario, **job}
            say(f"fleetyard: {scenario} bench job")
            job_id = stack.submit(kind="bench", params=params)
            # Poll once a second: the harness's 0.1 s polling (this process and the server answering
            # it) costs a fifth of a core, taken from the board's cores while it measures.
            done = wait_for(
                lambda job_id=job_id: (j := stack.job(job_id))["state"] in ("succeeded", "failed", "canceled") and j,
                timeout=600,
                interval=1.0,
                what=f"bench job {job_id}",
            )
            if done["state"] != "succeeded":
                raise RuntimeError(f"bench job {done['id']} {done['state']}: {done}\n{stack.logs()}")
            [rank] = stack.ok("GET", f"/v1/jobs/{done['id']}/results")["ranks"]
            r = rank["result"]
            threads = r["runtime"].get("threads")
            if threads != len(cores):
                raise RuntimeError(f"the board's session used {threads} threads, expected {len(cores)}")
            out[scenario] = r
        return out
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 s per scenario and side, under two minutes")
    ap.add_argument("--duration", type=float, default=None, help="min_duration_s per scenario and side (10; quick 3)")
    ap.add_argument("--layers", type=int, default=4, help="MLP layers (4)")
    ap.add_argument("--width", type=int, default=1024, help="MLP width (1024)")
    ap.add_argument("--batch", type=int, default=64, help="rows per query (64)")
    args = ap.parse_args(argv)
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    warmup = 0.5 if args.quick else 1.0
    cores = sorted(os.sched_getaffinity(0))
    job = {"warmup_s": warmup, "warmup_queries": 1, "min_duration_s": duration, "min_queries": 100}

    work = Path(tempfile.mkdtemp(prefix="fy-bench-overhead-"))
    try:
        with interrupts_unwind():
            model, inputs = work / "mlp.onnx", work / "inputs.npz"
            build_model(model, layers=args.layers, width=args.width)
            x = np.random.default_rng(SEED + 1).standard_normal((args.batch, args.width)).astype(np.float32)
            np.savez(inputs, x=x)
            say(f"model {model.stat().st_size / 1e6:.1f} MB, cores {cores}, {duration:g} s per scenario")

            cfg = {
                "model": str(model),
                "inputs": str(inputs),
                "cores": cores,
                "threads": len(cores),
                "scenarios": ["offline", "single-stream"],
                "warmup_s": warmup,
                "min_duration_s": duration,
                "min_queries": job["min_queries"],
            }
            d = direct(cfg)
            d_off, d_ss = d["offline"], d["single-stream"]
            say(f"direct: offline {d_off['samples_per_s']:.1f} samples/s, p50 {d_ss['p50_ms']:.3f} ms")
            f = fleetyard(work / "stack", model, inputs, job, cores)
            f_off, f_ss = f["offline"], f["single-stream"]
            say(f"fleetyard: offline {f_off['samples_per_s']:.1f} samples/s, p50 {f_ss['latency_ms']['p50']:.3f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    r_onnx = ratio(f_off["samples_per_s"], d["offline"]["samples_per_s"])
    p50_over = (f_ss["latency_ms"]["p50"] - d["single-stream"]["p50_ms"]) * 1000.0
    metrics: dict[str, Any] = {
        "ratio": r_onnx,
        "ratio_onnx": r_onnx,
        "ratio_iree": None,
        "p50_overhead_us": rnd(p50_over, 1),
        "fleetyard_offline_samples_per_s": rnd(f_off["samples_per_s"], 1),
        "direct_offline_samples_per_s": rnd(d["offline"]["samples_per_s"], 1),
        "fleetyard_offline_queries": f_off["queries"],
        "direct_offline_queries": d["offline"]["queries"],
        "fleetyard_p50_ms": rnd(f_ss["latency_ms"]["p50"], 4),
        "direct_p50_ms": rnd(d["single-stream"]["p50_ms"], 4),
        "fleetyard_mean_ms": rnd(f_ss["latency_ms"]["mean"], 4),
        "direct_mean_ms": rnd(d["single-stream"]["mean_ms"], 4),
        "fleetyard_p99_ms": rnd(f_ss["latency_ms"]["p99"], 4),
        "direct_p99_ms": rnd(d["single-stream"]["p99_ms"], 4),
        "fleetyard_offline_mean_ms": rnd(f_off["latency_ms"]["mean"], 4),
        "direct_offline_mean_ms": rnd(d["offline"]["mean_ms"], 4),
        "fleetyard_single_stream_queries": f_ss["queries"],
        "direct_single_stream_queries": d["single-stream"]["queries"],
        "fleetyard_verdicts": [f_off["verdict"], f_ss["verdict"]],
        "cores": len(cores),
        "threads": len(cores),
        "duration_s": duration,
        "model": f"mlp {args.layers}x{args.width}, batch {args.batch}",
        "onnxruntime": d["onnxruntime"],
    }
    emit(BENCH, metrics, {"ratio": target(r_onnx, at_least=TARGET_RATIO)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
