"""The ``run`` job kind: run a compiler artifact on a board with given or generated inputs.

The artifact (and the inputs file, if any) are blobs the agent fetches into its cache before the
rank starts (:meth:`RunWorkload.blobs`). The model is loaded through the warm session cache, run
``repeat`` times on the same inputs, and its outputs are saved as ``outputs.npz`` (and generated
inputs as ``inputs.npz``) in the rank's output dir, which the agent uploads as blobs. The result
holds each output's shape, dtype and sha256 of its bytes, so ranks on different boards can be
compared without downloading anything. Its ``timing`` (see :func:`timing`) says whether the model
came warm from the session cache and when the first run began (``bench/warm.py`` reads it).

On a sim board with ``silent_corruption`` active the outputs are perturbed by the sim driver's
fault model: the board returns wrong numbers and reports success, as a corrupting board does.

:func:`run_local` runs the same code in this process on this machine's CPU (the ``--local`` loop).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fleetyard.domain.job import Outcome
from fleetyard.drivers.sim import as_computed_by
from fleetyard.errors import FleetyardError
from fleetyard.runtimes import (
    DeviceSettings,
    DeviceUnavailable,
    RuntimeUnavailable,
    check_inputs,
    default_cache,
)
from fleetyard.workloads.admission import OneSetArtifactWorkload
from fleetyard.workloads.base import WorkloadResult, board_record
from fleetyard.workloads.tensors import describe_arrays, generate_inputs, load_inputs, save_arrays

__all__ = ["RunParams", "RunWorkload", "execute", "run_local"]

SHA256 = r"^[0-9a-f]{64}$"
OUTPUTS_FILE = "outputs.npz"
INPUTS_FILE = "inputs.npz"


class RunParams(BaseModel):
    """Parameters of a ``run`` job."""

    model_config = ConfigDict(extra="forbid")

    artifact: str = Field(pattern=SHA256, description="sha256 of a pushed artifact (ONNX or IREE .vmfb)")
    inputs: str | None = Field(
        None, pattern=SHA256, description="sha256 of an .npz/.npy/JSON inputs blob; none: generate them"
    )
    seed: int = Field(0, description="seed of generated inputs")
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="per input [lo, hi) of generated values"
    )
    dims: dict[str, int] = Field(default_factory=dict, description="values of symbolic dimensions (default 1)")
    function: str | None = Field(None, description="IREE: the exported function to call")
    repeat: int = Field(1, ge=1, le=100_000, description="run the same inputs this many times")


class RunWorkload(OneSetArtifactWorkload):
    """Runs :class:`RunParams` in the board's worker process."""

    kind: ClassVar[str] = "run"
    params_model: ClassVar[type[BaseModel]] = RunParams

    @staticmethod
    def execute(params: Any, **kw: Any) -> WorkloadResult:
        return execute(params, **kw)


def timing(*, hit: bool, load_s: float, compute_started_at: float | None, rank_started_at: float) -> dict[str, Any]:
    """A result's ``timing``: whether the model came warm from the session cache ("cached") or was
    loaded, how long getting it took (s), and the epoch times (``time.time()``) the workload began
    and its first ``model.run`` began (None if it never ran). Compared with the rank's
    ``created_at``/``delivered_at`` they tell how long a rank took to start computing."""
    return {
        "session": "cached" if hit else "loaded",
        "load_s": round(load_s, 6),
        "compute_started_at": compute_started_at,
        "rank_started_at": rank_started_at,
    }


def run_local(params: RunParams, *, artifact_path: Path, inputs_path: Path | None, output_dir: Path) -> WorkloadResult:
    """Run ``params`` here, on this machine's CPU, with no server: the desk loop."""
    output_dir.mkdir(parents=True, exist_ok=True)
    # The file is hashed by the session cache: a local file need not match params.artifact.
    return execute(params, artifact_path=artifact_path, inputs_path=inputs_path, output_dir=output_dir, env={})


def execute(
    params: RunParams,
    *,
    artifact_path: Path,
    inputs_path: Path | None,
    output_dir: Path,
    env: Mapping[str, str],
    log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    artifact_sha256: str | None = None,
) -> WorkloadResult:
    """Load, feed, run, save; a bad artifact or input is the user's error, never an exception."""
    rank_started_at = time.time()
    compute_started_at: float | None = None
    try:
        settings = DeviceSettings.from_env(env)
        t_load = time.perf_counter()
        model, hit = default_cache().lookup(artifact_path, settings, sha256=artifact_sha256, function=params.function)
        load_s = time.perf_counter() - t_load
        signature = model.signature
        generated = inputs_path is None
        if inputs_path is None:
            inputs = generate_inputs(signature, seed=params.seed, ranges=params.ranges, dims=params.dims)
        else:
            inputs = load_inputs(inputs_path, signature)
        inputs = check_inputs(signature, inputs)
        latencies: list[float] = []
        outputs: dict[str, np.ndarray] = {}
        for i in range(params.repeat):
            if should_stop is not None and should_stop():
                return WorkloadResult(Outcome.CANCELED, message=f"stopped after {i} of {params.repeat} runs")
            if compute_started_at is None:
                compute_started_at = time.time()
            t0 = time.perf_counter()
            out = model.run(inputs, check=False)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            if i == 0:
                outputs = out
        record = model.record().to_dict()
    except (RuntimeUnavailable, DeviceUnavailable) as exc:
        return WorkloadResult(Outcome.CONFIG_ERROR, message=exc.message)
    except FleetyardError as exc:  # bad artifact, wrong inputs, a failing kernel
        return WorkloadResult(Outcome.USER_ERROR, message=exc.message)

    outputs = as_computed_by(env, outputs)  # the sim board's fault model
    save_arrays(output_dir / OUTPUTS_FILE, outputs)
    if generated:
        save_arrays(output_dir / INPUTS_FILE, inputs)
    result: dict[str, Any] = {
        "outputs": describe_arrays(outputs),
        "inputs": describe_arrays(inputs),
        "inputs_generated": generated,
        "seed": params.seed,
        "repeat": params.repeat,
        "latency_ms": [round(x, 6) for x in latencies],
        "latency_ms_median": round(statistics.median(latencies), 6),
        "artifact": artifact_sha256,
        "runtime": record,
        "board": board_record(env),
        "timing": timing(
            hit=hit, load_s=load_s, compute_started_at=compute_started_at, rank_started_at=rank_started_at
        ),
    }
    if log is not None:
        shapes = ", ".join(f"{n}: {a.dtype.name}{list(a.shape)}" for n, a in outputs.items())
        log(f"ran {params.repeat}x, median {result['latency_ms_median']:.3f} ms; outputs {shapes}\n")
    return WorkloadResult(Outcome.SUCCESS, exit_code=0, result=result)
