"""Checking inputs against a signature before a runtime sees them.

A runtime's own error for a wrong input is often a C++ message about a buffer; this check names
the input and says what was expected and what was given, for every problem at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fleetyard.runtimes.base import Dim, Signature, TensorSpec, format_shape
from fleetyard.runtimes.errors import InputMismatch

__all__ = ["check_inputs", "dtype_matches"]

_STRING_KINDS = frozenset("USO")


def dtype_matches(expected: str | None, got: np.dtype[Any]) -> bool:
    if expected is None:
        return True
    if expected == "str":
        return got.kind in _STRING_KINDS
    return got.name == expected


def check_inputs(signature: Signature, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Return ``inputs`` as arrays in the signature's order; raise :class:`InputMismatch` naming
    every missing or unknown input and every dtype or shape that does not fit.

    Nothing is cast: a float64 array for a float32 input is an error, as a silent cast would hide
    a wrong reference. Symbolic dimensions must agree across inputs (``batch`` is one number).
    """
    specs = {t.name: t for t in signature.inputs}
    problems: list[dict[str, Any]] = []
    missing = [n for n in specs if n not in inputs]
    unknown = [n for n in inputs if n not in specs]
    for name in missing:
        problems.append({"input": name, "reason": "missing", "expected": specs[name].to_dict(), "given": None})
    for name in unknown:
        problems.append({"input": name, "reason": "unknown input", "expected": None, "given": _given(inputs[name])})

    arrays: dict[str, np.ndarray] = {}
    symbols: dict[str, tuple[int, str]] = {}  # symbol -> (value, the input that bound it)
    for name, spec in specs.items():
        if name not in inputs:
            continue
        value = inputs[name]
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        arrays[name] = arr
        reason = _mismatch(spec, arr, symbols)
        if reason:
            problems.append({"input": name, "reason": reason, "expected": spec.to_dict(), "given": _given(arr)})
    if problems:
        raise InputMismatch(_message(signature, inputs, problems), detail=_detail(signature, inputs, problems))
    return arrays


def _given(value: Any) -> dict[str, Any]:
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    return {"shape": list(arr.shape), "dtype": arr.dtype.name}


def _mismatch(spec: TensorSpec, arr: np.ndarray, symbols: dict[str, tuple[int, str]]) -> str | None:
    if not dtype_matches(spec.dtype, arr.dtype):
        return f"dtype: expected {spec.dtype}, got {arr.dtype.name}"
    if spec.shape is None:
        return None
    if len(spec.shape) != arr.ndim:
        return f"rank: expected {len(spec.shape)} dims {format_shape(spec.shape)}, got {arr.ndim} {tuple(arr.shape)}"
    bound: dict[str, tuple[int, str]] = {}
    for axis, (want, got) in enumerate(zip(spec.shape, arr.shape, strict=True)):
        err = _dim_mismatch(spec.name, axis, want, got, {**symbols, **bound})
        if err:
            return f"shape: expected {format_shape(spec.shape)}, got {tuple(arr.shape)} ({err})"
        if isinstance(want, str):
            bound.setdefault(want, (got, spec.name))
    symbols.update(bound)
    return None


def _dim_mismatch(name: str, axis: int, want: Dim, got: int, symbols: dict[str, tuple[int, str]]) -> str | None:
    if want is None:
        return None
    if isinstance(want, int):
        return None if want == got or want < 0 else f"dim {axis} must be {want}"
    if want in symbols and symbols[want][0] != got:
        value, source = symbols[want]
        where = "this input" if source == name else f"input {source!r}"
        return f"dim {axis} is {want!r}, which {where} set to {value}"
    return None


def _message(signature: Signature, inputs: Mapping[str, Any], problems: list[dict[str, Any]]) -> str:
    parts = []
    for p in problems:
        if p["reason"] == "missing":
            parts.append(f"missing input {p['input']!r}")
        elif p["reason"] == "unknown input":
            parts.append(f"unknown input {p['input']!r}")
        else:
            parts.append(f"input {p['input']!r}: {p['reason']}")
    expected = ", ".join(t.describe() for t in signature.inputs) or "no inputs"
    given = ", ".join(f"{n}: {_given(v)['dtype']}{list(_given(v)['shape'])}" for n, v in inputs.items()) or "nothing"
    return f"{'; '.join(parts)}. The model takes {expected}; given {given}"


def _detail(signature: Signature, inputs: Mapping[str, Any], problems: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "problems": problems,
        "expected": [t.to_dict() for t in signature.inputs],
        "given": [{"name": n, **_given(v)} for n, v in inputs.items()],
    }
