"""How one ``eval`` scales over 1, 8 and 64 sim boards: parallel efficiency of the sharded ranks.

    python bench/eval_scaling.py [--quick] [--samples N] [--latency-ms MS] [--boards 1,8,64]

One eval (an MLP artifact, an ``.npz`` data set of ``--samples`` samples with labels and targets,
default 2,048; ``--quick`` 512) runs on K sim-g1 boards for K in 1, 8, 64: K ranks, rank r taking
the samples with index % K == r, each through the ``eval`` kind's own code
(:func:`fleetyard.workloads.eval.execute`: the warm session cache, the sim fault model, scoring,
the per-sample JSONL records). ``T_K`` is the wall time from starting the K ranks to the last
rank's end plus :func:`fleetyard.evaluation.aggregate` over their results.

How it runs, honestly: the ranks are **threads of this one process**, each given its sim board's
session environment (board id, serial, generation sim-g1, latency factor 1), not a server,
controller and 64 agent processes: 64 agents and their workers do not fit a 2-core machine in a
few minutes, and their start-up would be measured instead of the eval. What that leaves out:
scheduling and dispatch (``bench/dispatch.py`` measures them), each board's model load (the ranks
share this process's session cache: one load, then hits; ``model_load_ms`` reports what a board's
first load costs, once per rank per board, the warm cache keeping it for later jobs) and the
upload of each rank's outputs. The sim driver applies no latency to runtime calls, so each sample
also sleeps ``sim_latency_ms`` (default 20 ms, the ``eval`` kind's parameter, times the
generation's latency factor) as a stand-in for an accelerator's inference; the host CPU work per
sample (ONNX Runtime on a tiny MLP, hashing, scoring, one JSON line) is measured by the peer run
with no simulated latency (``cpu_ms_per_sample``). The threads serialise that CPU work (and each
rank's set-up: reading the data set, opening its files) on the GIL, so ``T_K`` is at least
``N·c + K·setup`` however many boards: the figures hold while the simulated latency dominates
(s = 20 ms against c ≈ 0.04 ms here). On real boards each rank has its own host CPU and this
bound does not apply; the real fixed costs per rank are the ones listed above as left out.
The ranks start together (each thread waits for one go signal), as the agents poll in parallel.

Metrics: ``t1_s``, ``t8_s``, ``t64_s``; ``efficiency_8``, ``efficiency_64`` = T1 / (K · T_K);
``cpu_ms_per_sample`` (the peer: K = 1 with no simulated latency); ``metrics_equal``: the
aggregated top-1/top-5/MSE at every K equal K = 1's (exact: ranks report counts and sums).

Targets: ``efficiency_64`` >= 0.9, ``metrics_equal`` true. Progress on stderr; the last stdout
line is the JSON object. Not a test: it exits 0 either way.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import emit, rnd, say, target, use_repo_root

BENCH = "eval_scaling"


def _artifact(work: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 10)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "mlp",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = work / "mlp.onnx"
    onnx.save(model, str(path))
    return path


def _dataset(work: Path, n: int) -> Path:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (n, 16)).astype(np.float32)
    path = work / "data.npz"
    np.savez(path, x=x, labels=rng.integers(0, 10, n), targets=rng.normal(0, 1, (n, 10)).astype(np.float32))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_eval(k: int, *, artifact: Path, data: Path, latency_ms: float, work: Path) -> tuple[float, dict[str, Any]]:
    """One eval on K sim-g1 boards (K rank threads); its wall time and aggregated metrics."""
    from fleetyard.domain.job import Outcome
    from fleetyard.evaluation import aggregate
    from fleetyard.workloads.eval import EvalParams, execute

    params = EvalParams(artifact=_sha(artifact), data=_sha(data), sim_latency_ms=latency_ms)
    results: list[Any] = [None] * k
    dirs = []
    for r in range(k):
        d = work / f"k{k}-ms{latency_ms:g}" / f"rank{r}"
        d.mkdir(parents=True)
        dirs.append(d)

    go = threading.Event()

    def rank(r: int) -> None:
        go.wait()
        env = {
            "FLEETYARD_DEVICE": f"sim:{r}",
            "FLEETYARD_BOARD_ID": f"h{r // 8 + 1}-b{r % 8}",
            "FLEETYARD_BOARD_SERIAL": f"SG1-{r:04d}",
            "FLEETYARD_SIM_GENERATION": "sim-g1",
            "FLEETYARD_SIM_LATENCY_FACTOR": "1.0",
        }
        results[r] = execute(params, artifact_path=artifact, data_path=data, output_dir=dirs[r], env=env,
                             rank=r, world_size=k, artifact_sha256=params.artifact)  # fmt: skip

    threads = [threading.Thread(target=rank, args=(r,), name=f"rank{r}") for r in range(k)]
    for t in threads:
        t.start()  # each waits for the go: the boards start together, as the agents poll in parallel
    t0 = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    bad = [r for r in results if r is None or r.outcome is not Outcome.SUCCESS]
    if bad:
        raise SystemExit(f"K={k}: {len(bad)} rank(s) failed: {bad[0] and bad[0].message}")
    metrics = aggregate([r.result for r in results])
    return time.perf_counter() - t0, metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="512 samples")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="simulated latency per sample (sim-g1)")
    ap.add_argument("--boards", default="1,8,64")
    args = ap.parse_args()
    use_repo_root()
    n = args.samples or (512 if args.quick else 2048)
    ks = [int(x) for x in args.boards.split(",")]
    with tempfile.TemporaryDirectory(prefix="fy-eval-scaling-") as tmp:
        work = Path(tmp)
        artifact, data = _artifact(work), _dataset(work, n)
        from fleetyard.runtimes import DeviceSettings, default_cache, load

        t = time.perf_counter()
        load(artifact, DeviceSettings(kind="cpu")).release()
        load_ms = (time.perf_counter() - t) * 1000.0
        default_cache().get(artifact, DeviceSettings.from_env({"FLEETYARD_DEVICE": "sim:0"}))  # warm, as a board is

        cpu_s, _ = run_eval(1, artifact=artifact, data=data, latency_ms=0.0, work=work)
        cpu_ms = cpu_s / n * 1000.0
        say(f"peer: {n} samples, no simulated latency: {cpu_s:.2f} s ({cpu_ms:.3f} ms/sample of host CPU)")
        times: dict[int, float] = {}
        metrics: dict[int, dict[str, Any]] = {}
        for k in ks:
            times[k], metrics[k] = run_eval(k, artifact=artifact, data=data, latency_ms=args.latency_ms, work=work)
            eff = times[ks[0]] * ks[0] / (k * times[k])
            say(f"K={k}: {times[k]:.3f} s, efficiency {eff:.3f}, top1 {metrics[k]['top1']:.4f}")
    base = ks[0]
    keys = ("samples", "top1", "top5", "mse")
    # Counts combine exactly; the MSE's float sums in another order, so equal to rounding (rel 1e-9).
    equal = all(all(math.isclose(metrics[k][key], metrics[base][key], rel_tol=1e-9) for key in keys) for k in ks)
    out: dict[str, Any] = {
        "samples": n,
        "sim_latency_ms": args.latency_ms,
        "cpu_ms_per_sample": rnd(cpu_ms, 3),
        "model_load_ms": rnd(load_ms, 1),
        "metrics_equal": equal,
        "top1": metrics[base]["top1"],
    }
    for k in ks:
        out[f"t{k}_s"] = rnd(times[k], 3)
        out[f"efficiency_{k}"] = rnd(times[base] * base / (k * times[k]), 3)
    kmax = max(ks)
    targets = {
        f"efficiency_{kmax}": target(out[f"efficiency_{kmax}"], at_least=0.9),
        "metrics_equal": {"value": equal, "met": equal},
    }
    emit(BENCH, out, targets)


if __name__ == "__main__":
    main()
