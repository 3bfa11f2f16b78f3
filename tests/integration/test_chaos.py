"""Chaos on the real stack: 8 agents with sim boards and a steady job stream; a hang, a crash, an
ECC storm, silent corruption and a board falling off the bus, injected through the admin API on
chosen boards, and an agent killed with SIGKILL. Every affected job completes elsewhere; every
faulty board ends healed or quarantined with the right reason; the corrupting board is caught by
its L1 check before its next user job; nothing is lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from fleetyard.parent_death import die_with_parent
from tests.fast_health import FAST_HEALTH_YAML
from tests.integration.harness import Stack, stopped, wait_for

# Every user job is followed by an L1 check on its boards (so that corruption is caught before
# the next one), and the breaker lets these few faults of one generation through.
CHAOS_HEALTH = (
    FAST_HEALTH_YAML.replace("every_jobs: 1000", "every_jobs: 1")
    + "breaker: {fraction: 1.0, boards: 50, window_s: 900}\n"
)
HOSTS = 8
FAULTS = {"h1": "hang", "h2": "crash", "h3": "ecc_storm", "h4": "silent_corruption", "h5": "bus_drop"}


@pytest.mark.one_store("postgres")
def test_chaos_every_job_completes_and_every_faulty_board_ends_healed_or_quarantined(stack: Stack) -> None:
    stack.health_yaml = CHAOS_HEALTH
    stack.host_timeout_s = 10.0  # h6's agent is killed: lost after 10 s of silence (production: a minute)
    stack.setup()
    stack.start_server()
    stack.start_controller()
    for i in range(HOSTS):
        stack.start_agent(f"h{i + 1}", "sim:2:sim-g1", wait=False)
    wait_for(lambda: len(stack.boards(state="available")) == 2 * HOSTS, timeout=60, what="16 boards registered")
    jobs = [stack.submit(params={"command": f"echo job-{i}; sleep 1.5"}) for i in range(40)]

    def board_running_on(host: str) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: next(
                    (b for b in stack.boards(host=host) if b["state"] == "allocated" and b["job_id"] in jobs), None
                ),
                timeout=60,
                interval=0.1,
                what=f"a user job running on {host}",
            )
        )

    # Each fault on a board while a user job runs on it.
    target: dict[str, str] = {}
    injected_at: dict[str, float] = {}
    for host, kind in FAULTS.items():
        b = board_running_on(host)
        stack.ok("POST", f"/v1/admin/boards/{b['id']}/faults", json={"kind": kind})
        target[kind], injected_at[kind] = b["id"], time.time()
    lost = [b["id"] for b in stack.boards(host="h6")]
    board_running_on("h6")
    stack.procs["agent-h6"].kill9()

    # Every job completes, its affected attempts re-queued elsewhere; each ran to success once.
    for i, job_id in enumerate(jobs):
        job = stack.wait_job(job_id, timeout=120)
        assert job["state"] == "succeeded", job
        assert stack.logs_of(job_id).count(f"job-{i}") >= 1
        last = job["attempt_list"][-1]
        assert last["outcome"] == "success"
        assert all(a["outcome"] == "infra_error" for a in job["attempt_list"][:-1]), job["attempt_list"]

    # Every faulty board ends healed or quarantined, for the right reason.
    def settled(board: str) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (
                    (r := stack.ok("GET", f"/v1/boards/{board}/repairs"))
                    and r[0]["outcome"] in ("healed", "quarantined")
                    and r[0]
                ),
                timeout=90,
                interval=0.2,
                what=f"{board}'s case to end",
            )
        )

    hang = settled(target["hang"])
    assert hang["outcome"] == "healed" and "failed its probe" in hang["cause"]  # during its job, or after it
    assert hang["evidence"]["steps"][0].startswith("soft_reset: passed")
    drop = settled(target["bus_drop"])
    assert drop["outcome"] == "healed" and "fell off the bus" in drop["cause"]
    crash = settled(target["crash"])
    assert crash["outcome"] == "healed" and "crashed" in crash["cause"]
    assert crash["evidence"]["steps"] == ["L2 check: passed"]  # one-shot: nothing to remediate
    ecc = settled(target["ecc_storm"])
    assert ecc["outcome"] == "quarantined" and ecc["reason"].startswith(
        "critical ecc-uncorrectable: ecc_uncorrected grew"
    )
    sdc = settled(target["silent_corruption"])
    assert sdc["outcome"] == "quarantined" and "health check L1 failed" in sdc["reason"]
    assert sdc["evidence"]["failing_outputs"]  # the wrong numbers, kept for the repair
    for board, kind in ((target["ecc_storm"], "ecc"), (target["silent_corruption"], "sdc")):
        assert stack.ok("GET", f"/v1/boards/{board}")["state"] == "quarantined", kind

    # Silent corruption was caught by L1 before the next user job on that board.
    history = list(
        reversed(stack.ok("GET", f"/v1/boards/{target['silent_corruption']}/history", params={"limit": 1000}))
    )
    after = [e for e in history if e["at"] >= injected_at["silent_corruption"] and e["to_state"] == "allocated"]
    assert after, history
    assert stack.job(after[0]["job_id"])["kind"] == "health-check"
    assert all(stack.job(e["job_id"])["kind"] == "health-check" for e in after)

    # The killed agent's host went offline; back, its boards pass L1 before they serve again.
    assert all(stack.ok("GET", f"/v1/boards/{b}")["state"] == "offline" for b in lost)
    stack.start_agent("h6", "sim:2:sim-g1", wait=False)
    for b in lost:
        back = settled(b)
        assert back["outcome"] == "healed" and back["cause"].startswith("host back")
        assert back["evidence"]["steps"] == ["L1 check: passed"]

    # Nothing lost: every board has its whole history, and every job its results.
    for b in stack.boards():
        assert stack.ok("GET", f"/v1/boards/{b['id']}/history", params={"limit": 1})
    for job_id in jobs:
        assert [r["exit_code"] for r in stack.ok("GET", f"/v1/jobs/{job_id}/results")["ranks"]] == [0]


@pytest.mark.one_store("sqlite")  # the chaos above runs on PostgreSQL; `make test-long` runs both on both
def test_chaos_with_noise_stopped_agents_and_a_busy_control_plane_take_nothing_out(stack: Stack) -> None:
    """Noise, not faults: an agent stopped (SIGSTOP) for less than the grace and continued, its
    job finishing once; one stopped past the grace, its job run again once elsewhere and its late
    events refused; a CPU hog beside the control plane all along. No board is taken out for it."""
    stack.host_unreachable_s, stack.host_timeout_s = 1.5, 6.0
    stack.start(hosts=4, driver="sim:2:sim-g1")
    started = time.time()
    hog = subprocess.Popen(  # one core busy for the whole test: the control plane's passes run late
        [sys.executable, "-c", "while True: pass"], preexec_fn=die_with_parent(signal.SIGKILL)
    )
    try:
        short = stack.submit(params={"command": "echo short-stop; sleep 4"})
        on_short = _running_host(stack, short)
        others = [b["id"] for b in stack.boards(host=on_short)]
        long = stack.submit(params={"command": "echo long-stop; sleep 4"}, exclude_boards=others)
        on_long = _running_host(stack, long)

        with stopped(stack, on_short):
            time.sleep(2.0)  # well within the grace
        with stopped(stack, on_long):
            wait_for(lambda: {b["state"] for b in stack.boards(host=on_long)} == {"offline"}, timeout=60,
                     what=f"{on_long} lost")  # fmt: skip
        wait_for(lambda: {b["state"] for b in stack.boards(host=on_long)} == {"available"}, timeout=60,
                 what=f"{on_long} back, its boards checked")  # fmt: skip

        once = stack.wait_job(short)
        assert once["state"] == "succeeded" and len(once["attempt_list"]) == 1, once
        assert stack.logs_of(short).count("short-stop") == 1
        again = stack.wait_job(long)
        assert again["state"] == "succeeded" and len(again["attempt_list"]) == 2, again
        first = again["attempt_list"][0]
        # Its agent, continued, reported the first rank's end: refused, the rank stays as the
        # controller ended it.
        assert first["outcome"] == "infra_error" and first["ranks"][0]["cause"] == "host_lost", first
        assert stack.logs_of(long).count("long-stop") <= 2  # the first attempt's, if it got out, and the second's
    finally:
        hog.kill()
        hog.wait(10)
    # Nothing was taken out for the noise: only the lost host's boards left service (offline, then
    # an L1 check before they served again), and no board went suspect for anything else.
    for b in stack.boards():
        history = [e for e in stack.ok("GET", f"/v1/boards/{b['id']}/history") if e["at"] >= started]
        states = {e["to_state"] for e in history}
        if b["host_id"] == on_long:
            assert "offline" in states and states <= {"offline", "suspect", "remediating", "available", "allocated"}
            assert not [e for e in history if e["to_state"] == "suspect" and "host back" not in e["reason"]]
        else:
            assert not states & {"offline", "suspect", "remediating", "quarantined"}, (b["id"], history)


def _running_host(stack: Stack, job_id: int) -> str:
    board = wait_for(
        lambda: next((b for b in stack.boards(state="allocated") if b["job_id"] == job_id), None),
        timeout=60, interval=0.1, what=f"job {job_id} running",
    )  # fmt: skip
    return str(board["host_id"])
