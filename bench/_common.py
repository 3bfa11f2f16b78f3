"""Shared bits of the benchmarks: machine facts, percentiles, targets, the JSON line, cleanup.

Every benchmark prints, as its last line of stdout, one JSON object:

    {"bench": NAME, "metrics": {...}, "targets": {...}, "machine": {...}}

``targets`` maps a metric name to ``{"min": X}`` or ``{"max": X}`` and whether this run ``met`` it.
Progress goes to stderr, so stdout stays one parseable line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def use_repo_root() -> None:
    """Make ``tests.integration.harness`` importable (the benchmarks reuse its process launcher)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    load = None
    with contextlib.suppress(OSError):
        load = [round(x, 2) for x in os.getloadavg()]
    return {
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "mem_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "loadavg_at_end": load,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linearly interpolated between closest ranks; None if empty."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def rnd(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 4)


def target(value: float | None, *, at_least: float | None = None, at_most: float | None = None) -> dict[str, Any]:
    """A target entry: the bound, the value, and whether it met the bound (None when not measured)."""
    out: dict[str, Any] = {}
    met: bool | None = None if value is None else True
    if at_least is not None:
        out["min"] = at_least
        met = met and value is not None and value >= at_least
    if at_most is not None:
        out["max"] = at_most
        met = met and value is not None and value <= at_most
    out["value"] = value
    out["met"] = met
    return out


def emit(bench: str, metrics: dict[str, Any], targets: dict[str, Any]) -> None:
    """Print the result line: the last line of stdout."""
    sys.stderr.flush()
    print(json.dumps({"bench": bench, "metrics": metrics, "targets": targets, "machine": machine_info()}), flush=True)


def say(msg: str) -> None:
    """Progress, on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def interrupts_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every ``finally`` that stops a process runs."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` and its children that ended."""
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system + t.children_user + t.children_system)


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of ``pid`` and all its descendants: the live ones, and those that ended and were
    reaped (an agent, its board workers and their commands; a postmaster and its backends)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def worst(values: list[float | None], *, higher_is_better: bool) -> float | None:
    """The worst of the values measured (None ignored): what the unprefixed metric keys report."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    return min(xs) if higher_is_better else max(xs)


@dataclass
class Database:
    url: str
    server_pid: int | None = None  # PostgreSQL's postmaster, whose backends do the store's work


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[Database]:
    """A fresh, empty database of ``kind`` (sqlite, postgres): a throwaway PostgreSQL cluster lives
    only inside the block (the integration harness's ``PostgresCluster``)."""
    use_repo_root()
    from tests.integration.harness import PostgresCluster

    if kind == "sqlite":
        yield Database(f"sqlite:///{work / 'fleetyard.db'}")
        return
    cluster = PostgresCluster()
    try:
        cluster.start()
        url = cluster.new_database()
        pid = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
        yield Database(url, pid)
    finally:
        cluster.stop()
