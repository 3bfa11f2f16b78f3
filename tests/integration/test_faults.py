"""Faults injected through the admin API reach the sim boards and the fleet reacts."""

from __future__ import annotations

from typing import Any

from tests.integration.harness import Stack, wait_for


def test_crash_fault_is_an_infra_error_and_the_job_reruns_elsewhere(stack: Stack) -> None:
    stack.setup()
    stack.start_server()
    stack.start_controller()
    stack.start_agent("h1", "sim:1:sim-g1")
    [board] = stack.boards(host="h1")
    r = stack.http("POST", f"/v1/admin/boards/{board['id']}/faults", as_="alice", json={"kind": "crash"})
    assert r.status_code == 403
    stack.ok("POST", f"/v1/admin/boards/{board['id']}/faults", as_="ops", json={"kind": "crash"})
    stack.start_agent("h2", "sim:1:sim-g1")
    [other] = stack.boards(host="h2")
    stack.ok("POST", f"/v1/boards/{other['id']}/drain", as_="ops", json={"reason": "keep the job on h1"})
    # Let the fault order reach the agent (next heartbeat) before any job lands.
    import time

    time.sleep(1.5)
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


def test_hang_fault_takes_the_board_out_of_service(stack: Stack) -> None:
    stack.start(hosts=1)
    board = stack.boards(host="h1")[0]["id"]
    stack.ok("POST", f"/v1/admin/boards/{board}/faults", json={"kind": "hang"})
    b = wait_for(
        lambda: (x := stack.ok("GET", f"/v1/boards/{board}"))["state"] == "suspect" and x,
        what="hung board to become suspect",
    )
    assert "probe" in b["state_reason"]
    # Jobs keep running on the other boards.
    job = stack.wait_job(stack.submit(boards=3, params={"command": "true"}))
    assert job["state"] == "succeeded"
    assert board not in {r["board_id"] for r in job["attempt_list"][0]["ranks"]}
    # Clearing the fault lets the board pass its probe and return.
    stack.ok("POST", f"/v1/admin/boards/{board}/faults", json={"action": "clear"})
    wait_for(lambda: stack.ok("GET", f"/v1/boards/{board}")["state"] == "available", what="board back")


def test_board_ops_reset_and_reflash_boards_through_their_agent(stack: Stack) -> None:
    stack.start(hosts=1, driver="sim:2:sim-g1")
    hung, dropped = (b["id"] for b in stack.boards(host="h1"))

    def probe_ok(board: str) -> bool:
        return bool(stack.ok("GET", f"/v1/boards/{board}")["probe_ok"])

    def order(board: str, op: str) -> dict[str, Any]:
        ordered = stack.ok("POST", f"/v1/boards/{board}/ops", as_="ops", json={"op": op, "reason": "test"})
        return dict(
            wait_for(
                lambda: (
                    (o := stack.ok("GET", f"/v1/boards/{board}/ops")[0])["id"] == ordered["id"]
                    and o["state"] not in ("ordered", "delivered")
                    and o
                ),
                what=f"{op} on {board} to finish",
            )
        )

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
