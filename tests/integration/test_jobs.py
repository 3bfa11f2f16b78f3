"""Command jobs through the whole stack: server, controller and agents as processes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import Stack, running_stack, wait_for
from tests.long import bounded


def test_gang_job_runs_with_rank_environment_logs_and_outputs(stack: Stack) -> None:
    stack.start(hosts=2)
    script = (
        'echo "rank=$FLEETYARD_RANK world=$FLEETYARD_WORLD_SIZE board=$FLEETYARD_BOARD_ID dev=$FLEETYARD_DEVICE"; '
        'echo "out $FLEETYARD_RANK" > "$FLEETYARD_OUTPUT_DIR/rank.txt"'
    )
    job_id = stack.submit(boards=2, placement="same-host", params={"command": script})
    job = stack.wait_job(job_id)
    assert job["state"] == "succeeded", job
    log = stack.logs_of(job_id)
    ranks = job["attempt_list"][0]["ranks"]
    assert len({r["host_id"] for r in ranks}) == 1
    for r in ranks:
        assert f"rank={r['rank']} world=2 board={r['board_id']} dev=sim:" in log
        assert r["exit_code"] == 0 and r["outcome"] == "success"
    results = stack.ok("GET", f"/v1/jobs/{job_id}/results")
    for r in results["ranks"]:
        sha = r["outputs"]["rank.txt"]
        data = stack.http("GET", f"/v1/blobs/{sha}").content
        assert data == f"out {r['rank']}\n".encode() and hashlib.sha256(data).hexdigest() == sha


@pytest.mark.one_store("postgres")  # bounded runs: the agent's half; the store's is every other job test's
def test_failing_command_fails_the_job_with_its_exit_code(stack: Stack) -> None:
    stack.start(hosts=1)
    job = stack.wait_job(stack.submit(params={"command": "echo broken >&2; exit 7"}))
    assert job["state"] == "failed" and job["outcome"] == "user_error"
    assert job["attempt_list"][0]["ranks"][0]["exit_code"] == 7
    assert "broken" in stack.logs_of(job["id"])
    # The board is unaffected by a user's error.
    board = job["attempt_list"][0]["ranks"][0]["board_id"]
    assert stack.ok("GET", f"/v1/boards/{board}")["state"] == "available"


@pytest.mark.one_store("postgres")  # bounded runs: the agent's half, killing the workload
def test_time_limit_and_cancel_kill_the_workload(stack: Stack) -> None:
    stack.start(hosts=1)
    slow = stack.wait_job(stack.submit(time_limit_s=1, params={"command": "sleep 60"}), timeout=50)
    assert slow["state"] == "failed" and slow["outcome"] == "timeout"
    job_id = stack.submit(params={"command": "echo started; sleep 60"})
    wait_for(lambda: "started" in stack.logs_of(job_id), what="job to start")
    r = stack.http("POST", f"/v1/jobs/{job_id}/cancel", as_="bob")
    assert r.status_code == 403  # another team's job
    stack.ok("POST", f"/v1/jobs/{job_id}/cancel", as_="alice")
    job = stack.wait_job(job_id, timeout=60)
    assert job["state"] == "canceled"
    board = job["attempt_list"][0]["ranks"][0]["board_id"]
    wait_for(lambda: stack.ok("GET", f"/v1/boards/{board}")["state"] == "available", what="board released")


@pytest.mark.one_store("sqlite")  # bounded runs: HTTP validation: the store adds nothing
def test_bad_requests_over_http(stack: Stack) -> None:
    stack.start(hosts=1)
    assert httpx.get(f"{stack.url}/v1/jobs").status_code == 401
    assert stack.http("GET", "/v1/jobs/424242").status_code == 404
    r = stack.http("POST", "/v1/jobs", as_="alice", json={"boards": -1, "params": {"command": "true"}})
    assert r.status_code == 422 and "boards" in r.json()["error"]["message"]
    r = stack.http("POST", "/v1/jobs", as_="alice", json={"boards": 99, "params": {"command": "true"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unschedulable"
    r = stack.http("POST", "/v1/tokens", as_="alice", json={"name": "x", "role": "admin"})
    assert r.status_code == 403
    big = b"z" * (1024 * 1024 + 1)
    r = stack.http("PUT", f"/v1/blobs/{hashlib.sha256(big).hexdigest()}", content=big)
    assert r.status_code == 413
    openapi = httpx.get(f"{stack.url}/openapi.json").json()
    assert "/v1/jobs" in openapi["paths"] and "/v1/agent/events" in openapi["paths"]


@pytest.mark.one_store("postgres")  # workers racing is PG's case; SQLite in make test-long
def test_several_server_workers_serve_one_fleet(db_url: str, tmp_path: Path) -> None:
    with running_stack(db_url, tmp_path) as stack:
        stack.setup()
        stack.start_server(workers=2)
        stack.start_controller()
        stack.start_agent("h1", "sim:2:sim-g1")
        ids = [stack.submit(params={"command": f"echo job {i}"}) for i in range(6)]
        for i, job_id in enumerate(ids):
            job = stack.wait_job(job_id)
            assert job["state"] == "succeeded" and f"job {i}" in stack.logs_of(job_id)


@pytest.mark.one_store("sqlite")  # bounded runs: the server's blob limit: the store adds nothing
def test_an_output_over_the_servers_limit_is_dropped_with_a_note(stack: Stack) -> None:
    stack.start(hosts=1)
    script = (
        'head -c 2000000 /dev/urandom > "$FLEETYARD_OUTPUT_DIR/big.bin"; echo small > "$FLEETYARD_OUTPUT_DIR/ok.txt"'
    )
    job = stack.wait_job(stack.submit(params={"command": script}))
    assert job["state"] == "succeeded"  # the workload succeeded; one of its outputs could not be kept
    [rank] = stack.ok("GET", f"/v1/jobs/{job['id']}/results")["ranks"]
    assert set(rank["outputs"]) == {"ok.txt"}
    assert "big.bin" in (rank["message"] or "") and "lost" in rank["message"]


@pytest.mark.long
@pytest.mark.one_store("postgres")  # the race is PG's (SQLite has one writer)
def test_ranks_of_many_spread_jobs_ending_together_settle_every_job_once(stack: Stack) -> None:
    """Each job's two ranks run on two hosts and end at about the same moment, reported by two
    agents at once: every job ends, once, and none was left for the controller's sweeper (on
    PostgreSQL two such ends once each saw the other rank running, and the job ran forever)."""
    stack.start(hosts=2, driver="sim:2:sim-g1")
    n = bounded(200, 40)
    ids = [stack.submit(boards=2, packing="spread", params={"command": "sleep 0.2"}) for _ in range(n)]
    for job_id in ids:
        job = stack.wait_job(job_id, timeout=180)
        assert (job["state"], job["attempts"]) == ("succeeded", 1), job
    assert "fleetyard_attempts_swept_total 0.0" in stack.http("GET", "/metrics").text
