"""Comparing outputs with a reference: pass/fail under a tolerance, and the statistics that say how far.

:func:`compare_outputs` takes ``{name: array}`` for the actual and the expected outputs and a
:class:`~fleetyard.validation.tolerances.TolerancePolicy`, and gives a :class:`ComparisonReport`:
one :class:`OutputComparison` per output both sides have, and the names only one side has
(``missing``: expected but not produced, a failure; ``extra``: produced but not expected, reported
only).

Per output, the shape and the dtype are checked first; a mismatch is a failure whose message names
both sides, and no statistics are computed. Otherwise, with ``d = |a - e|``:

- ``failing``: elements that break the rule of :mod:`~fleetyard.validation.tolerances`;
- absolute error ``d`` and relative error ``d / max(|e|, tiny)``: max, mean, median, p99. ``tiny``
  is the smallest normal number of the compute dtype, so a zero reference gives a huge but finite
  relative error (and 0 where both sides are 0); that is why the pass rule is ``atol + rtol·|e|``
  and why the median and p99 are the figures to read. Quantiles are exact nearest-rank values
  (the smallest error that at least q of the elements do not exceed; the median is the lower one),
  found by a radix select over the errors' bit patterns: two passes for float32, constant memory.
- ``worst_index``: the (unravelled) index of the largest absolute error, the first one on ties;
- ``cosine``: ``a·e / (|a| |e|)``, 1.0 when both are all zeros, 0.0 when only one is;
- ``snr_db``: ``10 log10(Σe² / Σ(a-e)²)``, ``inf`` when exact, ``-inf`` when the reference is all
  zeros and the output is not. Cosine and SNR are NaN when either side holds a NaN or an infinity.
- ``topk``: for classifier-like outputs (floating point, last axis of 2..32,768 entries), for each
  k of the policy (1 and 5) that the last axis can hold, the fraction of rows (all axes but the
  last) whose top-k index sets agree, order ignored; k = 1 is argmax agreement.
- ``min_passing_atol``: the smallest ``atol`` that, with the tolerance's ``rtol``, passes every
  element (``inf`` when a non-finite mismatch fails at any ``atol``).

Non-finite pairs follow the tolerance's options: an allowed pair (NaN/NaN with ``nan_equal``, the
same infinity with ``inf_equal``) has error 0; any other pair with a NaN or an infinity has error
``inf`` and fails.

Speed: the arrays are walked in chunks of :data:`CHUNK` elements with preallocated buffers, so
memory stays constant and the work stays in cache; float16 and bfloat16 are widened to float32 a
chunk at a time. Integers and bool are compared in float64 (exact below 2**53). String outputs are
compared by equality only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fleetyard.validation.tolerances import Tolerance, TolerancePolicy

__all__ = ["CHUNK", "ComparisonReport", "OutputComparison", "compare_arrays", "compare_outputs", "encode_float"]

CHUNK = 1 << 16  # elements per step: 256 KiB of float32 per buffer, so a step's buffers stay in L2
TOPK_MAX_CLASSES = 32768
_RADIX_BITS = 16


def encode_float(x: float | None) -> float | str | None:
    """A float as JSON can hold it: ``inf``, ``-inf`` and ``nan`` become strings."""
    if x is None or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


@dataclass(frozen=True)
class OutputComparison:
    name: str
    passed: bool
    tolerance: Tolerance
    shape_actual: tuple[int, ...]
    shape_expected: tuple[int, ...]
    dtype_actual: str
    dtype_expected: str
    message: str | None = None  # why it failed before any statistics (shape or dtype mismatch)
    size: int = 0
    failing: int = 0
    max_abs: float | None = None
    mean_abs: float | None = None
    median_abs: float | None = None
    p99_abs: float | None = None
    max_rel: float | None = None
    mean_rel: float | None = None
    median_rel: float | None = None
    p99_rel: float | None = None
    worst_index: tuple[int, ...] | None = None
    worst_actual: float | None = None
    worst_expected: float | None = None
    cosine: float | None = None
    snr_db: float | None = None
    topk: Mapping[int, float] = field(default_factory=dict)
    min_passing_atol: float | None = None

    @property
    def failing_fraction(self) -> float:
        return self.failing / self.size if self.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Stable keys; floats as numbers, with ``inf``/``nan`` as strings so the JSON stays valid."""
        f = encode_float
        return {
            "name": self.name,
            "passed": self.passed,
            "message": self.message,
            "tolerance": self.tolerance.to_dict(),
            "shape_actual": list(self.shape_actual),
            "shape_expected": list(self.shape_expected),
            "dtype_actual": self.dtype_actual,
            "dtype_expected": self.dtype_expected,
            "size": self.size,
            "failing": self.failing,
            "failing_fraction": self.failing_fraction,
            "max_abs": f(self.max_abs),
            "mean_abs": f(self.mean_abs),
            "median_abs": f(self.median_abs),
            "p99_abs": f(self.p99_abs),
            "max_rel": f(self.max_rel),
            "mean_rel": f(self.mean_rel),
            "median_rel": f(self.median_rel),
            "p99_rel": f(self.p99_rel),
            "worst_index": None if self.worst_index is None else list(self.worst_index),
            "worst_actual": f(self.worst_actual),
            "worst_expected": f(self.worst_expected),
            "cosine": f(self.cosine),
            "snr_db": f(self.snr_db),
            "topk": {str(k): v for k, v in sorted(self.topk.items())},
            "min_passing_atol": f(self.min_passing_atol),
        }


@dataclass(frozen=True)
class ComparisonReport:
    outputs: tuple[OutputComparison, ...]
    missing: tuple[str, ...] = ()  # expected outputs the actual side lacks: each one fails the report
    extra: tuple[str, ...] = ()  # actual outputs with no reference: reported, not a failure

    @property
    def passed(self) -> bool:
        return not self.missing and all(o.passed for o in self.outputs)

    def __getitem__(self, name: str) -> OutputComparison:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """A dict for machines (``json.dumps(..., allow_nan=False)`` accepts it)."""
        return {
            "passed": self.passed,
            "outputs": [o.to_dict() for o in self.outputs],
            "missing": list(self.missing),
            "extra": list(self.extra),
        }


def compare_outputs(
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    policy: TolerancePolicy | None = None,
) -> ComparisonReport:
    """Compare every output the expected side names; see the module docstring for what is measured."""
    policy = policy or TolerancePolicy()
    outputs = []
    for name, e in expected.items():
        if name in actual:
            e_arr = np.asarray(e)
            tol = policy.for_output(name, e_arr.dtype.name)
            outputs.append(compare_arrays(name, np.asarray(actual[name]), e_arr, tol, topk=policy.topk))
    missing = tuple(n for n in expected if n not in actual)
    extra = tuple(n for n in actual if n not in expected)
    return ComparisonReport(tuple(outputs), missing, extra)


def _compute_dtype(dt: np.dtype[Any]) -> np.dtype[Any] | None:
    """float32 for floats of 32 bits or fewer (bfloat16 included), float64 for wider floats,
    integers and bool; None for what is not a number."""
    if dt.name == "bfloat16" or (dt.kind == "f" and dt.itemsize <= 4):
        return np.dtype(np.float32)
    if dt.kind in "fiub":
        return np.dtype(np.float64)
    return None


def compare_arrays(
    name: str, actual: np.ndarray, expected: np.ndarray, tol: Tolerance, *, topk: tuple[int, ...] = (1, 5)
) -> OutputComparison:
    """Compare one output with its reference under ``tol``."""
    head: dict[str, Any] = {
        "name": name,
        "tolerance": tol,
        "shape_actual": tuple(actual.shape),
        "shape_expected": tuple(expected.shape),
        "dtype_actual": actual.dtype.name,
        "dtype_expected": expected.dtype.name,
    }
    problems = []
    if actual.dtype != expected.dtype:
        problems.append(f"dtype mismatch: actual {actual.dtype.name}, expected {expected.dtype.name}")
    if actual.shape != expected.shape:
        problems.append(f"shape mismatch: actual {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if problems:
        return OutputComparison(passed=False, message="; ".join(problems), size=int(expected.size), **head)
    n = int(expected.size)
    cdt = _compute_dtype(expected.dtype)
    if cdt is None:  # strings, objects: equality only
        failing = int(np.count_nonzero(actual != expected))
        return OutputComparison(passed=failing == 0, size=n, failing=failing, **head)
    if n == 0:
        return OutputComparison(passed=True, size=0, min_passing_atol=0.0, **head)
    with np.errstate(all="ignore"):  # inf - inf and the like are expected here, and fixed in ``_errors``
        stats = _Stats.run(actual.reshape(-1), expected.reshape(-1), cdt, tol)
    worst = tuple(int(i) for i in np.unravel_index(stats.worst, expected.shape))
    return OutputComparison(
        passed=stats.failing == 0,
        size=n,
        failing=stats.failing,
        max_abs=stats.max_abs,
        mean_abs=stats.sum_abs / n,
        median_abs=stats.quantiles[0],
        p99_abs=stats.quantiles[1],
        max_rel=stats.max_rel,
        mean_rel=stats.sum_rel / n,
        median_rel=stats.quantiles[2],
        p99_rel=stats.quantiles[3],
        worst_index=worst,
        worst_actual=float(actual.reshape(-1)[stats.worst]),
        worst_expected=float(expected.reshape(-1)[stats.worst]),
        cosine=stats.cosine(),
        snr_db=stats.snr_db(),
        topk=_topk_agreement(actual, expected, topk),
        min_passing_atol=stats.min_passing_atol(),
        **head,
    )


# ---- the chunked kernel ---------------------------------------------------------------------------


class _Buffers:
    """Preallocated per-chunk arrays (reused across chunks: no full-size temporaries)."""

    def __init__(self, cdt: np.dtype[Any], size: int) -> None:
        self.d = np.empty(size, cdt)  # |a - e|
        self.ae = np.empty(size, cdt)  # |e|, then the relative error's denominator
        self.s = np.empty(size, cdt)  # slack |a - e| - rtol·|e|
        self.r = np.empty(size, cdt)  # relative error


def _chunks(a: np.ndarray, e: np.ndarray, cdt: np.dtype[Any]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    n = a.shape[0]
    cast = a.dtype != cdt
    for i in range(0, n, CHUNK):
        x, y = a[i : i + CHUNK], e[i : i + CHUNK]
        if cast:
            x, y = x.astype(cdt), y.astype(cdt)
        yield i, x, y


def _errors(x: np.ndarray, y: np.ndarray, tol: Tolerance, tiny: float, b: _Buffers) -> tuple[int, float, bool]:
    """Fill the buffers' first ``len(x)`` entries with d, slack and relative error; return the
    chunk's length, its largest d, and whether it held non-finite values (then fixed as the
    tolerance says)."""
    m = x.shape[0]
    d, ae, s, r = b.d[:m], b.ae[:m], b.s[:m], b.r[:m]
    np.subtract(x, y, out=d)
    np.abs(d, out=d)
    np.abs(y, out=ae)
    np.multiply(ae, tol.rtol, out=s)
    np.subtract(d, s, out=s)
    np.maximum(ae, tiny, out=ae)
    np.divide(d, ae, out=r)
    dmax = float(d.max())
    nonfinite = not math.isfinite(dmax)  # NaN propagates through max; inf - inf is NaN
    if nonfinite:
        bad = ~(np.isfinite(x) & np.isfinite(y))
        ok = np.zeros_like(bad)
        if tol.nan_equal:
            ok |= np.isnan(x) & np.isnan(y)
        if tol.inf_equal:
            ok |= np.isinf(x) & (x == y)
        # Invariant after this: no NaN in d, s or r; an allowed pair is 0, any other non-finite pair inf.
        for buf in (d, s, r):
            buf[bad] = np.inf
            buf[bad & ok] = 0.0
        dmax = float(d.max())
    return m, dmax, nonfinite


@dataclass
class _Stats:
    worst: int = 0
    max_abs: float = -1.0
    sum_abs: float = 0.0
    max_rel: float = 0.0
    sum_rel: float = 0.0
    max_slack: float = -math.inf
    failing: int = 0
    ae: float = 0.0  # Σ a·e
    aa: float = 0.0
    ee: float = 0.0
    dd: float = 0.0
    nonfinite: bool = False
    quantiles: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # median/p99 of abs, then rel

    @classmethod
    def run(cls, a: np.ndarray, e: np.ndarray, cdt: np.dtype[Any], tol: Tolerance) -> _Stats:
        st = cls()
        n = a.shape[0]
        tiny = float(np.finfo(cdt).tiny)
        b = _Buffers(cdt, min(n, CHUNK))
        atol = cdt.type(tol.atol)
        ranks = ((n + 1) // 2 - 1, (99 * n + 99) // 100 - 1)  # nearest-rank median and p99
        single = n <= CHUNK
        guess = None if single else _Guess.from_sample(a, e, cdt, tol, tiny, ranks)
        for i, x, y in _chunks(a, e, cdt):
            m, cmax, nonfinite = _errors(x, y, tol, tiny, b)
            d, s, r = b.d[:m], b.s[:m], b.r[:m]
            st.nonfinite |= nonfinite
            if cmax > st.max_abs:
                st.max_abs = cmax
                st.worst = i + int(d.argmax())
            st.sum_abs += float(d.sum())
            st.max_rel = max(st.max_rel, float(r.max()))
            st.sum_rel += float(r.sum())
            st.max_slack = max(st.max_slack, float(s.max()))
            st.failing += int(np.count_nonzero(s > atol))
            if not st.nonfinite:
                st.ae += float(np.dot(x, y))
                st.aa += float(np.dot(x, x))
                st.ee += float(np.dot(y, y))
                st.dd += float(np.dot(d, d))
            if guess is not None:
                guess.observe(d, r)
            else:  # one chunk: exact quantiles straight from the buffers
                ds, rs = np.partition(d, ranks), np.partition(r, ranks)
                st.quantiles = (float(ds[ranks[0]]), float(ds[ranks[1]]), float(rs[ranks[0]]), float(rs[ranks[1]]))
        if guess is not None:
            found = guess.resolve()
            st.quantiles = found if found is not None else _radix_quantiles(a, e, cdt, tol, tiny, b, ranks)
        return st

    def cosine(self) -> float:
        if self.nonfinite:
            return math.nan
        if self.aa == 0.0 or self.ee == 0.0:
            return 1.0 if self.aa == self.ee else 0.0
        return max(-1.0, min(1.0, self.ae / math.sqrt(self.aa * self.ee)))

    def snr_db(self) -> float:
        if self.nonfinite:
            return math.nan
        if self.dd == 0.0:
            return math.inf
        if self.ee == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.ee / self.dd)

    def min_passing_atol(self) -> float:
        # The rule is ``slack > atol``: the largest slack passes, and any atol below it fails.
        return max(0.0, self.max_slack)


SAMPLE = 1 << 16  # errors sampled (strided, at most 1 in 16) to guess where each quantile lies
COLLECT_CAP = 1 << 22  # most errors kept per quantile to settle it exactly; past it, radix passes
_Z = 7.0  # standard deviations of a sample rank around a quantile that the guessed interval covers


class _Guess:
    """Exact quantiles in the main pass, in the common case: a strided sample of the errors gives,
    per wanted rank, an interval [lo, hi] that very likely holds it; the main pass counts the
    errors below ``lo`` and keeps those inside, which settles the rank exactly when the count
    confirms the guess. When it does not (a sample that was not representative, too many errors
    inside), :meth:`resolve` says so and the caller falls back to the radix passes."""

    def __init__(self, bounds: list[tuple[int, float, float, int]]) -> None:
        self.bounds = bounds  # per target: which error (0 abs, 1 rel), lo, hi, rank
        self.below = [0] * len(bounds)
        self.upto = [0] * len(bounds)
        self.kept: list[list[np.ndarray]] = [[] for _ in bounds]
        self.kept_n = [0] * len(bounds)

    @classmethod
    def from_sample(
        cls, a: np.ndarray, e: np.ndarray, cdt: np.dtype[Any], tol: Tolerance, tiny: float, ranks: tuple[int, int]
    ) -> _Guess:
        n = a.shape[0]
        stride = max(16, n // SAMPLE)
        x, y = a[::stride], e[::stride]
        if x.dtype != cdt:
            x, y = x.astype(cdt), y.astype(cdt)
        m = x.shape[0]
        b = _Buffers(cdt, m)
        _errors(x, y, tol, tiny, b)
        bounds = []
        for which, buf in ((0, b.d), (1, b.r)):
            srt = np.sort(buf)
            for rank in ranks:
                q = (rank + 1) / n
                half = _Z * math.sqrt(q * (1 - q) * m) + 2
                lo = srt[max(0, math.floor(q * m - half))]
                hi = srt[min(m - 1, math.ceil(q * m + half))]
                bounds.append((which, float(lo), float(hi), rank))
        return cls(bounds)

    def observe(self, d: np.ndarray, r: np.ndarray) -> None:
        for t, (which, lo, hi, _rank) in enumerate(self.bounds):
            v = d if which == 0 else r
            self.below[t] += int(np.count_nonzero(v < lo))
            if lo == hi:
                self.upto[t] += int(np.count_nonzero(v <= hi))
                continue
            inside = v[(v >= lo) & (v <= hi)]
            self.kept_n[t] += inside.shape[0]
            if self.kept_n[t] <= COLLECT_CAP:
                self.kept[t].append(inside)
            else:
                self.kept[t] = []

    def resolve(self) -> tuple[float, float, float, float] | None:
        out = []
        for t, (_which, lo, hi, rank) in enumerate(self.bounds):
            below = self.below[t]
            if lo == hi:
                if not below <= rank < self.upto[t]:
                    return None
                out.append(lo)
                continue
            if not below <= rank < below + self.kept_n[t] or self.kept_n[t] > COLLECT_CAP:
                return None
            kept = np.concatenate(self.kept[t])
            k = rank - below
            out.append(float(np.partition(kept, k)[k]))
        return out[0], out[1], out[2], out[3]


def _pick(hist: np.ndarray, rank: int) -> tuple[int, int]:
    """The bin holding the ``rank``-th smallest (0-based) and the rank within that bin."""
    cum = np.cumsum(hist)
    b = int(np.searchsorted(cum, rank, side="right"))
    return b, rank - (int(cum[b - 1]) if b else 0)


def _radix_quantiles(
    a: np.ndarray,
    e: np.ndarray,
    cdt: np.dtype[Any],
    tol: Tolerance,
    tiny: float,
    b: _Buffers,
    ranks: tuple[int, int],
) -> tuple[float, float, float, float]:
    """Exact quantiles of non-negative errors at constant memory: their bit patterns sort as the
    values do, so each pass over the data fixes the next 16 bits of every wanted value (two passes
    for float32, four for float64)."""
    uint = np.dtype(f"u{cdt.itemsize}")
    bits = 8 * cdt.itemsize
    top = bits - _RADIX_BITS
    hist_d = np.zeros(1 << _RADIX_BITS, np.int64)
    hist_r = np.zeros(1 << _RADIX_BITS, np.int64)
    for _i, x, y in _chunks(a, e, cdt):
        m, _, _ = _errors(x, y, tol, tiny, b)
        hist_d += np.bincount(b.d[:m].view(uint) >> top, minlength=1 << _RADIX_BITS)
        hist_r += np.bincount(b.r[:m].view(uint) >> top, minlength=1 << _RADIX_BITS)
    # Per target: which error (0 abs, 1 rel), the bits fixed so far, the rank among those sharing them.
    targets = []
    for which, hist in ((0, hist_d), (1, hist_r)):
        for rank in ranks:
            prefix, within = _pick(hist, rank)
            targets.append([which, prefix, within])
    known = _RADIX_BITS
    mask16 = uint.type((1 << _RADIX_BITS) - 1)
    while known < bits:
        hists = [np.zeros(1 << _RADIX_BITS, np.int64) for _ in targets]
        shift_hi, shift_lo = bits - known, bits - known - _RADIX_BITS
        for _i, x, y in _chunks(a, e, cdt):
            m, _, _ = _errors(x, y, tol, tiny, b)
            views = (b.d[:m].view(uint), b.r[:m].view(uint))
            his = [v >> shift_hi for v in views]
            for t, h in zip(targets, hists, strict=True):
                sel = views[t[0]][his[t[0]] == t[1]]
                if sel.size:
                    h += np.bincount((sel >> shift_lo) & mask16, minlength=1 << _RADIX_BITS)
        for t, h in zip(targets, hists, strict=True):
            nxt, t[2] = _pick(h, t[2])
            t[1] = (t[1] << _RADIX_BITS) | nxt
        known += _RADIX_BITS
    out = [float(np.array([t[1]], dtype=uint).view(cdt)[0]) for t in targets]
    return out[0], out[1], out[2], out[3]


def _topk_agreement(actual: np.ndarray, expected: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    if actual.ndim == 0 or _compute_dtype(expected.dtype) is None or expected.dtype.kind in "iub":
        return {}
    classes = expected.shape[-1]
    ks = tuple(k for k in ks if 1 <= k <= classes)
    if classes < 2 or classes > TOPK_MAX_CLASSES or not ks:
        return {}
    a2, e2 = actual.reshape(-1, classes), expected.reshape(-1, classes)
    rows = a2.shape[0]
    if rows == 0:
        return {}
    step = max(1, CHUNK // classes)
    agree = dict.fromkeys(ks, 0)
    for i in range(0, rows, step):
        x, y = a2[i : i + step], e2[i : i + step]
        if x.dtype.name == "bfloat16":
            x, y = x.astype(np.float32), y.astype(np.float32)
        for k in ks:
            if k == 1:
                agree[k] += int(np.count_nonzero(x.argmax(axis=-1) == y.argmax(axis=-1)))
            else:
                ix = np.sort(np.argpartition(x, -k, axis=-1)[:, -k:], axis=-1)
                iy = np.sort(np.argpartition(y, -k, axis=-1)[:, -k:], axis=-1)
                agree[k] += int(np.count_nonzero((ix == iy).all(axis=-1)))
    return {k: agree[k] / rows for k in ks}
