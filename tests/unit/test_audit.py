"""The audit log: every operator action leaves exactly one entry, written with the action."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from tests.unit.test_api_flow import Fleet

from fleetyard.domain.auth import Role
from fleetyard.store import audit, breakers
from fleetyard.store import tables as t
from fleetyard.store.tokens import create_token


@pytest.fixture
def ops(fleet: Fleet) -> str:
    """An operator's token ("olga"), on a fleet with host h1 (boards h1-b0, h1-b1)."""
    fleet.register("h1")
    return create_token(fleet.url, name="olga", role=Role.OPERATOR)


def entries(fleet: Fleet, token: str | None = None, **params: Any) -> list[dict[str, Any]]:
    r = fleet.client.get("/v1/audit", params=params, headers=fleet.h(token or fleet.admin))
    assert r.status_code == 200, r.text
    return list(r.json())


def brief(e: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    return e["actor"], e["action"], e["target"], e["reason"]


def test_each_operator_action_leaves_one_entry(fleet: Fleet, ops: str) -> None:
    def ok(method: str, path: str, token: str = ops, **body: Any) -> None:
        r = fleet.client.request(method, path, json=body or None, headers=fleet.h(token))
        assert r.status_code < 300, r.text

    ok("POST", "/v1/boards/h1-b0/drain", reason="fan noise")
    ok("POST", "/v1/boards/h1-b0/undrain", reason="fan replaced")
    ok("POST", "/v1/boards/h1-b0/ops", op="soft_reset", reason="hung")
    ok("POST", "/v1/admin/boards/h1-b1/faults", kind="hang")
    with fleet.store.write() as conn:
        breakers.trip(conn, "sim-g1", "3 boards out", at=time.time())
        conn.execute(t.boards.update().where(t.boards.c.id == "h1-b1").values(state="quarantined"))
    ok("POST", "/v1/fleet/breakers/sim-g1/reset", reason="probe bug fixed")
    ok("POST", "/v1/boards/h1-b1/repaired", reason="new fan")
    ok("PUT", "/v1/queues/robotics", nominal={"sim-g1": 2})
    ok("PUT", "/v1/queues", queues=[{"name": "compiler", "nominal": {"sim-g1": 1}}])
    ok("DELETE", "/v1/queues/compiler")
    ok("POST", "/v1/tokens", fleet.admin, name="ci", role="user", team="compiler")
    ok("DELETE", "/v1/tokens/ci", fleet.admin)

    got = entries(fleet, ops)
    assert [brief(e) for e in reversed(got)] == [
        ("olga", "board.drain", "h1-b0", "fan noise"),
        ("olga", "board.undrain", "h1-b0", "fan replaced"),
        ("olga", "board.op", "h1-b0", "hung"),
        ("olga", "board.fault", "h1-b1", None),
        ("olga", "breaker.reset", "sim-g1", "probe bug fixed"),
        ("olga", "board.repaired", "h1-b1", "new fan"),
        ("olga", "queue.put", "robotics", None),
        ("olga", "queues.apply", None, None),
        ("olga", "queue.delete", "compiler", None),
        ("admin", "token.create", "ci", None),
        ("admin", "token.revoke", "ci", None),
    ]
    assert {e["role"] for e in got} == {"operator", "admin"}
    by_action = {e["action"]: e for e in got}
    assert by_action["board.drain"]["detail"] == {"state": "available"}
    assert by_action["board.op"]["detail"]["op"] == "soft_reset"
    assert by_action["board.fault"]["detail"]["kind"] == "hang"
    assert by_action["queue.put"]["detail"] == {"nominal": {"sim-g1": 2}}
    assert by_action["queues.apply"]["detail"]["queues"][0]["name"] == "compiler"
    assert by_action["token.create"]["detail"] == {"role": "user", "team": "compiler", "host": None}
    assert got[0]["at"] >= got[-1]["at"]  # newest first


def test_a_refused_or_failed_action_leaves_none(fleet: Fleet, ops: str) -> None:
    def refused(status: int, method: str, path: str, token: str = ops, **body: Any) -> None:
        r = fleet.client.request(method, path, json=body or None, headers=fleet.h(token))
        assert r.status_code == status, r.text

    refused(403, "POST", "/v1/boards/h1-b0/drain", fleet.user, reason="not mine to drain")
    refused(404, "POST", "/v1/boards/nope/drain", reason="x")
    refused(409, "POST", "/v1/boards/h1-b0/undrain", reason="not drained")
    refused(409, "POST", "/v1/boards/h1-b0/repaired", reason="not quarantined")
    refused(404, "POST", "/v1/fleet/breakers/sim-g1/reset", reason="not tripped")
    refused(422, "POST", "/v1/admin/boards/h1-b0/faults", action="inject")
    refused(404, "DELETE", "/v1/queues/nope")
    refused(403, "POST", "/v1/tokens", name="x", role="admin")  # operators do not make tokens
    refused(409, "POST", "/v1/tokens", fleet.admin, name="olga", role="user", team="t")
    refused(404, "DELETE", "/v1/tokens/nope", fleet.admin)
    assert entries(fleet) == []


def test_only_staff_read_the_audit(fleet: Fleet, ops: str) -> None:
    assert fleet.client.get("/v1/audit", headers=fleet.h(fleet.user)).status_code == 403
    assert fleet.client.get("/v1/audit", headers=fleet.h(fleet.agents["h1"])).status_code == 403
    assert fleet.client.get("/v1/audit").status_code == 401
    assert entries(fleet, ops) == []


def test_filters(fleet: Fleet, ops: str) -> None:
    for board in ("h1-b0", "h1-b1"):
        r = fleet.client.post(f"/v1/boards/{board}/drain", json={"reason": "rack move"}, headers=fleet.h(ops))
        assert r.status_code == 200
    r = fleet.client.post("/v1/boards/h1-b0/undrain", json={"reason": "moved"}, headers=fleet.h(fleet.admin))
    assert r.status_code == 200
    # An old entry, before any window asked for below.
    with fleet.store.write() as conn:
        audit.record(conn, actor="olga", role="operator", action="board.drain", target="h1-b9", at=1.0)

    assert len(entries(fleet)) == 4
    assert [e["target"] for e in entries(fleet, actor="olga", since_s=3600)] == ["h1-b1", "h1-b0"]
    assert [e["actor"] for e in entries(fleet, action="board.undrain")] == ["admin"]
    assert [e["action"] for e in entries(fleet, target="h1-b0")] == ["board.undrain", "board.drain"]
    assert [e["target"] for e in entries(fleet, action="board.drain", limit=1)] == ["h1-b1"]
    assert [e["target"] for e in entries(fleet, actor="olga")][-1] == "h1-b9"
    assert entries(fleet, actor="nobody") == []
    assert fleet.client.get("/v1/audit", params={"limit": 0}, headers=fleet.h(ops)).status_code == 422


def test_a_token_secret_never_reaches_the_log(fleet: Fleet, ops: str) -> None:
    r = fleet.client.post("/v1/tokens", json={"name": "bot", "role": "operator"}, headers=fleet.h(fleet.admin))
    secret = r.json()["token"]
    assert secret
    [e] = entries(fleet)
    assert e["action"] == "token.create" and secret not in json.dumps(e)
    with fleet.store.read() as conn:
        assert secret not in json.dumps([row._asdict() for row in audit.entries(conn)])


def test_cancelling_another_s_job_is_recorded_and_one_s_own_is_not(fleet: Fleet, ops: str) -> None:
    mate = create_token(fleet.url, name="carol", role=Role.USER, team="compiler")
    own, teammates, staffs = (fleet.submit()["id"] for _ in range(3))

    def cancel(job_id: int, token: str) -> int:
        return fleet.client.post(f"/v1/jobs/{job_id}/cancel", headers=fleet.h(token)).status_code

    assert cancel(own, fleet.user) == 200  # alice's own job
    assert cancel(teammates, fleet.other) == 403  # another team's user may not
    assert cancel(teammates, mate) == 200
    assert cancel(staffs, ops) == 200
    assert cancel(staffs, ops) == 200  # already canceled: nothing done, nothing recorded
    bound = fleet.submit()["id"]
    fleet.rec.schedule(time.time())
    assert fleet.client.get(f"/v1/jobs/{bound}", headers=fleet.h(ops)).json()["state"] == "running"
    assert cancel(bound, ops) == 200
    assert cancel(bound, ops) == 200  # stopping already: recorded once
    got = entries(fleet)
    assert [brief(e) for e in got] == [
        ("olga", "job.cancel", str(bound), None),
        ("olga", "job.cancel", str(staffs), None),
        ("carol", "job.cancel", str(teammates), None),
    ]
    assert got[2]["role"] == "user" and got[2]["detail"] == {"owner": "alice", "team": "compiler"}


def test_releasing_another_s_lease_is_recorded(fleet: Fleet, ops: str) -> None:
    lease = fleet.client.post("/v1/leases", json={"ttl_s": 60}, headers=fleet.h(fleet.user)).json()
    r = fleet.client.post(f"/v1/leases/{lease['id']}/renew", json={"ttl_s": 120}, headers=fleet.h(fleet.user))
    assert r.status_code == 200
    assert entries(fleet) == []  # one's own lease: ordinary use
    r = fleet.client.post(f"/v1/leases/{lease['id']}/renew", json={"ttl_s": 120}, headers=fleet.h(ops))
    assert r.status_code == 200
    assert fleet.client.delete(f"/v1/leases/{lease['id']}", headers=fleet.h(ops)).status_code == 200
    assert [brief(e) for e in entries(fleet)] == [
        ("olga", "lease.release", str(lease["id"]), None),
        ("olga", "lease.renew", str(lease["id"]), None),
    ]
