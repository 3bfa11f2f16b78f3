"""The ``health-check`` job kind: run a golden artifact whose exact output is known, on one board.

Tiers (see "Health checks come in tiers" in DESIGN.md):

    L1  seconds: run the golden model ``repeat`` times (default 3), before a board returns to
        service and every N hours or jobs. Catches silent data corruption.
    L2  minutes: keep running it for ``duration_s`` (default 120 s), after an infrastructure fault.
    L3  the long burn-in (default 3600 s) at onboarding and after repair.

Every run's outputs must equal the golden result bit for bit; the check stops at the first run
that differs. A failed check is the board's fault, so it ends ``infra_error`` (the board turns
suspect), with the evidence in the result: the expected and the received digest and the first
element that differs. The failing outputs are left as ``outputs.npz`` in the output dir.

Result: ``tier``, ``passed`` (true only for a check that ran to its end, every run golden),
``runs``, ``expected_sha256`` (:data:`GOLDEN_SHA256`), ``got_sha256`` (the first bad run's
digest, else the golden one; None if nothing ran), ``first_mismatch`` (see
:func:`first_mismatch`; None when passed), ``duration_s`` (wall time, loading included),
``board`` and ``runtime`` (what ran it). Outcomes: success; infra_error for a mismatch or a
golden model that would not load or run; config_error for a device no runtime serves; canceled
when told to stop (the worker turns that into timeout past the time limit). An L2/L3 duration
that does not fit the job's time limit is cut to fit, with a log line, rather than time out.

Why exact comparison is safe: the golden model is a small MLP (MatMul+Add+Relu, MatMul+Add)
whose weights, biases and inputs are small integers stored as float32. A product of two such
numbers is an integer, and every partial sum of a dot product is bounded by the sum of the
absolute values of its terms, which is below 2**24 here (see :func:`golden_bounds`); float32
represents every integer of that size exactly, so each addition is exact whatever order a
kernel sums in (blocked, vectorised, split-K, FMA or not). The result is therefore the same bits
on any CPU and any BLAS, and one constant, :data:`GOLDEN_SHA256`, holds for every healthy board.
Operands also stay within 2**11, so a GPU that multiplies float32 in TF32 (10-bit mantissa)
still gets them exactly. There is no Conv: cuDNN may pick FFT or Winograd algorithms, whose
transforms are not exact in float32 and would fail a healthy GPU board.

The model is built in code (never a blob), once per process, and run through the runtime's
session cache on the board's device (``DeviceSettings.from_env``), like the ``run`` kind. On a
sim board with ``silent_corruption`` active the outputs pass through the sim fault model
(:func:`fleetyard.drivers.sim.as_computed_by`), so the check sees the wrong numbers that board
returns.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleetyard.domain.job import Outcome
from fleetyard.domain.spec import MAX_TIME_LIMIT_S
from fleetyard.drivers.sim import as_computed_by
from fleetyard.errors import FleetyardError
from fleetyard.runtimes import (
    DeviceSettings,
    DeviceUnavailable,
    LoadedModel,
    RuntimeUnavailable,
    check_inputs,
    default_cache,
)
from fleetyard.workloads.base import WorkloadContext, WorkloadResult, board_record, params_as
from fleetyard.workloads.tensors import save_arrays

__all__ = [
    "DEFAULT_DURATION_S",
    "GOLDEN_SHA256",
    "HealthCheckParams",
    "HealthCheckWorkload",
    "first_mismatch",
    "golden_bounds",
    "golden_check",
    "golden_inputs",
    "golden_model",
    "golden_model_bytes",
    "golden_reference",
    "load_golden",
    "outputs_sha256",
]

Tier = Literal["L1", "L2", "L3"]

# sha256 of the golden outputs as :func:`outputs_sha256` digests them. Known, not learnt: the
# unit tests recompute it from a pure numpy reference and through onnxruntime.
GOLDEN_SHA256 = "9d9bc245c4b3d6e17360df6111033efcd83f2c873f416f592b08a87f75d0b9c5"

DEFAULT_DURATION_S: dict[str, float] = {"L2": 120.0, "L3": 3600.0}
PROGRESS_EVERY_S = 10.0
# What a timed check leaves unused of the job's time limit, to load the model and report: a
# check that runs into the limit ends as a timeout, which would make a healthy board look bad.
TIME_LIMIT_RESERVE_S = 30.0
OUTPUTS_FILE = "outputs.npz"
GOLDEN_FILE = "golden.onnx"

# The golden MLP: x[BATCH, N_IN] -> hidden = relu(x @ W1 + b1) [BATCH, N_HIDDEN]
#                                -> logits = hidden @ W2 + b2   [BATCH, N_OUT]
BATCH, N_IN, N_HIDDEN, N_OUT = 16, 64, 128, 32
X_RANGE, W_RANGE, B_RANGE = 3, 2, 8  # values are integers in [-R, R]
OPSET = 17
IR_VERSION = 8  # old enough for every onnxruntime >= 1.17


class HealthCheckParams(BaseModel):
    """Parameters of a ``health-check`` job."""

    model_config = ConfigDict(extra="forbid")

    tier: Tier = Field(
        description="L1: seconds, `repeat` runs; L2: minutes, after an infrastructure fault; L3: the long burn-in"
    )
    duration_s: float | None = Field(
        None,
        gt=0,
        le=MAX_TIME_LIMIT_S,
        description="L2/L3: how long to keep running the golden check (default L2 120 s, L3 3600 s); "
        "not allowed for L1",
    )
    repeat: int = Field(3, ge=1, le=10_000, description="L1: how many runs of the golden model; not allowed for L2/L3")

    @model_validator(mode="after")
    def _fields_fit_the_tier(self) -> HealthCheckParams:
        # Refused rather than ignored: an L1 with a duration is a spec that means something else.
        if self.tier == "L1" and self.duration_s is not None:
            raise ValueError("duration_s applies to tiers L2 and L3; L1 runs `repeat` times")
        if self.tier != "L1" and "repeat" in self.model_fields_set:
            raise ValueError(f"repeat applies to tier L1; {self.tier} runs for duration_s")
        return self

    def duration(self) -> float | None:
        """How long an L2/L3 check runs (its default when unset); None for L1."""
        if self.tier == "L1":
            return None
        return self.duration_s if self.duration_s is not None else DEFAULT_DURATION_S[self.tier]


# ---- the golden artifact ----------------------------------------------------------------------


def _ints(shape: tuple[int, ...], salt: int, bound: int) -> np.ndarray:
    """Integers in [-bound, bound] from a fixed arithmetic hash of the flat index: the same on any
    machine and numpy version (a random generator's stream is not promised to stay the same)."""
    i = np.arange(int(np.prod(shape)), dtype=np.int64)
    h = (i * 2654435761 + salt * 40503 + 12345) % 2147483647
    h = (h ^ (h >> 11)) * 48271 % 2147483647
    return (h % (2 * bound + 1) - bound).reshape(shape)


@functools.cache
def _golden_ints() -> dict[str, np.ndarray]:
    return {
        "x": _ints((BATCH, N_IN), 1, X_RANGE),
        "W1": _ints((N_IN, N_HIDDEN), 2, W_RANGE),
        "b1": _ints((N_HIDDEN,), 3, B_RANGE),
        "W2": _ints((N_HIDDEN, N_OUT), 4, W_RANGE),
        "b2": _ints((N_OUT,), 5, B_RANGE),
    }


def golden_inputs() -> dict[str, np.ndarray]:
    """The golden model's fixed inputs (a fresh copy)."""
    return {"x": _golden_ints()["x"].astype(np.float32)}


def golden_model() -> onnx.ModelProto:
    """The golden model, built deterministically from the integer weights."""
    ints = _golden_ints()
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["xw1"], name="matmul1"),
        helper.make_node("Add", ["xw1", "b1"], ["h1"], name="add1"),
        helper.make_node("Relu", ["h1"], ["hidden"], name="relu1"),
        helper.make_node("MatMul", ["hidden", "W2"], ["hw2"], name="matmul2"),
        helper.make_node("Add", ["hw2", "b2"], ["logits"], name="add2"),
    ]
    graph = helper.make_graph(
        nodes,
        "fleetyard_golden",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, N_IN])],
        outputs=[
            helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [BATCH, N_HIDDEN]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [BATCH, N_OUT]),
        ],
        initializer=[numpy_helper.from_array(ints[k].astype(np.float32), k) for k in ("W1", "b1", "W2", "b2")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fleetyard-health-check"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


@functools.cache
def _golden_model_file() -> tuple[bytes, str]:
    data = golden_model().SerializeToString()
    return data, hashlib.sha256(data).hexdigest()


def golden_model_bytes() -> bytes:
    """The serialized golden model (built once per process). Its bytes may differ between onnx
    versions; its outputs never do."""
    return _golden_model_file()[0]


@functools.cache
def _reference() -> dict[str, np.ndarray]:
    g = _golden_ints()
    # Integer arithmetic: exact by construction, and no float kernel involved.
    hidden = np.maximum(g["x"] @ g["W1"] + g["b1"], 0)
    logits = hidden @ g["W2"] + g["b2"]
    return {"hidden": hidden.astype(np.float32), "logits": logits.astype(np.float32)}


def golden_reference() -> dict[str, np.ndarray]:
    """The golden outputs, computed in numpy with integer arithmetic (fresh copies)."""
    return {k: v.copy() for k, v in _reference().items()}


def golden_bounds() -> dict[str, int]:
    """For each MatMul+Add: the largest sum of |terms| over its outputs (it bounds every partial
    sum in any order; must stay below 2**24) and the largest |operand| (within 2**11: TF32-exact)."""
    g = _golden_ints()
    hidden = _reference()["hidden"].astype(np.int64)
    layer1 = int((np.abs(g["x"]) @ np.abs(g["W1"]) + np.abs(g["b1"])).max())
    layer2 = int((np.abs(hidden) @ np.abs(g["W2"]) + np.abs(g["b2"])).max())
    operand = int(max(np.abs(a).max() for a in (g["x"], g["W1"], g["W2"], hidden)))
    return {"layer1_abs_sum": layer1, "layer2_abs_sum": layer2, "max_operand": operand}


# ---- digests and comparison -------------------------------------------------------------------


def _canonical(a: np.ndarray) -> np.ndarray:
    """C order, little-endian, and -0.0 as +0.0 (a kernel may return either for a zero sum or
    Relu(-0.0); they are equal numbers, and only their sign bit differs)."""
    arr = np.ascontiguousarray(a)
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    if arr.dtype.kind == "f":
        arr = arr + arr.dtype.type(0)  # -0.0 + 0.0 == +0.0; everything else unchanged
    return arr


def outputs_sha256(outputs: Mapping[str, np.ndarray]) -> str:
    """sha256 over the outputs in name order: for each, ``name NUL dtype NUL shape NUL`` (dtype
    as numpy's ``dtype.str``, shape as comma-separated ints) then its bytes in C order,
    little-endian, with -0.0 written as +0.0."""
    h = hashlib.sha256()
    for name in sorted(outputs):
        arr = _canonical(np.asarray(outputs[name]))
        h.update(f"{name}\0{arr.dtype.str}\0{','.join(map(str, arr.shape))}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _describe(a: np.ndarray) -> str:
    return f"{a.dtype.name}{list(a.shape)}"


def first_mismatch(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """Where ``got`` first differs from ``expected`` (outputs in name order, elements in C
    order): ``{output, index, expected, got, mismatched}``, or None when they are the same bits.

    ``index`` is the flat index, or None when a whole output is missing, extra or of another
    shape or dtype (``expected``/``got`` then describe it); ``mismatched`` counts the elements
    of that output that differ."""
    for name in sorted({*expected, *got}):
        if name not in got:
            return {
                "output": name,
                "index": None,
                "expected": _describe(expected[name]),
                "got": "missing",
                "mismatched": None,
            }
        g = _canonical(np.asarray(got[name]))
        if name not in expected:
            return {
                "output": name,
                "index": None,
                "expected": "no such output",
                "got": _describe(g),
                "mismatched": None,
            }
        e = _canonical(expected[name])
        if e.shape != g.shape or e.dtype != g.dtype:
            return {"output": name, "index": None, "expected": _describe(e), "got": _describe(g), "mismatched": None}
        # Bits, as the digest sees them.
        bits = np.dtype(f"<u{e.dtype.itemsize}")
        differ = np.flatnonzero(e.reshape(-1).view(bits) != g.reshape(-1).view(bits))
        if differ.size:
            i = int(differ[0])
            return {
                "output": name,
                "index": i,
                "expected": e.reshape(-1)[i].item(),
                "got": g.reshape(-1)[i].item(),
                "mismatched": int(differ.size),
            }
    return None


def _mismatch_text(m: dict[str, Any], expected: Mapping[str, np.ndarray]) -> str:
    name = m["output"]
    if m["index"] is None:
        return f"output {name} is {m['got']}, expected {m['expected']}"
    # float32's shortest repr (42.000004), not the float64 expansion of it.
    dtype = expected[name].dtype.type
    return (
        f"output differs from the golden result at {name}[{m['index']}] "
        f"(expected {dtype(m['expected'])}, got {dtype(m['got'])}; {m['mismatched']} elements differ)"
    )


def load_golden(settings: DeviceSettings) -> LoadedModel:
    """The golden model, loaded through the session cache (keyed by its digest: a worker that
    ran a check before reuses its session). Written to a private directory of the caller's, never
    to a rank's workdir: a job's process (the rank host lives on between ranks) must not be able
    to steer a write of the worker's with a link it left there."""
    data, sha = _golden_model_file()
    with tempfile.TemporaryDirectory(prefix="fleetyard-golden-") as private:
        path = Path(private) / GOLDEN_FILE
        path.write_bytes(data)
        return default_cache().get(path, settings, sha256=sha)


def golden_check(env: Mapping[str, str], *, runs: int = 3) -> str | None:
    """An L1 check in the caller's process, on the board whose session environment is ``env``:
    None when ``runs`` runs of the golden model are golden, else what differed. The agent's
    worker runs it after a validation mismatch: a board that fails it made the mismatch."""
    model = load_golden(DeviceSettings.from_env(env))
    inputs = check_inputs(model.signature, golden_inputs())
    for run in range(1, runs + 1):
        outputs = as_computed_by(env, model.run(inputs, check=False))
        if outputs_sha256(outputs) != GOLDEN_SHA256:
            expected = _reference()
            mismatch = first_mismatch(expected, outputs)
            return f"run {run}: " + (_mismatch_text(mismatch, expected) if mismatch else "the digest differs")
    return None


# ---- the workload -----------------------------------------------------------------------------


class HealthCheckWorkload:
    """Runs :class:`HealthCheckParams` in the board's worker process. Needs no blobs."""

    kind: ClassVar[str] = "health-check"
    params_model: ClassVar[type[BaseModel]] = HealthCheckParams
    # Nothing of the job's runs: it stays in the worker (see fleetyard.agent.rank_host).
    fleet_code: ClassVar[bool] = True

    def run(self, ctx: WorkloadContext) -> WorkloadResult:
        params = params_as(ctx.params, HealthCheckParams)
        return _Check(params, ctx).run()


class _Check:
    """One rank's health check: load, loop, judge."""

    def __init__(self, params: HealthCheckParams, ctx: WorkloadContext) -> None:
        self.params = params
        self.ctx = ctx
        self.tier: str = params.tier
        self.runs = 0
        self.started = time.monotonic()
        self.model: LoadedModel | None = None

    def run(self) -> WorkloadResult:
        ctx = self.ctx
        try:
            self.model = load_golden(DeviceSettings.from_env(ctx.env))
            inputs = check_inputs(self.model.signature, golden_inputs())
            return self._loop(inputs)
        except (RuntimeUnavailable, DeviceUnavailable) as exc:
            return WorkloadResult(Outcome.CONFIG_ERROR, message=exc.message)
        except FleetyardError as exc:
            # The golden model is known good: failing to load or run it says the board (or its
            # host's runtime) is broken, not the job.
            return WorkloadResult(
                Outcome.INFRA_ERROR,
                message=f"health check {self.tier} could not run the golden model: {exc.message}",
                result=self._result(passed=False, got_sha256=None, mismatch=None),
            )

    def _loop(self, inputs: dict[str, np.ndarray]) -> WorkloadResult:
        assert self.model is not None
        ctx = self.ctx
        target = self._target_s()
        if target is not None:
            ctx.log(f"health check {self.tier}: running the golden model for {target:g} s\n")
        # The duration counts checking time; loading the model came before.
        loop_started = last_log = time.monotonic()
        while not self._done(target, loop_started):
            if ctx.should_stop():
                return WorkloadResult(
                    Outcome.CANCELED,
                    message=f"health check {self.tier} stopped after {self.runs} runs",
                    # Every run so far was golden, but a check cut short has not passed.
                    result=self._result(passed=False, got_sha256=GOLDEN_SHA256 if self.runs else None, mismatch=None),
                )
            outputs = as_computed_by(ctx.env, self.model.run(inputs, check=False))  # the sim fault model
            self.runs += 1
            digest = outputs_sha256(outputs)
            if digest != GOLDEN_SHA256:
                return self._failed(outputs, digest)
            now = time.monotonic()
            if target is not None and now - last_log >= PROGRESS_EVERY_S:
                last_log = now
                ctx.log(f"health check {self.tier}: {self.runs} runs in {now - loop_started:.0f} s, all golden\n")
        ctx.log(f"health check {self.tier} passed: {self.runs} runs, every output golden\n")
        return WorkloadResult(
            Outcome.SUCCESS, exit_code=0, result=self._result(passed=True, got_sha256=GOLDEN_SHA256, mismatch=None)
        )

    def _done(self, target: float | None, loop_started: float) -> bool:
        if target is None:  # L1: a number of runs
            return self.runs >= self.params.repeat
        # L2/L3: at least one run, then until the time is up.
        return self.runs > 0 and time.monotonic() - loop_started >= target

    def _target_s(self) -> float | None:
        want = self.params.duration()
        if want is None:
            return None
        limit = self.ctx.time_limit_s
        room = limit - min(TIME_LIMIT_RESERVE_S, 0.1 * limit)
        if want > room:
            self.ctx.log(
                f"health check {self.tier}: duration_s {want:g} does not fit the job's time limit of {limit:g} s; "
                f"running for {room:g} s\n"
            )
            return room
        return want

    def _failed(self, outputs: dict[str, np.ndarray], digest: str) -> WorkloadResult:
        expected = _reference()
        mismatch = first_mismatch(expected, outputs)
        if mismatch is None:  # the digest differs but no element does: a bug here, not the board
            raise AssertionError(f"digest {digest} differs from the golden one but every output matches")
        save_arrays(self.ctx.output_dir / OUTPUTS_FILE, outputs)  # evidence for the repair record
        text = f"health check {self.tier} failed on run {self.runs}: {_mismatch_text(mismatch, expected)}"
        self.ctx.log(text + "\n")
        return WorkloadResult(
            Outcome.INFRA_ERROR,
            message=text,
            result=self._result(passed=False, got_sha256=digest, mismatch=mismatch),
        )

    def _result(self, *, passed: bool, got_sha256: str | None, mismatch: dict[str, Any] | None) -> dict[str, Any]:
        result: dict[str, Any] = {
            "tier": self.tier,
            "passed": passed,
            "runs": self.runs,
            "expected_sha256": GOLDEN_SHA256,
            "got_sha256": got_sha256,
            "first_mismatch": mismatch,
            "duration_s": round(time.monotonic() - self.started, 3),
            "board": board_record(self.ctx.env),
        }
        if self.model is not None:
            result["runtime"] = self.model.record().to_dict()
        return result
