"""Worst-case statistics over many input sets, at constant memory (the validate workload's fold).

:class:`ComparisonAccumulator` takes one :class:`~fleetyard.validation.compare.ComparisonReport`
per input set and keeps, per output name, only running figures: sets seen and failed, elements
and failing elements, the largest of each error statistic (max, median, p99, min passing atol),
the smallest cosine, SNR and top-k agreement, the size-weighted mean absolute error, and the set
and index of the worst absolute error. Names missing or extra in any set are kept with the sets
they were missing from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fleetyard.validation.compare import ComparisonReport, OutputComparison, encode_float

__all__ = ["ComparisonAccumulator", "OutputAggregate"]

_MAXED = ("max_abs", "median_abs", "p99_abs", "max_rel", "median_rel", "p99_rel", "min_passing_atol")
_MINNED = ("cosine", "snr_db")


def _worse(old: float | None, new: float | None, *, higher_is_worse: bool) -> float | None:
    if new is None:
        return old
    if old is None or math.isnan(new):
        return new
    if math.isnan(old):
        return old
    return max(old, new) if higher_is_worse else min(old, new)


@dataclass
class OutputAggregate:
    name: str
    sets: int = 0
    sets_failed: int = 0
    elements: int = 0
    failing: int = 0
    sum_abs: float = 0.0
    worst: dict[str, float | None] = field(default_factory=dict)
    worst_set: int | None = None  # the input set (0-based) with the largest max_abs
    worst_index: tuple[int, ...] | None = None
    topk: dict[int, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)  # distinct mismatch messages (first 10)

    def add(self, o: OutputComparison, set_index: int) -> None:
        self.sets += 1
        self.sets_failed += not o.passed
        self.elements += o.size
        self.failing += o.failing
        if o.message and o.message not in self.messages and len(self.messages) < 10:
            self.messages.append(o.message)
        if o.mean_abs is not None:
            self.sum_abs += o.mean_abs * o.size
        old_max = self.worst.get("max_abs")
        if o.max_abs is not None and (old_max is None or o.max_abs > old_max):
            self.worst_set, self.worst_index = set_index, o.worst_index
        for key in _MAXED:
            self.worst[key] = _worse(self.worst.get(key), getattr(o, key), higher_is_worse=True)
        for key in _MINNED:
            self.worst[key] = _worse(self.worst.get(key), getattr(o, key), higher_is_worse=False)
        for k, v in o.topk.items():
            self.topk[k] = min(self.topk.get(k, v), v)

    @property
    def passed(self) -> bool:
        return self.sets_failed == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "sets": self.sets,
            "sets_failed": self.sets_failed,
            "elements": self.elements,
            "failing": self.failing,
            "mean_abs": encode_float(self.sum_abs / self.elements) if self.elements else None,
            **{k: encode_float(self.worst.get(k)) for k in (*_MAXED, *_MINNED)},
            "worst_set": self.worst_set,
            "worst_index": None if self.worst_index is None else list(self.worst_index),
            "topk": {str(k): v for k, v in sorted(self.topk.items())},
            "messages": list(self.messages),
        }


class ComparisonAccumulator:
    """``add(report)`` per input set; ``to_json()`` for the aggregate. Memory does not grow with sets."""

    def __init__(self) -> None:
        self.sets = 0
        self.outputs: dict[str, OutputAggregate] = {}
        self.missing: dict[str, int] = {}  # name -> sets it was missing from
        self.extra: dict[str, int] = {}

    def add(self, report: ComparisonReport) -> None:
        for o in report.outputs:
            self.outputs.setdefault(o.name, OutputAggregate(o.name)).add(o, self.sets)
        for n in report.missing:
            self.missing[n] = self.missing.get(n, 0) + 1
        for n in report.extra:
            self.extra[n] = self.extra.get(n, 0) + 1
        self.sets += 1

    @property
    def passed(self) -> bool:
        return not self.missing and all(o.passed for o in self.outputs.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "sets": self.sets,
            "outputs": [o.to_dict() for o in self.outputs.values()],
            "missing": dict(self.missing),
            "extra": dict(self.extra),
        }
