"""The ``eval`` job kind: a model artifact's accuracy on a data set, sharded across the job's boards.

Rank ``r`` of ``K`` takes the samples whose index ``% K == r`` and runs each, one sample a query,
on its board's runtime through the warm session cache, the same path as ``validate`` (a sim
board's fault model, silent corruption, applies to the outputs).

Data sets (one of):

``data``
    sha256 of an uploaded ``.npz``: the inputs keyed by input name (one array for a one-input
    model needs no particular name), with the samples on the leading axis, plus ``labels``
    (integers: top-1/top-5) and/or ``targets`` (floats, shaped like each sample's output: MSE).
    Sample ``i`` is ``array[i:i+1]`` of each input. This is also the "folder of arrays" form:
    pack the folder's arrays into one ``.npz``.
    Or a Parquet file (told by its magic bytes), or, run locally, a folder of ``.parquet`` files:
    a column per input and ``labels`` / ``targets`` columns, a row per sample; a column of
    fixed-size lists is a 2-D array (:mod:`fleetyard.evaluation.parquet`). Each rank reads only
    the row groups of its contiguous block of rows.
``generated: {n, seed, classes}``
    ``n`` samples, sample ``i`` generated from the artifact's signature with seed ``seed + i``
    (:func:`~fleetyard.workloads.tensors.generate_inputs`, symbolic dims 1); its label is the
    argmax of the reference runtime's output on the CPU (ONNX Runtime, or torch for .pt/.pt2) and
    its target that output, so the data set is deterministic. ``classes``, when given, must be
    the output's last-axis size.

Metrics: top1, top5, mse (see :mod:`fleetyard.evaluation.core`), and user metrics: a
``metrics_module`` blob (a Python file) whose functions ``def name(outputs, labels) -> float`` are
named in ``user_metrics``; each runs inside the rank on its shard's stacked outputs and labels
(the targets when there are no labels).

Each rank writes ``samples.jsonl`` (one record a sample: index, sha256 of its input and output
bytes, label, prediction, correct, top5, squared error) and ``eval.json`` (its result) to its
output dir. Its result carries counts and sums (``tally``) so that
:func:`~fleetyard.evaluation.aggregate` combines the ranks (counts exactly, the MSE to rounding),
with the artifact's sha256 and the data set's hash (the blob's sha256, or for generated data the
sha256 of its spec).

``sim_latency_ms``: on a sim board, each sample also sleeps this many milliseconds times the
generation's latency factor and ``FLEETYARD_SIM_TIME_SCALE`` (default 0: off), a stand-in for an
accelerator's inference time; the sim driver itself applies no latency to runtime calls.

:func:`eval_local` runs one rank (or all, ``world_size=1``) in this process on this machine's CPU.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleetyard.domain.job import Outcome
from fleetyard.drivers.sim import as_computed_by, time_scale
from fleetyard.errors import FleetyardError
from fleetyard.evaluation import RankTally, aggregate, score_sample, shard_indices
from fleetyard.evaluation.parquet import ParquetError, is_parquet, read_shard
from fleetyard.runtimes import (
    ArtifactFormat,
    DeviceSettings,
    DeviceUnavailable,
    InputMismatch,
    RuntimeUnavailable,
    Signature,
    check_inputs,
    default_cache,
    detect_format,
)
from fleetyard.workloads.admission import Registry, admit_artifact_job
from fleetyard.workloads.base import WorkloadContext, WorkloadResult, board_record, params_as
from fleetyard.workloads.run import SHA256
from fleetyard.workloads.tensors import generate_inputs

__all__ = ["EVAL_FILE", "SAMPLES_FILE", "EvalParams", "EvalWorkload", "aggregate", "eval_local", "execute"]

SAMPLES_FILE = "samples.jsonl"
EVAL_FILE = "eval.json"
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"

Arrays = dict[str, np.ndarray]
Candidate = Callable[[Mapping[str, np.ndarray]], Arrays]


class GeneratedData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, le=10_000_000, description="samples")
    seed: int = Field(0, description="sample i is generated with seed + i")
    classes: int | None = Field(None, ge=1, description="the output's last-axis size, checked")


class EvalParams(BaseModel):
    """Parameters of an ``eval`` job."""

    model_config = ConfigDict(extra="forbid")

    artifact: str = Field(pattern=SHA256, description="sha256 of a pushed artifact")
    data: str | None = Field(
        None, pattern=SHA256, description="sha256 of an .npz or .parquet data set (inputs + labels/targets)"
    )
    generated: GeneratedData | None = Field(None, description="a generated data set, labelled by the reference")
    output: str | None = Field(None, description="the output scored (default: the first)")
    metrics_module: str | None = Field(None, pattern=SHA256, description="sha256 of a Python file of metrics")
    user_metrics: list[str] = Field(default_factory=list, description="functions of metrics_module to run")
    function: str | None = Field(None, description="IREE: the exported function to call")
    sim_latency_ms: float = Field(0.0, ge=0, le=60_000, description="sim boards: simulated latency per sample")

    @model_validator(mode="after")
    def _consistent(self) -> EvalParams:
        if (self.data is None) == (self.generated is None):
            raise ValueError("give one data set: data (an .npz or .parquet blob) or generated")
        if self.user_metrics and self.metrics_module is None:
            raise ValueError("user_metrics name functions of a metrics_module; give its sha256")
        for name in self.user_metrics:
            if not re.match(_IDENT, name):
                raise ValueError(f"user metric {name!r} is not a Python identifier")
        return self

    def dataset_record(self) -> dict[str, Any]:
        """The data set's identity: the blob's sha256, or the sha256 of the generator's spec."""
        if self.data is not None:
            return {"kind": "npz", "sha256": self.data}
        assert self.generated is not None  # Invariant: exactly one data set (checked above).
        spec = json.dumps({"generated": self.generated.model_dump()}, sort_keys=True)
        return {
            "kind": "generated",
            "sha256": hashlib.sha256(spec.encode()).hexdigest(),
            **self.generated.model_dump(),
            "labels": "argmax of the reference runtime's output",
        }


class EvalWorkload:
    """Runs :class:`EvalParams` in the board's worker process, one shard per rank."""

    kind: ClassVar[str] = "eval"
    params_model: ClassVar[type[BaseModel]] = EvalParams

    @staticmethod
    def metrics(results: list[dict[str, Any]]) -> dict[str, Any]:
        """The job's metrics from its ranks' results (what a pipeline's conditions read)."""
        return aggregate(results)

    @classmethod
    def blobs(cls, params: BaseModel) -> list[str]:
        p = params_as(params, EvalParams)
        return [p.artifact] + [s for s in (p.data, p.metrics_module) if s]

    @classmethod
    def admit(cls, params: BaseModel, registry: Registry) -> None:
        p = params_as(params, EvalParams)
        admit_artifact_job(registry, artifact=p.artifact, function=p.function)

    def run(self, ctx: WorkloadContext) -> WorkloadResult:
        p = params_as(ctx.params, EvalParams)
        return execute(
            p,
            artifact_path=ctx.blob(p.artifact),
            data_path=ctx.blob(p.data) if p.data else None,
            metrics_path=ctx.blob(p.metrics_module) if p.metrics_module else None,
            output_dir=ctx.output_dir,
            env=ctx.env,
            rank=ctx.rank,
            world_size=ctx.world_size,
            log=ctx.log,
            should_stop=ctx.should_stop,
            artifact_sha256=p.artifact,
        )


def eval_local(
    params: EvalParams,
    *,
    artifact_path: Path,
    data_path: Path | None,
    output_dir: Path,
    metrics_path: Path | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> WorkloadResult:
    """Evaluate here, on this machine's CPU, with no server."""
    output_dir.mkdir(parents=True, exist_ok=True)
    return execute(
        params,
        artifact_path=artifact_path,
        data_path=data_path,
        metrics_path=metrics_path,
        output_dir=output_dir,
        env={},
        rank=rank,
        world_size=world_size,
        artifact_sha256=params.artifact,
    )


def execute(
    params: EvalParams,
    *,
    artifact_path: Path,
    data_path: Path | None,
    output_dir: Path,
    env: Mapping[str, str],
    rank: int = 0,
    world_size: int = 1,
    metrics_path: Path | None = None,
    log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    artifact_sha256: str | None = None,
    candidate: Candidate | None = None,
) -> WorkloadResult:
    """Evaluate rank ``rank``'s shard; a bad artifact, data set or metric is the user's error.

    ``candidate`` replaces the board's runtime (tests plant bugs with it).
    """
    started = time.perf_counter()
    stop = should_stop or (lambda: False)
    try:
        settings = DeviceSettings.from_env(env)
        model = default_cache().get(artifact_path, settings, sha256=artifact_sha256, function=params.function)
        signature = model.signature
        out_name = params.output or (signature.output_names[0] if signature.output_names else None)
        if out_name is None or out_name not in signature.output_names:
            return WorkloadResult(
                Outcome.USER_ERROR,
                message=f"output {out_name!r} is not one of the model's: {', '.join(signature.output_names)}",
            )
        if candidate is None:

            def candidate(inputs: Mapping[str, np.ndarray]) -> Arrays:
                return as_computed_by(env, model.run(inputs, check=False))  # the sim board's fault model

        delay_s = _sim_delay_s(params, env)
        user_fns = _load_metrics(metrics_path, params.user_metrics) if metrics_path is not None else {}
        samples = _samples(params, signature, artifact_path, data_path, out_name, rank, world_size)
        tally = RankTally()
        outputs: list[np.ndarray] = []
        labels: list[Any] = []
        with (output_dir / SAMPLES_FILE).open("w") as records:
            for i, inputs, label, target in samples:
                if stop():
                    return WorkloadResult(Outcome.CANCELED, message=f"stopped after {tally.samples} samples")
                y = np.asarray(candidate(inputs)[out_name])
                if delay_s:
                    time.sleep(delay_s)
                try:
                    score = score_sample(i, inputs, y, label=label, target=target)
                except ValueError as exc:
                    raise InputMismatch(str(exc)) from None
                tally.add(score)
                records.write(json.dumps(score.to_record()) + "\n")
                if user_fns:
                    outputs.append(y.reshape(y.shape[1:]) if y.ndim and y.shape[0] == 1 else y)
                    labels.append(label if label is not None else target)
        user = _run_user_metrics(user_fns, outputs, labels)
        record = model.record().to_dict()
    except (RuntimeUnavailable, DeviceUnavailable) as exc:
        return WorkloadResult(Outcome.CONFIG_ERROR, message=exc.message)
    except FleetyardError as exc:  # bad artifact, data set or metric module, a failing kernel
        return WorkloadResult(Outcome.USER_ERROR, message=exc.message)

    result: dict[str, Any] = {
        "rank": rank,
        "world_size": world_size,
        "tally": tally.to_dict(),
        **tally.metrics(),
        "user": user,
        "output": out_name,
        "artifact": artifact_sha256,
        "dataset": {**params.dataset_record(), **({"kind": "parquet"} if data_path and is_parquet(data_path) else {})},
        "records": SAMPLES_FILE,
        "runtime": record,
        "board": board_record(env),
        "sim_latency_s_per_sample": delay_s,
        "elapsed_s": round(time.perf_counter() - started, 6),
    }
    (output_dir / EVAL_FILE).write_text(json.dumps(result, indent=2) + "\n")
    top1 = result["top1"]
    message = f"rank {rank}/{world_size}: {tally.samples} samples" + (f", top1 {top1:.4f}" if top1 is not None else "")
    if log is not None:
        log(message + "\n")
    return WorkloadResult(Outcome.SUCCESS, exit_code=0, message=message, result=result)


def _sim_delay_s(params: EvalParams, env: Mapping[str, str]) -> float:
    if not params.sim_latency_ms or "FLEETYARD_SIM_GENERATION" not in env:
        return 0.0
    factor = float(env.get("FLEETYARD_SIM_LATENCY_FACTOR", "1") or 1)
    return params.sim_latency_ms / 1000.0 * factor * time_scale()


Sample = tuple[int, Arrays, int | None, np.ndarray | None]


def _samples(
    params: EvalParams,
    signature: Signature,
    artifact_path: Path,
    data_path: Path | None,
    out_name: str,
    rank: int,
    world_size: int,
) -> Iterator[Sample]:
    if data_path is not None:
        if is_parquet(data_path):
            return _parquet_samples(data_path, signature, rank, world_size)
        return _npz_samples(data_path, signature, rank, world_size)
    assert params.generated is not None  # Invariant: exactly one data set.
    return _generated_samples(params.generated, signature, artifact_path, out_name, rank, world_size)


def _npz_samples(path: Path, signature: Signature, rank: int, world_size: int) -> Iterator[Sample]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise InputMismatch(f"the data set is not a readable .npz file: {exc}") from None
    labels = arrays.pop("labels", None)
    targets = arrays.pop("targets", None)
    if labels is None and targets is None:
        raise InputMismatch("the data set has neither labels nor targets (name an array 'labels' or 'targets')")
    if labels is not None and labels.dtype.kind not in "iub":
        raise InputMismatch(f"labels must be integers, not {labels.dtype}")
    names = list(signature.input_names)
    if len(arrays) == 1 and len(names) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputMismatch(
            f"the data set lacks input(s) {', '.join(map(repr, missing))}; it has {', '.join(arrays) or 'none'}",
            detail={"missing": missing},
        )
    lengths = {len(arrays[n]) for n in names} | {len(a) for a in (labels, targets) if a is not None}
    if len(lengths) != 1:
        raise InputMismatch(f"the data set's arrays disagree on the number of samples: {sorted(lengths)}")
    (n,) = lengths
    for i in shard_indices(n, rank, world_size):
        inputs = check_inputs(signature, {name: arrays[name][i : i + 1] for name in names})
        yield (
            i,
            inputs,
            None if labels is None else int(labels[i]),
            None if targets is None else np.asarray(targets[i]),
        )


def _parquet_samples(path: Path, signature: Signature, rank: int, world_size: int) -> Iterator[Sample]:
    names = list(signature.input_names)
    try:
        shard = read_shard(path, inputs=names, rank=rank, world_size=world_size)
    except ParquetError as exc:
        raise InputMismatch(str(exc)) from None
    labels = shard.columns.get("labels")
    targets = shard.columns.get("targets")
    if labels is not None and labels.dtype.kind not in "iub":
        raise InputMismatch(f"the labels column must hold integers, not {labels.dtype}")
    for j, i in enumerate(shard.rows):
        inputs = check_inputs(signature, {name: shard.columns[name][j : j + 1] for name in names})
        yield (
            i,
            inputs,
            None if labels is None else int(labels[j]),
            None if targets is None else np.asarray(targets[j]),
        )


_REFERENCE_FORMATS = {
    ArtifactFormat.ONNX: "onnxruntime",
    ArtifactFormat.TORCHSCRIPT: "torch",
    ArtifactFormat.TORCH_EXPORT: "torch",
}


def _generated_samples(
    gen: GeneratedData, signature: Signature, artifact_path: Path, out_name: str, rank: int, world_size: int
) -> Iterator[Sample]:
    from fleetyard.workloads.validate import _REFERENCES

    fmt = detect_format(artifact_path)
    kind = _REFERENCE_FORMATS.get(fmt)
    if kind is None:
        raise InputMismatch(
            f"a generated data set is labelled by a reference runtime, and a {fmt.value} artifact has none here; "
            "upload a data set (.npz with labels)"
        )
    reference = _REFERENCES[kind](artifact_path)
    for i in shard_indices(gen.n, rank, world_size):
        inputs = check_inputs(signature, generate_inputs(signature, seed=gen.seed + i))
        ref = np.asarray(reference(inputs)[out_name])
        if gen.classes is not None and (not ref.ndim or ref.shape[-1] != gen.classes):
            raise InputMismatch(
                f"generated.classes is {gen.classes} but output {out_name!r} has shape {list(ref.shape)}"
            )
        label = int(np.argmax(ref.reshape(-1, ref.shape[-1])[0])) if ref.ndim else None
        yield i, inputs, label, ref


def _load_metrics(path: Path, names: list[str]) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """The named functions of the metrics module (a file without a suffix, as a blob is)."""
    try:
        loader = importlib.machinery.SourceFileLoader("fleetyard_user_metrics", str(path))
        spec = importlib.util.spec_from_loader("fleetyard_user_metrics", loader)
        assert spec is not None  # Invariant: a loader always gives a spec.
        module: ModuleType = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except Exception as exc:
        raise InputMismatch(f"the metrics module failed to import: {type(exc).__name__}: {exc}") from None
    fns: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}
    for name in names:
        fn = getattr(module, name, None)
        if not callable(fn):
            raise InputMismatch(f"the metrics module defines no function {name!r}")
        fns[name] = fn
    return fns


def _run_user_metrics(
    fns: Mapping[str, Callable[[np.ndarray, np.ndarray], float]], outputs: list[np.ndarray], labels: list[Any]
) -> dict[str, dict[str, Any]]:
    if not fns:
        return {}
    if not outputs:
        return {name: {"value": None, "samples": 0} for name in fns}
    outs, labs = np.stack(outputs), np.stack([np.asarray(x) for x in labels])
    user: dict[str, dict[str, Any]] = {}
    for name, fn in fns.items():
        try:
            value = float(fn(outs, labs))
        except Exception as exc:
            raise InputMismatch(f"user metric {name} failed: {type(exc).__name__}: {exc}") from None
        user[name] = {"value": value, "samples": len(outputs)}
    return user
