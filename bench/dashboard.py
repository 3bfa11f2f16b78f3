"""How fast the dashboard's fleet page renders with 10,000 boards in the store.

    python bench/dashboard.py [--boards 10000] [--hosts 1250] [--requests 20]

A fresh SQLite store is filled straight through the tables (hosts with a rack label, boards in a
mix of states), then ``GET /ui/fleet`` (the whole fleet as an HTML grid) is timed through the app
in this process (Starlette's TestClient: no network, no uvicorn), ``--requests`` times after two
warm-up requests. The peer is the JSON API's ``GET /v1/boards`` on the same store, timed the same
way: the page should cost about what listing the boards costs.

The availability page (``GET /ui/availability``: 24 hourly figures for the fleet and each
generation, from ``board_events``; and ``?hours=168``, a week) is timed the same way; the fill
gives every board an event two days back and one board in ten a suspect-and-back incident within
the last day.

Metrics: ``fleet_page_p50_ms``, ``fleet_page_p95_ms``, ``api_boards_p50_ms``, ``api_boards_p95_ms``,
``ratio_page_to_api_p50``, ``fleet_page_bytes``, ``api_boards_bytes``, ``availability_page_p50_ms``,
``availability_page_p95_ms``, ``availability_page_bytes``, ``availability_168h_page_p50_ms``,
``availability_168h_page_p95_ms``. Targets: p95 of each page ≤ 300 ms.
Not a test: it prints one JSON line last and exits 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, ms, percentile, ratio, say, target, use_repo_root

BENCH = "dashboard"
TARGET_P95_MS = 300.0
STATES = ["available"] * 70 + ["allocated"] * 20 + ["drained"] * 4 + ["suspect"] * 3 + ["remediating", "offline"] * 1
GENERATIONS = ("sim-g1", "sim-g2", "sim-g3")


def fill(url: str, *, boards: int, hosts: int) -> None:
    import sqlalchemy as sa

    from fleetyard.store import tables as t

    engine = sa.create_engine(url)
    at = time.time()
    per_host = max(1, boards // hosts)
    host_rows = [
        {"id": f"host-{h:05d}", "state": "online", "driver": "sim:8", "agent_version": "bench",
         "labels": {"rack": f"r{h // 40:03d}"}, "session": "s", "registered_at": at, "last_heartbeat_at": at}
        for h in range(hosts)
    ]  # fmt: skip
    board_rows = []
    for i in range(boards):
        h, slot = divmod(i, per_host)
        state = STATES[i % len(STATES)]
        board_rows.append(
            {"id": f"sn-{i:06d}", "host_id": host_rows[min(h, hosts - 1)]["id"], "slot": slot,
             "generation": GENERATIONS[h % len(GENERATIONS)], "firmware": "1.0", "device": f"sim:{slot}",
             "labels": {}, "state": state, "state_reason": "bench", "state_changed_at": at,
             "attempt_id": 1 if state == "allocated" else None, "telemetry": {"temp_c": 50.0 + i % 20},
             "telemetry_at": at}
        )  # fmt: skip
    # Board history for the availability page: each board came in two days ago; one in ten went
    # suspect and back (a policy incident) in each of the last 24 hours' worth of hours.
    event_rows = []
    for i, b in enumerate(board_rows):
        event_rows.append({"board_id": b["id"], "at": at - 2 * 86400.0, "from_state": "onboarding",
                           "to_state": "available", "actor": "policy", "reason": "onboarded"})  # fmt: skip
        if i % 10 == 0:
            down = at - 3600.0 * (1 + i % 24) + 60.0
            event_rows.append({"board_id": b["id"], "at": down, "from_state": "available", "to_state": "suspect",
                               "actor": "policy", "reason": "failed its probe: bench"})  # fmt: skip
            event_rows.append({"board_id": b["id"], "at": down + 900.0, "from_state": "suspect",
                               "to_state": "available", "actor": "policy", "reason": "probe ok"})  # fmt: skip
    with engine.begin() as conn:
        conn.execute(t.hosts.insert(), host_rows)
        conn.execute(t.boards.insert(), board_rows)
        conn.execute(t.board_events.insert(), event_rows)
    engine.dispose()


def timed(client: object, path: str, headers: dict[str, str], n: int) -> tuple[list[float], int]:
    get = client.get  # type: ignore[attr-defined]
    for _ in range(2):
        assert get(path, headers=headers).status_code == 200
    times, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        r = get(path, headers=headers)
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text[:200]
        size = len(r.content)
    return times, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--boards", type=int, default=10_000)
    ap.add_argument("--hosts", type=int, default=1_250)
    ap.add_argument("--requests", type=int, default=20)
    args = ap.parse_args()
    use_repo_root()
    from fastapi.testclient import TestClient

    from fleetyard.domain.auth import Role
    from fleetyard.server.app import create_app
    from fleetyard.store import migrate
    from fleetyard.store.db import Store
    from fleetyard.store.tokens import create_token

    work = Path(tempfile.mkdtemp(prefix="fy-bench-dashboard-"))
    try:
        url = f"sqlite:///{work / 'fleetyard.db'}"
        migrate.upgrade(url)
        say(f"filling the store: {args.boards} boards on {args.hosts} hosts")
        fill(url, boards=args.boards, hosts=args.hosts)
        headers = {"Authorization": f"Bearer {create_token(url, name='admin', role=Role.ADMIN)}"}
        store = Store(url)
        app = create_app(store, blob_dir=work / "blobs")
        with TestClient(app) as client:
            say(f"timing GET /ui/fleet and GET /v1/boards, {args.requests} requests each")
            page, page_bytes = timed(client, "/ui/fleet", headers, args.requests)
            api, api_bytes = timed(client, "/v1/boards", headers, args.requests)
            say(f"timing GET /ui/availability (24 h), {args.requests} requests")
            avail, avail_bytes = timed(client, "/ui/availability", headers, args.requests)
            week, _ = timed(client, "/ui/availability?hours=168", headers, args.requests)
        store.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    p50, p95 = percentile(page, 50), percentile(page, 95)
    a50, a95 = percentile(api, 50), percentile(api, 95)
    v50, v95 = percentile(avail, 50), percentile(avail, 95)
    w50, w95 = percentile(week, 50), percentile(week, 95)
    metrics = {
        "boards": args.boards,
        "hosts": args.hosts,
        "requests": args.requests,
        "fleet_page_p50_ms": ms(p50),
        "fleet_page_p95_ms": ms(p95),
        "api_boards_p50_ms": ms(a50),
        "api_boards_p95_ms": ms(a95),
        "ratio_page_to_api_p50": ratio(p50, a50),
        "fleet_page_bytes": page_bytes,
        "api_boards_bytes": api_bytes,
        "availability_page_p50_ms": ms(v50),
        "availability_page_p95_ms": ms(v95),
        "availability_page_bytes": avail_bytes,
        "availability_168h_page_p50_ms": ms(w50),
        "availability_168h_page_p95_ms": ms(w95),
    }
    emit(
        BENCH,
        metrics,
        {
            "fleet_page_p95_ms": target(ms(p95), at_most=TARGET_P95_MS),
            "availability_page_p95_ms": target(ms(v95), at_most=TARGET_P95_MS),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
