"""The API and the controller's reconcile steps in one process, over a real SQLite store.

Integration tests (tests/integration) run the same flows with real processes; these are the
fast, precise checks of each rule.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from tests.fast_health import FAST_HEALTH

from fleetyard.controller.reconcile import HealthPass, Reconciler
from fleetyard.domain.auth import Role
from fleetyard.domain.health_config import HealthConfig
from fleetyard.policy.liveness import Liveness
from fleetyard.server.app import create_app
from fleetyard.store import migrate
from fleetyard.store import tables as t
from fleetyard.store.db import Store
from fleetyard.store.tokens import create_token


class Fleet:
    def __init__(self, tmp: Path, *, url: str | None = None, health: HealthConfig = FAST_HEALTH) -> None:
        url = url or f"sqlite:///{tmp / 'fy.db'}"
        migrate.upgrade(url)
        self.url = url
        self.store = Store(url)
        self.admin = create_token(url, name="admin", role=Role.ADMIN)
        self.user = create_token(url, name="alice", role=Role.USER, team="compiler")
        self.other = create_token(url, name="bob", role=Role.USER, team="robotics")
        self.agents = {h: create_token(url, name=f"agent-{h}", role=Role.AGENT, host=h) for h in ("h1", "h2")}
        # Heartbeats are written behind; tests flush them explicitly.
        self.app = create_app(self.store, blob_dir=tmp / "blobs", max_blob_bytes=1024, heartbeat_flush_s=3600)
        self.client = TestClient(self.app)
        self.rec = Reconciler(
            self.store,
            liveness_config=Liveness(unreachable_after_s=5.0, lost_after_s=10.0),
            watching_since=0.0,
            health_config=health,
        )

    def h(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def register(self, host: str, n: int = 2, gen: str = "sim-g1", session: str = "s1", firmware: str = "1.0") -> None:
        boards = [
            {"serial": f"{host}-b{i}", "generation": gen, "slot": i, "firmware": firmware, "device": f"sim:{i}"}
            for i in range(n)
        ]
        r = self.client.post(
            "/v1/agent/register",
            json={"host": host, "session": session, "driver": f"sim:{n}", "agent_version": "t", "boards": boards},
            headers=self.h(self.agents[host]),
        )
        assert r.status_code == 200, r.text

    def beat(self, host: str, session: str = "s1", **body: object) -> dict:
        """A heartbeat, written through, answered from the state after it."""
        payload = {"session": session, **body}
        r = self.client.post("/v1/agent/heartbeat", json=payload, headers=self.h(self.agents[host]))
        assert r.status_code == 200, r.text
        self.app.state.heartbeats.flush()
        payload.pop("fault_acks", None)
        r = self.client.post("/v1/agent/heartbeat", json=payload, headers=self.h(self.agents[host]))
        self.app.state.heartbeats.flush()
        return r.json()

    def take(self, host: str, session: str = "s1") -> list[dict]:
        r = self.client.get(
            "/v1/agent/assignments", params={"session": session, "wait": 0}, headers=self.h(self.agents[host])
        )
        assert r.status_code == 200, r.text
        return r.json()["assignments"]

    def events(self, host: str, events: list[dict], session: str = "s1") -> dict:
        r = self.client.post(
            "/v1/agent/events", json={"session": session, "events": events}, headers=self.h(self.agents[host])
        )
        assert r.status_code == 200, r.text
        return r.json()

    def submit(self, token: str | None = None, **spec: object) -> dict:
        r = self.client.post(
            "/v1/jobs", json={"params": {"command": "true"}, **spec}, headers=self.h(token or self.user)
        )
        assert r.status_code == 201, r.text
        return r.json()

    def job(self, job_id: int) -> dict:
        return self.client.get(f"/v1/jobs/{job_id}", headers=self.h(self.admin)).json()


def finish(a: dict, *, code: int = 0, outcome: str = "success", board_ok: bool = True) -> list[dict]:
    now = time.time()
    return [
        {"assignment_id": a["id"], "seq": 0, "type": "started", "at": now},
        {"assignment_id": a["id"], "seq": 1, "type": "log", "at": now, "data": f"rank {a['rank']}\n"},
        {
            "assignment_id": a["id"],
            "seq": 2,
            "type": "finished",
            "at": now,
            "exit_code": code,
            "outcome": outcome,
            "board_ok": board_ok,
        },
    ]


def fail_and_heal(f: Fleet, board: str, host: str = "h1") -> HealthPass:
    """The board fails its probe, goes up the ladder, and a soft reset and its check heal it
    (the agent's part played here); the health pass that ends it."""
    f.beat(host, boards=[{"id": board, "ok": False, "reason": "hung"}])
    assert f.rec.health(time.time()).failing == [board]
    [op] = f.beat(host)["ops"]
    now = time.time()
    result = {"id": op["id"], "ok": True, "message": None, "started_at": now, "finished_at": now}
    f.beat(host, boards=[{"id": board, "ok": True}], op_results=[result])
    f.rec.health(time.time())
    [check] = f.take(host)
    f.events(host, finish(check))
    return f.rec.health(time.time())


def test_job_runs_to_success_with_logs_and_board_history(fleet: Fleet) -> None:
    fleet.register("h1")
    job = fleet.submit(boards=2, placement="same-host", name="pair")
    assert job["state"] == "queued" and job["team"] == "compiler" and job["owner"] == "alice"
    assert fleet.rec.schedule(time.time()) == 1
    got = fleet.take("h1")
    assert sorted(a["rank"] for a in got) == [0, 1] and all(a["world_size"] == 2 for a in got)
    assert fleet.take("h1") == []  # delivered once
    for a in got:
        fleet.events("h1", finish(a))
    detail = fleet.job(job["id"])
    assert detail["state"] == "succeeded" and detail["outcome"] == "success"
    assert detail["started_at"] is not None and detail["finished_at"] is not None
    logs = fleet.client.get(f"/v1/jobs/{job['id']}/logs", headers=fleet.h(fleet.user)).json()
    assert sorted(c["data"] for c in logs["chunks"]) == ["rank 0\n", "rank 1\n"] and logs["finished"]
    hist = fleet.client.get("/v1/boards/h1-b0/history", headers=fleet.h(fleet.user)).json()
    assert [(e["from_state"], e["to_state"]) for e in reversed(hist)] == [
        (None, "available"),
        ("available", "allocated"),
        ("allocated", "available"),
    ]


def test_replayed_events_change_nothing(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    job = fleet.submit()
    fleet.rec.schedule(time.time())
    [a] = fleet.take("h1")
    evs = finish(a)
    first = fleet.events("h1", evs)
    again = fleet.events("h1", evs)
    assert first["applied"] == 3 and again["applied"] == 0
    logs = fleet.client.get(f"/v1/jobs/{job['id']}/logs", headers=fleet.h(fleet.user)).json()
    assert len(logs["chunks"]) == 1
    assert fleet.job(job["id"])["attempts"] == 1


def test_user_error_fails_job_and_stops_gang_siblings(fleet: Fleet) -> None:
    fleet.register("h1")
    job = fleet.submit(boards=2)
    fleet.rec.schedule(time.time())
    a0, a1 = sorted(fleet.take("h1"), key=lambda a: a["rank"])
    now = time.time()
    fleet.events("h1", [{"assignment_id": a1["id"], "seq": 0, "type": "started", "at": now}])
    ack = fleet.events("h1", finish(a0, code=3, outcome="user_error"))
    assert ack["cancel"] == [a1["id"]]  # the other rank must stop
    fleet.events("h1", [{"assignment_id": a1["id"], "seq": 1, "type": "finished", "at": now, "outcome": "canceled"}])
    detail = fleet.job(job["id"])
    assert detail["state"] == "failed" and detail["outcome"] == "user_error"
    ranks = detail["attempt_list"][0]["ranks"]
    assert [r["exit_code"] for r in ranks] == [3, None]


def test_infra_error_requeues_and_marks_board_suspect(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    fleet.register("h2", n=1)
    job = fleet.submit(max_infra_retries=1)
    fleet.rec.schedule(time.time())
    [a] = fleet.take("h1") or fleet.take("h2")
    host = a["board_id"].split("-")[0]
    fleet.events(host, finish(a, code=None, outcome="infra_error"))  # type: ignore[arg-type]
    assert fleet.job(job["id"])["state"] == "queued"
    board = fleet.client.get(f"/v1/boards/{a['board_id']}", headers=fleet.h(fleet.user)).json()
    assert board["state"] == "suspect"
    assert fleet.rec.schedule(time.time()) == 1
    other = "h2" if host == "h1" else "h1"
    [b] = fleet.take(other)  # re-run elsewhere: the suspect board is out of service
    fleet.events(other, finish(b))
    detail = fleet.job(job["id"])
    assert detail["state"] == "succeeded" and detail["attempts"] == 2 and detail["infra_retries"] == 1


def test_infra_retry_cap(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    job = fleet.submit(max_infra_retries=0)
    fleet.rec.schedule(time.time())
    [a] = fleet.take("h1")
    fleet.events("h1", finish(a, outcome="infra_error"))
    detail = fleet.job(job["id"])
    assert detail["state"] == "failed" and "retry cap" in detail["message"]


def test_lost_host_requeues_elsewhere(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    fleet.register("h2", n=1)
    job = fleet.submit()
    fleet.rec.schedule(time.time())
    [a] = fleet.take("h1") or fleet.take("h2")
    host = a["board_id"].split("-")[0]
    other = "h2" if host == "h1" else "h1"
    # The other host keeps heartbeating; this one went silent 30 s ago.
    fleet.beat(other)
    from fleetyard.store import tables as t

    later = time.time()
    fleet.rec.watching_since = later - 60
    with fleet.store.write() as conn:
        conn.execute(t.hosts.update().where(t.hosts.c.id == host).values(last_heartbeat_at=later - 30))
        conn.execute(t.servers.update().values(seen_at=later))  # a server was listening all along
    assert fleet.rec.liveness(later) == [host]
    detail = fleet.job(job["id"])
    assert detail["state"] == "queued" and "grace of 5 s" in detail["pending_reason"]
    b = fleet.client.get(f"/v1/boards/{a['board_id']}", headers=fleet.h(fleet.user)).json()
    assert b["state"] == "offline"
    # It waits out the grace (the host timeout: its agent may still run it, cut off by the network).
    assert fleet.rec.schedule(later + 1) == 0
    assert fleet.rec.schedule(later + 5) == 1
    [again] = fleet.take(other)
    assert again["job_id"] == job["id"]
    # The lost host returns: it is told to kill the rank it still runs; its board becomes suspect.
    assert fleet.beat(host, running=[a["id"]])["cancel"] == [a["id"]]
    b = fleet.client.get(f"/v1/boards/{a['board_id']}", headers=fleet.h(fleet.user)).json()
    assert b["state"] == "suspect"


def _silence(fleet: Fleet, host: str, *, for_s: float, now: float) -> None:
    """The host's last heartbeat ``for_s`` ago; a server alive all along, the controller watching."""
    from fleetyard.store import tables as t

    fleet.rec.watching_since = now - 600
    with fleet.store.write() as conn:
        conn.execute(t.hosts.update().where(t.hosts.c.id == host).values(last_heartbeat_at=now - for_s))
        conn.execute(t.servers.update().values(seen_at=now))


def test_an_unreachable_host_keeps_its_work_and_gets_none_new(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    fleet.register("h2", n=1)
    fleet.beat("h1")
    fleet.beat("h2")
    job = fleet.submit()
    fleet.rec.schedule(time.time())
    [a] = fleet.take("h1") or fleet.take("h2")
    host = a["board_id"].split("-")[0]
    other = "h2" if host == "h1" else "h1"
    later = time.time()
    _silence(fleet, host, for_s=7, now=later)  # past the unreachable threshold (5 s), within the grace (10 s)
    _silence(fleet, other, for_s=0, now=later)
    assert fleet.rec.liveness(later) == []
    hosts = {h["id"]: h["state"] for h in fleet.client.get("/v1/hosts", headers=fleet.h(fleet.user)).json()}
    assert hosts == {host: "unreachable", other: "online"}
    # Nothing changed state, nothing re-queued; a new job goes to the reachable host only.
    assert fleet.job(job["id"])["state"] == "running"
    b = fleet.client.get(f"/v1/boards/{a['board_id']}", headers=fleet.h(fleet.user)).json()
    assert b["state"] == "allocated"
    second = fleet.submit()
    assert fleet.rec.schedule(later) == 1
    [b2] = fleet.take(other)
    assert b2["job_id"] == second["id"]
    # Heard from again: online; its rank's events are accepted and the job ends once, successfully.
    fleet.beat(host, running=[a["id"]])
    hosts = {h["id"]: h["state"] for h in fleet.client.get("/v1/hosts", headers=fleet.h(fleet.user)).json()}
    assert hosts[host] == "online"
    fleet.events(host, finish(a))
    detail = fleet.job(job["id"])
    assert detail["state"] == "succeeded" and detail["attempts"] == 1


def test_a_late_controller_pass_judges_no_host(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    fleet.beat("h1")  # a server has written heartbeats (and marked itself alive)
    later = time.time()
    _silence(fleet, "h1", for_s=30, now=later)
    fleet.rec.liveness(later - 20)  # the previous pass, 20 s ago: the controller fell behind
    assert fleet.rec.liveness(later) == []
    hosts = {h["id"]: h["state"] for h in fleet.client.get("/v1/hosts", headers=fleet.h(fleet.user)).json()}
    assert hosts["h1"] == "online"
    # Caught up (passes on time again), the silence counts from then on.
    from fleetyard.store import tables as t

    for dt in range(1, 12):
        with fleet.store.write() as conn:
            conn.execute(t.servers.update().values(seen_at=later + dt))
        fleet.rec.liveness(later + dt)
    hosts = {h["id"]: h["state"] for h in fleet.client.get("/v1/hosts", headers=fleet.h(fleet.user)).json()}
    assert hosts["h1"] == "offline"


def test_agent_restart_ends_old_session_work(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    job = fleet.submit()
    fleet.rec.schedule(time.time())
    [a] = fleet.take("h1")
    fleet.register("h1", n=1, session="s2")
    detail = fleet.job(job["id"])
    assert detail["state"] == "queued" and detail["attempt_list"][0]["outcome"] == "infra_error"
    r = fleet.client.post(
        "/v1/agent/events", json={"session": "s1", "events": finish(a)}, headers=fleet.h(fleet.agents["h1"])
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "stale_session"


def move(fleet: Fleet, serial: str, to: str) -> int:
    """The agent of ``to`` finds board ``serial`` (it was moved there) and registers it alone; the
    status of its answer."""
    board = {"serial": serial, "generation": "sim-g1", "slot": 0, "firmware": "1.0", "device": "sim:0"}
    body = {"host": to, "session": "s1", "driver": "sim:1", "agent_version": "t", "boards": [board]}
    r = fleet.client.post("/v1/agent/register", json=body, headers=fleet.h(fleet.agents[to]))
    assert r.status_code in (200, 409), r.text
    return r.status_code


def release(fleet: Fleet, serial: str) -> dict:
    r = fleet.client.post(f"/v1/boards/{serial}/release", json={"reason": "to h2"}, headers=fleet.h(fleet.admin))
    assert r.status_code == 200, r.text
    return r.json()


def test_a_host_may_not_claim_a_board_another_live_host_reports(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    board = {"serial": "h1-b0", "generation": "sim-g1", "slot": 0, "firmware": "1.0", "device": "sim:0"}
    body = {"host": "h2", "session": "s1", "driver": "sim:1", "agent_version": "t", "boards": [board]}
    r = fleet.client.post("/v1/agent/register", json=body, headers=fleet.h(fleet.agents["h2"]))
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["detail"] == {"board": "h1-b0", "hosts": ["h1", "h2"]}
    assert "fleetyard boards release h1-b0" in error["message"]
    got = fleet.client.get("/v1/boards/h1-b0", headers=fleet.h(fleet.user)).json()
    assert (got["host_id"], got["state"]) == ("h1", "available")  # nothing changed
    # Once an operator releases it, the host it was moved to claims it; the move is in its history
    # and in the audit log.
    assert release(fleet, "h1-b0")["state"] == "offline"
    assert move(fleet, "h1-b0", to="h2") == 200
    got = fleet.client.get("/v1/boards/h1-b0", headers=fleet.h(fleet.user)).json()
    assert got["host_id"] == "h2"
    history = fleet.client.get("/v1/boards/h1-b0/history", headers=fleet.h(fleet.user)).json()
    assert any("moved from host h1 to h2" in (e["reason"] or "") for e in history)
    audit = fleet.client.get("/v1/audit", params={"action": "board.release"}, headers=fleet.h(fleet.admin)).json()
    assert [(a["target"], a["actor"]) for a in audit] == [("h1-b0", "admin")]


def test_a_board_released_while_it_runs_ends_its_rank_and_its_job_runs_again(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    job = fleet.submit()
    assert fleet.rec.schedule(time.time()) == 1
    [a] = fleet.take("h1")
    fleet.events("h1", finish(a)[:1])  # started
    release(fleet, a["board_id"])
    detail = fleet.job(job["id"])
    assert detail["state"] == "queued"
    [first] = detail["attempt_list"]
    assert first["outcome"] == "infra_error"
    # The old host's agent, still running it, is told to stop.
    assert fleet.beat("h1", running=[a["id"]])["cancel"] == [a["id"]]
    # The board turns up on h2, and must pass a check before it serves; the job runs again on
    # the board left on h1.
    assert move(fleet, a["board_id"], to="h2") == 200
    board = fleet.client.get(f"/v1/boards/{a['board_id']}", headers=fleet.h(fleet.user)).json()
    assert (board["host_id"], board["state"]) == ("h2", "suspect")
    assert fleet.rec.schedule(time.time()) == 1
    [b] = fleet.take("h1")
    assert b["job_id"] == job["id"] and b["board_id"] != a["board_id"]
    fleet.events("h1", finish(b))
    assert fleet.job(job["id"])["state"] == "succeeded"


def test_a_fault_order_is_acked_only_by_the_host_of_its_board(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    fleet.register("h2", n=1)
    r = fleet.client.post("/v1/admin/boards/h1-b0/faults", json={"kind": "hang"}, headers=fleet.h(fleet.admin))
    assert r.status_code == 201, r.text
    order = r.json()["id"]
    assert [f["id"] for f in fleet.beat("h1")["faults"]] == [order]
    fleet.beat("h2", fault_acks=[order])  # not h2's to ack
    assert [f["id"] for f in fleet.beat("h1")["faults"]] == [order]
    fleet.beat("h1", fault_acks=[order])
    assert fleet.beat("h1")["faults"] == []


def test_cancel(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    queued = fleet.submit(boards=1, generations=["sim-g1"])
    running = fleet.submit(boards=1)
    r = fleet.client.post(f"/v1/jobs/{queued['id']}/cancel", headers=fleet.h(fleet.other))
    assert r.status_code == 403
    r = fleet.client.post(f"/v1/jobs/{queued['id']}/cancel", headers=fleet.h(fleet.user))
    assert r.json()["state"] == "canceled"
    fleet.rec.schedule(time.time())
    [a] = fleet.take("h1")
    assert a["job_id"] == running["id"]
    fleet.events("h1", finish(a)[:1])
    r = fleet.client.post(f"/v1/jobs/{running['id']}/cancel", headers=fleet.h(fleet.admin))
    assert r.json()["state"] == "running"
    assert fleet.beat("h1", running=[a["id"]])["cancel"] == [a["id"]]
    fleet.events("h1", [{"assignment_id": a["id"], "seq": 1, "type": "finished", "at": 0, "outcome": "canceled"}])
    assert fleet.job(running["id"])["state"] == "canceled"


def test_drain_and_undrain(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    r = fleet.client.post("/v1/boards/h1-b0/drain", json={"reason": "fan noise"}, headers=fleet.h(fleet.user))
    assert r.status_code == 403
    r = fleet.client.post("/v1/boards/h1-b0/drain", json={"reason": "fan noise"}, headers=fleet.h(fleet.admin))
    assert r.json()["state"] == "drained" and "fan noise" in r.json()["drain_reason"]
    job = fleet.submit()
    assert fleet.rec.schedule(time.time()) == 0
    r = fleet.client.post("/v1/boards/h1-b0/undrain", json={"reason": "fixed"}, headers=fleet.h(fleet.admin))
    assert r.json()["state"] == "available" and r.json()["drain_reason"] is None
    assert fleet.rec.schedule(time.time()) == 1
    # Draining an allocated board lets its attempt finish, then holds the board.
    r = fleet.client.post("/v1/boards/h1-b0/drain", json={"reason": "later"}, headers=fleet.h(fleet.admin))
    assert r.json()["state"] == "allocated"
    [a] = fleet.take("h1")
    fleet.events("h1", finish(a))
    assert fleet.job(job["id"])["state"] == "succeeded"
    b = fleet.client.get("/v1/boards/h1-b0", headers=fleet.h(fleet.user)).json()
    assert b["state"] == "drained"
    # The operator's drain, applied when the job ended: planned maintenance, not an incident.
    [last] = fleet.client.get("/v1/boards/h1-b0/history?limit=1", headers=fleet.h(fleet.user)).json()
    assert (last["to_state"], last["actor"]) == ("drained", "operator")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"boards": 0}, "boards"),
        ({"boards": "two"}, "boards"),
        ({"placement": "moon"}, "placement"),
        ({"nonsense": 1}, "nonsense"),
        ({"params": {}}, "params.command"),
        ({"kind": "teleport"}, "kind"),
    ],
)
def test_malformed_spec_names_the_field(fleet: Fleet, spec: dict, field: str) -> None:
    fleet.register("h1")
    body = {"params": {"command": "true"}, **spec}
    r = fleet.client.post("/v1/jobs", json=body, headers=fleet.h(fleet.user))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert field in err["message"], err


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"generations": ["sim-g9"]}, "unknown generation sim-g9"),
        ({"boards": 5}, "only 4 such boards"),
        ({"boards": 3, "placement": "same-host"}, "no host has more than 2"),
        ({"labels": {"pool": "ci"}}, "only 0 such boards"),
    ],
)
def test_job_that_can_never_run_is_rejected(fleet: Fleet, spec: dict, why: str) -> None:
    fleet.register("h1")
    fleet.register("h2")
    r = fleet.client.post("/v1/jobs", json={"params": {"command": "true"}, **spec}, headers=fleet.h(fleet.user))
    assert r.status_code == 422 and r.json()["error"]["code"] == "unschedulable"
    assert why in r.json()["error"]["message"]


def test_auth_errors(fleet: Fleet) -> None:
    assert fleet.client.get("/v1/boards").status_code == 401
    r = fleet.client.get("/v1/boards", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    assert (
        fleet.client.post(
            "/v1/tokens", json={"name": "x", "role": "user", "team": "a"}, headers=fleet.h(fleet.user)
        ).status_code
        == 403
    )
    # An agent can only act for its own host.
    r = fleet.client.post(
        "/v1/agent/register",
        json={"host": "h2", "session": "s", "driver": "sim:0", "agent_version": "t", "boards": []},
        headers=fleet.h(fleet.agents["h1"]),
    )
    assert r.status_code == 403
    r = fleet.client.post(
        "/v1/jobs", json={"params": {"command": "true"}, "team": "robotics"}, headers=fleet.h(fleet.user)
    )
    assert r.status_code == 403


def test_not_found(fleet: Fleet) -> None:
    assert fleet.client.get("/v1/boards/nope", headers=fleet.h(fleet.user)).status_code == 404
    r = fleet.client.get("/v1/jobs/999", headers=fleet.h(fleet.user))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_blobs(fleet: Fleet) -> None:
    data = b"hello board"
    sha = hashlib.sha256(data).hexdigest()
    r = fleet.client.put(f"/v1/blobs/{sha}", content=data, headers=fleet.h(fleet.user))
    assert r.status_code == 201 and r.json()["size"] == len(data)
    assert fleet.client.get(f"/v1/blobs/{sha}", headers=fleet.h(fleet.user)).content == data
    bad = fleet.client.put(f"/v1/blobs/{'0' * 64}", content=data, headers=fleet.h(fleet.user))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "digest_mismatch"
    big = b"x" * 2048
    r = fleet.client.put(f"/v1/blobs/{hashlib.sha256(big).hexdigest()}", content=big, headers=fleet.h(fleet.user))
    assert r.status_code == 413
    assert fleet.client.get(f"/v1/blobs/{'1' * 64}", headers=fleet.h(fleet.user)).status_code == 404


def test_fault_orders_reach_the_agent_until_acked(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    r = fleet.client.post("/v1/admin/boards/h1-b0/faults", json={"kind": "hang"}, headers=fleet.h(fleet.admin))
    assert r.status_code == 201
    order = r.json()["id"]
    assert [f["id"] for f in fleet.beat("h1")["faults"]] == [order]
    assert fleet.beat("h1", fault_acks=[order])["faults"] == []


def test_a_flush_the_store_refused_keeps_its_batch_for_the_next(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store down (or a race lost more often than retried): the flush fails, and the next one
    writes its acks and reports, merged with whatever came meanwhile. Nothing an agent said is lost."""
    fleet.register("h1", n=1)
    r = fleet.client.post("/v1/admin/boards/h1-b0/faults", json={"kind": "hang"}, headers=fleet.h(fleet.admin))
    order = r.json()["id"]
    sink = fleet.app.state.heartbeats
    h = fleet.h(fleet.agents["h1"])
    report = {"id": "h1-b0", "telemetry": {"temp_c": 51.0}}
    body = {"session": "s1", "boards": [report], "fault_acks": [order]}
    assert fleet.client.post("/v1/agent/heartbeat", json=body, headers=h).status_code == 200
    real = fleet.store.transact

    def down(fn: object, **kw: object) -> object:
        raise sa.exc.OperationalError("UPDATE boards", {}, ConnectionRefusedError("the store is down"))

    monkeypatch.setattr(fleet.store, "transact", down)
    with pytest.raises(sa.exc.OperationalError):
        sink.flush()
    # A newer beat arrives while the store is down: newer telemetry, no ack (the agent sent it once).
    body = {"session": "s1", "boards": [{**report, "telemetry": {"temp_c": 52.0}}]}
    assert fleet.client.post("/v1/agent/heartbeat", json=body, headers=h).status_code == 200
    monkeypatch.setattr(fleet.store, "transact", real)
    sink.flush()
    with fleet.store.read() as conn:
        acked = conn.execute(sa.select(t.fault_orders.c.acked_at).where(t.fault_orders.c.id == order)).scalar()
        tel = conn.execute(sa.select(t.boards.c.telemetry).where(t.boards.c.id == "h1-b0")).scalar()
    assert acked is not None and tel == {"temp_c": 52.0}


def test_a_board_that_fails_its_probe_goes_up_the_ladder_and_is_healed_by_a_step_and_its_check(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    board = "h1-b0"

    def state() -> str:
        return str(fleet.client.get(f"/v1/boards/{board}", headers=fleet.h(fleet.user)).json()["state"])

    fleet.beat("h1", boards=[{"id": board, "ok": False, "reason": "board not responding"}])
    t0 = time.time()
    assert fleet.rec.health(t0).failing == [board]
    # Dead: straight to the ladder's first step, ordered through the host's agent.
    assert state() == "remediating"
    [op] = fleet.beat("h1")["ops"]
    assert (op["board_id"], op["op"]) == (board, "soft_reset")
    now = time.time()
    result = {"id": op["id"], "ok": True, "message": None, "started_at": now, "finished_at": now}
    assert fleet.beat("h1", boards=[{"id": board, "ok": True}], op_results=[result])["op_acks"] == [op["id"]]
    # The step worked: an L2 check, a health-check job bound to the board at once.
    fleet.rec.health(t0 + 1)
    [check] = fleet.take("h1")
    assert check["kind"] == "health-check" and check["board_id"] == board and check["params"]["tier"] == "L2"
    assert fleet.take("h1") == [] and state() == "remediating"  # the board holds its check, out of service
    fleet.events("h1", finish(check))
    healed = fleet.rec.health(t0 + 2)
    assert healed.released == [board] and state() == "available"
    [repair] = fleet.client.get(f"/v1/boards/{board}/repairs", headers=fleet.h(fleet.user)).json()
    assert repair["outcome"] == "healed" and repair["cause"] == "failed its probe: board not responding"
    assert repair["evidence"]["steps"] == ["soft_reset: passed", "L2 check: passed"]
    hist = fleet.client.get(f"/v1/boards/{board}/history", headers=fleet.h(fleet.user)).json()
    assert [e["to_state"] for e in reversed(hist)] == ["available", "suspect", "remediating", "available"]


def test_a_board_whose_steps_all_fail_is_quarantined_with_a_repair_record(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    board = "h1-b0"
    fleet.beat("h1", boards=[{"id": board, "ok": False, "reason": "fell off the bus"}])
    t = time.time()
    fleet.rec.health(t)
    for step in ("soft_reset", "reflash", "host_reboot"):
        [op] = fleet.beat("h1")["ops"]
        assert op["op"] == step
        res = {"id": op["id"], "ok": False, "message": "board not on the bus", "started_at": t, "finished_at": t}
        fleet.beat("h1", op_results=[res])
        t += 1
        out = fleet.rec.health(t)
    assert out.quarantined == [board]
    b = fleet.client.get(f"/v1/boards/{board}", headers=fleet.h(fleet.user)).json()
    assert b["state"] == "quarantined"
    assert b["state_reason"].startswith("remediation exhausted after: failed its probe: fell off the bus; ")
    [repair] = fleet.client.get(f"/v1/boards/{board}/repairs", headers=fleet.h(fleet.user)).json()
    assert repair["outcome"] == "quarantined"
    assert repair["evidence"]["steps"] == [
        f"{s}: failed (board not on the bus)" for s in ("soft_reset", "reflash", "host_reboot")
    ]
    assert repair["evidence"]["telemetry"]["probe"] == "fell off the bus"
    assert [e["to"] for e in repair["evidence"]["events"]][-3:] == ["suspect", "remediating", "quarantined"]


def test_an_allocated_board_that_stops_answering_fails_its_attempt_and_the_job_requeues(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    job = fleet.submit(max_infra_retries=1)
    fleet.rec.schedule(time.time())
    [a] = fleet.take("h1")
    fleet.events("h1", [{"assignment_id": a["id"], "seq": 0, "type": "started", "at": time.time()}])
    fleet.beat("h1", boards=[{"id": a["board_id"], "ok": False, "reason": "board not responding"}], running=[a["id"]])
    assert fleet.rec.health(time.time()).failing == [a["board_id"]]
    detail = fleet.job(job["id"])
    assert detail["state"] == "queued" and detail["infra_retries"] == 1
    [rank] = detail["attempt_list"][0]["ranks"]
    assert rank["outcome"] == "infra_error" and "failed its probe: board not responding" in rank["message"]
    # The agent still runs the hung rank: the next heartbeat tells it to stop.
    assert fleet.beat("h1", running=[a["id"]])["cancel"] == [a["id"]]
    assert fleet.rec.schedule(time.time()) == 1
    [again] = fleet.take("h1")
    assert again["board_id"] != a["board_id"]


def test_heartbeat_from_a_replaced_session_is_refused(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    fleet.register("h1", n=1, session="s2")
    r = fleet.client.post("/v1/agent/heartbeat", json={"session": "s1"}, headers=fleet.h(fleet.agents["h1"]))
    assert r.status_code == 409 and r.json()["error"]["code"] == "stale_session"
    assert fleet.beat("h1", session="s2") == {"cancel": [], "faults": [], "ops": [], "op_acks": []}


def test_telemetry_is_written_behind_and_visible_after_a_flush(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    fleet.beat("h1", boards=[{"id": "h1-b0", "telemetry": {"temperature_c": 61.5}}])
    b = fleet.client.get("/v1/boards/h1-b0", headers=fleet.h(fleet.user)).json()
    assert b["telemetry"] == {"temperature_c": 61.5} and b["probe_ok"] is True
    hosts = fleet.client.get("/v1/hosts", headers=fleet.h(fleet.user)).json()
    assert hosts[0]["id"] == "h1" and hosts[0]["boards"] == 1 and hosts[0]["last_heartbeat_at"] is not None


def test_warm_lists_reach_the_board_and_an_unchanged_one_is_not_written_again(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleetyard.server import heartbeats
    from fleetyard.store import tables as t

    def warm() -> list[str]:
        return list(fleet.client.get("/v1/boards/h1-b0", headers=fleet.h(fleet.user)).json()["warm"])

    def mark() -> None:  # what no heartbeat reports: it stays unless the sink writes the column
        with fleet.store.write() as conn:
            conn.execute(t.boards.update().where(t.boards.c.id == "h1-b0").values(warm=["mark"]))

    a, b = "a" * 64, "b" * 64
    fleet.register("h1", n=1)
    assert warm() == []
    fleet.beat("h1", boards=[{"id": "h1-b0", "warm": [a, b]}])
    assert warm() == [a, b]
    mark()
    fleet.beat("h1", boards=[{"id": "h1-b0", "warm": [a, b], "telemetry": {"temperature_c": 50.0}}])
    assert warm() == ["mark"]  # unchanged: not written again, while the telemetry is
    board = fleet.client.get("/v1/boards/h1-b0", headers=fleet.h(fleet.user)).json()
    assert board["telemetry"] == {"temperature_c": 50.0}
    fleet.beat("h1", boards=[{"id": "h1-b0", "warm": [b, a]}])
    assert warm() == [b, a]  # the order is the news: most recently used last
    fleet.beat("h1", boards=[{"id": "h1-b0"}])
    assert warm() == []  # an older agent, or a restarted worker: nothing warm
    many = [f"{i:064x}" for i in range(12)]
    fleet.beat("h1", boards=[{"id": "h1-b0", "warm": many}])
    assert warm() == many[-heartbeats.WARM_MAX :]
    # Written again now and then even unchanged: another server replica may have written since.
    mark()
    monkeypatch.setattr(heartbeats, "WARM_REFRESH_S", 0.0)
    fleet.beat("h1", boards=[{"id": "h1-b0", "warm": many}])
    assert warm() == many[-heartbeats.WARM_MAX :]


def test_cached_lists_reach_the_host_and_steer_a_job_to_it(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetyard.server import heartbeats

    def cached(host: str) -> list[str]:
        return list(fleet.client.get(f"/v1/hosts/{host}", headers=fleet.h(fleet.user)).json()["cached"])

    from tests.unit.models import mlp

    fleet.register("h1", n=1)
    fleet.register("h2", n=1)
    fleet.app.state.max_blob_bytes = 1 << 20
    sha = _upload(fleet, mlp().SerializeToString())
    assert fleet.client.post("/v1/artifacts", json={"sha256": sha}, headers=fleet.h(fleet.user)).status_code == 201
    assert cached("h2") == []
    many = [f"{i:064x}" for i in range(80)] + [sha]
    fleet.beat("h2", boards=[{"id": "h2-b0"}], cached=many)
    assert cached("h2") == many[-heartbeats.CACHED_MAX :] and cached("h1") == []
    # A job of that artifact goes to h2's board, though h1's comes first otherwise.
    fleet.rec.schedule(time.time())
    r = fleet.client.post(
        "/v1/jobs", json={"kind": "run", "params": {"artifact": sha, "seed": 1}}, headers=fleet.h(fleet.user)
    )
    assert r.status_code == 201, r.text
    job = r.json()
    other = fleet.submit(boards=1)
    fleet.rec.schedule(time.time())
    assert [a["job_id"] for a in fleet.take("h2")] == [job["id"]]
    assert [a["job_id"] for a in fleet.take("h1")] == [other["id"]]


def test_a_board_that_just_arrived_counts_at_submit(fleet: Fleet) -> None:
    fleet.register("h1")
    fleet.submit(boards=2)  # the server now holds a view of a 2-board fleet
    fleet.register("h2")
    assert fleet.submit(boards=4)["state"] == "queued"


def _upload(fleet: Fleet, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    r = fleet.client.put(f"/v1/blobs/{sha}", content=data, headers=fleet.h(fleet.user))
    assert r.status_code == 201, r.text
    return sha


def test_artifact_push_inspects_and_refuses_bad_ones(fleet: Fleet) -> None:
    from tests.unit.models import mlp

    fleet.app.state.max_blob_bytes = 1 << 20
    sha = _upload(fleet, mlp(batch="N").SerializeToString())
    r = fleet.client.post("/v1/artifacts", json={"sha256": sha, "name": "mlp"}, headers=fleet.h(fleet.user))
    assert r.status_code == 201, r.text
    art = r.json()
    assert art["format"] == "onnx" and art["name"] == "mlp" and art["created_by"] == "alice"
    [x] = art["info"]["signature"]["inputs"]
    assert x["shape"][0] == "N" and x["dtype"] == "float32"
    # The same bytes again: the same artifact.
    again = fleet.client.post("/v1/artifacts", json={"sha256": sha}, headers=fleet.h(fleet.user)).json()
    assert again == art
    listed = fleet.client.get("/v1/artifacts", headers=fleet.h(fleet.user)).json()
    assert [a["sha256"] for a in listed] == [sha]
    # Corrupt bytes are refused at push, naming the problem.
    junk = _upload(fleet, b"\x08\x07not a model at all")
    r = fleet.client.post("/v1/artifacts", json={"sha256": junk}, headers=fleet.h(fleet.user))
    assert r.status_code == 422, r.text
    assert fleet.client.get(f"/v1/artifacts/{junk}", headers=fleet.h(fleet.user)).status_code == 404
    # A blob that was never uploaded.
    r = fleet.client.post("/v1/artifacts", json={"sha256": "a" * 64}, headers=fleet.h(fleet.user))
    assert r.status_code == 404 and "upload the artifact first" in r.json()["error"]["message"]


def test_canceling_a_wide_gang_before_delivery_ends_every_rank(fleet: Fleet) -> None:
    fleet.register("h1", n=8)
    job = fleet.submit(boards=8)
    fleet.rec.schedule(time.time())
    r = fleet.client.post(f"/v1/jobs/{job['id']}/cancel", headers=fleet.h(fleet.user))
    assert r.json()["state"] == "canceled"
    ranks = fleet.job(job["id"])["attempt_list"][0]["ranks"]
    assert [x["outcome"] for x in ranks] == ["canceled"] * 8
    boards = fleet.client.get("/v1/boards", headers=fleet.h(fleet.user)).json()
    assert {b["state"] for b in boards} == {"available"}
    assert fleet.take("h1") == []


def _npz(arrays: dict) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def test_artifact_jobs_are_refused_at_submit_when_their_artifact_or_inputs_are_wrong(fleet: Fleet) -> None:
    import numpy as np
    from tests.unit.models import mlp

    fleet.register("h1")
    fleet.app.state.max_blob_bytes = 1 << 20
    sha = _upload(fleet, mlp(batch="N").SerializeToString())  # x: float32[N, 4]
    x = np.zeros((2, 4), np.float32)

    def submit(params: dict, kind: str = "validate") -> tuple[int, str]:
        r = fleet.client.post("/v1/jobs", json={"kind": kind, "params": params}, headers=fleet.h(fleet.user))
        return r.status_code, r.json().get("error", {}).get("message", "")

    code, msg = submit({"artifact": sha})
    assert code == 422 and f"artifact {sha} is not registered" in msg and "fleetyard artifacts push" in msg
    assert fleet.client.post("/v1/artifacts", json={"sha256": sha}, headers=fleet.h(fleet.user)).status_code == 201
    code, msg = submit({"artifact": sha, "inputs": "b" * 64})
    assert code == 422 and "params.inputs: blob" in msg and "never uploaded" in msg
    # Wrong dtype and shape: both named, expected against given.
    bad = _upload(fleet, _npz({"x": np.zeros((2, 5), np.float64)}))
    code, msg = submit({"artifact": sha, "inputs": bad})
    assert code == 422 and "params.inputs: input 'x': dtype: expected float32, got float64" in msg
    assert "The model takes x: float32[N, 4]" in msg
    # Several sets: the bad one is named; run takes one set only.
    sets = _upload(fleet, _npz({"0/x": x, "1/x": np.zeros((2, 3), np.float32)}))
    code, msg = submit({"artifact": sha, "inputs": sets})
    assert code == 422 and "input set 1: input 'x': shape" in msg
    good_sets = _upload(fleet, _npz({"0/x": x, "1/x": x}))
    one_golden = _upload(fleet, _npz({"y": np.zeros((2, 3), np.float32)}))
    code, msg = submit({"artifact": sha, "inputs": good_sets, "expected": one_golden})
    assert code == 422 and "1 set(s) of golden outputs but there are 2 input set(s)" in msg
    # IREE-only options on an ONNX artifact.
    code, msg = submit({"artifact": sha, "function": "main"})
    assert code == 422 and "params.function applies to IREE modules" in msg
    # What fits is admitted; a batch names the refused job.
    code, _ = submit({"artifact": sha, "inputs": good_sets})
    assert code == 201
    r = fleet.client.post(
        "/v1/jobs/batch",
        json={
            "jobs": [
                {"kind": "validate", "params": {"artifact": sha}},
                {"kind": "validate", "params": {"artifact": sha, "inputs": bad}},
            ]
        },
        headers=fleet.h(fleet.user),
    )
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("jobs[1]: params.inputs")


def test_an_iree_module_no_matching_board_can_run_is_refused_at_submit(fleet: Fleet, tmp_path: Path) -> None:
    from tests.unit import models

    fleet.register("h1")  # sim boards: they run modules on the host CPU
    fleet.app.state.max_blob_bytes = 1 << 20
    path = models.compile_mlir(models.ADD_MLIR, tmp_path / "cuda.vmfb", target="cuda")
    sha = _upload(fleet, path.read_bytes())
    assert fleet.client.post("/v1/artifacts", json={"sha256": sha}, headers=fleet.h(fleet.user)).status_code == 201
    r = fleet.client.post("/v1/jobs", json={"kind": "run", "params": {"artifact": sha}}, headers=fleet.h(fleet.user))
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "compiled for cuda devices" in message and "another kind (cpu: h1-b0, h1-b1)" in message
    # A CPU module on the same boards is admitted.
    cpu = models.compile_mlir(models.ADD_MLIR, tmp_path / "cpu.vmfb")
    sha = _upload(fleet, cpu.read_bytes())
    assert fleet.client.post("/v1/artifacts", json={"sha256": sha}, headers=fleet.h(fleet.user)).status_code == 201
    r = fleet.client.post("/v1/jobs", json={"kind": "run", "params": {"artifact": sha}}, headers=fleet.h(fleet.user))
    assert r.status_code == 201, r.text


def test_a_heartbeat_written_behind_does_not_bring_back_a_host_whose_agent_left(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    r = fleet.client.post("/v1/agent/heartbeat", json={"session": "s1"}, headers=fleet.h(fleet.agents["h1"]))
    assert r.status_code == 200  # buffered: written at the next flush
    r = fleet.client.post("/v1/agent/leave", json={"session": "s1"}, headers=fleet.h(fleet.agents["h1"]))
    assert r.status_code == 204
    fleet.app.state.heartbeats.flush()
    host = fleet.client.get("/v1/hosts/h1", headers=fleet.h(fleet.user)).json()
    assert host["state"] == "offline"
    # A beat that arrives after it went offline brings it back (a lost host that answers again).
    fleet.beat("h1")
    assert fleet.client.get("/v1/hosts/h1", headers=fleet.h(fleet.user)).json()["state"] == "online"


def test_telemetry_rules_take_boards_out_as_they_recommend(fleet: Fleet) -> None:
    from fleetyard.policy.brakes import BreakerLimits

    fleet.register("h1", n=3)
    fleet.rec.breaker = BreakerLimits(fraction=100.0)  # a generation of three: let two out at once

    def state(board: str) -> dict:
        return dict(fleet.client.get(f"/v1/boards/{board}", headers=fleet.h(fleet.user)).json())

    calm = {"temperature_c": 60.0, "ecc_corrected": 10.0, "ecc_uncorrected": 0.0}
    fleet.beat("h1", boards=[{"id": f"h1-b{i}", "telemetry": calm} for i in range(3)])
    assert fleet.rec.health(time.time()).failing == []
    time.sleep(0.01)  # the next report is a later one
    fleet.beat(
        "h1",
        boards=[
            {"id": "h1-b0", "telemetry": {**calm, "temperature_c": 99.0}},  # remediate: the ladder
            {"id": "h1-b1", "telemetry": {**calm, "ecc_uncorrected": 2.0}},  # quarantine
            {"id": "h1-b2", "telemetry": {**calm, "temperature_c": 88.0}},  # a warning: stays
        ],
    )
    assert fleet.rec.health(time.time()).failing == ["h1-b0", "h1-b1"]
    hot = state("h1-b0")
    assert hot["state"] == "remediating" and hot["state_reason"] == "remediation step 1: soft_reset"
    assert [o["op"] for o in fleet.client.get("/v1/boards/h1-b0/ops", headers=fleet.h(fleet.user)).json()] == [
        "soft_reset"
    ]
    ecc = state("h1-b1")
    assert ecc["state"] == "quarantined"
    assert ecc["state_reason"] == "critical ecc-uncorrectable: ecc_uncorrected grew by 2 (more than 0)"
    [record] = fleet.client.get("/v1/boards/h1-b1/repairs", headers=fleet.h(fleet.user)).json()
    assert record["outcome"] == "quarantined" and record["evidence"]["telemetry"]["values"]["ecc_uncorrected"] == 2.0
    assert state("h1-b2")["state"] == "available"


def test_a_board_where_a_job_fails_while_the_same_job_passes_elsewhere_becomes_suspect(fleet: Fleet) -> None:
    fleet.register("h1", n=3)
    params = {"command": "./validate model.onnx"}

    def run_on(board: str, outcome: str, code: int) -> int:
        job = fleet.submit(params=params, board_ids=[board])
        assert fleet.rec.schedule(time.time()) == 1
        [a] = fleet.take("h1")
        fleet.events("h1", finish(a, code=code, outcome=outcome))
        return int(job["id"])

    bad = run_on("h1-b0", "user_error", 3)
    assert fleet.rec.health(time.time()).failing == []  # no other board ran it yet
    run_on("h1-b1", "success", 0)
    run_on("h1-b2", "success", 0)
    assert fleet.rec.health(time.time()).failing == ["h1-b0"]
    b = fleet.client.get("/v1/boards/h1-b0", headers=fleet.h(fleet.user)).json()
    assert b["state"] == "suspect"  # an L2 check first: the board may be fine
    assert b["state_reason"] == f"job {bad} failed here (user_error) while the same job passed on h1-b1, h1-b2"
    [check] = fleet.take("h1")
    assert check["kind"] == "health-check" and check["board_id"] == "h1-b0"
    assert fleet.rec.health(time.time()).failing == []  # blamed once for that failure


def test_a_repaired_board_serves_again_once_it_passes_its_burn_in(fleet: Fleet) -> None:
    from fleetyard.domain.board import Actor, BoardState
    from fleetyard.store.boards import switch_board_state

    fleet.register("h1", n=1)
    with fleet.store.write() as conn:
        for to in (BoardState.REMEDIATING, BoardState.QUARANTINED):
            switch_board_state(conn, "h1-b0", to, reason="remediation exhausted", actor=Actor.POLICY, at=time.time())
    path = "/v1/boards/h1-b0/repaired"
    assert fleet.client.post(path, json={"reason": "HBM swapped"}, headers=fleet.h(fleet.user)).status_code == 403
    r = fleet.client.post(path, json={"reason": "HBM swapped"}, headers=fleet.h(fleet.admin))
    assert r.status_code == 200 and r.json()["state"] == "onboarding"
    assert fleet.client.post(path, json={"reason": "again"}, headers=fleet.h(fleet.admin)).status_code == 409
    fleet.rec.health(time.time())
    [burn_in] = fleet.take("h1")
    assert burn_in["kind"] == "health-check" and burn_in["params"]["tier"] == "L3"
    fleet.events("h1", finish(burn_in))
    assert fleet.rec.health(time.time()).released == ["h1-b0"]
    hist = fleet.client.get("/v1/boards/h1-b0/history", headers=fleet.h(fleet.user)).json()
    assert [(e["to_state"], e["actor"]) for e in hist[:2]] == [("available", "policy"), ("onboarding", "operator")]
    assert hist[0]["reason"] == "passed its L3 burn-in"


def test_a_store_that_does_not_answer_gets_a_503_with_retry_after_not_a_500(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def down(*a: object, **kw: object) -> object:
        raise sa.exc.OperationalError("SELECT", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(fleet.store.engine, "connect", down)
    r = fleet.client.get("/v1/jobs", headers=fleet.h(fleet.user))
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
    assert r.json()["error"]["code"] == "store_unavailable"
    assert "GET /v1/jobs: answered 503" in caplog.text and "connection refused" in caplog.text
    assert fleet.client.get("/readyz").status_code == 503
