"""Sharding, scoring, combining and comparing evaluations.

Every function here is pure (numbers in, numbers out), so the boards, the CLI and the tests share
one definition of each metric:

- **top1** (**top5**): the label is the argmax (among the ``k`` largest) of the sample's output over
  its last axis; ``k`` is ``min(5, classes)``, so with five classes or fewer top-5 is 1.
- **mse**: the mean of squared differences between output and float target, over every element
  of every targeted sample (``sum of squares / elements``, so ranks combine exactly).
- user metrics: a rank's value over its shard, combined across ranks as the sample-weighted mean
  of the ranks' values (exact for a metric that is a mean over samples, an approximation otherwise).

A rank reports counts and sums (:class:`RankTally`), never ratios, so that :func:`aggregate` over
the ranks of a job equals the same eval run on one board: exactly for the counts (top-1, top-5),
to floating-point rounding for the MSE (its sums are added in another order).

:func:`compare_records` pairs two evals' per-sample records by index: top-1 by McNemar's exact
test (:func:`mcnemar_exact`, the two-sided binomial test on the discordant pairs, written with
``math.comb``: scipy is not a dependency), and MSE by a paired bootstrap 95% interval of the
mean per-sample difference (:func:`bootstrap_mean_ci`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "RankTally",
    "SampleScore",
    "aggregate",
    "bootstrap_mean_ci",
    "compare_records",
    "input_digest",
    "mcnemar_exact",
    "score_sample",
    "shard_indices",
]

ALPHA = 0.05


def shard_indices(n: int, rank: int, world_size: int) -> range:
    """The samples of rank ``rank`` of ``world_size``: every index with ``index % world_size == rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return range(rank, n, world_size)


def input_digest(inputs: Mapping[str, np.ndarray]) -> str:
    """The sha256 of a sample's inputs: each array's bytes in C order, in the mapping's (signature) order."""
    h = hashlib.sha256()
    for arr in inputs.values():
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class SampleScore:
    """One sample's record (a line of ``samples.jsonl``)."""

    index: int
    input_sha256: str
    output_sha256: str
    label: int | None = None
    prediction: int | None = None
    correct: bool | None = None  # top-1; None without a label
    top5: bool | None = None
    sq_err: float | None = None  # sum of squared errors against the target; None without one
    elems: int = 0  # elements the target has
    error: float | None = None  # mean squared error of this sample (sq_err / elems)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def score_sample(
    index: int,
    inputs: Mapping[str, np.ndarray],
    output: np.ndarray,
    *,
    label: int | None = None,
    target: np.ndarray | None = None,
    k: int = 5,
) -> SampleScore:
    """Score one sample's output against its integer label (top-1/top-k) and float target (squared error)."""
    out = np.asarray(output)
    prediction = correct = in_top = None
    if label is not None:
        scores = out.reshape(-1, out.shape[-1]) if out.ndim else out.reshape(1, 1)
        if scores.shape[0] != 1:
            raise ValueError(
                f"sample {index}: the output has {scores.shape[0]} rows of scores; an eval scores one sample a query"
            )
        row = scores[0].astype(np.float64)
        prediction = int(np.argmax(row))
        kk = min(k, row.size)
        top = np.argpartition(-row, kk - 1)[:kk]
        correct = prediction == int(label)
        in_top = int(label) in {int(t) for t in top}
    sq = err = None
    elems = 0
    if target is not None:
        t = np.asarray(target, dtype=np.float64)
        if t.size != out.size:
            raise ValueError(f"sample {index}: the target has {t.size} elements, the output {out.size}")
        d = out.astype(np.float64).reshape(-1) - t.reshape(-1)
        sq = float(np.dot(d, d))
        elems = int(t.size)
        err = sq / elems if elems else 0.0
    return SampleScore(
        index=int(index),
        input_sha256=input_digest(inputs),
        output_sha256=hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest(),
        label=None if label is None else int(label),
        prediction=prediction,
        correct=correct,
        top5=in_top,
        sq_err=sq,
        elems=elems,
        error=err,
    )


@dataclass
class RankTally:
    """Counts and sums of one rank (or of several, merged): what combines exactly."""

    samples: int = 0
    labeled: int = 0
    top1_correct: int = 0
    top5_correct: int = 0
    targeted: int = 0
    sq_err_sum: float = 0.0
    sq_err_elems: int = 0

    def add(self, s: SampleScore) -> None:
        self.samples += 1
        if s.correct is not None:
            self.labeled += 1
            self.top1_correct += bool(s.correct)
            self.top5_correct += bool(s.top5)
        if s.sq_err is not None:
            self.targeted += 1
            self.sq_err_sum += s.sq_err
            self.sq_err_elems += s.elems

    def merge(self, other: RankTally) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RankTally:
        return cls(**{k: d[k] for k in asdict(cls()) if k in d})

    def metrics(self) -> dict[str, float | None]:
        return {
            "top1": self.top1_correct / self.labeled if self.labeled else None,
            "top5": self.top5_correct / self.labeled if self.labeled else None,
            "mse": self.sq_err_sum / self.sq_err_elems if self.sq_err_elems else None,
        }


def aggregate(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine the ranks' results of one eval job into its metrics.

    Each result is a rank's ``result`` (``rank``, ``world_size``, ``tally``, ``user``, ``artifact``,
    ``dataset``). Raises :class:`ValueError` when the ranks disagree on the artifact, the data set
    or the world size, or do not cover every rank exactly once.
    """
    if not results:
        raise ValueError("no rank results to aggregate")
    first = results[0]
    world = int(first["world_size"])
    ranks = sorted(int(r["rank"]) for r in results)
    if ranks != list(range(world)):
        raise ValueError(f"ranks {ranks} do not cover a world of {world} exactly once")
    for r in results:
        for key in ("artifact", "world_size"):
            if r[key] != first[key]:
                raise ValueError(f"rank {r['rank']} has {key} {r[key]!r}, rank {first['rank']} {first[key]!r}")
        if r["dataset"]["sha256"] != first["dataset"]["sha256"]:
            raise ValueError(f"rank {r['rank']} evaluated another data set")
    total = RankTally()
    user_sum: dict[str, float] = {}
    user_n: dict[str, int] = {}
    for r in results:
        total.merge(RankTally.from_dict(r["tally"]))
        for name, u in (r.get("user") or {}).items():
            if u.get("value") is None:
                continue
            user_sum[name] = user_sum.get(name, 0.0) + float(u["value"]) * int(u["samples"])
            user_n[name] = user_n.get(name, 0) + int(u["samples"])
    user = {n: (user_sum[n] / user_n[n] if user_n[n] else None) for n in user_sum}
    return {
        "samples": total.samples,
        **total.metrics(),
        "user": user,
        "counts": total.to_dict(),
        "artifact": first["artifact"],
        "dataset": dict(first["dataset"]),
        "world_size": world,
    }


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs: under H0 each of the
    ``n = b + c`` discordant pairs falls either way with probability 1/2, so
    ``p = min(1, 2 · P[Binomial(n, 1/2) <= min(b, c)])``."""
    if b < 0 or c < 0:
        raise ValueError("counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, tail / (1 << (n - 1)))  # 2 * tail / 2**n, in integers until the one division


def bootstrap_mean_ci(
    diffs: Sequence[float] | np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences (seeded: the same every run)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // d.size)  # bounded memory for large evals
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        means[start : start + m] = d[rng.integers(0, d.size, size=(m, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def compare_records(
    a: Iterable[Mapping[str, Any]], b: Iterable[Mapping[str, Any]], *, alpha: float = ALPHA, seed: int = 0
) -> dict[str, Any]:
    """B against A on the samples both evaluated (paired by index).

    Raises :class:`ValueError` when a paired sample's inputs differ (not the same data set).
    ``top1``: accuracies, ``delta`` (B - A), the discordant counts (``a_only``: A right and B
    wrong; ``b_only``), McNemar's exact ``p_value`` and ``significant`` (p < alpha). ``mse``:
    the MSEs over the paired samples, ``delta``, the bootstrap ``ci95`` of the mean per-sample
    difference and ``significant`` (the interval excludes 0).
    """
    by_a = {int(r["index"]): r for r in a}
    by_b = {int(r["index"]): r for r in b}
    common = sorted(by_a.keys() & by_b.keys())
    mismatched = [i for i in common if by_a[i]["input_sha256"] != by_b[i]["input_sha256"]]
    if mismatched:
        raise ValueError(
            f"{len(mismatched)} paired sample(s) have different inputs (first: index {mismatched[0]}): "
            "the two evals did not run the same data set"
        )
    out: dict[str, Any] = {
        "paired": len(common),
        "only_a": len(by_a.keys() - by_b.keys()),
        "only_b": len(by_b.keys() - by_a.keys()),
        "labels_differ": sum(1 for i in common if by_a[i].get("label") != by_b[i].get("label")),
        "outputs_identical": sum(1 for i in common if by_a[i]["output_sha256"] == by_b[i]["output_sha256"]),
        "alpha": alpha,
        "top1": None,
        "mse": None,
    }
    cls = [i for i in common if by_a[i].get("correct") is not None and by_b[i].get("correct") is not None]
    if cls:
        ca = [bool(by_a[i]["correct"]) for i in cls]
        cb = [bool(by_b[i]["correct"]) for i in cls]
        a_only = sum(1 for x, y in zip(ca, cb, strict=True) if x and not y)
        b_only = sum(1 for x, y in zip(ca, cb, strict=True) if y and not x)
        p = mcnemar_exact(a_only, b_only)
        acc_a, acc_b = sum(ca) / len(cls), sum(cb) / len(cls)
        out["top1"] = {
            "samples": len(cls),
            "a": acc_a,
            "b": acc_b,
            "delta": acc_b - acc_a,
            "a_only": a_only,
            "b_only": b_only,
            "test": "McNemar exact (two-sided binomial on discordant pairs)",
            "p_value": p,
            "significant": p < alpha,
        }
    reg = [i for i in common if by_a[i].get("error") is not None and by_b[i].get("error") is not None]
    if reg:
        ea = np.array([float(by_a[i]["sq_err"]) for i in reg])
        eb = np.array([float(by_b[i]["sq_err"]) for i in reg])
        elems = np.array([int(by_a[i]["elems"]) for i in reg], dtype=np.float64)
        mse_a, mse_b = float(ea.sum() / elems.sum()), float(eb.sum() / elems.sum())
        per_sample = (eb - ea) / elems  # each sample's MSE difference
        lo, hi = bootstrap_mean_ci(per_sample, seed=seed, level=1 - alpha)
        out["mse"] = {
            "samples": len(reg),
            "a": mse_a,
            "b": mse_b,
            "delta": mse_b - mse_a,
            "mean_per_sample_delta": float(per_sample.mean()),
            "test": "paired bootstrap of per-sample MSE differences (2000 resamples, seed 0)",
            "ci95": [lo, hi],
            "significant": bool(not (lo <= 0.0 <= hi)),
        }
    return out
