"""Statistics of one comparison against hand-computed values; mismatches; missing and extra outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fleetyard.validation import ComparisonAccumulator, Tolerance, TolerancePolicy, compare_outputs
from fleetyard.validation import compare as compare_mod


def test_statistics_by_hand() -> None:
    e = np.array([[1.0, 2.0], [4.0, -2.0]], np.float32)
    a = np.array([[1.0, 2.5], [3.0, -2.0]], np.float32)
    o = compare_outputs({"y": a}, {"y": e}, TolerancePolicy(atol=0.1, rtol=0.1))["y"]
    # d = [0, .5, 1, 0]; rel = [0, .25, .25, 0]; tolerance .1 + .1|e| = [.2, .3, .5, .3]
    assert o.size == 4 and o.failing == 2 and o.failing_fraction == 0.5 and not o.passed
    assert o.max_abs == 1.0 and o.mean_abs == pytest.approx(0.375)
    assert o.median_abs == 0.0  # nearest rank: the 2nd smallest of 4
    assert o.p99_abs == 1.0
    assert o.max_rel == 0.25 and o.mean_rel == pytest.approx(0.125) and o.median_rel == 0.0
    assert o.worst_index == (1, 0) and o.worst_actual == 3.0 and o.worst_expected == 4.0
    cos = float(np.dot(a.ravel(), e.ravel()) / (np.linalg.norm(a) * np.linalg.norm(e)))
    assert o.cosine == pytest.approx(cos, rel=1e-6)
    assert o.snr_db == pytest.approx(10 * math.log10(25.0 / 1.25))
    # slack d - .1|e| = [-.1, .3, .6, -.2]: the smallest passing atol is .6
    assert o.min_passing_atol == pytest.approx(0.6)


def test_exact_match() -> None:
    e = np.arange(12, dtype=np.float32).reshape(3, 4)
    o = compare_outputs({"y": e.copy()}, {"y": e})["y"]
    assert o.passed and o.max_abs == 0.0 and o.snr_db == math.inf and o.cosine == pytest.approx(1.0)
    assert o.min_passing_atol == 0.0 and o.topk == {1: 1.0}


def test_zero_reference() -> None:
    z = np.zeros(4, np.float32)
    o = compare_outputs({"y": z}, {"y": z})["y"]
    assert o.cosine == 1.0 and o.snr_db == math.inf and o.max_rel == 0.0
    o = compare_outputs({"y": z + 1}, {"y": z})["y"]
    assert o.cosine == 0.0 and o.snr_db == -math.inf and math.isfinite(o.max_rel or 0) and o.max_rel > 1e30


def test_topk_agreement() -> None:
    e = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]], np.float32)
    a = e.copy()
    a[0, 0] = 0.9  # row 0: argmax changes, and index 0 enters the top 5 in place of index 1
    o = compare_outputs({"y": a}, {"y": e})["y"]
    assert o.topk == {1: 0.5, 5: 0.5}
    small = compare_outputs({"y": e[:, :3]}, {"y": e[:, :3]})["y"]
    assert small.topk == {1: 1.0}  # k = 5 needs a last axis of at least 5
    assert compare_outputs({"y": e.ravel()[:1]}, {"y": e.ravel()[:1]})["y"].topk == {}


def test_integers_exact() -> None:
    o = compare_outputs({"y": np.array([1, 2, 3])}, {"y": np.array([1, 2, 4])})["y"]
    assert o.tolerance == Tolerance(0.0, 0.0) and o.failing == 1 and o.max_abs == 1.0 and o.topk == {}


def test_strings_by_equality() -> None:
    o = compare_outputs({"y": np.array(["a", "b"])}, {"y": np.array(["a", "c"])})["y"]
    assert o.failing == 1 and not o.passed and o.max_abs is None


def test_shape_and_dtype_mismatch() -> None:
    r = compare_outputs({"y": np.zeros((2, 3), np.float16)}, {"y": np.zeros((3, 2), np.float32)})
    o = r["y"]
    assert not o.passed and not r.passed
    assert (
        o.message == "dtype mismatch: actual float16, expected float32; shape mismatch: actual (2, 3), expected (3, 2)"
    )
    assert o.max_abs is None


def test_missing_and_extra() -> None:
    one = np.ones(3, np.float32)
    r = compare_outputs({"a": one, "extra": one}, {"a": one, "gone": one})
    assert r.missing == ("gone",) and r.extra == ("extra",) and not r.passed
    assert [o.name for o in r.outputs] == ["a"]
    assert compare_outputs({"a": one, "extra": one}, {"a": one}).passed  # extra alone does not fail


def test_json_is_valid() -> None:
    r = compare_outputs(
        {"y": np.array([np.nan, 1.0], np.float32), "z": np.zeros(2, np.float32)},
        {"y": np.array([1.0, 1.0], np.float32), "z": np.zeros(2, np.float32), "w": np.zeros(1)},
    )
    text = json.dumps(r.to_json(), allow_nan=False)
    back = json.loads(text)
    assert back["passed"] is False and back["missing"] == ["w"]
    y = back["outputs"][0]
    assert y["max_abs"] == "inf" and y["cosine"] == "nan" and y["worst_index"] == [0]
    assert list(y) == list(r["y"].to_dict())


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("n", [70_000, 200_003])
def test_chunked_quantiles_are_exact(dtype: type, n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compare_mod, "CHUNK", 1 << 14)
    rng = np.random.default_rng(n)
    e = rng.standard_normal(n).astype(dtype)
    a = (e + rng.standard_normal(n) * 1e-3).astype(dtype)
    a[::97] = e[::97]  # ties at 0
    o = compare_outputs({"y": a}, {"y": e})["y"]
    cdt = np.float64 if dtype == np.float64 else np.float32
    d = np.abs(a.astype(cdt) - e.astype(cdt))
    rel = d / np.maximum(np.abs(e.astype(cdt)), np.finfo(cdt).tiny)
    for got, arr, q in ((o.median_abs, d, 50), (o.p99_abs, d, 99), (o.median_rel, rel, 50), (o.p99_rel, rel, 99)):
        assert got == float(np.percentile(arr, q, method="inverted_cdf"))
    assert o.worst_index == (int(np.argmax(d)),)
    assert o.max_abs == float(d.max())


def test_radix_fallback_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compare_mod, "CHUNK", 1 << 12)
    monkeypatch.setattr(compare_mod, "COLLECT_CAP", 10)  # every guess overflows: the radix passes run
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        e = rng.standard_normal(30_000).astype(dtype)
        a = (e + rng.standard_normal(30_000)).astype(dtype)
        o = compare_outputs({"y": a}, {"y": e})["y"]
        d = np.abs(a - e)
        assert o.median_abs == float(np.percentile(d, 50, method="inverted_cdf"))
        assert o.p99_abs == float(np.percentile(d, 99, method="inverted_cdf"))


def test_accumulator_keeps_the_worst() -> None:
    acc = ComparisonAccumulator()
    e = np.ones(10, np.float32)
    acc.add(compare_outputs({"y": e + 1e-7}, {"y": e}))
    bad = e.copy()
    bad[3] = 2.0
    acc.add(compare_outputs({"y": bad}, {"y": e}))
    acc.add(compare_outputs({}, {"y": e}))
    out = acc.to_json()
    json.dumps(out, allow_nan=False)
    y = out["outputs"][0]
    assert out["sets"] == 3 and not out["passed"] and out["missing"] == {"y": 1}
    assert y["sets"] == 2 and y["sets_failed"] == 1 and y["failing"] == 1 and y["elements"] == 20
    assert y["max_abs"] == 1.0 and y["worst_set"] == 1 and y["worst_index"] == [3]
