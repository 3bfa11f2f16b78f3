"""The declared inventory with real processes: which boards agents find onboard, which wait in
discovered for approval, and what `inventory diff` reports (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleetyard.domain.auth import Role
from fleetyard.drivers.sim import SimDriver
from fleetyard.store.tokens import create_token
from tests.integration.harness import ROOT, Stack, wait_for


def serials(host: str, driver: str) -> list[str]:
    """The serials the sim driver gives the boards of ``host`` (they derive from host, slot, generation)."""
    return [b.serial for b in sorted(SimDriver(driver, host=host).discover(), key=lambda b: b.slot)]


def inventory(boards: dict[str, list[tuple[str, str, int, str | None]]], auto: tuple[str, ...] = ()) -> str:
    """host -> [(serial, generation, slot, hardware revision)], all in sjc1/r01."""
    lines = [f"auto_approve: [{', '.join(auto)}]", "sites:", "  - name: sjc1", "    racks:", "      - name: r01"]
    lines.append("        hosts:")
    for host, bs in boards.items():
        lines += [f"          - name: {host}", "            boards:"]
        for serial, gen, slot, rev in bs:
            extra = f", hardware_revision: {rev}" if rev else ""
            lines.append(f"              - {{serial: {serial}, generation: {gen}, slot: {slot}{extra}}}")
    return "\n".join(lines) + "\n"


def history(stack: Stack, serial: str) -> list[dict[str, Any]]:
    """Oldest first."""
    return list(reversed(stack.ok("GET", f"/v1/boards/{serial}/history", params={"limit": 1000})))


def approve(stack: Stack, boards: list[str], as_: str = "ops", **body: Any) -> Any:
    return stack.http("POST", "/v1/boards/approve", as_=as_, json={"boards": boards, "reason": "racked", **body})


def cli(stack: Stack, *args: str, token: str = "ops") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEETYARD_SERVER": stack.url, "FLEETYARD_TOKEN": stack.tokens[token], "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "fleetyard", *args], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT
    )


@pytest.mark.one_store("postgres")
def test_an_inventory_decides_which_found_boards_onboard(stack: Stack) -> None:
    stack.setup()
    stack.start_server()
    stack.start_controller()
    h1 = serials("h1", "sim:4:sim-g1")
    g3 = serials("h2", "sim:2:sim-g3")
    text = inventory({"h1": [(h1[0], "sim-g1", 0, "r1"), (h1[1], "sim-g1", 1, None)]}, auto=("sim-g3",))
    synced = stack.ok("POST", "/v1/inventory/sync", as_="ops", json={"text": text})
    assert [b["serial"] for b in synced["diff"]["new"]] == sorted(h1[:2]) and synced["approved"] == []
    stack.start_agent("h1", "sim:4:sim-g1", wait=False)
    stack.start_agent("h2", "sim:2:sim-g3", wait=False)
    wait_for(lambda: len(stack.boards()) == 6, what="both agents registered")

    # Named: onboarding at once, in its rack's batch (the controller may take it further since).
    for serial in h1[:2]:
        events = history(stack, serial)
        assert [(e["from_state"], e["to_state"]) for e in events[:2]] == [
            (None, "discovered"),
            ("discovered", "onboarding"),
        ]
        assert events[1]["reason"] == "named in the inventory (sjc1/r01)"
    # Auto-approved generation: onboarding, in its host's batch.
    for serial in g3:
        assert history(stack, serial)[1]["reason"] == "generation sim-g3 is auto-approved in the inventory"
    # Neither: waits for an operator.
    waiting = {b["id"]: b for b in stack.boards(state="discovered")}
    assert sorted(waiting) == sorted(h1[2:])
    assert f"not in the inventory: approve it with fleetyard boards approve {h1[2]}" in waiting[h1[2]]["state_reason"]
    assert waiting[h1[2]]["hardware_revision"] == "r1" and waiting[h1[2]]["onboard_batch"] is None

    assert approve(stack, [h1[2]], as_="alice").status_code == 403
    missing = approve(stack, [h1[2], "SG1-NOPE"])
    assert missing.status_code == 404 and "no board SG1-NOPE" in missing.json()["error"]["message"]
    r = cli(stack, "boards", "approve", h1[2], "--batch", "late-r01", "--reason", "racked", "--json")
    assert r.returncode == 0, r.stderr
    [got] = json.loads(r.stdout)
    assert (got["state"], got["onboard_batch"], got["state_reason"]) == (
        "onboarding",
        "late-r01",
        "approved by ops: racked",
    )
    again = approve(stack, [h1[2]])
    assert (
        again.status_code == 409
        and "only a board waiting in discovered is approved" in again.json()["error"]["message"]
    )
    assert [e["target"] for e in stack.ok("GET", "/v1/audit", params={"action": "board.approve"})] == [h1[2]]

    # The diff names what agents found that the file does not.
    d = stack.ok("POST", "/v1/inventory/diff", as_="ops", json={"text": text})
    assert d["new"] == [] and d["missing"] == [] and d["moved"] == [] and d["mismatched"] == []
    assert sorted(u["serial"] for u in d["unexpected"]) == sorted([*h1[2:], *g3])
    assert stack.ok("GET", f"/v1/boards/{h1[3]}")["state"] == "discovered"  # nothing takes it on by itself


@pytest.mark.one_store("sqlite")  # the diff is store-agnostic; test_store_races_fleet races it on PG
def test_diff_reports_moves_missing_and_unexpected_boards_and_a_moved_board_keeps_its_history(
    stack: Stack, tmp_path: Path
) -> None:
    stack.host_timeout_s = 60.0  # the stand-in agent below sends no heartbeats
    stack.start(hosts=1, driver="sim:3:sim-g1")  # no inventory yet: the open fleet, boards serve at once
    s0, s1, _ = serials("h1", "sim:3:sim-g1")
    assert stack.ok("GET", f"/v1/boards/{s0}")["hardware_revision"] == "r1"
    # Board s0 leaves h1 (its agent stops) and turns up in slot 5 of h9, with a board nobody declared.
    stack.procs["agent-h1"].stop()
    wait_for(lambda: len(stack.boards(host="h1", state="offline")) == 3, what="h1's boards offline")
    stack.tokens["h9"] = create_token(stack.db_url, name="agent-h9", role=Role.AGENT, host="h9")
    found = [
        {
            "serial": s0,
            "generation": "sim-g1",
            "slot": 5,
            "firmware": "1.4.2",
            "device": "sim:5",
            "hardware_revision": "r1",
        },
        {"serial": "SG1-STRAY", "generation": "sim-g1", "slot": 6, "firmware": "1.4.2", "device": "sim:6"},
    ]
    body = {"host": "h9", "session": "s9", "driver": "sim:2", "agent_version": "test", "boards": found}
    stack.ok("POST", "/v1/agent/register", as_="h9", json=body)
    events = history(stack, s0)
    assert events[0]["from_state"] is None and "found by the agent of h1" in events[0]["reason"]
    assert [(e["to_state"], e["reason"]) for e in events[-2:]] == [
        ("offline", "moved from host h1 to h9"),
        ("suspect", "host back: must pass a check before service"),
    ]
    assert stack.ok("GET", f"/v1/boards/{s0}")["host_id"] == "h9"

    declared = {"h1": [(s0, "sim-g1", 0, "r2"), (s1, "sim-g1", 1, None), ("SG1-NOT-THERE", "sim-g1", 2, None)]}
    d = stack.ok("POST", "/v1/inventory/diff", as_="ops", json={"text": inventory(declared)})
    assert [b["serial"] for b in d["new"]] == sorted([s0, s1, "SG1-NOT-THERE"]) and d["removed"] == []
    assert {m["serial"]: m["why"] for m in d["missing"]} == {
        s1: "offline (last on h1 slot 1)",
        "SG1-NOT-THERE": "no agent has found it",
    }
    assert d["moved"] == [{"serial": s0, "from_host": "h1", "from_slot": 0, "to_host": "h9", "to_slot": 5}]
    assert d["mismatched"] == [{"serial": s0, "field": "hardware_revision", "declared": "r2", "found": "r1"}]
    assert [u["serial"] for u in d["unexpected"]] == ["SG1-STRAY"]

    path = tmp_path / "inventory.yaml"
    path.write_text(inventory(declared))
    shown = cli(stack, "inventory", "diff", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "moved" in shown.stdout and "declared on h1 slot 0" in shown.stdout and "SG1-STRAY" in shown.stdout
    stack.ok("POST", "/v1/inventory/sync", as_="ops", json={"text": path.read_text()})
    inv = stack.ok("GET", "/v1/inventory", as_="alice")
    assert inv["synced_by"] == "ops" and sorted(b["serial"] for b in inv["boards"]) == sorted([s0, s1, "SG1-NOT-THERE"])
    # A later sync without a board reports it removed.
    del declared["h1"][2]
    res = stack.ok("POST", "/v1/inventory/sync", as_="ops", json={"text": inventory(declared)})
    assert [b["serial"] for b in res["diff"]["removed"]] == ["SG1-NOT-THERE"] and res["diff"]["new"] == []

    # A bad file: a 422 from the server naming the field and its line; the CLI names the file.
    bad = stack.http("POST", "/v1/inventory/sync", as_="ops", json={"text": "sites:\n  - name: s\n    rackz: []\n"})
    assert bad.status_code == 422 and bad.json()["error"]["detail"] == {"field": "sites.0.rackz", "line": 3}
    path.write_text("sites:\n  - name: s\n    racks:\n      - {name: r, hosts: [{name: h, boards: [{serial: A}]}]}\n")
    refused = cli(stack, "inventory", "sync", str(path))
    assert refused.returncode == 1 and f"{path}: sites.0.racks.0.hosts.0.boards.0.generation (line 4)" in refused.stderr
