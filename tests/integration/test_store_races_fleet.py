"""Races of the fleet's configuration and of agents coming and going, on PostgreSQL (SQLite has one
writer at a time: they cannot happen there): two queue configs applied at once, a put racing an
apply, an inventory sync racing a board's first registration, a late leave of an old agent process
racing the register of its successor, two first registrations of one host, and two creates of one
token name or firmware version. As in ``test_store_races``, each race is made to happen for
certain: one transaction is held at its COMMIT while the other runs into it."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from fleetyard.domain.auth import Principal, Role
from fleetyard.domain.inventory import Inventory
from fleetyard.domain.queue_config import QueueConfig, QueueQuota
from fleetyard.protocol.agent import RegisterRequest
from fleetyard.protocol.api import FirmwareIn, TokenIn
from fleetyard.server.services import agents, firmware, queues, tokens
from fleetyard.store import inventory
from fleetyard.store import tables as t
from fleetyard.store.db import Store
from fleetyard.store.tokens import create_token
from tests.integration.harness import PostgresCluster, wait_for
from tests.integration.test_store_races import PgFleet, _blocked_on_a_lock, _in_thread

pytestmark = pytest.mark.postgres

ROOT = Principal(name="root", role=Role.ADMIN)
H1 = Principal(name="agent-h1", role=Role.AGENT, host="h1")


class Fleet(PgFleet):
    def __init__(self, url: str, tmp: Path) -> None:
        super().__init__(url, tmp)
        self.admin = create_token(url, name="root", role=Role.ADMIN)

    def request(self, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        return self.client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)


@pytest.fixture
def fleet(pg_cluster: PostgresCluster, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(pg_cluster.new_database(), tmp_path)
    yield f
    f.client.close()
    f.store.dispose()


class HeldAtCommit:
    """Holds the first transaction that the thread which called :meth:`run` commits, at its
    COMMIT (its writes done, its locks held), until :meth:`release`: a service's transaction
    stopped at the point where a racing one must wait for it or miss what it wrote."""

    def __init__(self, store: Store) -> None:
        self.reached, self._release = threading.Event(), threading.Event()
        self._thread: int | None = None
        event.listen(store.engine, "commit", self._on_commit)

    def _on_commit(self, _conn: sa.Connection) -> None:
        if threading.get_ident() == self._thread and not self.reached.is_set():
            self.reached.set()
            assert self._release.wait(60)

    def run(self, fn: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
        def held() -> None:
            self._thread = threading.get_ident()
            fn()

        th, errors = _in_thread(held)
        assert self.reached.wait(60), errors
        return th, errors

    def release(self) -> None:
        self._release.set()


def _race(f: Fleet, first: Callable[[], Any], second: Callable[[], Any]) -> tuple[list[Any], list[BaseException]]:
    """``first`` held at its commit; ``second`` run until it waits for a lock (or ends: it did not
    wait, which is the race lost); then ``first`` commits and both end. Returns ``second``'s
    result (a list of one, or empty) and both threads' errors."""
    gate = HeldAtCommit(f.store)
    a, a_errors = gate.run(first)
    out: list[Any] = []
    b, b_errors = _in_thread(lambda: out.append(second()))
    wait_for(lambda: _blocked_on_a_lock(f.store) or not b.is_alive(), timeout=30, what="the second to wait")
    gate.release()
    a.join(60)
    b.join(60)
    assert not a.is_alive() and not b.is_alive()
    return out, a_errors + b_errors


def _register_body(host: str, session: str, boards: int = 1) -> dict[str, Any]:
    found = [
        {"serial": f"{host}-b{i}", "generation": "sim-g1", "slot": i, "firmware": "1.0", "device": f"sim:{i}"}
        for i in range(boards)
    ]
    return {"host": host, "session": session, "driver": "sim:1", "agent_version": "t", "boards": found}


def _queue_state(f: Fleet) -> tuple[dict[str, Any], list[tuple[str, int, bool]]]:
    with f.store.read() as conn:
        qs = {r.name: (r.cohort, r.nominal) for r in conn.execute(sa.select(t.queues))}
        pcs = sorted((r.name, r.value, r.is_default) for r in conn.execute(sa.select(t.priority_classes)))
    return qs, pcs


CONFIG_A = {
    "queues": [
        {"name": "compiler", "cohort": "fleet", "nominal": {"sim-g1": 1}},
        {"name": "shared", "cohort": "fleet", "nominal": {"sim-g1": 2}},
    ],
    "priority_classes": [{"name": "low", "value": 1, "default": True}],
}
CONFIG_B = {
    "queues": [
        {"name": "runtime", "cohort": "lab", "nominal": {"sim-g1": 3}},
        {"name": "shared", "cohort": "lab", "nominal": {"sim-g1": 4}},
    ],
    "priority_classes": [{"name": "high", "value": 9, "default": True}, {"name": "low", "value": 1}],
}


def test_two_queue_configs_applied_at_once_leave_one_of_them_whole(fleet: Fleet) -> None:
    """G9. The second apply used not to see the rows the first inserted: it deleted only the old
    ones, then failed on a name both configs hold (a 500), or kept the union of both."""
    f = fleet
    assert f.request("PUT", "/v1/queues", f.admin, json={"queues": [{"name": "old", "nominal": {}}]}).is_success

    def apply_a() -> None:
        queues.apply_config(f.store, config=QueueConfig.model_validate(CONFIG_A), principal=ROOT, at=time.time())

    out, errors = _race(f, apply_a, lambda: f.request("PUT", "/v1/queues", f.admin, json=CONFIG_B))
    assert not errors, errors
    assert out[0].status_code == 200, out[0].text
    assert _queue_state(f) == (
        {"runtime": ("lab", {"sim-g1": 3}), "shared": ("lab", {"sim-g1": 4})},
        [("high", 9, True), ("low", 1, False)],
    )


def test_a_queue_put_racing_an_apply_goes_before_it_and_the_apply_stays_whole(fleet: Fleet) -> None:
    """G9. A put of a queue the config also names, committed while the apply ran, used to make the
    apply fail on the name (a 500)."""
    f = fleet
    quota = {"cohort": "solo", "nominal": {"sim-g1": 7}}

    def put() -> None:
        queues.put_queue(f.store, name="shared", quota=QueueQuota.model_validate(quota), principal=ROOT, at=time.time())

    out, errors = _race(f, put, lambda: f.request("PUT", "/v1/queues", f.admin, json=CONFIG_B))
    assert not errors, errors
    assert out[0].status_code == 200, out[0].text
    assert _queue_state(f)[0] == {"runtime": ("lab", {"sim-g1": 3}), "shared": ("lab", {"sim-g1": 4})}
    # A put after the apply replaces that one queue.
    assert f.request("PUT", "/v1/queues/shared", f.admin, json=quota).is_success
    assert _queue_state(f)[0] == {"runtime": ("lab", {"sim-g1": 3}), "shared": ("solo", {"sim-g1": 7})}


def test_a_board_registering_during_the_first_inventory_sync_waits_for_it(fleet: Fleet) -> None:
    """G10. A register reading the inventory while the first sync committed used to see the open
    fleet and admit a board the new inventory does not name as available at once."""
    f = fleet
    inv = Inventory.model_validate(
        {
            "sites": [
                {
                    "name": "lab",
                    "racks": [
                        {
                            "name": "r1",
                            "hosts": [
                                {"name": "h2", "boards": [{"serial": "h2-b0", "generation": "sim-g1", "slot": 0}]}
                            ],
                        }
                    ],
                }
            ]
        }
    )

    def sync() -> None:
        with f.store.write() as conn:
            inventory.sync(conn, inv, by="root", at=time.time())

    out, errors = _race(
        f, sync, lambda: f.request("POST", "/v1/agent/register", f.agents["h1"], json=_register_body("h1", "s1"))
    )
    assert not errors, errors
    assert out[0].status_code < 300, out[0].text
    with f.store.read() as conn:
        state = conn.execute(sa.select(t.boards.c.state).where(t.boards.c.id == "h1-b0")).scalar_one()
    assert state == "discovered"  # held back for approval, as under the inventory it was synced with


def test_a_late_leave_of_an_old_agent_process_does_not_take_its_successors_host_offline(fleet: Fleet) -> None:
    """G12. The old process's leave checked its session before the new process's register
    committed, and then took the host, now the new session's, offline."""
    f = fleet
    f.register("h1")  # session s1

    def register_s2() -> None:
        req = RegisterRequest.model_validate(_register_body("h1", "s2"))
        agents.register(f.store, principal=H1, req=req, at=time.time())

    out, errors = _race(
        f, register_s2, lambda: f.request("POST", "/v1/agent/leave", f.agents["h1"], json={"session": "s1"})
    )
    assert not errors, errors
    assert out[0].status_code == 409 and out[0].json()["error"]["code"] == "stale_session", out[0].text
    with f.store.read() as conn:
        host = conn.execute(sa.select(t.hosts).where(t.hosts.c.id == "h1")).one()
        board = conn.execute(sa.select(t.boards.c.state).where(t.boards.c.id == "h1-b0")).scalar_one()
    assert (host.state, host.session, board) == ("online", "s2", "available")


def test_two_first_registrations_of_one_host_both_succeed(fleet: Fleet) -> None:
    """End-note: the second insert of a new host (and its boards) failed on the key the first had
    just committed: a 500 the agent had to retry. Now it registers, as a later register would."""
    f = fleet

    def register_s1() -> None:
        req = RegisterRequest.model_validate(_register_body("h1", "s1", boards=2))
        agents.register(f.store, principal=H1, req=req, at=time.time())

    body = _register_body("h1", "s2", boards=2)
    out, errors = _race(f, register_s1, lambda: f.request("POST", "/v1/agent/register", f.agents["h1"], json=body))
    assert not errors, errors
    assert out[0].status_code < 300, out[0].text
    with f.store.read() as conn:
        host = conn.execute(sa.select(t.hosts).where(t.hosts.c.id == "h1")).one()
        boards = dict(conn.execute(sa.select(t.boards.c.id, t.boards.c.state)).all())
    assert (host.state, host.session) == ("online", "s2")  # the last register of a host wins
    assert boards == {"h1-b0": "available", "h1-b1": "available"}


def test_two_creates_of_one_token_name_give_one_token_and_a_409(fleet: Fleet) -> None:
    """End-note: the second create's insert failed on the name's key (a 500), not the 409 a
    create after the first gets."""
    f = fleet
    req = {"name": "ci", "role": "user", "team": "compiler"}

    def create() -> None:
        tokens.create(f.store, req=TokenIn.model_validate(req), principal=ROOT, at=time.time())

    out, errors = _race(f, create, lambda: f.request("POST", "/v1/tokens", f.admin, json=req))
    assert not errors, errors
    assert out[0].status_code == 409 and out[0].json()["error"]["code"] == "conflict", out[0].text
    assert "exists already" in out[0].json()["error"]["message"]
    with f.store.read() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(t.tokens).where(t.tokens.c.name == "ci")).scalar() == 1
        )


def test_two_pushes_of_one_firmware_version_give_one_image_and_a_409_or_the_same_answer(fleet: Fleet) -> None:
    """End-note: the second push's insert failed on (generation, version) (a 500). Now other bytes
    under that version are refused (409), and the same bytes get the image registered once."""
    f = fleet
    shas = []
    for data in (b"image one", b"image two"):
        sha = hashlib.sha256(data).hexdigest()
        assert f.request("PUT", f"/v1/blobs/{sha}", f.admin, content=data).is_success
        shas.append(sha)

    def push(version: str, sha: str) -> Callable[[], Any]:
        req = FirmwareIn(generation="sim-g1", version=version, sha256=sha, notes="n")
        return lambda: firmware.push(f.store, f.app.state.blobs, principal=ROOT, req=req, at=time.time())

    def push_api(version: str, sha: str) -> Callable[[], httpx.Response]:
        body = {"generation": "sim-g1", "version": version, "sha256": sha, "notes": "n"}
        return lambda: f.request("POST", "/v1/firmware", f.admin, json=body)

    out, errors = _race(f, push("2.0.0", shas[0]), push_api("2.0.0", shas[1]))
    assert not errors, errors
    assert out[0].status_code == 409 and out[0].json()["error"]["code"] == "conflict", out[0].text
    assert "registered already with other bytes" in out[0].json()["error"]["message"]

    out, errors = _race(f, push("2.1.0", shas[0]), push_api("2.1.0", shas[0]))
    assert not errors, errors
    assert out[0].status_code == 201 and out[0].json()["sha256"] == shas[0], out[0].text
    with f.store.read() as conn:
        images = conn.execute(sa.select(t.firmware_images.c.version, t.firmware_images.c.sha256)).all()
        pushed = conn.execute(sa.select(t.audit.c.target).where(t.audit.c.action == "firmware.push")).scalars()
        assert sorted(pushed) == ["sim-g1/2.0.0", "sim-g1/2.1.0"]  # each audited once, by its one push
    assert sorted(images) == [("2.0.0", shas[0]), ("2.1.0", shas[0])]
