"""How fast ``compare_outputs`` compares float32 outputs on one core, against ``np.allclose``.

    python bench/compare.py [--quick] [--repeat N]

Per size (1M and 16M elements; ``--quick`` 1M and 4M), a reference ``e`` ~ N(0, 1) and an
actual ``a = e + N(0, 1e-5)`` as flat float32 arrays, compared with the default float32
tolerance (so about a tenth of the elements fail and every statistic is computed: errors, exact
median and p99, worst index, cosine, SNR, min passing atol). ``gb_per_s`` = (bytes of ``a`` +
bytes of ``e``) / the best of ``--repeat`` wall times of ``compare_outputs``. Flat arrays have no
classifier axis, so top-k is not part of the figure (``logits_gb_per_s``: a 2-D (rows, 1000)
case that includes top-1 and top-5, reported and not judged).

Peer, in the same run, on the same arrays: ``np.allclose(a, e, rtol=1e-5, atol=1e-5)``, what
most scripts do (a yes/no and nothing else); ``ratio_to_allclose`` = compare's GB/s / allclose's.

One core: OMP/OPENBLAS/MKL thread counts are set to 1 before numpy is imported. Metrics are flat;
the unprefixed ``gb_per_s`` is the worst over the sizes. Not a test: it exits 0 either way.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from _common import emit, ratio, rnd, say, target, worst  # noqa: E402
from fleetyard.validation import TolerancePolicy, compare_outputs  # noqa: E402

BENCH = "compare"
TARGET_GB_PER_S = 1.0


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def arrays(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(shape, dtype=np.float32)
    a = e + rng.standard_normal(shape, dtype=np.float32) * np.float32(1e-5)
    return a, e


def measure(label: str, shape: tuple[int, ...], repeat: int) -> dict[str, Any]:
    a, e = arrays(shape, seed=len(label))
    nbytes = a.nbytes + e.nbytes
    policy = TolerancePolicy()
    report = compare_outputs({"y": a}, {"y": e}, policy)  # warm-up, and a sanity check
    o = report["y"]
    assert o.max_abs is not None and o.failing > 0, "the bench arrays should fail somewhere"
    t_cmp = best_of(lambda: compare_outputs({"y": a}, {"y": e}, policy), repeat)
    t_all = best_of(lambda: np.allclose(a, e, rtol=1e-5, atol=1e-5), repeat)
    gbs, gbs_all = nbytes / t_cmp / 1e9, nbytes / t_all / 1e9
    say(f"{label}: compare {t_cmp * 1e3:.1f} ms ({gbs:.2f} GB/s), allclose {t_all * 1e3:.1f} ms ({gbs_all:.2f} GB/s)")
    return {
        f"{label}_gb_per_s": rnd(gbs, 3),
        f"{label}_ms": rnd(t_cmp * 1e3, 2),
        f"{label}_allclose_gb_per_s": rnd(gbs_all, 3),
        f"{label}_ratio_to_allclose": ratio(gbs, gbs_all),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1M and 4M elements, under two minutes")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per size; the best counts (5)")
    args = ap.parse_args(argv)
    sizes = {"1m": 1 << 20, "4m": 1 << 22} if args.quick else {"1m": 1 << 20, "16m": 1 << 24}
    metrics: dict[str, Any] = {"numpy": np.__version__}
    for label, n in sizes.items():
        metrics.update(measure(label, (n,), args.repeat))
    rows = sizes[list(sizes)[-1]] // 1000
    metrics.update(measure("logits", (rows, 1000), args.repeat))
    gbs = worst([metrics[f"{k}_gb_per_s"] for k in sizes], higher_is_better=True)
    metrics["gb_per_s"] = gbs
    metrics["ratio_to_allclose"] = worst([metrics[f"{k}_ratio_to_allclose"] for k in sizes], higher_is_better=True)
    emit(BENCH, metrics, {"gb_per_s": target(gbs, at_least=TARGET_GB_PER_S)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
