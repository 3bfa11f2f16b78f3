"""The ``validate`` job kind: do a board's outputs match a reference, over many input sets?

Each input set (the sets of an inputs file, or generated with seeds ``seed .. seed +
input_sets - 1``) runs on the board's runtime through the warm session cache, the same path as
the ``run`` kind, so a sim board's fault model (silent corruption) applies. The reference is
either golden outputs (``expected``, paired with the inputs file set by set) or the format's own
runtime on the CPU on the same inputs (:func:`choose_reference`): ONNX Runtime with graph
optimisation off for ONNX, torch for TorchScript/ExportedProgram. Each set's
:class:`~fleetyard.validation.ComparisonReport` is folded into a
:class:`~fleetyard.validation.ComparisonAccumulator` and dropped: memory does not grow with sets.

What a result keeps, so that it can be re-run exactly (``fleetyard repro``): the artifact's
sha256, the runtime record, the board (serial, firmware, generation), the seeds and tolerances,
per output a histogram of |error| over every set in fixed decade bins (``error_histograms``),
and as blobs ``report.json``, ``report.html`` and the inputs, candidate and reference outputs of
one set (the first failing one, else set 0): ``inputs.npz``, ``candidate.npz``, ``reference.npz``.

A numerical mismatch is the user's error (DESIGN.md's outcome table): the rank ends USER_ERROR
with a message naming the worst output. With ``layerwise`` (ONNX only), the first failing set is
also localised node by node (:func:`~fleetyard.validation.localize.localize`).

:func:`validate_local` runs the same code in this process on this machine's CPU.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleetyard.domain.job import Outcome
from fleetyard.drivers.sim import as_computed_by
from fleetyard.errors import BadRequest, FleetyardError
from fleetyard.runtimes import (
    ArtifactFormat,
    DeviceSettings,
    DeviceUnavailable,
    ExecutionFailed,
    InputMismatch,
    RuntimeUnavailable,
    Signature,
    check_inputs,
    default_cache,
    detect_format,
)
from fleetyard.validation import ComparisonAccumulator, ComparisonReport, TolerancePolicy, compare_outputs, render_html
from fleetyard.validation.compare import encode_float
from fleetyard.validation.localize import Runner, localize, ort_runner, policy_check, runtime_runner
from fleetyard.workloads.admission import Registry, admit_artifact_job
from fleetyard.workloads.base import WorkloadContext, WorkloadResult, board_record, params_as
from fleetyard.workloads.run import SHA256
from fleetyard.workloads.tensors import generate_inputs, input_set_count, iter_array_sets, iter_input_sets, save_arrays

__all__ = ["ValidateParams", "ValidateWorkload", "execute", "validate_local"]

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
INPUTS_FILE = "inputs.npz"
CANDIDATE_FILE = "candidate.npz"
REFERENCE_FILE = "reference.npz"

Arrays = dict[str, np.ndarray]
Candidate = Callable[[Mapping[str, np.ndarray]], Arrays]
"""Runs one input set on the candidate side: {input: array} -> {output: array}."""


class ValidateParams(BaseModel):
    """Parameters of a ``validate`` job."""

    model_config = ConfigDict(extra="forbid")

    artifact: str = Field(pattern=SHA256, description="sha256 of a pushed artifact (ONNX, IREE .vmfb, torch .pt/.pt2)")
    inputs: str | None = Field(
        None, pattern=SHA256, description="sha256 of an .npz/.npy/JSON inputs blob (one or more sets); none: generate"
    )
    input_sets: int = Field(1, ge=1, le=1_000_000, description="generated sets, seeds seed .. seed+n-1")
    seed: int = Field(0, description="seed of the first generated set")
    expected: str | None = Field(
        None, pattern=SHA256, description="sha256 of an .npz of golden outputs, as many sets as the inputs file"
    )
    reference: Literal["onnxruntime", "torch"] | None = Field(
        None,
        description="reference runtime on the CPU without expected outputs: onnxruntime (ONNX, the default) or "
        "torch (TorchScript .pt / ExportedProgram .pt2, the default for them)",
    )
    atol: list[str] = Field(default_factory=list, description='"1e-5" (every output) or "name:1e-3"')
    rtol: list[str] = Field(default_factory=list, description='"1e-5" (every output) or "name:1e-3"')
    nan_equal: bool = Field(False, description="NaN against NaN counts as equal")
    layerwise: bool = Field(False, description="ONNX: localise the first failing set node by node")
    function: str | None = Field(None, description="IREE: the exported function to call")
    dims: dict[str, int] = Field(default_factory=dict, description="values of symbolic dimensions (default 1)")
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="per input [lo, hi) of generated values"
    )

    @field_validator("atol", "rtol")
    @classmethod
    def _parses(cls, v: list[str]) -> list[str]:
        try:
            TolerancePolicy.from_strings(v)
        except BadRequest as exc:
            raise ValueError(exc.message) from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ValidateParams:
        if self.expected is not None and self.reference is not None:
            raise ValueError("give expected outputs or a reference runtime, not both")
        if self.expected is not None and self.input_sets != 1:
            raise ValueError("golden outputs pair with an inputs file's sets; input_sets is for generated inputs")
        if self.inputs is not None and self.input_sets != 1:
            raise ValueError("an inputs file says how many sets it has; input_sets applies to generated inputs")
        return self

    def policy(self) -> TolerancePolicy:
        return TolerancePolicy.from_strings(self.atol, self.rtol, nan_equal=self.nan_equal)


class ValidateWorkload:
    """Runs :class:`ValidateParams` in the board's worker process."""

    kind: ClassVar[str] = "validate"
    params_model: ClassVar[type[BaseModel]] = ValidateParams

    @classmethod
    def blobs(cls, params: BaseModel) -> list[str]:
        p = params_as(params, ValidateParams)
        return [p.artifact] + [s for s in (p.inputs, p.expected) if s]

    @classmethod
    def admit(cls, params: BaseModel, registry: Registry) -> None:
        p = params_as(params, ValidateParams)
        admit_artifact_job(registry, artifact=p.artifact, function=p.function, inputs=p.inputs, expected=p.expected)

    def run(self, ctx: WorkloadContext) -> WorkloadResult:
        params = params_as(ctx.params, ValidateParams)
        return execute(
            params,
            artifact_path=ctx.blob(params.artifact),
            inputs_path=ctx.blob(params.inputs) if params.inputs else None,
            expected_path=ctx.blob(params.expected) if params.expected else None,
            output_dir=ctx.output_dir,
            env=ctx.env,
            log=ctx.log,
            should_stop=ctx.should_stop,
            artifact_sha256=params.artifact,
        )


def validate_local(
    params: ValidateParams,
    *,
    artifact_path: Path,
    inputs_path: Path | None,
    expected_path: Path | None,
    output_dir: Path,
) -> WorkloadResult:
    """Validate here, on this machine's CPU, with no server: the desk loop."""
    output_dir.mkdir(parents=True, exist_ok=True)
    return execute(
        params,
        artifact_path=artifact_path,
        inputs_path=inputs_path,
        expected_path=expected_path,
        output_dir=output_dir,
        env={},
    )


def execute(
    params: ValidateParams,
    *,
    artifact_path: Path,
    inputs_path: Path | None,
    expected_path: Path | None,
    output_dir: Path,
    env: Mapping[str, str],
    log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    artifact_sha256: str | None = None,
    candidate: Candidate | None = None,
    layerwise_candidate: Runner | None = None,
) -> WorkloadResult:
    """Run every input set on the candidate and the reference, compare, report.

    ``candidate`` and ``layerwise_candidate`` replace the board's runtime (tests plant bugs
    with them); by default both are the board's runtime with its fault model applied.
    """
    try:
        fmt = detect_format(artifact_path)
        reference_kind, refusal = choose_reference(fmt, params)
        if refusal is not None:
            return WorkloadResult(Outcome.CONFIG_ERROR, message=refusal)
        if params.layerwise and fmt is not ArtifactFormat.ONNX:
            return WorkloadResult(
                Outcome.CONFIG_ERROR, message=f"layer-wise localisation is for ONNX artifacts, not {fmt.value}"
            )
        policy = params.policy()
        settings = DeviceSettings.from_env(env)
        model = default_cache().get(artifact_path, settings, sha256=artifact_sha256, function=params.function)
        signature = model.signature
        record = model.record().to_dict()
        if candidate is None:

            def candidate(inputs: Mapping[str, np.ndarray]) -> Arrays:
                return as_computed_by(env, model.run(inputs, check=False))  # the sim board's fault model

        total = input_set_count(inputs_path) if inputs_path is not None else params.input_sets
        expected = _expected_sets(expected_path, signature, total) if expected_path is not None else None
        reference = _REFERENCES[reference_kind](artifact_path) if reference_kind != "expected" else None
        acc = ComparisonAccumulator()
        histograms: dict[str, dict[str, Any]] = {}
        first_fail: int | None = None
        failing_sets = 0  # sets where any output failed or was missing
        fail_report: ComparisonReport | None = None
        saved_report: ComparisonReport | None = None
        failed_inputs: Arrays | None = None
        for i, inputs in enumerate(_input_sets(params, signature, inputs_path)):
            if should_stop is not None and should_stop():
                return WorkloadResult(Outcome.CANCELED, message=f"stopped after {i} of {total} sets")
            actual = candidate(inputs)
            ref = next(expected) if expected is not None else _run_reference(reference, inputs)
            report = compare_outputs(actual, ref, policy)
            acc.add(report)
            _fold_histograms(histograms, report, actual, ref)
            failing_sets += not report.passed
            # One set's arrays are kept as blobs: set 0, replaced by the first failing set.
            if i == 0 or (first_fail is None and not report.passed):
                save_arrays(output_dir / INPUTS_FILE, inputs)
                save_arrays(output_dir / CANDIDATE_FILE, actual)
                save_arrays(output_dir / REFERENCE_FILE, ref)
                saved_report = report
            if first_fail is None and not report.passed:
                first_fail, fail_report, failed_inputs = i, report, inputs
    except (RuntimeUnavailable, DeviceUnavailable) as exc:
        return WorkloadResult(Outcome.CONFIG_ERROR, message=exc.message)
    except FleetyardError as exc:  # bad artifact, wrong inputs or goldens, a failing kernel
        return WorkloadResult(Outcome.USER_ERROR, message=exc.message)

    layerwise: dict[str, Any] | None = None
    if params.layerwise and failed_inputs is not None:
        run_candidate = layerwise_candidate or _faulty(runtime_runner(settings), env)
        try:
            loc = localize(
                artifact_path,
                failed_inputs,
                run_candidate=run_candidate,
                run_reference=ort_runner("disable"),
                check=policy_check(policy),
            )
            layerwise = loc.to_dict()
        except FleetyardError as exc:
            layerwise = {"error": exc.message}

    agg = acc.to_json()
    worst = _worst(agg)
    result: dict[str, Any] = {
        "passed": failing_sets == 0,
        "sets": acc.sets,
        "failing_sets": failing_sets,
        "first_failing_set": first_fail,
        "saved_set": first_fail if first_fail is not None else 0,
        "worst_output": worst[0],
        "worst_max_abs": worst[1],
        "comparison": agg,
        "error_histograms": histograms,
        "failing_report": None if fail_report is None else fail_report.to_json(),
        "layerwise": layerwise,
        "tolerances": {"atol": list(params.atol), "rtol": list(params.rtol), "nan_equal": params.nan_equal},
        "reference": _reference_record(params, reference_kind),
        "artifact": artifact_sha256,
        "runtime": record,
        "board": board_record(env),
        "inputs_generated": inputs_path is None,
        "seeds": None if inputs_path is not None else [params.seed, params.seed + params.input_sets - 1],
    }
    (output_dir / REPORT_JSON).write_text(json.dumps(result, indent=2, allow_nan=False))
    shown = fail_report or saved_report
    if shown is not None:
        (output_dir / REPORT_HTML).write_text(render_html(shown))
    if failing_sets == 0:
        message = f"all {acc.sets} input set(s) within tolerance"
        if log is not None:
            log(message + "\n")
        return WorkloadResult(Outcome.SUCCESS, exit_code=0, message=message, result=result)
    message = f"numerical mismatch: {failing_sets} of {acc.sets} sets failed"
    if worst[0] is not None:
        message += f"; worst output {worst[0]} max abs err {worst[1]}"
    if layerwise is not None and "summary" in layerwise:
        message += f"; {layerwise['summary']}"
    if log is not None:
        log(message + "\n")
    return WorkloadResult(Outcome.USER_ERROR, exit_code=1, message=message, result=result)


# |actual - reference| per output over every set, in fixed decade bins: bin 0 is [0, 1e-12),
# bin k is [ERROR_EDGES[k-1], ERROR_EDGES[k]), the last is [1e3, inf); ``zero`` counts the exact
# zeros (also in bin 0), ``nonfinite`` the NaN/inf differences (in no bin). Bounded: 17 counts an
# output, at most MAX_HISTOGRAM_OUTPUTS outputs, whatever the sets or the tensors' sizes.
ERROR_EDGES: tuple[float, ...] = tuple(10.0**k for k in range(-12, 4))
MAX_HISTOGRAM_OUTPUTS = 64


def _fold_histograms(
    histograms: dict[str, dict[str, Any]], report: ComparisonReport, actual: Arrays, ref: Arrays
) -> None:
    """Add one set's absolute errors to each compared output's histogram (the dashboard draws them)."""
    for o in report.outputs:
        if o.message is not None or o.size == 0 or o.name not in actual or o.name not in ref:
            continue  # a shape or dtype mismatch has no element-wise errors
        h = histograms.get(o.name)
        if h is None:
            if len(histograms) >= MAX_HISTOGRAM_OUTPUTS:
                continue
            h = histograms[o.name] = {"tolerance": o.tolerance.to_dict(), "edges": list(ERROR_EDGES),
                                      "counts": [0] * (len(ERROR_EDGES) + 1), "zero": 0, "nonfinite": 0,
                                      "elements": 0}  # fmt: skip
        a, r = np.asarray(actual[o.name]), np.asarray(ref[o.name])
        if a.dtype.kind not in "fiub" or r.dtype.kind not in "fiub":
            continue
        with np.errstate(all="ignore"):
            err = np.abs(a.astype(np.float64).reshape(-1) - r.astype(np.float64).reshape(-1))
        finite = err[np.isfinite(err)]
        h["elements"] += int(err.size)
        h["nonfinite"] += int(err.size - finite.size)
        h["zero"] += int(np.count_nonzero(finite == 0.0))
        bins = np.bincount(np.searchsorted(ERROR_EDGES, finite, side="right"), minlength=len(ERROR_EDGES) + 1)
        h["counts"] = [int(c) + int(n) for c, n in zip(h["counts"], bins.tolist(), strict=True)]


def _input_sets(params: ValidateParams, signature: Signature, inputs_path: Path | None) -> Iterator[Arrays]:
    """One set at a time, so memory stays that of one set."""
    if inputs_path is not None:
        yield from iter_input_sets(inputs_path, signature)
        return
    for i in range(params.input_sets):
        inputs = generate_inputs(signature, seed=params.seed + i, ranges=params.ranges, dims=params.dims)
        yield check_inputs(signature, inputs)


def _expected_sets(path: Path, signature: Signature, want: int) -> Iterator[Arrays]:
    """Golden outputs set by set, as many sets as the inputs file has (one for generated inputs)."""
    have = input_set_count(path)
    if have != want:
        raise InputMismatch(
            f"the golden outputs file has {have} set(s) but there are {want} input set(s); give one golden set per "
            "input set (an .npz keyed SET/name for several)",
            detail={"expected_sets": have, "input_sets": want},
        )
    for arrays in iter_array_sets(path):
        yield _named_outputs(arrays, signature)


def _named_outputs(arrays: Arrays, signature: Signature) -> Arrays:
    """Golden outputs keyed by output name; one array for a one-output model needs no name."""
    names = list(signature.output_names)
    if len(arrays) == 1 and len(names) == 1:
        (value,) = arrays.values()
        return {names[0]: value}
    unknown = [n for n in arrays if n not in names]
    if unknown:
        raise InputMismatch(
            f"expected outputs name unknown output(s) {', '.join(map(repr, unknown))}; "
            f"the model returns {', '.join(names) or 'none'}",
            detail={"unknown": unknown, "expected": names},
        )
    return arrays


ReferenceKind = Literal["onnxruntime", "torch", "expected"]
_TORCH_FORMATS = (ArtifactFormat.TORCHSCRIPT, ArtifactFormat.TORCH_EXPORT)


def choose_reference(fmt: ArtifactFormat, params: ValidateParams) -> tuple[ReferenceKind, str | None]:
    """What the board's outputs are compared with, or why no reference fits (a config error):
    golden outputs when given, else the asked runtime, else the format's own runtime on the CPU
    (onnxruntime for ONNX, torch for .pt/.pt2; an IREE module has none and needs goldens)."""
    if params.expected is not None:
        return "expected", None
    own: ReferenceKind | None = (
        "onnxruntime" if fmt is ArtifactFormat.ONNX else "torch" if fmt in _TORCH_FORMATS else None
    )
    if own is None:
        return "expected", (
            f"a {fmt.value} artifact has no reference runtime here (onnxruntime runs ONNX, torch runs .pt/.pt2); "
            "pass expected outputs (--expected OUT.npz)"
        )
    if params.reference is not None and params.reference != own:
        return own, (
            f"the {params.reference} reference does not run {fmt.value} artifacts; use --reference {own} "
            "(the default for them) or pass expected outputs (--expected OUT.npz)"
        )
    return own, None


def _ort_reference(path: Path) -> Candidate:
    """ONNX Runtime on the CPU with graph optimisation off: one session for every set."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExecutionFailed(f"the onnxruntime reference could not load the artifact: {exc}") from None
    names = [o.name for o in session.get_outputs()]

    def run(inputs: Mapping[str, np.ndarray]) -> Arrays:
        try:
            outputs = session.run(names, dict(inputs))
        except Exception as exc:
            raise ExecutionFailed(f"the onnxruntime reference failed: {exc}") from None
        return {n: np.asarray(v) for n, v in zip(names, outputs, strict=True)}

    return run


def _torch_reference(path: Path) -> Candidate:
    """torch on the CPU: a fresh load of its own (not the board's cached session), one for every set."""
    from fleetyard.runtimes.torch_runtime import TorchRuntime

    try:
        model = TorchRuntime().load(path, DeviceSettings(kind="cpu"))
    except (RuntimeUnavailable, DeviceUnavailable):
        raise
    except FleetyardError as exc:
        raise ExecutionFailed(f"the torch reference could not load the artifact: {exc.message}") from None

    def run(inputs: Mapping[str, np.ndarray]) -> Arrays:
        try:
            return model.run(inputs, check=False)
        except FleetyardError as exc:
            raise ExecutionFailed(f"the torch reference failed: {exc.message}") from None

    return run


_REFERENCES: dict[str, Callable[[Path], Candidate]] = {"onnxruntime": _ort_reference, "torch": _torch_reference}


def _run_reference(reference: Candidate | None, inputs: Mapping[str, np.ndarray]) -> Arrays:
    assert reference is not None  # Invariant: there is a reference runtime whenever no goldens were given.
    return reference(inputs)


def _faulty(runner: Runner, env: Mapping[str, str]) -> Runner:
    """The board's runner for localisation, with the sim fault model on every exposed tensor."""

    def run(model: Any, inputs: Mapping[str, np.ndarray]) -> Arrays:
        return as_computed_by(env, runner(model, inputs))

    return run


def _reference_record(params: ValidateParams, kind: ReferenceKind) -> dict[str, Any]:
    if kind == "expected":
        return {"kind": "expected", "expected": params.expected}
    if kind == "torch":
        from fleetyard.runtimes.torch_runtime import TorchRuntime

        return {"kind": "torch", "version": TorchRuntime().version(), "device": "cpu"}
    import onnxruntime as ort

    return {
        "kind": "onnxruntime",
        "version": ort.__version__,
        "provider": "CPUExecutionProvider",
        "graph_optimization": "disable",
    }


def _worst(agg: Mapping[str, Any]) -> tuple[str | None, float | str | None]:
    """The failing output with the largest max abs error (else the largest overall), and that error."""
    outputs = list(agg.get("outputs", []))
    failing = [o for o in outputs if not o["passed"]] or outputs
    if not failing:
        missing = list(agg.get("missing", {}))
        return (missing[0], None) if missing else (None, None)

    def key(o: Mapping[str, Any]) -> float:
        v = o.get("max_abs")
        if v is None:
            return float("inf") if not o["passed"] else -1.0
        return float(v) if not isinstance(v, str) else float("inf")

    o = max(failing, key=key)
    return o["name"], encode_float(None if o.get("max_abs") is None else float(o["max_abs"]))
