"""kill -9 of each process while jobs run: nothing lost, duplicated, or done without a result."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import Stack, wait_for


def _submit_batch(stack: Stack, n: int, seconds: float) -> list[int]:
    ids = []
    for i in range(n):
        ids.append(stack.submit(params={"command": f"echo job-{i}-ran; sleep {seconds}"}))
    return ids


def _assert_each_ran_once(stack: Stack, ids: list[int]) -> None:
    for i, job_id in enumerate(ids):
        job = stack.wait_job(job_id, timeout=60)
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 1, job
        assert stack.logs_of(job_id).count(f"job-{i}-ran") == 1
        ranks = stack.ok("GET", f"/v1/jobs/{job_id}/results")["ranks"]
        assert [r["exit_code"] for r in ranks] == [0]


def test_server_kill9_and_restart_loses_nothing(stack: Stack) -> None:
    stack.start(hosts=2)
    ids = _submit_batch(stack, 12, 1.5)
    wait_for(lambda: stack.job(ids[0])["state"] != "queued", what="jobs running")
    stack.procs["server"].kill9()
    time.sleep(1.5)  # agents finish work meanwhile and must keep their results until the server is back
    stack.start_server()
    _assert_each_ran_once(stack, ids)


def test_controller_kill9_standby_takes_over(stack: Stack) -> None:
    stack.start(hosts=2)
    stack.start_controller("standby")
    ids = _submit_batch(stack, 20, 1.0)  # 8 boards: several waves, so most are bound after the kill
    wait_for(lambda: stack.job(ids[0])["state"] != "queued", what="jobs running")
    stack.procs["controller"].kill9()
    _assert_each_ran_once(stack, ids)
    # And a restarted controller simply stands by.
    stack.start_controller("controller")
    assert stack.procs["standby"].alive


@pytest.mark.one_store("postgres")  # the production store; SQLite in make test-long
def test_agent_kill9_reruns_its_work_elsewhere(stack: Stack) -> None:
    stack.host_timeout_s = 8.0  # lost after 8 s of silence (production: a minute)
    stack.setup()
    stack.start_server()
    stack.start_controller()
    stack.start_agent("h1", "sim:2:sim-g1")
    on_h1 = "|".join(b["id"] for b in stack.boards(host="h1"))
    # Still running on h1 when its agent dies, however slow the machine; quick on any other board.
    cmd = f"echo attempt on $FLEETYARD_BOARD_ID; case $FLEETYARD_BOARD_ID in {on_h1}) sleep 600;; esac"
    job_id = stack.submit(params={"command": cmd})
    wait_for(lambda: stack.job(job_id)["state"] == "running" and "attempt" in stack.logs_of(job_id), what="start")
    stack.start_agent("h2", "sim:2:sim-g1")
    stack.procs["agent-h1"].kill9()
    job = stack.wait_job(job_id, timeout=90)
    assert job["state"] == "succeeded"
    first, second = job["attempt_list"]
    assert first["outcome"] == "infra_error" and "host lost" in (first["message"] or "")
    assert second["ranks"][0]["host_id"] == "h2"
    assert job["infra_retries"] == 1
    assert all(b["state"] == "offline" for b in stack.boards(host="h1"))
    assert stack.ok("GET", "/v1/hosts/h1")["state"] == "offline"


def test_a_stopping_agent_takes_its_host_offline_at_once(stack: Stack) -> None:
    stack.start(hosts=2, driver="sim:1:sim-g1")
    job_id = stack.submit(params={"command": "echo running; sleep 30"})
    wait_for(lambda: "running" in stack.logs_of(job_id), what="job to start")
    [rank] = stack.job(job_id)["attempt_list"][0]["ranks"]
    host = rank["host_id"]
    stack.procs[f"agent-{host}"].stop()  # SIGTERM: a clean stop, not a crash
    host_state = stack.ok("GET", f"/v1/hosts/{host}")["state"]
    assert host_state == "offline"  # at once, not after the heartbeat timeout
    job = stack.job(job_id)
    first = job["attempt_list"][0]
    assert first["outcome"] == "preempted", first  # neither the job's fault nor the board's
    assert job["infra_retries"] == 0
    # The job runs again on the other host.
    wait_for(lambda: len(stack.job(job_id)["attempt_list"]) == 2, what="second attempt")
    assert stack.job(job_id)["attempt_list"][1]["ranks"][0]["host_id"] != host
