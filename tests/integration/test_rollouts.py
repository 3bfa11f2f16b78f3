"""Staged firmware rollouts with the real server, controller and agents: a good image goes out
wave by wave, a bad one is rolled back with the gate's evidence, refusals say what to do."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fleetyard.domain.firmware_image import sim_image
from tests.integration.harness import Stack, wait_for

OLD = "1.4.2"  # what sim-g1 boards ship with


def _push(stack: Stack, version: str, generation: str = "sim-g1", **header: Any) -> None:
    """Register a sim image (``header``: e.g. crash_per_hour, boots=False) as the harness's operator."""
    data = sim_image(generation, version, **header)
    sha = hashlib.sha256(data).hexdigest()
    stack.ok("PUT", f"/v1/blobs/{sha}", as_="ops", content=data)
    stack.ok("POST", "/v1/firmware", as_="ops", json={"generation": generation, "version": version, "sha256": sha})


def _start(stack: Stack, **body: Any) -> dict[str, Any]:
    plan = {"generation": "sim-g1", "reason": "test", "canary": 1, "shares": [0.5, 1.0], "soak_s": 0.5, "control": 1}
    return dict(stack.ok("POST", "/v1/rollouts", as_="ops", json={**plan, **body}))


def _wait_state(stack: Stack, rollout_id: int, states: set[str], timeout: float = 45.0) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (r := stack.ok("GET", f"/v1/rollouts/{rollout_id}"))["state"] in states and r,
            timeout=timeout,
            interval=0.25,
            what=f"rollout {rollout_id} to be {states}",
        )
    )


@pytest.mark.one_store("postgres")
def test_a_bad_image_fails_and_every_flashed_board_goes_back(stack: Stack) -> None:
    stack.start(hosts=2, driver="sim:4:sim-g1")
    _push(stack, OLD)
    # Its boards crash at once: the check after the flash fails, and so does the gate.
    _push(stack, "2.0.0", crash_per_hour=1e7)
    r = _start(stack, version="2.0.0")
    done = _wait_state(stack, r["id"], {"completed", "rolled_back", "aborted"}, timeout=60)
    assert done["state"] == "rolled_back", done
    canary = done["wave_records"][0]
    assert canary["verdict"] is False and canary["reasons"]
    assert canary["figures"]["wave"]["check_failures"] >= 1
    assert canary["gate"]["check_failure_rate"]["wave"] > canary["gate"]["check_failure_rate"]["control"]
    assert "failed its gate" in (done["message"] or "")
    flashed = [b for b in done["boards"] if b["flashed_at"] is not None]
    assert flashed, done["boards"]
    assert all(b["step"] == "reverted" and b["firmware"] == OLD for b in flashed), flashed
    # No wave after the canary started: those boards were never touched.
    assert all(b["step"] == "pending" for b in done["boards"] if b["wave"] > 0)
    wait_for(
        lambda: {b["firmware"] for b in stack.boards(generation="sim-g1")} == {OLD},
        what="every board back on the old firmware",
    )
    images = {f["version"]: f for f in stack.ok("GET", "/v1/firmware", params={"generation": "sim-g1"})}
    assert not images["2.0.0"]["standard"]


def test_an_image_that_does_not_boot_fails_the_gate_on_its_flashes(sqlite_stack: Stack) -> None:
    stack = sqlite_stack  # SQLite only: the bad-image test runs the same shell on both stores
    stack.start(hosts=1, driver="sim:4:sim-g1")
    _push(stack, OLD)
    _push(stack, "2.0.0", boots=False)
    r = _start(stack, version="2.0.0", shares=[1.0])
    done = _wait_state(stack, r["id"], {"completed", "rolled_back", "aborted"})
    assert done["state"] == "rolled_back", done
    canary = done["wave_records"][0]
    assert canary["figures"]["wave"]["flash_failures"] == 1
    assert any("flashes failed" in x for x in canary["reasons"])
    [failed] = [b for b in done["boards"] if b["step"] == "failed"]
    assert "did not boot" in failed["message"] and failed["flashed_at"] is None
    assert all(b["step"] == "pending" for b in done["boards"] if b["board_id"] != failed["board_id"])
    # The board never left its old firmware; the remediation ladder's check returns it to service.
    wait_for(
        lambda: (
            {b["firmware"] for b in stack.boards(generation="sim-g1")} == {OLD}
            and all(b["state"] == "available" for b in stack.boards(generation="sim-g1"))
        ),
        what="every board in service on the old firmware",
    )


def test_drain_requeue_preempts_the_job_that_keeps_a_board(sqlite_stack: Stack) -> None:
    stack = sqlite_stack  # SQLite only: see conftest.sqlite_stack
    stack.start(hosts=1, driver="sim:2:sim-g1")
    _push(stack, OLD)
    _push(stack, "2.0.0")
    job_id = stack.submit(boards=2, params={"command": "sleep 60"})
    wait_for(lambda: stack.job(job_id)["state"] == "running", what="the job running on both boards")
    r = _start(stack, version="2.0.0", shares=[1.0], control=0, drain="requeue", drain_timeout_s=0.5)
    job = wait_for(
        lambda: (j := stack.job(job_id))["attempts"] >= 1 and j["state"] == "queued" and j,
        what="the job preempted and back in the queue",
    )
    first = job["attempt_list"][0]
    assert first["outcome"] == "preempted" and f"rollout {r['id']}" in (first["message"] or "")
    stack.ok("POST", f"/v1/jobs/{job_id}/cancel", as_="alice")
    done = _wait_state(stack, r["id"], {"completed", "rolled_back", "aborted"})
    assert done["state"] == "completed"


@pytest.mark.one_store("sqlite")  # bounded runs: refusals before any write: the store adds nothing
def test_refusals_name_the_problem(stack: Stack) -> None:
    stack.start(hosts=1, driver="sim:2:sim-g1")
    body = {"generation": "sim-g1", "version": "2.0.0", "reason": "test"}
    r = stack.http("POST", "/v1/rollouts", as_="ops", json={**body, "generation": "sim-g9"})
    assert r.status_code == 404 and "sim-g9" in r.json()["error"]["message"]
    r = stack.http("POST", "/v1/rollouts", as_="ops", json=body)
    assert r.status_code == 404 and "fleetyard firmware push" in r.json()["error"]["message"]
    # The image of another generation is not one of sim-g1's.
    _push(stack, "2.0.0", generation="sim-g2")
    r = stack.http("POST", "/v1/rollouts", as_="ops", json=body)
    assert r.status_code == 404
    _push(stack, "2.0.0")
    # The boards' own firmware is not registered: a rollback could not flash it back.
    r = stack.http("POST", "/v1/rollouts", as_="ops", json=body)
    assert r.status_code == 409 and OLD in r.json()["error"]["message"]
    _push(stack, OLD)
    r = stack.http("POST", "/v1/rollouts", as_="ops", json={**body, "shares": [0.5]})
    assert r.status_code == 422 and "last share" in r.json()["error"]["message"]
    r = stack.http("POST", "/v1/rollouts", as_="alice", json=body)
    assert r.status_code == 403
    first = stack.ok(
        "POST", "/v1/rollouts", as_="ops", json={**body, "soak_s": 3600, "canary": 1, "shares": [1], "control": 0}
    )
    r = stack.http("POST", "/v1/rollouts", as_="ops", json=body)
    assert r.status_code == 409
    msg = r.json()["error"]["message"]
    assert f"rollout {first['id']}" in msg and f"fleetyard firmware abort {first['id']}" in msg
    aborted = stack.ok("POST", f"/v1/rollouts/{first['id']}/abort", as_="ops", json={"reason": "test over"})
    assert aborted["state"] == "aborted" and "aborted by ops: test over" in aborted["message"]
    r = stack.http("POST", f"/v1/rollouts/{first['id']}/abort", as_="ops", json={"reason": "again"})
    assert r.status_code == 409
    # What was in flight finishes its step; nothing new starts; every board serves again.
    wait_for(
        lambda: all(b["state"] == "available" and b["drain_reason"] is None for b in stack.boards())
        and not any(b["step"] in ("draining", "flashing", "checking")
                    for b in stack.ok("GET", f"/v1/rollouts/{first['id']}")["boards"]),
        what="the aborted rollout's boards back in service",
    )  # fmt: skip
    assert any(b["step"] == "pending" for b in stack.ok("GET", f"/v1/rollouts/{first['id']}")["boards"])
    assert [e["action"] for e in stack.ok("GET", "/v1/audit", params={"action": "firmware.rollout.abort"})]


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEETYARD_SERVER": stack.url, "FLEETYARD_TOKEN": stack.tokens["ops"], "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "fleetyard", *args], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip


def test_pause_holds_the_next_wave_and_resume_goes_on(sqlite_stack: Stack, tmp_path: Path) -> None:
    stack = sqlite_stack  # SQLite only: see conftest.sqlite_stack
    stack.start(hosts=1, driver="sim:4:sim-g1")
    _push(stack, OLD)
    image = tmp_path / "fw.bin"
    made = _cli(stack, "firmware", "make-sim-image", str(image), "--gen", "sim-g1", "--version", "2.0.0")
    assert made.returncode == 0, made.stderr
    pushed = _cli(stack, "firmware", "push", str(image), "--gen", "sim-g1", "--version", "2.0.0")
    assert pushed.returncode == 0, pushed.stderr
    # The soak gives the pause a window of seconds to land in while the canary's wave is open,
    # however busy the machine (the pause goes straight to the API: a CLI process takes seconds
    # to start on a loaded machine, and the window must not depend on that).
    soak = 4
    started = _cli(stack, "firmware", "rollout", "sim-g1", "2.0.0", "--canary", "1", "--shares", "1", "--soak",
                   str(soak), "--control", "0", "--reason", "fixes ECC scrub", "--json")  # fmt: skip
    assert started.returncode == 0, started.stderr
    r = json.loads(started.stdout)
    wait_for(
        lambda: stack.ok("GET", f"/v1/rollouts/{r['id']}")["wave_records"][0]["steps"] != {"pending": 1},
        what="the canary under way",
    )
    stack.ok("POST", f"/v1/rollouts/{r['id']}/pause", as_="ops", json={"reason": "look first"})
    # The canary finishes what it began; the next wave does not start, even once the soak is over.
    wait_for(
        lambda: stack.ok("GET", f"/v1/rollouts/{r['id']}")["wave_records"][0]["steps"] == {"done": 1},
        timeout=60,
        what="the canary flashed",
    )
    time.sleep(soak + 1)
    paused = stack.ok("GET", f"/v1/rollouts/{r['id']}")
    assert paused["state"] == "paused" and paused["wave"] == 0
    assert paused["wave_records"][1]["steps"] == {"pending": 3}
    again = _cli(stack, "firmware", "pause", str(r["id"]), "--reason", "again")
    assert again.returncode == 1 and "only a running rollout pauses" in again.stderr
    status = _cli(stack, "firmware", "rollout-status", str(r["id"]))
    assert status.returncode == 0, status.stderr
    assert "paused" in status.stdout and "wave 2: 3 boards (3 pending)" in status.stdout
    stack.ok("POST", f"/v1/rollouts/{r['id']}/resume", as_="ops", json={"reason": "looks fine"})
    done = _wait_state(stack, r["id"], {"completed", "rolled_back", "aborted"})
    assert done["state"] == "completed"
    listed = _cli(stack, "firmware", "rollouts")
    assert listed.returncode == 0 and "completed" in listed.stdout
    actions = [e["action"] for e in stack.ok("GET", "/v1/audit", params={"target": f"rollout/{r['id']}"})]
    assert {"firmware.rollout", "firmware.rollout.pause", "firmware.rollout.resume"} <= set(actions)


def test_a_job_pinned_to_firmware_being_rolled_out_waits_for_the_rollout(sqlite_stack: Stack) -> None:
    stack = sqlite_stack  # SQLite only: see conftest.sqlite_stack
    stack.start(hosts=1, driver="sim:2:sim-g1")
    spec = {"boards": 2, "generations": ["sim-g1"], "firmware": "==2.0.0", "params": {"command": "true"}}
    r = stack.http("POST", "/v1/jobs", as_="alice", json=spec)
    assert r.status_code == 422
    assert "no board runs firmware ==2.0.0 and no image of it is registered" in r.json()["error"]["message"]
    _push(stack, OLD)
    _push(stack, "2.0.0")
    job_id = stack.submit(**spec)  # an image of it is registered now: a rollout may bring it
    roll = _start(stack, version="2.0.0", shares=[1.0], control=0, soak_s=1.0)
    wait_for(
        lambda: f"waits for rollout {roll['id']}" in (stack.job(job_id)["pending_reason"] or ""),
        what="the job's pending reason to name the rollout",
    )
    assert stack.job(job_id)["state"] == "queued"
    # Once both boards run 2.0.0 the job runs on them.
    job = stack.wait_job(job_id, timeout=90)
    assert job["state"] == "succeeded"
    assert _wait_state(stack, roll["id"], {"completed"})["state"] == "completed"


@pytest.mark.one_store("sqlite")  # bounded runs; `make test-long` runs it on PostgreSQL too
def test_a_good_image_rolls_out_wave_by_wave_through_a_host_lost_on_the_way(stack: Stack) -> None:
    """The weather is not the firmware: a host lost (its agent stopped past the grace) while its
    boards wait, drain, flash or check sends them back to their wave (a control board among them
    is replaced), and the rollout completes with every board on the image once the host is back."""
    stack.host_unreachable_s, stack.host_timeout_s = 1.5, 3.0
    stack.start(hosts=2, driver="sim:4:sim-g1")
    _push(stack, OLD)
    _push(stack, "2.0.0")
    r = _start(stack, version="2.0.0", soak_s=2)
    assert r["state"] == "running" and r["waves"] == 3
    assert [w["boards"] for w in r["wave_records"]] == [1, 3, 4]
    [control] = [b["board_id"] for b in r["boards"] if b["control"]]
    host = next(b["host_id"] for b in stack.boards() if b["id"] == control)  # the control board's
    agent = stack.procs[f"agent-{host}"].popen
    assert agent is not None
    os.killpg(agent.pid, signal.SIGSTOP)  # its worker processes too: the whole host freezes
    try:
        wait_for(lambda: {b["state"] for b in stack.boards(host=host)} == {"offline"}, timeout=30, what="host lost")
        lost = stack.ok("GET", f"/v1/rollouts/{r['id']}")
        assert lost["state"] == "running", lost
        assert not [b for b in lost["boards"] if b["step"] == "failed"], lost["boards"]
    finally:
        os.killpg(agent.pid, signal.SIGCONT)
    done = _wait_state(stack, r["id"], {"completed", "rolled_back", "aborted"}, timeout=90)
    assert done["state"] == "completed", done
    assert done["counts"] == {"done": 8}, done["boards"]
    assert all(w["verdict"] is True for w in done["wave_records"])
    assert all(w["figures"]["wave"]["checks"] >= 1 for w in done["wave_records"])
    # A board of the other host replaced the control board while its host was away.
    away = {b["id"] for b in stack.boards(host=host)}
    [replaced] = [b["board_id"] for b in done["boards"] if b["control"]]
    assert replaced != control and replaced not in away, done["boards"]
    boards = stack.boards(generation="sim-g1")
    assert {b["firmware"] for b in boards} == {"2.0.0"}
    assert all(b["drain_reason"] is None for b in boards)
    wait_for(lambda: all(b["state"] == "available" for b in stack.boards(generation="sim-g1")), what="in service")
    images = {f["version"]: f for f in stack.ok("GET", "/v1/firmware", params={"generation": "sim-g1"})}
    assert images["2.0.0"]["standard"] and not images[OLD]["standard"]
    audit = stack.ok("GET", "/v1/audit", params={"action": "firmware.rollout"})
    assert audit and audit[0]["target"] == f"rollout/{r['id']}"
