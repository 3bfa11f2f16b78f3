"""The smallest passing atol passes, and the next float below it fails."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetyard.validation import TolerancePolicy, compare_outputs

finite32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(finite32, finite32), min_size=1, max_size=30),
    rtol=st.sampled_from([0.0, 1e-5, 1e-3, 0.25]),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_min_passing_atol_is_the_boundary(pairs: list[tuple[float, float]], rtol: float, dtype: str) -> None:
    a = np.array([p[0] for p in pairs], dtype)
    e = np.array([p[1] for p in pairs], dtype)
    first = compare_outputs({"y": a}, {"y": e}, TolerancePolicy(atol=0.0, rtol=rtol))["y"]
    m = first.min_passing_atol
    assert m is not None and m >= 0
    at = compare_outputs({"y": a}, {"y": e}, TolerancePolicy(atol=m, rtol=rtol))["y"]
    assert at.passed
    if m > 0:
        below = float(np.nextafter(np.asarray(m, dtype), np.asarray(0, dtype)))
        smaller = compare_outputs({"y": a}, {"y": e}, TolerancePolicy(atol=below, rtol=rtol))["y"]
        assert not smaller.passed
    assert first.passed == (m == 0.0 or first.failing == 0)
