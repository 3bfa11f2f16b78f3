"""The ``bench`` job kind: measure an artifact's speed on a board, LoadGen-style, with a verdict.

Modelled on MLPerf LoadGen's two simplest scenarios:

``single-stream``
    One query at a time, the next issued as soon as the last returns; each query's latency is
    timed with ``time.perf_counter_ns`` around the runtime call alone. Reports latency
    p50/p90/p99/p99.9 (ms), mean, min, max, queries/s, and ``latency_histogram``: the
    queries' latencies in fixed log bins (10 a decade; at most 80 counts, however many queries).
``offline``
    Queries back to back as fast as the board runs them; reports samples/s and queries/s.
    A query is one call of the model on the inputs, and carries ``samples_per_query`` samples:
    ``batch`` when given, else the leading dimension of the first input (1 for a scalar input).
    Generated inputs take ``batch`` as the value of each input's symbolic leading dimension
    (unless ``dims`` names it), so ``batch=32`` on a ``[batch, 4]`` model runs 32 samples a query.

Both run the same way: the model is loaded once through the warm session cache, warmed up
(``warmup_queries`` queries and at least ``warmup_s`` seconds, not measured), then queried until
**both** ``min_duration_s`` and ``min_queries`` are met, or ``max_duration_s`` (a cap) runs out.

Validity rules (a result carries ``verdict`` "VALID" or "INVALID" and every reason that applies):

- measurement was stopped (job canceled or over its time limit): INVALID, outcome ``canceled``;
- fewer queries than ``min_queries``, or a shorter measurement than ``min_duration_s`` (the cap
  cut it short): INVALID;
- single-stream: the claimed percentile ``target_percentile`` (LoadGen's single-stream metric
  is p90) needs at least one query beyond it, ``ceil(1 / (1 - p))`` queries in all: 10 for p90,
  100 for p99, 1000 for p99.9. Fewer is INVALID, because the "percentile" would be the slowest
  query standing in for it. Percentiles reported besides the target that lack their count are
  listed in ``unsupported_percentiles`` and do not change the verdict.

Percentiles are nearest-rank (the ``ceil(p·n)``-th fastest query), so they are observed
latencies and ordered p50 ≤ p90 ≤ p99 ≤ p99.9.

On a sim board the model runs on this host's CPU, as every sim workload does. The generation's
``FLEETYARD_SIM_LATENCY_FACTOR`` is recorded, not applied: every generation's factor is ≤ 1
(faster than sim-g1) and a benchmark must not invent time it did not measure.

The result (also written to ``bench.json`` in the output dir) records the board (id, serial,
device, firmware, generation), the runtime (providers, versions), python,
numpy and fleetyard versions, the artifact's sha256, the inputs' shapes and digests, and the
scenario's settings, and the ``timing`` the ``run`` kind reports (session "cached" or "loaded",
load time, when the first query began). Generated inputs are saved as ``inputs.npz`` so the run
can be repeated.

:func:`bench_local` runs the same code in this process on this machine's CPU (``--local``).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from array import array
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleetyard import __version__
from fleetyard.domain.job import Outcome
from fleetyard.errors import FleetyardError
from fleetyard.runtimes import (
    DeviceSettings,
    DeviceUnavailable,
    InputMismatch,
    LoadedModel,
    RuntimeUnavailable,
    Signature,
    check_inputs,
    default_cache,
)
from fleetyard.workloads.admission import OneSetArtifactWorkload
from fleetyard.workloads.base import WorkloadResult, board_record
from fleetyard.workloads.run import INPUTS_FILE, SHA256, timing
from fleetyard.workloads.tensors import describe_arrays, generate_inputs, load_inputs, save_arrays

__all__ = [
    "BENCH_FILE",
    "PERCENTILES",
    "BenchParams",
    "BenchWorkload",
    "bench_local",
    "execute",
    "latency_histogram",
    "required_queries",
]

BENCH_FILE = "bench.json"
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)
Scenario = Literal["single-stream", "offline"]


class BenchParams(BaseModel):
    """Parameters of a ``bench`` job."""

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
    scenario: Scenario = Field("single-stream", description="single-stream (latency) or offline (throughput)")
    batch: int | None = Field(
        None, ge=1, description="samples per query; generated inputs use it for a symbolic leading dimension"
    )
    warmup_s: float = Field(1.0, ge=0, le=600, description="seconds of unmeasured warm-up, at least")
    warmup_queries: int = Field(1, ge=0, le=1_000_000, description="unmeasured warm-up queries, at least")
    min_duration_s: float = Field(10.0, ge=0, description="measure at least this long")
    min_queries: int = Field(100, ge=1, le=100_000_000, description="measure at least this many queries")
    max_duration_s: float = Field(600.0, gt=0, le=86_400, description="stop measuring here even if short")
    target_percentile: float = Field(
        90.0, description="single-stream: the latency percentile the result claims (LoadGen: p90); 50, 90, 99 or 99.9"
    )

    @field_validator("target_percentile")
    @classmethod
    def _known_percentile(cls, v: float) -> float:
        if v not in PERCENTILES:
            raise ValueError(f"must be one of {', '.join(f'{p:g}' for p in PERCENTILES)}")
        return v


def required_queries(percentile: float) -> int:
    """Queries needed to claim ``percentile``: one query beyond it (p90: 10, p99: 100, p99.9: 1000)."""
    return math.ceil(round(100.0 / (100.0 - percentile), 6))


class BenchWorkload(OneSetArtifactWorkload):
    """Runs :class:`BenchParams` in the board's worker process."""

    kind: ClassVar[str] = "bench"
    params_model: ClassVar[type[BaseModel]] = BenchParams

    @staticmethod
    def execute(params: Any, **kw: Any) -> WorkloadResult:
        return execute(params, **kw)


def bench_local(
    params: BenchParams, *, artifact_path: Path, inputs_path: Path | None, output_dir: Path
) -> WorkloadResult:
    """Benchmark ``params`` here, on this machine's CPU, with no server: the desk loop."""
    output_dir.mkdir(parents=True, exist_ok=True)
    return execute(params, artifact_path=artifact_path, inputs_path=inputs_path, output_dir=output_dir, env={})


def execute(
    params: BenchParams,
    *,
    artifact_path: Path,
    inputs_path: Path | None,
    output_dir: Path,
    env: Mapping[str, str],
    log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    artifact_sha256: str | None = None,
) -> WorkloadResult:
    """Load, warm up, measure, judge; a bad artifact or input is the user's error, never an exception."""
    rank_started_at = time.time()
    stop = should_stop or (lambda: False)
    try:
        settings = DeviceSettings.from_env(env)
        t_load = time.perf_counter()
        model, hit = default_cache().lookup(artifact_path, settings, sha256=artifact_sha256, function=params.function)
        load_s = time.perf_counter() - t_load
        signature = model.signature
        generated = inputs_path is None
        if inputs_path is None:
            dims = _dims_with_batch(signature, params)
            inputs = generate_inputs(signature, seed=params.seed, ranges=params.ranges, dims=dims)
        else:
            inputs = load_inputs(inputs_path, signature)
        inputs = check_inputs(signature, inputs)
        samples = _samples_per_query(inputs, params.batch)
        if log is not None:
            log(f"bench {params.scenario}: warming up ({params.warmup_queries} queries, {params.warmup_s:g} s)\n")
        compute_started_at = time.time()  # the first query (of warm-up, or of measurement) begins now
        stopped = _warm_up(model, inputs, params, stop)
        latencies, elapsed_ns, stopped = (array("q"), 0, True) if stopped else _measure(model, inputs, params, stop)
        record = model.record().to_dict()
        artifact = model.info.sha256
    except (RuntimeUnavailable, DeviceUnavailable) as exc:
        return WorkloadResult(Outcome.CONFIG_ERROR, message=exc.message)
    except FleetyardError as exc:  # bad artifact, wrong inputs, a failing kernel
        return WorkloadResult(Outcome.USER_ERROR, message=exc.message)

    if generated:
        save_arrays(output_dir / INPUTS_FILE, inputs)
    result = _result(params, latencies, elapsed_ns, samples, stopped=stopped)
    result.update(
        artifact=artifact,
        inputs=describe_arrays(inputs),
        inputs_generated=generated,
        runtime=record,
        board=board_record(env),
        versions=_versions(record),
        timing=timing(hit=hit, load_s=load_s, compute_started_at=compute_started_at, rank_started_at=rank_started_at),
    )
    (output_dir / BENCH_FILE).write_text(json.dumps(result, indent=2) + "\n")
    if log is not None:
        log(_summary(result) + "\n")
    if stopped:
        message = f"stopped during measurement after {len(latencies)} queries"
        return WorkloadResult(Outcome.CANCELED, message=message, result=result)
    return WorkloadResult(Outcome.SUCCESS, exit_code=0, result=result)


def _dims_with_batch(signature: Signature, params: BenchParams) -> dict[str, int]:
    dims = dict(params.dims)
    if params.batch is not None:
        for spec in signature.inputs:
            lead = spec.shape[0] if spec.shape else None
            if isinstance(lead, str) and lead not in dims:
                dims[lead] = params.batch
    return dims


def _samples_per_query(inputs: Mapping[str, np.ndarray], batch: int | None) -> int:
    first = next(iter(inputs.values()), None)
    lead = int(first.shape[0]) if first is not None and first.ndim else 1
    if batch is not None and batch != lead:
        raise InputMismatch(
            f"batch is {batch} but the inputs' leading dimension is {lead}; "
            "a query's samples are its inputs' leading dimension",
            detail={"batch": batch, "leading_dimension": lead},
        )
    return lead


def _warm_up(
    model: LoadedModel, inputs: Mapping[str, np.ndarray], params: BenchParams, stop: Callable[[], bool]
) -> bool:
    """Run unmeasured queries; true when stopped."""
    end = time.perf_counter() + min(params.warmup_s, params.max_duration_s)
    n = 0
    while n < params.warmup_queries or time.perf_counter() < end:
        if stop():
            return True
        model.run(inputs, check=False)
        n += 1
    return False


def _measure(
    model: LoadedModel, inputs: Mapping[str, np.ndarray], params: BenchParams, stop: Callable[[], bool]
) -> tuple[array[int], int, bool]:
    """Query back to back until both minimums are met or the cap; (latencies ns, elapsed ns, stopped)."""
    min_ns = int(params.min_duration_s * 1e9)
    max_ns = int(params.max_duration_s * 1e9)
    min_queries = params.min_queries
    latencies: array[int] = array("q")
    clock = time.perf_counter_ns
    run = model.run
    start = clock()
    now = start
    while True:
        elapsed = now - start
        if (elapsed >= min_ns and len(latencies) >= min_queries) or elapsed >= max_ns:
            return latencies, elapsed, False
        if stop():
            return latencies, elapsed, True
        t0 = clock()
        run(inputs, check=False)
        now = clock()
        latencies.append(now - t0)


def _percentile(ordered: np.ndarray, p: float) -> float:
    rank = max(1, math.ceil(round(p / 100.0 * len(ordered), 9)))
    return float(ordered[rank - 1])


# Per-query latencies are not kept (a run may make millions); their histogram is, in fixed log
# bins: bin k is [HIST_LOW_MS·10^(k/10), HIST_LOW_MS·10^((k+1)/10)), 10 a decade from 1 µs to
# 100 s, the first and last bins also holding what falls below or above. At most 80 counts.
HIST_LOW_MS = 1e-3
HIST_BINS_PER_DECADE = 10
HIST_BINS = 80


def latency_histogram(ms: np.ndarray) -> dict[str, Any]:
    """The latencies' histogram, trimmed to the bins from the first to the last non-empty one:
    ``edges_ms`` (one more than ``counts``) and ``counts``."""
    if not len(ms):
        return {"bins_per_decade": HIST_BINS_PER_DECADE, "edges_ms": [], "counts": []}
    k = np.floor(np.log10(np.maximum(ms, 1e-12) / HIST_LOW_MS) * HIST_BINS_PER_DECADE)
    counts = np.bincount(np.clip(k, 0, HIST_BINS - 1).astype(np.int64), minlength=HIST_BINS)
    nz = np.flatnonzero(counts)
    lo, hi = int(nz[0]), int(nz[-1]) + 1
    edges = [round(HIST_LOW_MS * 10.0 ** (i / HIST_BINS_PER_DECADE), 9) for i in range(lo, hi + 1)]
    return {"bins_per_decade": HIST_BINS_PER_DECADE, "edges_ms": edges, "counts": counts[lo:hi].tolist()}


def _result(
    params: BenchParams, latencies: array[int], elapsed_ns: int, samples: int, *, stopped: bool
) -> dict[str, Any]:
    n = len(latencies)
    duration_s = elapsed_ns / 1e9
    reasons: list[str] = []
    if stopped:
        reasons.append(f"stopped during measurement after {n} queries")
    if n < params.min_queries:
        reasons.append(f"min_queries not reached: {n} < {params.min_queries}")
    if duration_s < params.min_duration_s:
        capped = " (max_duration_s cap)" if not stopped and duration_s >= params.max_duration_s else ""
        reasons.append(f"min_duration_s not reached: {duration_s:.3f} s < {params.min_duration_s:g} s{capped}")
    needed = required_queries(params.target_percentile)
    if params.scenario == "single-stream" and n < needed:
        reasons.append(f"p{params.target_percentile:g} needs at least {needed} queries, got {n}")

    ms = np.frombuffer(latencies, dtype=np.int64).astype(np.float64) / 1e6 if n else np.zeros(0)
    ordered = np.sort(ms)
    latency: dict[str, float | None] = {
        f"p{p:g}": (round(_percentile(ordered, p), 6) if n else None) for p in PERCENTILES
    }
    latency.update(
        mean=round(float(ms.mean()), 6) if n else None,
        min=round(float(ordered[0]), 6) if n else None,
        max=round(float(ordered[-1]), 6) if n else None,
    )
    qps = n / duration_s if duration_s > 0 else 0.0
    return {
        "scenario": params.scenario,
        "verdict": "INVALID" if reasons else "VALID",
        "reasons": reasons,
        "queries": n,
        "duration_s": round(duration_s, 6),
        "samples_per_query": samples,
        "samples": n * samples,
        "queries_per_s": round(qps, 3),
        "samples_per_s": round(qps * samples, 3),
        "latency_ms": latency,
        "latency_histogram": latency_histogram(ms),
        "target_percentile": params.target_percentile,
        "unsupported_percentiles": [f"p{p:g}" for p in PERCENTILES if n < required_queries(p)],
        "settings": params.model_dump(mode="json"),
    }


def _versions(record: Mapping[str, Any]) -> dict[str, str]:
    return {
        "fleetyard": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        str(record.get("runtime", "runtime")): str(record.get("runtime_version", "")),
        "platform": platform.platform(),
    }


def _summary(result: Mapping[str, Any]) -> str:
    lat = result["latency_ms"]
    head = f"{result['verdict']} {result['scenario']}: {result['queries']} queries in {result['duration_s']:.3f} s"
    if result["scenario"] == "offline":
        body = f"{result['samples_per_s']:.1f} samples/s, {result['queries_per_s']:.1f} queries/s"
    elif lat["p50"] is None:
        body = "no latencies"
    else:
        ps = ", ".join(f"{k} {lat[k]:.3f} ms" for k in ("p50", "p90", "p99"))
        body = f"{ps}, {result['queries_per_s']:.1f} queries/s"
    reasons = "; ".join(result["reasons"])
    return f"{head}; {body}" + (f" ({reasons})" if reasons else "")
