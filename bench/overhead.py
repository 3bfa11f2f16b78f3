"""What running a model through Fleetyard on a ``cpu`` board costs, against its runtime called
directly in a plain script on the same cores: ONNX Runtime for the ONNX model, IREE for the same
model compiled to a ``.vmfb``.

    python bench/overhead.py [--quick] [--no-iree] [--duration S] [--layers N] [--width N] [--batch N]

The model: an MLP built at run time with ``onnx.helper`` (``--layers`` MatMul+Add+Relu layers of
``--width`` x ``--width`` seeded float32 weights; 4 x 1024 by default), input float32[batch, width]
with ``--batch`` 64 rows, so one query takes a few milliseconds on one core. The inputs are seeded
too and saved as an ``.npz``; every side runs exactly those arrays. Nothing is downloaded.

The IREE artifact is the same ONNX file, imported with IREE's ONNX importer (``python -m
iree.compiler.tools.import_onnx``, from iree-base-compiler; weights inlined, batch left dynamic)
and compiled with ``iree.compiler.compile_file`` for ``llvm-cpu`` with
``--iree-llvmcpu-target-cpu=host`` (this machine's CPU; about a second or two for the default
model, reported as ``iree_compile_s``). It exports ``overhead_mlp`` (the graph's name), its
``$async`` twin and ``__init``; Fleetyard picks ``overhead_mlp`` by itself, and so does the script.

Direct, first (nothing else of this benchmark running), one plain script per runtime, each in a
subprocess pinned with ``os.sched_setaffinity`` to this process's cores (the cores a ``cpu`` board
gets: the agent inherits them), with ``OMP_NUM_THREADS`` and friends set to their count as a board
session sets them:

- ONNX Runtime: imports only numpy and onnxruntime; an ``InferenceSession`` with what a ``cpu``
  board's session uses (``intra_op_num_threads`` = the board's cores, ``inter_op_num_threads`` =
  1, CPU provider); a query is ``session.run``.
- IREE: imports only numpy and iree.runtime, and loads the module as Fleetyard's IREE runtime does
  for a ``cpu`` board (``iree_runtime.py``): ``--task_topology_cpu_ids=<the board's cores>``
  parsed before the ``local-task`` device is created (one worker pinned per core), then
  ``Config(device=…)``, ``VmModule.mmap``, ``SystemContext``, and the module's one callable
  function; a query is that call plus ``to_host()`` of its outputs, as ``IreeModel.run`` does.

Both warm up and measure like the ``bench`` job kind: ``time.perf_counter_ns`` around each query,
queries back to back until both the duration and the query count are met. Each also saves its
output for the inputs, and the IREE output must match ONNX Runtime's (``np.allclose``, rtol and
atol 1e-4) or the benchmark stops with an error before measuring Fleetyard: figures of a wrong
artifact mean nothing.

Fleetyard, then: a fresh SQLite store and real processes on 127.0.0.1 (the integration harness's
``Stack``: server, controller, one agent with driver ``cpu``, one board of every core). The model
(and the ``.vmfb``) and the inputs are pushed as blobs, each model registered as an artifact, and
two ``bench`` jobs submitted per artifact, ``offline`` then ``single-stream``, with the same
warm-up and duration, ONNX first, all on the same board in the same run; the figures are the
jobs' results (measured in the board's worker process, around ``LoadedModel.run``). Each result
must report as many threads as the board has cores.

Metrics: ``ratio_onnx`` and ``ratio_iree`` = Fleetyard offline samples/s / direct offline
samples/s of that runtime; ``ratio`` = the lower of the two (the target's metric; with
``--no-iree``, ``ratio_iree`` is null and ``ratio`` is ``ratio_onnx``); ``p50_overhead_us`` =
Fleetyard single-stream p50 - direct single-stream p50 for ONNX, in microseconds, and
``p50_overhead_us_iree`` the same for IREE. Both sides' absolute figures are reported too
(unprefixed keys are ONNX's, ``iree_``-prefixed ones IREE's). Not a test: it prints one JSON line
last and exits 0 whether or not the target is met (but not when the IREE output is wrong).
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
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import emit, interrupts_unwind, ratio, rnd, say, target, use_repo_root, worst

BENCH = "overhead"
TARGET_RATIO = 0.97
SEED = 0
MAX_BLOB_MB = 256
RUNTIMES = {"onnx": "onnxruntime", "iree": "iree"}  # what a result's runtime record names

# The plain scripts: numpy and one runtime, no Fleetyard. argv[1] is a JSON object of settings.
# Each sets up ``run``, its arguments and ``samples`` and saves the output of one query; MEASURE
# (with QUERY replaced by the script's query) measures like the bench job kind.
ORT_SETUP = r"""
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
run = sess.run
np.save(cfg["output"], run(names, feeds)[0])
out = {"onnxruntime": ort.__version__, "providers": sess.get_providers()}
"""
ORT_QUERY = "run(names, feeds)"

IREE_SETUP = r"""
import importlib.metadata, json, math, os, sys, time
cfg = json.loads(sys.argv[1])
os.sched_setaffinity(0, set(cfg["cores"]))
import numpy as np
import iree.runtime as rt

# As fleetyard.runtimes.iree_runtime loads a module for a cpu board: one local-task worker per
# board core, pinned to it, configured before the device is created.
rt.flags.parse_flags("--task_topology_cpu_ids=" + ",".join(map(str, cfg["cores"])))
config = rt.Config(device=rt.get_device("local-task"))
module = rt.VmModule.mmap(config.vm_instance, cfg["model"])
names = list(module.function_names)
[fn_name] = [n for n in names if not n.startswith("__") and not n.endswith("$async")]
context = rt.SystemContext(vm_modules=[module], config=config)
run = context.modules[module.name][fn_name]
with np.load(cfg["inputs"]) as z:
    args = [np.ascontiguousarray(z[k]) for k in z.files]
samples = int(args[0].shape[0])
def host(result):
    values = result if isinstance(result, tuple) else (result,)
    return [v.to_host() for v in values]
np.save(cfg["output"], host(run(*args))[0])
out = {"iree_runtime": importlib.metadata.version("iree-base-runtime"), "function": fn_name}
"""
IREE_QUERY = "host(run(*args))"

MEASURE = r"""
for scenario in cfg["scenarios"]:
    end = time.perf_counter() + cfg["warmup_s"]
    n = 0
    while n < 1 or time.perf_counter() < end:
        QUERY
        n += 1
    min_ns, min_q = int(cfg["min_duration_s"] * 1e9), cfg["min_queries"]
    lat = []
    clock = time.perf_counter_ns
    start = now = clock()
    while not (now - start >= min_ns and len(lat) >= min_q):
        t0 = clock()
        QUERY
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
DIRECT_SCRIPTS = {
    "onnx": ORT_SETUP + MEASURE.replace("QUERY", ORT_QUERY),
    "iree": IREE_SETUP + MEASURE.replace("QUERY", IREE_QUERY),
}


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


def compile_iree(onnx_path: Path, vmfb: Path) -> float:
    """Import the ONNX model with IREE's ONNX importer and compile it for llvm-cpu on this host's
    CPU; the seconds both took."""
    import iree.compiler as ic

    t0 = time.perf_counter()
    mlir = vmfb.with_suffix(".mlir")
    proc = subprocess.run(
        [sys.executable, "-m", "iree.compiler.tools.import_onnx", str(onnx_path), "-o", str(mlir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"iree-import-onnx failed ({proc.returncode}): {proc.stderr[-2000:]}")
    ic.compile_file(
        str(mlir),
        output_file=str(vmfb),
        target_backends=["llvm-cpu"],
        extra_args=["--iree-llvmcpu-target-cpu=host"],
    )
    mlir.unlink()
    return time.perf_counter() - t0


def direct(kind: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run the plain script of ``kind`` (onnx, iree) in a subprocess; its one JSON line."""
    env = {
        **os.environ,
        **dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), str(cfg["threads"])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", DIRECT_SCRIPTS[kind], json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"direct {kind} script failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def check_outputs(reference: Path, other: Path) -> float:
    """IREE's output must be ONNX Runtime's for the same inputs (float32 tolerance); the largest
    absolute difference."""
    want, got = np.load(reference), np.load(other)
    if got.shape != want.shape or got.dtype != want.dtype:
        raise SystemExit(f"IREE output is {got.dtype}{list(got.shape)}, ONNX Runtime's {want.dtype}{list(want.shape)}")
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
        raise SystemExit(f"IREE output differs from ONNX Runtime's (max abs diff {diff:g}): not benchmarking it")
    return diff


def fleetyard(
    work: Path,
    models: dict[str, Path],
    inputs: Path,
    job: dict[str, Any],
    cores: list[int],
    *,
    driver: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """A stack with one board of ``driver`` (``cpu``, or ``cuda`` for bench/gpu_overhead.py); per
    model (in order), bench jobs offline then single-stream; their results by model and scenario."""
    use_repo_root()
    from tests.integration.harness import Stack, wait_for

    work.mkdir(parents=True, exist_ok=True)
    stack = Stack(f"sqlite:///{work / 'fleetyard.db'}", work, max_blob_mb=MAX_BLOB_MB)  # the model is > 1 MB
    try:
        stack.setup()
        stack.start_server()
        stack.start_controller()
        stack.start_agent("h1", driver)
        [board, *_] = stack.boards(host="h1")
        say(f"fleetyard: board {board.get('serial', board.get('id'))} up")

        def put(path: Path) -> str:
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            stack.ok("PUT", f"/v1/blobs/{sha}", as_="alice", content=data)
            return sha

        inputs_sha = put(inputs)
        out: dict[str, dict[str, Any]] = {}
        for kind, model in models.items():
            art = stack.ok(
                "POST", "/v1/artifacts", as_="alice", json={"sha256": put(model), "name": f"overhead-mlp-{kind}"}
            )
            out[kind] = {}
            for scenario in ("offline", "single-stream"):
                params = {"artifact": art["sha256"], "inputs": inputs_sha, "scenario": scenario, **job}
                say(f"fleetyard: {kind} {scenario} bench job")
                job_id = stack.submit(kind="bench", params=params)
                # Poll once a second: the harness's 0.1 s polling (this process and the server answering
                # it) costs a fifth of a core, taken from the board's cores while it measures.
                done = wait_for(
                    lambda job_id=job_id: (
                        (j := stack.job(job_id))["state"] in ("succeeded", "failed", "canceled") and j
                    ),
                    timeout=600,
                    interval=1.0,
                    what=f"bench job {job_id}",
                )
                if done["state"] != "succeeded":
                    raise RuntimeError(f"bench job {done['id']} {done['state']}: {done}\n{stack.logs()}")
                [rank] = stack.ok("GET", f"/v1/jobs/{done['id']}/results")["ranks"]
                r = rank["result"]
                runtime = r["runtime"]
                if runtime.get("runtime") != RUNTIMES[kind]:
                    raise RuntimeError(
                        f"the {kind} artifact ran on {runtime.get('runtime')!r}, expected {RUNTIMES[kind]!r}"
                    )
                threads = runtime.get("threads")
                if driver == "cpu" and threads != len(cores):
                    raise RuntimeError(
                        f"the board's {kind} session used {threads} threads, expected {len(cores)}: {runtime}"
                    )
                out[kind][scenario] = r
        return out
    finally:
        stack.stop()


def _figures(prefix: str, f: dict[str, Any], d: dict[str, Any]) -> dict[str, Any]:
    """Both sides' absolute figures of one runtime, keys prefixed with ``prefix``."""
    f_off, f_ss, d_off, d_ss = f["offline"], f["single-stream"], d["offline"], d["single-stream"]
    return {
        f"{prefix}fleetyard_offline_samples_per_s": rnd(f_off["samples_per_s"], 1),
        f"{prefix}direct_offline_samples_per_s": rnd(d_off["samples_per_s"], 1),
        f"{prefix}fleetyard_offline_queries": f_off["queries"],
        f"{prefix}direct_offline_queries": d_off["queries"],
        f"{prefix}fleetyard_p50_ms": rnd(f_ss["latency_ms"]["p50"], 4),
        f"{prefix}direct_p50_ms": rnd(d_ss["p50_ms"], 4),
        f"{prefix}fleetyard_mean_ms": rnd(f_ss["latency_ms"]["mean"], 4),
        f"{prefix}direct_mean_ms": rnd(d_ss["mean_ms"], 4),
        f"{prefix}fleetyard_p99_ms": rnd(f_ss["latency_ms"]["p99"], 4),
        f"{prefix}direct_p99_ms": rnd(d_ss["p99_ms"], 4),
        f"{prefix}fleetyard_offline_mean_ms": rnd(f_off["latency_ms"]["mean"], 4),
        f"{prefix}direct_offline_mean_ms": rnd(d_off["mean_ms"], 4),
        f"{prefix}fleetyard_single_stream_queries": f_ss["queries"],
        f"{prefix}direct_single_stream_queries": d_ss["queries"],
        f"{prefix}fleetyard_verdicts": [f_off["verdict"], f_ss["verdict"]],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 s per scenario, runtime and side, about two minutes")
    ap.add_argument("--duration", type=float, default=None, help="min_duration_s per scenario and side (10; quick 3)")
    ap.add_argument("--no-iree", action="store_true", help="ONNX only: no .vmfb compiled, ratio_iree null")
    ap.add_argument("--layers", type=int, default=4, help="MLP layers (4)")
    ap.add_argument("--width", type=int, default=1024, help="MLP width (1024)")
    ap.add_argument("--batch", type=int, default=64, help="rows per query (64)")
    args = ap.parse_args(argv)
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    warmup = 0.5 if args.quick else 1.0
    cores = sorted(os.sched_getaffinity(0))
    job = {"warmup_s": warmup, "warmup_queries": 1, "min_duration_s": duration, "min_queries": 100}
    kinds = ["onnx"] if args.no_iree else ["onnx", "iree"]

    work = Path(tempfile.mkdtemp(prefix="fy-bench-overhead-"))
    compile_s = max_diff = None
    try:
        with interrupts_unwind():
            models = {"onnx": work / "mlp.onnx"}
            inputs = work / "inputs.npz"
            build_model(models["onnx"], layers=args.layers, width=args.width)
            x = np.random.default_rng(SEED + 1).standard_normal((args.batch, args.width)).astype(np.float32)
            np.savez(inputs, x=x)
            say(f"model {models['onnx'].stat().st_size / 1e6:.1f} MB, cores {cores}, {duration:g} s per scenario")
            if "iree" in kinds:
                models["iree"] = work / "mlp.vmfb"
                compile_s = compile_iree(models["onnx"], models["iree"])
                say(f"iree: imported and compiled in {compile_s:.2f} s, {models['iree'].stat().st_size / 1e6:.1f} MB")

            d: dict[str, dict[str, Any]] = {}
            for kind in kinds:
                cfg = {
                    "model": str(models[kind]),
                    "inputs": str(inputs),
                    "output": str(work / f"out-{kind}.npy"),
                    "cores": cores,
                    "threads": len(cores),
                    "scenarios": ["offline", "single-stream"],
                    "warmup_s": warmup,
                    "min_duration_s": duration,
                    "min_queries": job["min_queries"],
                }
                d[kind] = d_k = direct(kind, cfg)
                if kind == "iree":
                    max_diff = check_outputs(work / "out-onnx.npy", work / "out-iree.npy")
                    say(f"iree: output matches ONNX Runtime's (max abs diff {max_diff:.3g})")
                say(
                    f"direct {kind}: offline {d_k['offline']['samples_per_s']:.1f} samples/s, "
                    f"p50 {d_k['single-stream']['p50_ms']:.3f} ms"
                )
            f = fleetyard(work / "stack", models, inputs, job, cores)
            for kind in kinds:
                f_k = f[kind]
                say(
                    f"fleetyard {kind}: offline {f_k['offline']['samples_per_s']:.1f} samples/s, "
                    f"p50 {f_k['single-stream']['latency_ms']['p50']:.3f} ms"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratios = {k: ratio(f[k]["offline"]["samples_per_s"], d[k]["offline"]["samples_per_s"]) for k in kinds}
    p50_over = {
        k: (f[k]["single-stream"]["latency_ms"]["p50"] - d[k]["single-stream"]["p50_ms"]) * 1000.0 for k in kinds
    }
    r = worst(list(ratios.values()), higher_is_better=True)
    metrics: dict[str, Any] = {
        "ratio": r,
        "ratio_onnx": ratios["onnx"],
        "ratio_iree": ratios.get("iree"),
        "p50_overhead_us": rnd(p50_over["onnx"], 1),
        "p50_overhead_us_iree": rnd(p50_over.get("iree"), 1),
        **_figures("", f["onnx"], d["onnx"]),
    }
    if "iree" in kinds:
        metrics.update(_figures("iree_", f["iree"], d["iree"]))
        metrics.update(iree_compile_s=rnd(compile_s, 2), iree_max_abs_diff=max_diff)
    metrics.update(
        cores=len(cores),
        threads=len(cores),
        duration_s=duration,
        model=f"mlp {args.layers}x{args.width}, batch {args.batch}",
        onnxruntime=d["onnx"]["onnxruntime"],
        iree_runtime=d["iree"]["iree_runtime"] if "iree" in kinds else None,
    )
    emit(BENCH, metrics, {"ratio": target(r, at_least=TARGET_RATIO)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
