"""Outages on PostgreSQL, the production store: the database stopped for seconds under two
controllers, a server replica killed under its agents. Nothing is lost or run twice, and every
process is still there, doing its part, when the outage ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from fleetyard.controller import leader
from tests.integration.harness import PostgresCluster, Stack, running_stack, wait_for

pytestmark = pytest.mark.postgres

OUTAGE_S = 4.0


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of the test's own: the test stops it (the session's cluster serves other tests)."""
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


def _leaders(db_url: str) -> int:
    """How many sessions hold the controllers' leader lock in this database (one, or none)."""
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=5) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (leader._KEY_HIGH, leader._KEY_LOW),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _submit(stack: Stack, n: int, seconds: float, first: int = 0) -> list[int]:
    """Jobs of one board, and every third of two boards on two hosts (ranks that end together)."""
    ids = []
    for i in range(first, first + n):
        shape = {"boards": 2, "packing": "spread"} if i % 3 == 0 else {}
        ids.append(stack.submit(params={"command": f"echo job-{i}-ran; sleep {seconds}"}, **shape))
    return ids


def _assert_each_ran_once(stack: Stack, ids: list[int], first: int = 0) -> None:
    for i, job_id in enumerate(ids, start=first):
        job = stack.wait_job(job_id, timeout=120)
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 1, job
        ranks = stack.ok("GET", f"/v1/jobs/{job_id}/results")["ranks"]
        assert [r["exit_code"] for r in ranks] == [0] * len(ranks)
        assert stack.logs_of(job_id).count(f"job-{i}-ran") == len(ranks)


def test_a_database_outage_mid_run_is_ridden_out_by_every_process(own_cluster: PostgresCluster, tmp_path: Path) -> None:
    db_url = own_cluster.new_database()
    with running_stack(db_url, tmp_path) as stack:
        stack.setup()
        stack.start_server()
        stack.start_controller("controller")
        stack.start_controller("standby")
        stack.start_agent("h1")
        stack.start_agent("h2")
        wait_for(lambda: _leaders(db_url) == 1, what="one controller to lead")
        ids = _submit(stack, 12, 1.0)
        wait_for(lambda: any(stack.job(i)["state"] == "running" for i in ids), what="jobs running")

        own_cluster.halt()
        halted = time.monotonic()
        # The server says what is wrong, and when to come back: 503 and Retry-After, not 500.
        r = stack.http("GET", "/v1/jobs")
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0, r.text
        wait_for(lambda: httpx.get(f"{stack.url}/readyz", timeout=5).status_code == 503, what="/readyz to fail")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - halted)))  # the outage itself: seconds
        own_cluster.resume()

        _assert_each_ran_once(stack, ids)
        # Every process rode it out: both controllers alive, exactly one of them leading.
        dead = [name for name, p in stack.procs.items() if not p.alive]
        assert not dead, (dead, stack.logs())
        wait_for(lambda: _leaders(db_url) == 1, what="one controller to lead again")
        # The leader works: new jobs run.
        _assert_each_ran_once(stack, _submit(stack, 3, 0.1, first=100), first=100)
        assert {h["state"] for h in stack.ok("GET", "/v1/hosts")} == {"online"}


def test_agents_fail_over_when_a_server_replica_dies(pg_cluster: PostgresCluster, tmp_path: Path) -> None:
    """The agents know both replicas; the one they talk to is killed. A reconnect, not a host
    loss: no board goes offline and nothing runs twice, though the silence of a host that knew only
    the dead replica would outlast the host timeout."""
    with running_stack(pg_cluster.new_database(), tmp_path, host_unreachable_s=3.0, host_timeout_s=10.0) as stack:
        stack.setup()
        stack.start_server()
        stack.start_server(name="server-2")
        stack.start_controller()
        for host in ("h1", "h2"):
            stack.start_agent(host, servers=["server", "server-2"])
        ids = _submit(stack, 8, 1.5)
        wait_for(lambda: any(stack.job(i)["state"] == "running" for i in ids), what="jobs running")
        stack.procs["server"].kill9()
        killed = time.monotonic()
        stack.use_server("server-2")
        later = _submit(stack, 4, 0.5, first=100)
        _assert_each_ran_once(stack, ids)
        _assert_each_ran_once(stack, later, first=100)
        # Past the host timeout since the kill: long enough for a lost host to be noticed.
        time.sleep(max(0.0, stack.host_timeout_s + 3 - (time.monotonic() - killed)))
        assert {h["id"]: h["state"] for h in stack.ok("GET", "/v1/hosts")} == {"h1": "online", "h2": "online"}
        for board in stack.boards():
            history = stack.ok("GET", f"/v1/boards/{board['id']}/history")
            assert "offline" not in {e["to_state"] for e in history}, history


def test_a_process_that_gives_up_on_the_store_exits_non_zero(own_cluster: PostgresCluster, tmp_path: Path) -> None:
    """Past --store-timeout a server and a controller stop, with EX_TEMPFAIL (75) and a reason,
    for a service manager to restart them (exit 0 would look like a clean stop)."""
    with running_stack(own_cluster.new_database(), tmp_path, store_timeout_s=3.0) as stack:
        stack.setup()
        stack.start_server()
        stack.start_controller()
        wait_for(lambda: "controller leads" in stack.procs["controller"].log.read_text(), what="a leader")
        own_cluster.halt()
        for name in ("server", "controller"):
            proc = stack.procs[name]
            assert proc.popen is not None
            wait_for(lambda p=proc: not p.alive, timeout=90, what=f"{name} to give up")  # type: ignore[misc]
            assert proc.popen.returncode == 75, stack.logs()
            assert "giving up" in proc.log.read_text(), stack.logs()
