"""Whether big request bodies stall the server's event loop: ``GET /healthz`` timed while batches
of job specs near the batch route's cap are posted at once.

    python bench/big_bodies.py [--quick] [--concurrent 3] [--mib 7.5] [--rounds R] [--shape items|strings]

The real server (``python -m fleetyard server``, SQLite) runs as a process on 127.0.0.1. A thread
polls ``/healthz`` every 10 ms the whole time: first with nothing else going on (the peer: what
an idle loop answers in), then while ``--concurrent`` clients each post a ``POST /v1/jobs/batch``
of 1,000 specs (``--mib`` MiB in all) ``--rounds`` times. ``--shape items`` (the default, the
costly case) fills each spec's ``exclude_boards`` list with short names (about a million strings
in all); ``--shape strings`` gives each spec one long command (what ``json.loads`` parses at
memory speed). The fleet has no boards, so each batch is parsed, validated and then refused at
admission (422): the parse is what is measured, not the insert.

Metrics: ``healthz_idle_p50_ms``, ``healthz_idle_max_ms`` (the peer), ``healthz_busy_p50_ms``,
``healthz_busy_p99_ms``, ``healthz_busy_max_ms`` (while batches are parsed), ``batch_s_p50`` (one
batch's answer), ``batch_mib``, ``batches``. A heartbeat waits as long as ``/healthz`` does.

Not a test: it prints one JSON line last and exits 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from _common import emit, ms, percentile, rnd, say, target, use_repo_root


def _poll(url: str, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            client.get(f"{url}/healthz")
            samples.append((t0, time.perf_counter() - t0))
            time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round, a short idle phase")
    ap.add_argument("--concurrent", type=int, default=3)
    ap.add_argument("--mib", type=float, default=7.5, help="size of one batch (the route's cap is 8 MiB)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shape", choices=("items", "strings"), default="items")
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    use_repo_root()
    from tests.integration.harness import running_stack

    per_spec = int(args.mib * 2**20 / 1000) - 60
    if args.shape == "strings":
        specs = [{"params": {"command": "x" * per_spec}} for _ in range(1000)]
    else:  # '"b1234", ' is 9 bytes
        specs = [
            {"params": {"command": "x"}, "exclude_boards": [f"b{i:04d}" for i in range(per_spec // 9)]}
            for _ in range(1000)
        ]
    body = json.dumps({"jobs": specs}).encode()
    work = Path(tempfile.mkdtemp(prefix="fy-bench-bodies-"))
    with running_stack(f"sqlite:///{work / 'fleetyard.db'}", work) as stack:
        stack.setup()
        stack.start_server()
        headers = {"Authorization": f"Bearer {stack.tokens['alice']}", "Content-Type": "application/json"}
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        poller = threading.Thread(target=_poll, args=(stack.url, stop, samples), daemon=True)
        poller.start()
        time.sleep(1.0 if args.quick else 3.0)
        busy_from = time.perf_counter()
        answers: list[float] = []

        def post(_: int) -> None:
            with httpx.Client(timeout=300) as client:
                t0 = time.perf_counter()
                r = client.post(f"{stack.url}/v1/jobs/batch", content=body, headers=headers)
                answers.append(time.perf_counter() - t0)
                if r.status_code != 422 or "can never run" not in r.text:
                    raise RuntimeError(f"unexpected answer {r.status_code}: {r.text[:300]}")

        say(f"posting {rounds} x {args.concurrent} batches of {len(body) / 2**20:.1f} MiB")
        with ThreadPoolExecutor(args.concurrent) as pool:
            for _ in range(rounds):
                list(pool.map(post, range(args.concurrent)))
        busy_to = time.perf_counter()
        stop.set()
        poller.join()
    idle = [d for t, d in samples if t < busy_from]
    busy = [d for t, d in samples if busy_from <= t < busy_to]
    metrics = {
        "healthz_idle_p50_ms": rnd(ms(percentile(idle, 50))),
        "healthz_idle_max_ms": rnd(ms(max(idle, default=None))),
        "healthz_busy_p50_ms": rnd(ms(percentile(busy, 50))),
        "healthz_busy_p99_ms": rnd(ms(percentile(busy, 99))),
        "healthz_busy_max_ms": rnd(ms(max(busy, default=None))),
        "batch_s_p50": rnd(percentile(answers, 50), 3),
        "batch_mib": rnd(len(body) / 2**20, 2),
        "batches": len(answers),
        "shape": args.shape,
        "healthz_busy_samples": len(busy),
    }
    targets = {"healthz_busy_max_ms": target(metrics["healthz_busy_max_ms"], at_most=250.0)}
    emit("big_bodies", metrics, targets)


if __name__ == "__main__":
    main()
