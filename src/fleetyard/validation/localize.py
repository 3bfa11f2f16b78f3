"""Layer-wise localisation: the first node of an ONNX graph whose output diverges from a reference.

Both sides run the model with every intermediate tensor exposed as a graph output
(:func:`~fleetyard.validation.onnx_graph.expose_all`); each node's outputs are then compared in
topological order. The first node whose output fails the check is the answer, with its inputs'
errors alongside: inputs that agree and outputs that do not mean the divergence starts at that
node; the nodes after it mostly inherit it (the table says which).

Fusion: a runtime cannot fuse a node away when its output is a graph output (ONNX Runtime's
fusions skip such nodes), so exposing every tensor makes the comparison per original node, at
the cost of running the unfused graph. The default reference also turns graph optimisation off.

The pass/fail rule is a :data:`Check` (actual, reference -> within tolerance?); by default
:func:`policy_check`, the comparison semantics of :mod:`fleetyard.validation.compare` with the
dtype-aware default tolerances.
All intermediates of one run are held in memory at once.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from fleetyard.runtimes.base import DeviceSettings
from fleetyard.runtimes.errors import ExecutionFailed, InputMismatch
from fleetyard.validation.compare import compare_arrays
from fleetyard.validation.onnx_graph import expose_all, load_model, node_inputs, node_label, topological_nodes
from fleetyard.validation.tolerances import TolerancePolicy

__all__ = [
    "Check",
    "LocalizationReport",
    "NodeResult",
    "Runner",
    "TensorError",
    "allclose_check",
    "localize",
    "ort_runner",
    "policy_check",
    "runtime_runner",
]

Check = Callable[[np.ndarray, np.ndarray], bool]
"""(actual, reference) -> True when ``actual`` is within tolerance of ``reference``."""

Runner = Callable[[onnx.ModelProto, Mapping[str, np.ndarray]], dict[str, np.ndarray]]
"""Runs a model on some runtime: (model, {input: array}) -> {output: array}."""

Optimization = Literal["disable", "basic", "extended", "all"]


def policy_check(policy: TolerancePolicy | None = None) -> Check:
    """Within tolerance as :func:`~fleetyard.validation.compare.compare_arrays` judges it, with the
    tolerance ``policy`` resolves for the tensor's dtype (dtype-aware defaults when None)."""
    pol = policy or TolerancePolicy()

    def check(actual: np.ndarray, reference: np.ndarray) -> bool:
        e = np.asarray(reference)
        tol = pol.for_output("", e.dtype.name)
        return compare_arrays("", np.asarray(actual), e, tol, topk=()).passed

    return check


def allclose_check(atol: float = 1e-5, rtol: float = 1e-5, *, equal_nan: bool = True) -> Check:
    """Fails an element when ``|a - e| > atol + rtol * |e|`` (shapes must match; non-float
    tensors must be equal): numpy's ``allclose``, for callers that want exactly that."""

    def check(actual: np.ndarray, reference: np.ndarray) -> bool:
        a, e = np.asarray(actual), np.asarray(reference)
        if a.shape != e.shape:
            return False
        if not (_is_float(a) and _is_float(e)):
            return bool(np.array_equal(a, e))
        return bool(np.allclose(a, e, atol=atol, rtol=rtol, equal_nan=equal_nan))

    return check


def _is_float(a: np.ndarray) -> bool:
    return a.dtype.kind in "fc"


def ort_runner(optimization: Optimization = "all", *, providers: list[Any] | None = None) -> Runner:
    """A runner through ONNX Runtime (CPU by default) with the given graph optimisation level."""

    def run(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = levels[optimization]
        try:
            session = ort.InferenceSession(
                model.SerializeToString(), sess_options=so, providers=providers or ["CPUExecutionProvider"]
            )
            names = [o.name for o in session.get_outputs()]
            outputs = session.run(names, dict(inputs))
        except Exception as exc:
            raise ExecutionFailed(f"onnxruntime failed on {model.graph.name or 'the model'}: {exc}") from None
        return dict(zip(names, outputs, strict=True))

    return run


def runtime_runner(settings: DeviceSettings | None = None) -> Runner:
    """A runner through Fleetyard's ONNX runtime on a board's device (what a workload's candidate
    side uses: the board's provider, fail-closed CPU fallback). Each call loads a fresh session."""
    from fleetyard.runtimes.onnx_runtime import OnnxRuntime

    where = settings or DeviceSettings.from_env()

    def run(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="fleetyard-localize-") as tmp:
            path = Path(tmp) / "model.onnx"
            onnx.save(model, str(path))
            loaded = OnnxRuntime().load(path, where)
            try:
                return loaded.run(inputs)
            finally:
                loaded.release()

    return run


@dataclass(frozen=True)
class TensorError:
    """How far one tensor is from its reference. ``passed`` is None when it was not compared
    (``note`` says why): a constant, or a tensor one side did not return."""

    name: str
    passed: bool | None
    max_abs: float | None = None
    max_rel: float | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "max_abs": _json_float(self.max_abs),
            "max_rel": _json_float(self.max_rel),
            "shape": None if self.shape is None else list(self.shape),
            "dtype": self.dtype,
            "note": self.note,
        }


def _json_float(x: float | None) -> float | str | None:
    if x is None or math.isfinite(x):
        return x
    return str(x)  # "nan", "inf": JSON has no spelling for them


def tensor_error(name: str, actual: np.ndarray, reference: np.ndarray, check: Check) -> TensorError:
    a, e = np.asarray(actual), np.asarray(reference)
    if a.shape != e.shape:
        return TensorError(
            name, False, shape=tuple(e.shape), dtype=str(e.dtype), note=f"shape {a.shape} != reference {e.shape}"
        )
    passed = bool(check(a, e))
    max_abs = max_rel = None
    if a.size and a.dtype.kind in "biufc" and e.dtype.kind in "biufc":
        with np.errstate(all="ignore"):
            diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
            rel = diff / np.maximum(np.abs(e.astype(np.float64)), np.finfo(np.float64).tiny)
            both_nan = np.isnan(a.astype(np.float64)) & np.isnan(e.astype(np.float64))
            diff[both_nan] = 0.0
            rel[both_nan | (diff == 0)] = 0.0
        max_abs, max_rel = float(np.max(diff)), float(np.max(rel))
    elif a.size == 0:
        max_abs = max_rel = 0.0
    return TensorError(name, passed, max_abs, max_rel, tuple(e.shape), str(e.dtype))


Origin = Literal["here", "inherited"]


@dataclass(frozen=True)
class NodeResult:
    """One node's comparison. ``origin`` (for a node that fails) is ``here`` when every compared
    input agrees (the divergence starts at this node), ``inherited`` when an input already
    diverged."""

    index: int  # position in topological order
    name: str
    op_type: str
    inputs: tuple[TensorError, ...]
    outputs: tuple[TensorError, ...]

    @property
    def passed(self) -> bool:
        return all(t.passed is not False for t in self.outputs)

    @property
    def origin(self) -> Origin | None:
        if self.passed:
            return None
        return "inherited" if any(t.passed is False for t in self.inputs) else "here"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "op_type": self.op_type,
            "passed": self.passed,
            "origin": self.origin,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


@dataclass(frozen=True)
class LocalizationReport:
    """Every node's comparison in topological order, and the first that diverges (None: none)."""

    nodes: tuple[NodeResult, ...]
    first_divergent: NodeResult | None
    notes: tuple[str, ...] = ()
    outputs: tuple[TensorError, ...] = field(default=())  # the model's own outputs

    @property
    def passed(self) -> bool:
        return self.first_divergent is None

    def summary(self) -> str:
        if self.first_divergent is None:
            return f"all {len(self.nodes)} nodes agree with the reference"
        n = self.first_divergent
        worst = max((t for t in n.outputs if t.passed is False), key=lambda t: t.max_abs or 0.0)
        inputs = "its inputs agree" if n.origin == "here" else "an input already diverged"
        return (
            f"first divergent node: {n.name} ({n.op_type}, #{n.index} of {len(self.nodes)}); output {worst.name} "
            f"max abs error {worst.max_abs}, max rel error {worst.max_rel}; {inputs}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "first_divergent": None if self.first_divergent is None else self.first_divergent.to_dict(),
            "summary": self.summary(),
            "nodes": [n.to_dict() for n in self.nodes],
            "outputs": [t.to_dict() for t in self.outputs],
            "notes": list(self.notes),
        }


def check_model_inputs(model: onnx.ModelProto, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The feeds as arrays; InputMismatch listing expected against given when names differ."""
    inits = {t.name for t in model.graph.initializer}
    expected = [i.name for i in model.graph.input if i.name not in inits]
    optional = [i.name for i in model.graph.input if i.name in inits]  # overridable initializers
    given = list(inputs)
    missing = [n for n in expected if n not in inputs]
    unknown = [n for n in given if n not in expected and n not in optional]
    if missing or unknown:
        raise InputMismatch(
            f"inputs do not match the model: expected {expected}, given {given}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else ""),
            detail={"expected": expected, "given": given},
        )
    return {k: np.asarray(v) for k, v in inputs.items()}


def localize(
    model: onnx.ModelProto | Path | str | bytes,
    inputs: Mapping[str, np.ndarray],
    *,
    run_candidate: Runner | None = None,
    run_reference: Runner | None = None,
    check: Check | None = None,
) -> LocalizationReport:
    """Run ``model`` with every intermediate exposed on the candidate and the reference, compare
    node by node in topological order, and report the first node whose output fails ``check``.

    Defaults: the candidate is ONNX Runtime on the CPU with full graph optimisation, the
    reference ONNX Runtime on the CPU with none; ``check`` is :func:`policy_check`.
    """
    base = load_model(model)
    feeds = check_model_inputs(base, inputs)
    check = check or policy_check()
    run_candidate = run_candidate or ort_runner("all")
    run_reference = run_reference or ort_runner("disable")
    exposed_model, _exposed, notes = expose_all(base)
    notes = [
        *notes,
        "every intermediate tensor is a graph output, so no runtime fuses a node away: one row per original node",
    ]
    reference = run_reference(exposed_model, feeds)
    candidate = run_candidate(exposed_model, feeds)

    errors: dict[str, TensorError] = {}
    inits = {t.name for t in base.graph.initializer}

    def error_of(name: str) -> TensorError:
        if name in errors:
            return errors[name]
        if name in feeds:
            err = TensorError(name, True, 0.0, 0.0, tuple(feeds[name].shape), str(feeds[name].dtype), "model input")
        elif name in inits:
            err = TensorError(name, None, note="initializer (not compared)")
        elif name not in reference:
            err = TensorError(name, None, note="the reference did not return it")
        elif name not in candidate:
            err = TensorError(name, None, note="the candidate did not return it")
        else:
            err = tensor_error(name, candidate[name], reference[name], check)
        errors[name] = err
        return err

    results: list[NodeResult] = []
    first: NodeResult | None = None
    for i, node in enumerate(topological_nodes(base)):
        result = NodeResult(
            index=i,
            name=node_label(node, i),
            op_type=node.op_type,
            inputs=tuple(error_of(x) for x in node_inputs(node)),
            outputs=tuple(error_of(x) for x in node.output if x),
        )
        results.append(result)
        if first is None and not result.passed:
            first = result
    outputs = tuple(error_of(o.name) for o in base.graph.output)
    return LocalizationReport(nodes=tuple(results), first_divergent=first, notes=tuple(notes), outputs=outputs)
