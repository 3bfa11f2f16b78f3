"""Tolerances: the element rule, non-finite options, dtype defaults, override strings."""

from __future__ import annotations

import numpy as np
import pytest

from fleetyard.errors import BadRequest
from fleetyard.validation import Tolerance, TolerancePolicy, compare_outputs, default_tolerance, parse_overrides


def _failing(a: list[float], e: list[float], tol: Tolerance, dtype: str = "float64") -> int:
    policy = TolerancePolicy(atol=tol.atol, rtol=tol.rtol, nan_equal=tol.nan_equal, inf_equal=tol.inf_equal, topk=())
    r = compare_outputs({"y": np.array(a, dtype)}, {"y": np.array(e, dtype)}, policy)
    return r["y"].failing


def test_element_rule_and_exact_boundary() -> None:
    tol = Tolerance(atol=0.5, rtol=0.25)
    # |a-e| = 1.0 = 0.5 + 0.25*2: exactly on the boundary passes; just past it fails.
    assert _failing([3.0], [2.0], tol) == 0
    assert _failing([3.0 + 1e-9], [2.0], tol) == 1
    assert _failing([1.5, 0.5], [1.0, 1.0], Tolerance(atol=0.5, rtol=0.0)) == 0
    assert _failing([1.5000001], [1.0], Tolerance(atol=0.5, rtol=0.0)) == 1
    assert tol.allows(3.0, 2.0) and not tol.allows(3.1, 2.0)
    # float32 too: 0.5 and 0.25 are exact in binary.
    assert _failing([3.0], [2.0], tol, "float32") == 0


@pytest.mark.parametrize(
    ("a", "e", "nan_equal", "inf_equal", "fails"),
    [
        (np.nan, np.nan, False, True, 1),
        (np.nan, np.nan, True, True, 0),
        (np.nan, 1.0, True, True, 1),
        (np.inf, np.inf, False, True, 0),
        (np.inf, np.inf, False, False, 1),
        (-np.inf, np.inf, False, True, 1),
        (np.inf, 1.0, False, True, 1),
        (1.0, np.inf, False, True, 1),
    ],
)
def test_nonfinite_options(a: float, e: float, nan_equal: bool, inf_equal: bool, fails: int) -> None:
    tol = Tolerance(atol=1.0, rtol=1.0, nan_equal=nan_equal, inf_equal=inf_equal)
    assert _failing([a, 0.0], [e, 0.0], tol) == fails
    assert tol.allows(a, e) == (fails == 0)


def test_nonfinite_statistics() -> None:
    tol = TolerancePolicy(nan_equal=True)
    r = compare_outputs({"y": np.array([np.nan, 1.0, np.inf])}, {"y": np.array([np.nan, 1.0, np.inf])}, tol)
    o = r["y"]
    assert o.passed and o.max_abs == 0.0 and o.min_passing_atol == 0.0
    r = compare_outputs({"y": np.array([np.nan, 1.0])}, {"y": np.array([2.0, 1.0])})
    o = r["y"]
    assert not o.passed and o.max_abs == np.inf and o.min_passing_atol == np.inf and o.worst_index == (0,)


def test_dtype_defaults() -> None:
    assert default_tolerance("float32") == (1e-5, 1e-5)
    f16, bf16, f32, f64 = (default_tolerance(d)[0] for d in ("float16", "bfloat16", "float32", "float64"))
    assert bf16 > f16 > f32 > f64
    assert default_tolerance("int64") == (0.0, 0.0) and default_tolerance("bool") == (0.0, 0.0)
    p = TolerancePolicy()
    assert p.for_output("x", "float16") == Tolerance(1e-3, 1e-3)
    assert p.for_output("x", "bfloat16") == Tolerance(1e-2, 1e-2)


def test_float16_default_is_no_false_alarm() -> None:
    e = np.linspace(-4, 4, 101, dtype=np.float32)
    a = (e.astype(np.float16)).astype(np.float16)  # rounding to fp16 alone
    r = compare_outputs({"y": a}, {"y": e.astype(np.float16)})
    assert r.passed


def test_bfloat16_by_dtype() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    e = np.array([1.0, 2.0, 3.0], dtype=ml_dtypes.bfloat16)
    a = np.array([1.0078125, 2.0, 3.0], dtype=ml_dtypes.bfloat16)  # one bf16 ulp off at 1.0
    r = compare_outputs({"y": a}, {"y": e})
    o = r["y"]
    assert o.tolerance == Tolerance(1e-2, 1e-2)
    assert o.passed and o.max_abs == pytest.approx(0.0078125)
    r32 = compare_outputs({"y": a.astype(np.float32)}, {"y": e.astype(np.float32)})
    assert not r32.passed  # the same error is a failure at float32's default


def test_parse_overrides() -> None:
    assert parse_overrides(["1e-5", "logits:1e-3", "out:0:2"]) == (1e-5, {"logits": 1e-3, "out:0": 2.0})
    assert parse_overrides([]) == (None, {})
    p = TolerancePolicy.from_strings(["1e-4", "logits:1e-2"], ["probs:0"])
    assert p.for_output("logits", "float32") == Tolerance(1e-2, 1e-5)
    assert p.for_output("probs", "float16") == Tolerance(1e-4, 0.0)
    assert p.for_output("other", "int32") == Tolerance(1e-4, 0.0)


@pytest.mark.parametrize("bad", ["abc", "logits:", ":1e-3", "-1", "x:nan", "inf", "", "x:1e-3 x:2"])
def test_parse_overrides_rejects(bad: str) -> None:
    with pytest.raises(BadRequest):
        parse_overrides(bad.split(" ") if " " in bad else [bad])


def test_parse_overrides_rejects_duplicates() -> None:
    with pytest.raises(BadRequest, match="already"):
        parse_overrides(["1e-3", "1e-4"])
    with pytest.raises(BadRequest, match="already"):
        parse_overrides(["a:1", "a:2"])
    with pytest.raises(BadRequest):
        Tolerance(atol=-1.0, rtol=0.0)
