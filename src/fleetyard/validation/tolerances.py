"""Tolerances: how far an output may be from its reference, per output and per dtype.

An element fails when ``|a - e| > atol + rtol * |e|`` (``a`` actual, ``e`` expected). It is
evaluated as ``(|a - e| - rtol * |e|) > atol`` in the outputs' compute dtype (float32 for float16,
bfloat16 and float32 outputs; float64 otherwise), so that the smallest passing ``atol`` that a
comparison reports is exactly the boundary: it passes, and any smaller ``atol`` fails.

Non-finite elements: NaN against NaN is equal only with ``nan_equal``; an infinity against the
same infinity (same sign) is equal with ``inf_equal`` (the default). Every other pair that holds a
NaN or an infinity fails, whatever the tolerance.

Defaults by dtype (``atol`` / ``rtol``), because 1e-5 on float16 is a false alarm:

    float64          1e-8 / 1e-8
    float32          1e-5 / 1e-5
    float16          1e-3 / 1e-3    (eps 9.8e-4)
    bfloat16         1e-2 / 1e-2    (eps 7.8e-3)
    integers, bool   exact
    anything else    exact (strings: equality)

A :class:`TolerancePolicy` resolves one :class:`Tolerance` per output: a per-name override wins
over a value for every output, which wins over the dtype's default; ``atol`` and ``rtol`` resolve
independently. Overrides come from CLI-style strings: ``"1e-5"`` (every output) and
``"logits:1e-3"`` (the output ``logits``). The last ``:`` splits, so ``"out:0:1e-3"`` names
``out:0``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from fleetyard.errors import BadRequest

__all__ = ["DEFAULT_TOLERANCES", "Tolerance", "TolerancePolicy", "default_tolerance", "parse_overrides"]


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    nan_equal: bool = False
    inf_equal: bool = True

    def __post_init__(self) -> None:
        for what, v in (("atol", self.atol), ("rtol", self.rtol)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise BadRequest(f"{what} must be a finite number >= 0, got {v!r}")

    def allows(self, actual: float, expected: float) -> bool:
        """The element rule for one pair of Python floats (the vectorised form is in ``compare``)."""
        if math.isnan(actual) or math.isnan(expected):
            return self.nan_equal and math.isnan(actual) and math.isnan(expected)
        if math.isinf(actual) or math.isinf(expected):
            return self.inf_equal and actual == expected
        return not (abs(actual - expected) - self.rtol * abs(expected) > self.atol)

    def to_dict(self) -> dict[str, float | bool]:
        return {"atol": self.atol, "rtol": self.rtol, "nan_equal": self.nan_equal, "inf_equal": self.inf_equal}


_EXACT = (0.0, 0.0)
DEFAULT_TOLERANCES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "float64": (1e-8, 1e-8),
        "float32": (1e-5, 1e-5),
        "float16": (1e-3, 1e-3),
        "bfloat16": (1e-2, 1e-2),
    }
)


def default_tolerance(dtype: str | None) -> tuple[float, float]:
    """``(atol, rtol)`` for a dtype name (``"float16"``, ``"bfloat16"``, ``"int64"``, …)."""
    return DEFAULT_TOLERANCES.get(dtype or "", _EXACT)


def _parse_value(text: str, source: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise BadRequest(f"bad tolerance {source!r}: {text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise BadRequest(f"bad tolerance {source!r}: must be a finite number >= 0")
    return v


def parse_overrides(items: Iterable[str]) -> tuple[float | None, dict[str, float]]:
    """Parse ``["1e-5", "logits:1e-3"]`` into ``(1e-5, {"logits": 1e-3})``.

    Raises :class:`~fleetyard.errors.BadRequest` for a value that is not a finite number >= 0, an
    empty name, or one output (or the global value) given twice.
    """
    everyone: float | None = None
    by_name: dict[str, float] = {}
    for raw in items:
        s = raw.strip()
        if not s:
            raise BadRequest("bad tolerance '': empty")
        name, sep, value = s.rpartition(":")
        if not sep:
            if everyone is not None:
                raise BadRequest(f"bad tolerance {raw!r}: a value for every output was already given")
            everyone = _parse_value(value, raw)
            continue
        if not name:
            raise BadRequest(f"bad tolerance {raw!r}: empty output name before ':'")
        if name in by_name:
            raise BadRequest(f"bad tolerance {raw!r}: output {name!r} was already given")
        by_name[name] = _parse_value(value, raw)
    return everyone, by_name


@dataclass(frozen=True)
class TolerancePolicy:
    """What tolerance each output gets. ``None`` means the dtype's default."""

    atol: float | None = None
    rtol: float | None = None
    atol_by_name: Mapping[str, float] = field(default_factory=dict)
    rtol_by_name: Mapping[str, float] = field(default_factory=dict)
    nan_equal: bool = False
    inf_equal: bool = True
    topk: tuple[int, ...] = (1, 5)  # top-k agreement for classifier-like outputs (see ``compare``)

    @classmethod
    def from_strings(
        cls,
        atol: Iterable[str] = (),
        rtol: Iterable[str] = (),
        *,
        nan_equal: bool = False,
        inf_equal: bool = True,
    ) -> TolerancePolicy:
        """From CLI flags: ``--atol 1e-5 --atol logits:1e-3 --rtol 0``."""
        a, a_by = parse_overrides(atol)
        r, r_by = parse_overrides(rtol)
        return cls(a, r, a_by, r_by, nan_equal, inf_equal)

    def for_output(self, name: str, dtype: str | None) -> Tolerance:
        d_atol, d_rtol = default_tolerance(dtype)
        atol = self.atol_by_name.get(name, self.atol if self.atol is not None else d_atol)
        rtol = self.rtol_by_name.get(name, self.rtol if self.rtol is not None else d_rtol)
        return Tolerance(float(atol), float(rtol), self.nan_equal, self.inf_equal)
