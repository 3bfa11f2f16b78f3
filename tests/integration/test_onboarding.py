"""Onboarding with real processes: a board back from repair is inspected, flashed to its
generation's standard firmware through its agent, burnt in, and enters service; or is quarantined
with the evidence."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.firmware_image import sim_image
from fleetyard.store.boards import switch_board_state
from fleetyard.store.db import Store
from fleetyard.store.settings import put_setting
from tests.integration.harness import ROOT, Stack, stopped, wait_for


def push_standard(stack: Stack, generation: str, version: str) -> None:
    """Register a sim image and make it the generation's standard (what onboarding flashes)."""
    data = sim_image(generation, version)
    sha = hashlib.sha256(data).hexdigest()
    assert stack.http("PUT", f"/v1/blobs/{sha}", as_="ops", content=data).status_code in (200, 201)
    stack.ok("POST", "/v1/firmware", as_="ops", json={"generation": generation, "version": version, "sha256": sha})
    stack.ok("POST", f"/v1/firmware/{generation}/{version}/standard", as_="ops")


def quarantine(stack: Stack, *boards: str) -> None:
    """As remediation that gave up would leave them (the ladder itself is test_faults' business)."""
    store = Store(stack.db_url)
    try:
        with store.write() as conn:
            for b in boards:
                for to in (BoardState.REMEDIATING, BoardState.QUARANTINED):
                    switch_board_state(conn, b, to, reason="remediation exhausted", actor=Actor.POLICY, at=time.time())
    finally:
        store.dispose()


def board(stack: Stack, board_id: str) -> dict[str, Any]:
    return dict(stack.ok("GET", f"/v1/boards/{board_id}"))


def records(stack: Stack, batch: str) -> list[dict[str, Any]]:
    """A batch's boards; none while the controller has not queued any."""
    r = stack.http("GET", f"/v1/onboarding/{batch}")
    return list(r.json()) if r.status_code == 200 else []


def settled(stack: Stack, board_id: str, timeout: float = 30.0) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (b := board(stack, board_id))["state"] in ("available", "allocated", "quarantined") and b,
            timeout=timeout,
            interval=0.1,
            what=f"{board_id} to leave onboarding",
        )
    )


@pytest.mark.one_store("postgres")
def test_a_repaired_board_is_flashed_to_the_standard_and_burnt_in_before_service(stack: Stack) -> None:
    """And a host blip during its onboarding (the agent stopped past the unreachable threshold,
    within the grace) changes nothing: no step starts over, the board never goes offline."""
    stack.host_unreachable_s = 1.5
    stack.start(hosts=1, driver="sim:1:sim-g1")
    [b] = [x["id"] for x in stack.boards(host="h1")]
    assert board(stack, b)["firmware"] == "1.4.2"
    push_standard(stack, "sim-g1", "1.5.0")
    quarantine(stack, b)
    stack.ok("POST", f"/v1/boards/{b}/repaired", as_="ops", json={"reason": "HBM swapped"})
    wait_for(
        lambda: any(x["step"] == "flash" for x in records(stack, "repair")),
        interval=0.1,
        what="the flash step",
    )
    with stopped(stack, "h1"):
        wait_for(lambda: stack.ok("GET", "/v1/hosts")[0]["state"] == "unreachable", what="h1 unreachable")
    got = settled(stack, b)
    assert (got["state"], got["state_reason"], got["firmware"]) == ("available", "passed its L3 burn-in", "1.5.0")
    [op] = stack.ok("GET", f"/v1/boards/{b}/ops")
    assert (op["op"], op["state"], op["actor"], op["version"]) == ("flash", "succeeded", "policy", "1.5.0")
    [rec] = stack.ok("GET", "/v1/onboarding/repair")
    assert (rec["board_id"], rec["step"], rec["outcome"], rec["op_id"]) == (b, "done", "available", op["id"])
    assert [e["step"] for e in rec["evidence"]["log"]] == ["queued", "inspect", "flash", "burn_in", "done"]
    assert rec["evidence"]["facts"]["firmware"] == "1.4.2" and rec["evidence"]["facts"]["hardware_revision"] == "r1"
    [batch] = stack.ok("GET", "/v1/onboarding")
    assert (batch["batch"], batch["done"], batch["failed"], batch["steps"]["done"]) == ("repair", 1, 0, 1)
    states = [e["to_state"] for e in reversed(stack.ok("GET", f"/v1/boards/{b}/history"))]
    assert states[-3:] == ["quarantined", "onboarding", "available"] and "offline" not in states
    # The operator's view.
    env = {**os.environ, "FLEETYARD_SERVER": stack.url, "FLEETYARD_TOKEN": stack.tokens["ops"], "COLUMNS": "200"}
    run = [sys.executable, "-m", "fleetyard", "onboarding", "status"]
    listed = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert listed.returncode == 0 and "repair" in listed.stdout, listed.stderr
    one = subprocess.run([*run, "repair"], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert one.returncode == 0 and b in one.stdout and "passed its L3 burn-in" in one.stdout, one.stderr
    # It serves.
    assert stack.wait_job(stack.submit(params={"command": "true"}, firmware="==1.5.0"))["state"] == "succeeded"


def test_a_flash_that_fails_quarantines_the_board_with_the_ops_message(stack: Stack) -> None:
    stack.start(hosts=1, driver="sim:1:sim-g1")
    [b] = [x["id"] for x in stack.boards(host="h1")]
    push_standard(stack, "sim-g1", "1.5.0")
    quarantine(stack, b)
    stack.inject(b, "bad_flash")
    stack.ok("POST", f"/v1/boards/{b}/repaired", as_="ops", json={"reason": "new board"})
    got = settled(stack, b)
    why = "flash of firmware 1.5.0 failed: verify mismatch at block 0x3f00"
    assert (got["state"], got["state_reason"], got["firmware"]) == ("quarantined", f"onboarding failed: {why}", "1.4.2")
    [rec] = stack.ok("GET", "/v1/onboarding/repair")
    assert (rec["step"], rec["outcome"], rec["evidence"]["reason"], rec["evidence"]["failed_step"]) == (
        "failed",
        "quarantined",
        why,
        "flash",
    )
    [op] = stack.ok("GET", f"/v1/boards/{b}/ops")
    assert (op["state"], op["message"]) == ("failed", why)
    assert stack.ok("GET", "/v1/onboarding")[0]["failed"] == 1


def test_parallelism_one_onboards_one_board_at_a_time(sqlite_stack: Stack) -> None:
    stack = sqlite_stack  # SQLite only: see conftest.sqlite_stack
    stack.start(hosts=1, driver="sim:3:sim-g1")
    boards = sorted(x["id"] for x in stack.boards(host="h1"))
    store = Store(stack.db_url)
    try:
        with store.write() as conn:
            put_setting(conn, "onboarding.parallelism", 1, by="ops", at=time.time())
    finally:
        store.dispose()
    quarantine(stack, *boards)
    for b in boards:
        stack.ok("POST", f"/v1/boards/{b}/repaired", as_="ops", json={"reason": "rack rewired"})
    seen_at_once = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        batches = stack.ok("GET", "/v1/onboarding")  # none until the controller's next pass
        steps = batches[0]["steps"] if batches else {"inspect": 0, "flash": 0, "burn_in": 0, "done": 0}
        seen_at_once = max(seen_at_once, steps["inspect"] + steps["flash"] + steps["burn_in"])
        if steps["done"] == 3:
            break
        time.sleep(0.05)
    assert steps["done"] == 3, steps
    assert seen_at_once == 1
    # The records say the same, exactly: each board was admitted after the one before finished.
    recs = stack.ok("GET", "/v1/onboarding/repair")
    spans = sorted(
        (next(e["at"] for e in r["evidence"]["log"] if e["step"] == "inspect"), r["finished_at"], r["board_id"])
        for r in recs
    )
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans)), spans
    assert {board(stack, b)["state"] for b in boards} <= {"available", "allocated"}


def test_boards_the_inventory_names_onboard_in_their_racks_batch_and_inspection_holds_them_to_it(
    stack: Stack,
) -> None:
    from fleetyard.drivers.sim import SimDriver

    stack.setup()
    stack.start_server()
    stack.start_controller()
    good, odd = (b.serial for b in sorted(SimDriver("sim:2:sim-g2", host="h1").discover(), key=lambda b: b.slot))
    text = (
        "sites:\n  - name: sjc1\n    racks:\n      - name: r01\n        hosts:\n          - name: h1\n"
        "            boards:\n"
        f"              - {{serial: {good}, generation: sim-g2, slot: 0, hardware_revision: r2}}\n"
        f"              - {{serial: {odd}, generation: sim-g2, slot: 1, hardware_revision: r9}}\n"
    )
    stack.ok("POST", "/v1/inventory/sync", as_="ops", json={"text": text})
    stack.start_agent("h1", "sim:2:sim-g2", wait=False)  # its boards arrive: named, they onboard
    wait_for(lambda: len(stack.boards()) == 2, what="the agent registered")
    assert settled(stack, good)["state"] == "available"
    bad = settled(stack, odd)
    assert bad["state"] == "quarantined"
    problem = "the inventory says hardware revision r9; the board reports r2"
    assert bad["state_reason"] == f"onboarding failed: inspection failed: {problem}"
    recs = {r["board_id"]: r for r in stack.ok("GET", "/v1/onboarding/sjc1/r01")}
    assert (recs[good]["outcome"], recs[odd]["outcome"]) == ("available", "quarantined")
    assert recs[odd]["evidence"]["problems"] == [problem]
    assert (
        recs[good]["evidence"]["log"][2]["note"]
        == "flash skipped: no standard firmware registered for sim-g2 (runs 2.1.0)"
    )
    [batch] = stack.ok("GET", "/v1/onboarding")
    assert (batch["batch"], batch["boards"], batch["done"], batch["failed"]) == ("sjc1/r01", 2, 1, 1)
