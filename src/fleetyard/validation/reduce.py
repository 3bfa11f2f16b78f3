"""Reduce an ONNX model to the smallest subgraph that still fails a check (like ``polygraphy debug reduce``).

The check is the user's: :func:`tolerance_check` (candidate against reference on the subgraph) or
:func:`command_check` (a command's exit code). Every subgraph is fed the reference's values of
the tensors it reads but does not make, so a subgraph cut from the middle of the model sees what
the full model would have given it.

The search, over the nodes in topological order:

1. the shortest failing prefix (bisection over where the model ends);
2. the shortest failing window ending there (bisection over where it starts);
3. a greedy shrink: drop single nodes while it still fails (1-minimal, as delta debugging ends).

Only what was actually checked is kept: the smallest failing subgraph did fail, the largest
passing did pass. Besides those found on the way, the model without the smallest failing nodes
is checked: when it passes, the failure lives in those nodes alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from fleetyard.errors import BadRequest
from fleetyard.runtimes.errors import ExecutionFailed
from fleetyard.validation.localize import Check, Runner, check_model_inputs, ort_runner, policy_check
from fleetyard.validation.onnx_graph import (
    expose_all,
    load_model,
    node_label,
    subgraph,
    tensor_types,
    topological_nodes,
)

__all__ = [
    "ENV_INPUTS",
    "ENV_MODEL",
    "FailCheck",
    "NothingToReduce",
    "ReduceResult",
    "command_check",
    "reduce",
    "tolerance_check",
]

FailCheck = Callable[[onnx.ModelProto, dict[str, np.ndarray]], bool]
"""(subgraph model, its inputs) -> True when it FAILS (the bug is still there)."""

ENV_MODEL = "FLEETYARD_REDUCE_MODEL"
ENV_INPUTS = "FLEETYARD_REDUCE_INPUTS"


class NothingToReduce(BadRequest):
    """The whole model passes the check: there is no failure to reduce."""

    code = "nothing_to_reduce"


def tolerance_check(
    *, run_candidate: Runner | None = None, run_reference: Runner | None = None, check: Check | None = None
) -> FailCheck:
    """Fails when any output of the candidate's run is outside ``check`` of the reference's, or
    the candidate cannot run the subgraph. Defaults as in :func:`~fleetyard.validation.localize.localize`."""
    candidate = run_candidate or ort_runner("all")
    reference = run_reference or ort_runner("disable")
    within = check or policy_check()

    def fails(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> bool:
        expected = reference(model, inputs)
        try:
            actual = candidate(model, inputs)
        except ExecutionFailed:
            return True
        return any(name not in actual or not within(actual[name], ref) for name, ref in expected.items())

    return fails


def command_check(
    argv: Sequence[str], *, timeout: float | None = None, env: Mapping[str, str] | None = None
) -> FailCheck:
    """Fails when the command exits non-zero (or runs past ``timeout`` seconds: a hang fails).

    The subgraph is written to a temporary ``model.onnx`` and its inputs to ``inputs.npz``; their
    paths are in ``$FLEETYARD_REDUCE_MODEL`` and ``$FLEETYARD_REDUCE_INPUTS``, and replace
    ``{model}`` and ``{inputs}`` in ``argv``. Without a ``{model}`` placeholder the model's path is
    appended as the last argument.
    """
    if not argv:
        raise ValueError("command_check needs a command")
    args = list(argv)

    def fails(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> bool:
        with tempfile.TemporaryDirectory(prefix="fleetyard-reduce-") as tmp:
            model_path, inputs_path = Path(tmp) / "model.onnx", Path(tmp) / "inputs.npz"
            onnx.save(model, str(model_path))
            _savez(inputs_path, inputs)
            cmd = [a.replace("{model}", str(model_path)).replace("{inputs}", str(inputs_path)) for a in args]
            if not any("{model}" in a for a in args):
                cmd.append(str(model_path))
            run_env = {**os.environ, **(env or {}), ENV_MODEL: str(model_path), ENV_INPUTS: str(inputs_path)}
            try:
                done = subprocess.run(cmd, env=run_env, timeout=timeout, capture_output=True, check=False)
            except subprocess.TimeoutExpired:
                return True
            return done.returncode != 0

    return fails


def _savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    named: dict[str, Any] = dict(arrays)  # typed Any: savez's own keywords (allow_pickle) share the namespace
    np.savez(path, **named)


@dataclass
class ReduceResult:
    """The smallest failing and the largest passing subgraphs found, with the inputs each was fed."""

    smallest_failing: onnx.ModelProto
    smallest_failing_nodes: tuple[str, ...]
    smallest_failing_inputs: dict[str, np.ndarray]
    largest_passing: onnx.ModelProto | None
    largest_passing_nodes: tuple[str, ...]
    largest_passing_inputs: dict[str, np.ndarray]
    total_nodes: int
    checks: int
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_nodes": self.total_nodes,
            "checks": self.checks,
            "smallest_failing": {
                "node_count": len(self.smallest_failing_nodes),
                "nodes": list(self.smallest_failing_nodes),
                "inputs": sorted(self.smallest_failing_inputs),
            },
            "largest_passing": None
            if self.largest_passing is None
            else {
                "node_count": len(self.largest_passing_nodes),
                "nodes": list(self.largest_passing_nodes),
                "inputs": sorted(self.largest_passing_inputs),
            },
            "notes": list(self.notes),
        }

    def save(self, directory: Path | str) -> dict[str, Path]:
        """Write ``smallest_failing.onnx`` (+ ``_inputs.npz``), ``largest_passing.onnx`` (+ inputs)
        when one passed, and ``summary.json``; returns what was written."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        pairs = [("smallest_failing", self.smallest_failing, self.smallest_failing_inputs)]
        if self.largest_passing is not None:
            pairs.append(("largest_passing", self.largest_passing, self.largest_passing_inputs))
        for stem, model, inputs in pairs:
            written[stem] = out / f"{stem}.onnx"
            onnx.save(model, str(written[stem]))
            written[f"{stem}_inputs"] = out / f"{stem}_inputs.npz"
            _savez(written[f"{stem}_inputs"], inputs)
        written["summary"] = out / "summary.json"
        written["summary"].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return written


class _Search:
    """Checks node sets (cached), remembering the smallest failing and largest passing."""

    def __init__(
        self, model: onnx.ModelProto, values: dict[str, np.ndarray], fails: FailCheck, max_checks: int
    ) -> None:
        self.model = model
        self.values = values
        self.fails = fails
        self.max_checks = max_checks
        self.types = tensor_types(model)
        self.cache: dict[frozenset[int], bool] = {}
        self.built: dict[frozenset[int], tuple[onnx.ModelProto, dict[str, np.ndarray]]] = {}
        self.smallest: frozenset[int] | None = None
        self.largest_pass: frozenset[int] | None = None

    @property
    def exhausted(self) -> bool:
        return len(self.cache) >= self.max_checks

    def build(self, nodes: frozenset[int]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        sub = subgraph(self.model, nodes, values=self.values, types=self.types)
        feeds = {vi.name: self.values[vi.name] for vi in sub.graph.input}
        return sub, feeds

    def check(self, nodes: Iterable[int]) -> bool:
        key = frozenset(nodes)
        if key in self.cache:
            return self.cache[key]
        sub, feeds = self.build(key)
        failed = bool(self.fails(sub, feeds))
        self.cache[key] = failed
        self.built[key] = (sub, feeds)
        if failed and (self.smallest is None or len(key) <= len(self.smallest)):
            self.smallest = key
        if not failed and (self.largest_pass is None or len(key) > len(self.largest_pass)):
            self.largest_pass = key
        return failed


def reduce(
    model: onnx.ModelProto | Path | str | bytes,
    inputs: Mapping[str, np.ndarray],
    *,
    check_fails: FailCheck,
    run_reference: Runner | None = None,
    minimize: bool = True,
    max_checks: int = 500,
) -> ReduceResult:
    """The smallest subgraph of ``model`` that still fails ``check_fails``, and the largest that passes.

    ``run_reference`` (default: ONNX Runtime on the CPU, no graph optimisation) gives the values
    fed to subgraph inputs. ``minimize`` adds the greedy single-node shrink after the bisections;
    ``max_checks`` bounds the number of distinct subgraphs checked. NothingToReduce when the whole
    model passes.
    """
    base = load_model(model)
    feeds = check_model_inputs(base, inputs)
    ordered = topological_nodes(base)
    n = len(ordered)
    exposed, _names, _notes = expose_all(base)
    values = {**(run_reference or ort_runner("disable"))(exposed, feeds), **feeds}
    search = _Search(base, values, check_fails, max_checks)
    notes: list[str] = []

    if not search.check(range(n)):
        raise NothingToReduce(
            f"the whole model ({n} nodes) passes the check; there is no failure to reduce",
            detail={"nodes": n},
        )
    # 1. The shortest failing prefix nodes[0..end].
    lo, hi = 0, n - 1
    while lo < hi and not search.exhausted:
        mid = (lo + hi) // 2
        if search.check(range(mid + 1)):
            hi = mid
        else:
            lo = mid + 1
    end = hi
    if end > 0:
        search.check(range(end))  # the largest passing prefix, when bisection skipped it
    # 2. The shortest failing window nodes[start..end].
    lo, hi = 0, end
    while lo < hi and not search.exhausted:
        mid = (lo + hi + 1) // 2
        if search.check(range(mid, end + 1)):
            lo = mid
        else:
            hi = mid - 1
    current = sorted(range(lo, end + 1)) if search.check(range(lo, end + 1)) else sorted(range(end + 1))
    # 3. Drop single nodes while it still fails, until none can go.
    changed = minimize
    while changed and len(current) > 1 and not search.exhausted:
        changed = False
        for i in reversed(current):
            trial = [j for j in current if j != i]
            if search.check(trial):
                current, changed = trial, True
                break
    if search.exhausted:
        notes.append(f"stopped after {max_checks} checks; the result may not be minimal")
    assert search.smallest is not None  # the whole model failed
    smallest = search.smallest
    rest = [i for i in range(n) if i not in smallest]
    if rest and not search.exhausted and search.check(rest):
        notes.append("the model without the smallest failing nodes still fails: there is more than one failure")
    elif rest and search.cache.get(frozenset(rest)) is False:
        notes.append("the model without the smallest failing nodes passes: the failure lives in those nodes alone")

    def names(key: frozenset[int] | None) -> tuple[str, ...]:
        return tuple(node_label(ordered[i], i) for i in sorted(key or ()))

    fail_model, fail_inputs = search.built[smallest]
    passing = search.largest_pass
    pass_model, pass_inputs = search.built[passing] if passing is not None else (None, {})
    return ReduceResult(
        smallest_failing=fail_model,
        smallest_failing_nodes=names(smallest),
        smallest_failing_inputs=fail_inputs,
        largest_passing=pass_model,
        largest_passing_nodes=names(passing),
        largest_passing_inputs=pass_inputs,
        total_nodes=n,
        checks=len(search.cache),
        notes=tuple(notes),
    )
