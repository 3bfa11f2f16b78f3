"""Faults injected through the admin API reach the sim boards and the fleet reacts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.harness import Stack, wait_for


def test_crash_fault_is_an_infra_error_and_the_job_reruns_elsewhere(stack: Stack) -> None:
    stack.setup()
    stack.start_server()
    stack.start_controller()
    stack.start_agent("h1", "sim:1:sim-g1")
    [board] = stack.boards(host="h1")
    r = stack.http("POST", f"/v1/admin/boards/{board['id']}/faults", as_="alice", json={"kind": "crash"})
    assert r.status_code == 403
    stack.inject(board["id"], "crash")  # applied by h1's agent before any job lands
    stack.start_agent("h2", "sim:1:sim-g1")
    [other] = stack.boards(host="h2")
    stack.ok("POST", f"/v1/boards/{other['id']}/drain", as_="ops", json={"reason": "keep the job on h1"})
    job_id = stack.submit(params={"command": "echo ran on $FLEETYARD_BOARD_ID"})
    wait_for(
        lambda: stack.job(job_id)["attempts"] >= 1 and stack.job(job_id)["state"] == "queued",
        what="first attempt to fail",
    )
    stack.ok("POST", f"/v1/boards/{other['id']}/undrain", as_="ops", json={"reason": "done"})
    job = stack.wait_job(job_id)
    assert job["state"] == "succeeded"
    assert job["attempt_list"][0]["outcome"] == "infra_error"
    assert job["attempt_list"][-1]["ranks"][0]["board_id"] == other["id"]
    history = stack.ok("GET", f"/v1/boards/{board['id']}/history")
    assert any(e["to_state"] == "suspect" for e in history)


def test_a_hung_board_is_taken_out_and_healed_by_the_ladder(stack: Stack) -> None:
    stack.start(hosts=1)
    board = stack.boards(host="h1")[0]["id"]
    stack.ok("POST", f"/v1/admin/boards/{board}/faults", json={"kind": "hang"})
    # Out of service, healed by the ladder's first step (a soft reset clears a hang), back after its check.
    wait_for(
        lambda: (
            stack.ok("GET", f"/v1/boards/{board}/repairs")[:1]
            and stack.ok("GET", f"/v1/boards/{board}/repairs")[0]["outcome"] == "healed"
        ),
        what="hung board healed",
    )
    [repair] = stack.ok("GET", f"/v1/boards/{board}/repairs")
    assert repair["cause"] == "failed its probe: board not responding"
    assert repair["evidence"]["steps"] == ["soft_reset: passed (soft reset done)", "L2 check: passed"]
    states = [e["to_state"] for e in reversed(stack.ok("GET", f"/v1/boards/{board}/history"))]
    assert states[:4] == ["available", "suspect", "remediating", "available"]
    assert stack.ok("GET", f"/v1/boards/{board}")["state"] in ("available", "allocated")
    [op] = stack.ok("GET", f"/v1/boards/{board}/ops")
    assert (op["op"], op["state"], op["actor"]) == ("soft_reset", "succeeded", "policy")
    # Jobs run on it again.
    job = stack.wait_job(stack.submit(boards=4, params={"command": "true"}))
    assert job["state"] == "succeeded"


def test_board_ops_reset_and_reflash_boards_through_their_agent(stack: Stack) -> None:
    stack.start(hosts=1, driver="sim:2:sim-g1")
    hung, dropped = (b["id"] for b in stack.boards(host="h1"))
    # An operator working on boards by hand drains them first: the controller's remediation ladder
    # takes only boards in service, so it does not reset them between the faults and our ops.
    for b in (hung, dropped):
        stack.ok("POST", f"/v1/boards/{b}/drain", as_="ops", json={"reason": "bench work"})

    def probe_ok(board: str) -> bool:
        return bool(stack.ok("GET", f"/v1/boards/{board}")["probe_ok"])

    def order(board: str, op: str) -> dict[str, Any]:
        ordered = stack.ok("POST", f"/v1/boards/{board}/ops", as_="ops", json={"op": op, "reason": "test"})

        def finished() -> dict[str, Any] | None:
            [o] = [o for o in stack.ok("GET", f"/v1/boards/{board}/ops") if o["id"] == ordered["id"]]
            return o if o["state"] not in ("ordered", "delivered") else None

        return dict(wait_for(finished, what=f"{op} on {board} to finish"))

    assert stack.http("POST", f"/v1/boards/{hung}/ops", as_="alice", json={"op": "soft_reset"}).status_code == 403
    stack.ok("POST", f"/v1/admin/boards/{hung}/faults", json={"kind": "hang"})
    wait_for(lambda: not probe_ok(hung), what="hung board to fail its probe")
    done = order(hung, "soft_reset")
    assert (done["state"], done["message"]) == ("succeeded", "soft reset done")
    wait_for(lambda: probe_ok(hung), what="reset board to pass its probe")
    # A host reboot brings back every board of the host, even one that fell off the bus.
    stack.ok("POST", f"/v1/admin/boards/{hung}/faults", json={"kind": "hang"})
    stack.ok("POST", f"/v1/admin/boards/{dropped}/faults", json={"kind": "bus_drop"})
    wait_for(lambda: not probe_ok(hung) and not probe_ok(dropped), what="both boards to fail their probes")
    done = order(hung, "host_reboot")
    assert (done["state"], done["message"]) == ("succeeded", "host reboot: 2 boards hard-reset")
    wait_for(lambda: probe_ok(hung) and probe_ok(dropped), what="rebooted boards to pass their probes")
    done = order(dropped, "reflash")
    assert (done["state"], done["message"]) == ("succeeded", "firmware 1.4.2 written again")


@pytest.mark.one_store("sqlite")  # bounded runs: the agent's half; ops in the store are test_board_ops_store's, on both
def test_a_board_is_flashed_to_a_registered_image_through_its_agent(stack: Stack) -> None:
    import hashlib

    from fleetyard.domain.firmware_image import sim_image

    stack.start(hosts=1, driver="sim:1:sim-g1")
    [board] = [b["id"] for b in stack.boards(host="h1")]
    data = sim_image("sim-g1", "1.5.0")
    sha = hashlib.sha256(data).hexdigest()
    assert stack.http("PUT", f"/v1/blobs/{sha}", as_="ops", content=data).status_code in (200, 201)
    stack.ok("POST", "/v1/firmware", as_="ops", json={"generation": "sim-g1", "version": "1.5.0", "sha256": sha})
    missing = stack.http("POST", f"/v1/boards/{board}/ops", as_="ops", json={"op": "flash", "version": "9.9.9"})
    assert missing.status_code == 404 and "no sim-g1 firmware 9.9.9" in missing.json()["error"]["message"]
    ordered = stack.ok("POST", f"/v1/boards/{board}/ops", as_="ops", json={"op": "flash", "version": "1.5.0"})
    done = wait_for(
        lambda: (
            (o := stack.ok("GET", f"/v1/boards/{board}/ops")[0])["id"] == ordered["id"]
            and o["state"] not in ("ordered", "delivered")
            and o
        ),
        what="the flash to finish",
    )
    assert done["state"] == "succeeded" and done["message"] == "firmware 1.5.0 flashed", done
    assert stack.ok("GET", f"/v1/boards/{board}")["firmware"] == "1.5.0"
    job = stack.wait_job(stack.submit(params={"command": "true"}, firmware="==1.5.0"))
    assert job["state"] == "succeeded"  # a job that pins the new version runs on it
