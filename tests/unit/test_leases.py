"""Leases: the expiry policy, the ``lease`` workload, and the API flow in one process."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from tests.unit.test_api_flow import Fleet

from fleetyard.cli.lease import parse_ttl
from fleetyard.domain.job import Outcome
from fleetyard.errors import BadRequest
from fleetyard.policy.leases import LeaseView, expired, expires_at
from fleetyard.store.leases import expire_leases
from fleetyard.workloads.base import WorkloadContext, validate_params, workload_class
from fleetyard.workloads.lease import ACCESS_LOG_PREFIX, LeaseParams, LeaseWorkload, access_info, parse_access_line

# ---- policy --------------------------------------------------------------------------------------


def test_a_queued_lease_never_expires() -> None:
    lease = LeaseView(job_id=1, lease_expires_at=100.0, started_at=None, ttl_s=10.0)
    assert expires_at(lease) is None
    assert expired([lease], now=1e12) == []


def test_the_ttl_counts_from_when_boards_are_granted() -> None:
    # Taken at 90 with a TTL of 10 (lease_expires_at 100), granted only at 150: ends at 160.
    late = LeaseView(job_id=1, lease_expires_at=100.0, started_at=150.0, ttl_s=10.0)
    assert expires_at(late) == 160.0
    # Renewed at 155 for 100 s: the renewal wins.
    renewed = LeaseView(job_id=2, lease_expires_at=255.0, started_at=150.0, ttl_s=10.0)
    assert expires_at(renewed) == 255.0
    no_column = LeaseView(job_id=3, lease_expires_at=None, started_at=150.0, ttl_s=10.0)
    assert expires_at(no_column) == 160.0
    assert expired([renewed, late, no_column], now=159.9) == []
    assert expired([renewed, late, no_column], now=160.0) == [1, 3]
    assert expired([renewed, late, no_column], now=300.0) == [1, 2, 3]


# ---- workload ------------------------------------------------------------------------------------


def _ctx(tmp: Path, stop: threading.Event, logs: list[str]) -> WorkloadContext:
    return WorkloadContext(
        assignment_id=7,
        job_id=42,
        rank=0,
        world_size=1,
        board_id="h1-b3",
        device="sim:3",
        params=LeaseParams(ttl_s=60, note="debugging"),
        time_limit_s=3600,
        env={"FLEETYARD_DEVICE": "sim:3", "FLEETYARD_BOARD_ID": "h1-b3", "FLEETYARD_OUTPUT_DIR": "/x", "A": "b c"},
        workdir=tmp,
        output_dir=tmp,
        log=logs.append,
        should_stop=stop.is_set,
    )


def test_the_workload_says_how_to_reach_the_board_and_holds_it_until_stopped(tmp_path: Path) -> None:
    assert workload_class("lease") is LeaseWorkload
    stop, logs = threading.Event(), list[str]()
    ctx = _ctx(tmp_path, stop, logs)
    results = []
    runner = threading.Thread(target=lambda: results.append(LeaseWorkload().run(ctx)))
    runner.start()
    deadline = time.monotonic() + 5
    while not logs and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert runner.is_alive()  # it holds the board
    info = parse_access_line(logs[0])
    assert info is not None and info["board_id"] == "h1-b3" and info["device"] == "sim:3"
    assert "FLEETYARD_DEVICE=sim:3" in info["shell"] and "FLEETYARD_BOARD_ID=h1-b3" in info["shell"]
    assert "A='b c'" in info["shell"] and "FLEETYARD_OUTPUT_DIR" not in info["shell"]
    assert info["ssh"].startswith(f"ssh -t {info['host']} ")
    stop.set()
    runner.join(5)
    [res] = results
    assert res.outcome is Outcome.SUCCESS and res.message == "lease released"
    assert res.result["shell"] == info["shell"] and res.result["held_s"] >= 0.2


def test_lease_params_are_checked() -> None:
    assert validate_params("lease", {"ttl_s": 7200}).ttl_s == 7200  # type: ignore[attr-defined]
    for bad in ({}, {"ttl_s": 0}, {"ttl_s": 8 * 86400}, {"ttl_s": 10, "extra": 1}):
        with pytest.raises(BadRequest, match="invalid job spec"):
            validate_params("lease", bad)


def test_access_info_quotes_for_the_shell() -> None:
    info = access_info(board_id="b 1", host="h;x", device="sim:0", lease_id=1)
    assert info["shell"].startswith("env FLEETYARD_BOARD_ID='b 1' ") and info["ssh"].startswith("ssh -t 'h;x' ")
    assert parse_access_line("hello\n" + ACCESS_LOG_PREFIX + json.dumps(info) + "\n") == info
    assert parse_access_line("no access here") is None


def test_ttl_parsing() -> None:
    assert [parse_ttl(x) for x in ("90m", "2h", "1d", "45s", "3600", "1.5h")] == [5400, 7200, 86400, 45, 3600, 5400]
    for bad in ("", "2w", "-1h", "0", "h"):
        with pytest.raises(typer.BadParameter):
            parse_ttl(bad)


# ---- API flow ------------------------------------------------------------------------------------


def _started(a: dict[str, Any], at: float) -> list[dict[str, Any]]:
    info = access_info(board_id=a["board_id"], host="h1.example", device="sim:x", lease_id=a["job_id"])
    return [
        {"assignment_id": a["id"], "seq": 0, "type": "started", "at": at},
        {"assignment_id": a["id"], "seq": 1, "type": "log", "at": at, "data": ACCESS_LOG_PREFIX + json.dumps(info)},
    ]


def _released(a: dict[str, Any], seq: int = 2) -> list[dict[str, Any]]:
    return [
        {
            "assignment_id": a["id"],
            "seq": seq,
            "type": "finished",
            "at": time.time(),
            "outcome": "success",
            "message": "lease released",
        }
    ]


def test_take_run_renew_expire(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    r = fleet.client.post("/v1/leases", json={"ttl_s": 1, "note": "perf"}, headers=fleet.h(fleet.user))
    assert r.status_code == 201, r.text
    lease = r.json()
    assert lease["state"] == "queued" and lease["active"] and lease["expires_at"] is None
    assert lease["owner"] == "alice" and lease["team"] == "compiler" and lease["note"] == "perf"
    job = fleet.job(lease["id"])
    assert job["kind"] == "lease" and job["spec"]["time_limit_s"] == 7 * 86400

    assert fleet.rec.schedule(time.time()) == 1
    [a] = fleet.take("h1")
    assert a["kind"] == "lease" and a["params"]["ttl_s"] == 1
    started = time.time()
    fleet.events("h1", _started(a, started))
    lease = fleet.client.get(f"/v1/leases/{lease['id']}", headers=fleet.h(fleet.other)).json()
    assert lease["state"] == "running" and lease["expires_at"] == pytest.approx(started + 1, abs=0.5)
    [b] = lease["boards"]
    assert b["board_id"] == a["board_id"] and b["host_id"] == "h1" and b["device"].startswith("sim:")
    assert b["access"]["host"] == "h1.example" and "FLEETYARD_BOARD_ID=" in b["access"]["shell"]
    mine = fleet.client.get("/v1/leases", params={"mine": True}, headers=fleet.h(fleet.user)).json()
    assert [x["id"] for x in mine] == [lease["id"]]
    assert fleet.client.get("/v1/leases", params={"mine": True}, headers=fleet.h(fleet.other)).json() == []

    # Renew: not by another team; by the owner's team, to 600 s from now.
    r = fleet.client.post(f"/v1/leases/{lease['id']}/renew", json={"ttl_s": 600}, headers=fleet.h(fleet.other))
    assert r.status_code == 403
    r = fleet.client.post(f"/v1/leases/{lease['id']}/renew", json={"ttl_s": 600}, headers=fleet.h(fleet.user))
    assert r.status_code == 200 and r.json()["expires_at"] == pytest.approx(time.time() + 600, abs=5)

    # Expiry: not before its (renewed) end; after it, the lease's rank is told to stop.
    assert expire_leases(fleet.store, time.time() + 100) == []
    assert expire_leases(fleet.store, time.time()) == []
    # Renewed to a moment from now: it cannot end before its own TTL from when it started.
    r = fleet.client.post(f"/v1/leases/{lease['id']}/renew", json={"ttl_s": 0.1}, headers=fleet.h(fleet.user))
    end = r.json()["expires_at"]
    assert end == pytest.approx(max(time.time() + 0.1, lease["expires_at"]), abs=0.5)
    time.sleep(max(0.0, end - time.time()) + 0.05)
    assert expire_leases(fleet.store, time.time()) == [lease["id"]]
    assert expire_leases(fleet.store, time.time() + 800) == []  # already ending
    ending = fleet.client.get(f"/v1/leases/{lease['id']}", headers=fleet.h(fleet.user)).json()
    assert not ending["active"] and ending["message"].startswith("lease expired at ")
    r = fleet.client.post(f"/v1/leases/{lease['id']}/renew", headers=fleet.h(fleet.user))
    assert r.status_code == 409
    assert fleet.beat("h1", running=[a["id"]])["cancel"] == [a["id"]]
    fleet.events("h1", _released(a))
    done = fleet.client.get(f"/v1/leases/{lease['id']}", headers=fleet.h(fleet.user)).json()
    assert done["state"] == "succeeded" and done["ended"] == "expired"
    assert done["message"].startswith("lease expired at ")
    board = fleet.client.get(f"/v1/boards/{a['board_id']}", headers=fleet.h(fleet.user)).json()
    assert board["state"] == "available" and board["job_id"] is None
    assert fleet.client.get("/v1/leases", headers=fleet.h(fleet.user)).json() == []


def test_release_queued_and_running(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    first = fleet.client.post("/v1/leases", json={"ttl_s": 60}, headers=fleet.h(fleet.user)).json()
    second = fleet.client.post("/v1/leases", json={"ttl_s": 60}, headers=fleet.h(fleet.user)).json()
    fleet.rec.schedule(time.time())
    [a] = fleet.take("h1")
    assert a["job_id"] == first["id"]
    queued = fleet.client.get(f"/v1/leases/{second['id']}", headers=fleet.h(fleet.user)).json()
    assert queued["state"] == "queued"
    # A queued lease never expires, and its release ends it at once.
    assert expire_leases(fleet.store, time.time() + 10_000) == []
    r = fleet.client.delete(f"/v1/leases/{second['id']}", headers=fleet.h(fleet.other))
    assert r.status_code == 403
    r = fleet.client.delete(f"/v1/leases/{second['id']}", headers=fleet.h(fleet.user))
    assert r.status_code == 200 and r.json()["state"] == "canceled" and r.json()["ended"] == "released"

    fleet.events("h1", _started(a, time.time()))
    r = fleet.client.delete(f"/v1/leases/{first['id']}", headers=fleet.h(fleet.admin))
    assert r.status_code == 200 and r.json()["state"] == "running" and not r.json()["active"]
    assert fleet.beat("h1", running=[a["id"]])["cancel"] == [a["id"]]
    fleet.events("h1", _released(a))
    done = fleet.client.get(f"/v1/leases/{first['id']}", headers=fleet.h(fleet.user)).json()
    assert done["state"] == "succeeded" and done["ended"] == "released" and done["message"] == "lease released"
    assert done["boards"][0]["access"]["shell"]  # from the rank's result now
    assert fleet.client.get("/v1/boards/h1-b0", headers=fleet.h(fleet.user)).json()["state"] == "available"


def test_bad_leases_are_refused(fleet: Fleet) -> None:
    fleet.register("h1", n=1)

    def post(body: dict[str, Any]) -> Any:
        return fleet.client.post("/v1/leases", json=body, headers=fleet.h(fleet.user))

    assert post({"ttl_s": 0}).status_code == 422
    assert post({"ttl_s": 8 * 86400}).status_code == 422
    assert post({"ttl_s": 60, "bogus": 1}).status_code == 422
    r = post({"ttl_s": 60, "boards": 3})
    assert r.status_code == 422 and "can never run" in r.json()["error"]["message"]
    r = post({"ttl_s": 60, "boards": 2, "board_ids": ["h1-b0"]})
    assert r.status_code == 422
    r = post({"ttl_s": 60, "team": "robotics"})
    assert r.status_code == 403
    assert fleet.client.get("/v1/leases/999", headers=fleet.h(fleet.user)).status_code == 404
    job = fleet.submit()
    assert fleet.client.get(f"/v1/leases/{job['id']}", headers=fleet.h(fleet.user)).status_code == 404
