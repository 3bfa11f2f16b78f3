"""What running a model through Fleetyard on a ``cuda`` board costs, against IREE's runtime
called directly on the same GPU in a plain script.

    python bench/gpu_overhead.py --prepare DIR [--layers N] [--width N] [--batch N]   # here: compile
    python bench/gpu_overhead.py --from DIR [--quick]                                 # on the GPU host

The model is ``bench/overhead.py``'s MLP (seeded weights; 4 x 1024, batch 64 by default),
imported with IREE's ONNX importer and compiled with ``iree-base-compiler`` for
``--iree-hal-target-device=cuda --iree-cuda-target=sm_80`` (the newest target that compiler
knows; it runs on H100/H200). ``--prepare`` also saves the seeded inputs and ONNX Runtime's CPU
output for them, so the GPU host needs neither the compiler nor the ONNX model: carry DIR there.

On the GPU host: the direct script (numpy and iree.runtime only, ``cuda`` HAL device, the module's
one function, ``to_host()`` of the result, as ``IreeModel.run`` does) measures first, and its output
must match ONNX Runtime's CPU output (rtol/atol 1e-3: TF32-free float32 GEMMs on the GPU still
sum in another order) or nothing is measured. Then Fleetyard: ``bench/overhead.py``'s stack (server,
controller, one agent with driver ``cuda``, one board per GPU it sees) runs a ``bench`` job per
scenario (offline, then single-stream) on that board. The ratios are Fleetyard's samples/s over the
direct script's (offline) and the direct p50 over Fleetyard's p50 (single-stream).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import emit, ratio, rnd, say, target
from overhead import IREE_SETUP, MEASURE, SEED, build_model, fleetyard

BENCH = "gpu_overhead"
TARGET_RATIO = 0.97
CUDA_TARGET = "sm_80"

# overhead.py's direct IREE script, on the ``cuda`` HAL device: no cores to pin, no task topology.
_CPU_DEVICE = """os.sched_setaffinity(0, set(cfg["cores"]))
"""
_CPU_CONFIG = """# As fleetyard.runtimes.iree_runtime loads a module for a cpu board: one local-task worker per
# board core, pinned to it, configured before the device is created.
rt.flags.parse_flags("--task_topology_cpu_ids=" + ",".join(map(str, cfg["cores"])))
config = rt.Config(device=rt.get_device("local-task"))
"""
assert _CPU_DEVICE in IREE_SETUP and _CPU_CONFIG in IREE_SETUP, "overhead.IREE_SETUP changed: update gpu_overhead"
IREE_CUDA_SETUP = IREE_SETUP.replace(_CPU_DEVICE, "").replace(
    _CPU_CONFIG, 'config = rt.Config(device=rt.get_device("cuda"))\n'
)


def prepare(out: Path, *, layers: int, width: int, batch: int) -> None:
    """Build, compile for CUDA, and save the inputs and the CPU reference output in ``out``."""
    import iree.compiler as ic
    import onnxruntime as ort

    out.mkdir(parents=True, exist_ok=True)
    onnx_path, mlir, vmfb = out / "mlp.onnx", out / "mlp.mlir", out / "mlp-cuda.vmfb"
    build_model(onnx_path, layers=layers, width=width)
    x = np.random.default_rng(SEED + 1).standard_normal((batch, width)).astype(np.float32)
    np.savez(out / "inputs.npz", x=x)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    np.save(out / "reference.npy", sess.run(None, {"x": x})[0])
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "iree.compiler.tools.import_onnx", str(onnx_path), "-o", str(mlir)], check=True
    )
    ic.compile_file(
        str(mlir),
        output_file=str(vmfb),
        extra_args=["--iree-hal-target-device=cuda", f"--iree-cuda-target={CUDA_TARGET}"],
    )
    mlir.unlink()
    onnx_path.unlink()
    (out / "prepared.json").write_text(
        json.dumps({"layers": layers, "width": width, "batch": batch, "compile_s": round(time.perf_counter() - t0, 2)})
    )
    say(f"prepared {vmfb} ({vmfb.stat().st_size / 1e6:.1f} MB) for {CUDA_TARGET}")


def direct(cfg: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", IREE_CUDA_SETUP + MEASURE.replace("QUERY", "host(run(*args))"), json.dumps(cfg)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"direct IREE cuda script failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", type=Path, help="compile the model for CUDA into this folder and stop")
    ap.add_argument("--from", dest="src", type=Path, help="the folder --prepare wrote (on the GPU host)")
    ap.add_argument("--quick", action="store_true", help="3 s per scenario and side")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    if a.prepare:
        prepare(a.prepare, layers=a.layers, width=a.width, batch=a.batch)
        return
    if not a.src:
        ap.error("give --prepare DIR (where the compiler is) or --from DIR (on the GPU host)")
    src: Path = a.src.resolve()
    duration = 3.0 if a.quick else 10.0
    work = Path(tempfile.mkdtemp(prefix="fleetyard-gpu-bench-"))
    try:
        cfg = {
            "model": str(src / "mlp-cuda.vmfb"),
            "inputs": str(src / "inputs.npz"),
            "output": str(work / "direct.npy"),
            "scenarios": ["offline", "single-stream"],
            "warmup_s": 1.0,
            "min_duration_s": duration,
            "min_queries": 100,
        }
        say("direct: IREE on cuda")
        d = direct(cfg)
        got, want = np.load(work / "direct.npy"), np.load(src / "reference.npy")
        diff = float(np.max(np.abs(got - want)))
        if not np.allclose(got, want, rtol=1e-3, atol=1e-3):
            raise SystemExit(f"the GPU output differs from ONNX Runtime's CPU output (max abs diff {diff:g})")
        job = {"warmup_s": 1.0, "min_duration_s": duration, "min_queries": 100}
        f = fleetyard(work / "stack", {"iree": src / "mlp-cuda.vmfb"}, src / "inputs.npz", job, [], driver="cuda")[
            "iree"
        ]
        f_off, f_ss, d_off, d_ss = f["offline"], f["single-stream"], d["offline"], d["single-stream"]
        offline = ratio(f_off["samples_per_s"], d_off["samples_per_s"])
        p50 = ratio(d_ss["p50_ms"], f_ss["latency_ms"]["p50"])
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        emit(
            BENCH,
            {
                "gpu": gpu,
                "cuda_target": CUDA_TARGET,
                "model": json.loads((src / "prepared.json").read_text()),
                "max_abs_diff_vs_cpu": rnd(diff, 7),
                "board_device": f_off["runtime"].get("device"),
                "fleetyard_offline_samples_per_s": rnd(f_off["samples_per_s"], 1),
                "direct_offline_samples_per_s": rnd(d_off["samples_per_s"], 1),
                "fleetyard_p50_ms": rnd(f_ss["latency_ms"]["p50"], 4),
                "direct_p50_ms": rnd(d_ss["p50_ms"], 4),
                "fleetyard_p99_ms": rnd(f_ss["latency_ms"]["p99"], 4),
                "direct_p99_ms": rnd(d_ss["p99_ms"], 4),
                "ratio_offline": rnd(offline, 3),
                "ratio_p50": rnd(p50, 3),
                "iree_runtime": d["iree_runtime"],
            },
            {
                "ratio_offline": target(offline, at_least=TARGET_RATIO),
                "ratio_p50": target(p50, at_least=TARGET_RATIO),
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
