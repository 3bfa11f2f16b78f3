"""The declared inventory: parsing (errors name the field and line), the diff, admission of new
boards, sync and approval through the API (in one process, over SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.test_api_flow import Fleet

from fleetyard.domain.board import BoardState
from fleetyard.domain.inventory import DeclaredBoard, parse_inventory
from fleetyard.errors import BadRequest
from fleetyard.policy.inventory import FoundBoard, Mismatched, Moved, admit, approvals, diff

ROOT = Path(__file__).resolve().parents[2]
S = BoardState


def inventory_yaml(
    boards: dict[str, list[tuple[str, str, int]]], auto: tuple[str, ...] = (), parallelism: int = 8
) -> str:
    """host -> [(serial, generation, slot)], all in sjc1/r01."""
    lines = [f"auto_approve: [{', '.join(auto)}]", f"onboarding: {{parallelism: {parallelism}}}", "sites:"]
    if not boards:
        return "\n".join([*lines[:-1], "sites: []"]) + "\n"
    lines += ["  - name: sjc1", "    racks:", "      - name: r01", "        hosts:"]
    for host, bs in boards.items():
        lines += [f"          - name: {host}", "            boards:"]
        lines += [f"              - {{serial: {s}, generation: {g}, slot: {n}}}" for s, g, n in bs]
    return "\n".join(lines) + "\n"


# ---- parsing ------------------------------------------------------------------------------------


def test_the_example_parses() -> None:
    inv = parse_inventory((ROOT / "examples" / "config" / "inventory.yaml").read_text())
    assert inv.auto_approve == ["sim-g3"] and inv.onboarding.parallelism == 32
    boards = inv.boards()
    assert boards[0] == DeclaredBoard("SG1-000001", "host-a", 0, "sim-g1", "r1", "sjc1", "r01")
    assert boards[0].batch == "sjc1/r01"
    assert inv.hosts()["host-c"] == ("sjc1", "r02")


BOARDS = "sites:\n  - name: s\n    racks:\n      - name: r\n        hosts:\n          - name: h\n            boards:\n"


def rows(*items: str) -> str:
    """BOARDS with these flow mappings as its boards, one a line (the first on line 8)."""
    return BOARDS + "".join(f"              - {{{i}}}\n" for i in items)


@pytest.mark.parametrize(
    ("text", "field", "line", "says"),
    [
        (rows("serial: A, generation: g, slot: x"), "boards.0.slot", 8, "valid integer"),
        (rows("serial: A, slot: 1"), "boards.0.generation", 8, "missing: add it"),
        (
            rows("serial: A, generation: g, slot: 1", "serial: A, generation: g, slot: 2"),
            "boards.1.serial",
            9,
            "board 'A' is declared twice (on h and h)",
        ),
        (
            rows("serial: A, generation: g, slot: 1", "serial: B, generation: g, slot: 1"),
            "boards.1.slot",
            9,
            "host 'h' slot 1 holds two boards (A and B)",
        ),
        (
            rows("serial: A, generation: g, slot: 1") + "          - name: h\n",
            "hosts.1.name",
            9,
            "host 'h' is declared twice",
        ),
        (
            rows("serial: A, generation: g, slot: 1, colour: red"),
            "boards.0.colour",
            8,
            "unknown key 'colour': remove it or fix its spelling "
            "(known here: serial, generation, slot, hardware_revision)",
        ),
        ("sites:\n  - name: s\n    rackz: []\n", "sites.0.rackz", 3, "unknown key 'rackz'"),
        ("onboarding: {parallelism: 0}\n", "onboarding.parallelism", 1, "greater than or equal to 1"),
        ("auto_aprove: [sim-g3]\n", "auto_aprove", 1, "known here: auto_approve, onboarding, sites"),
    ],
)
def test_a_bad_inventory_names_the_field_its_line_and_the_fix(text: str, field: str, line: int, says: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_inventory(text)
    assert e.value.detail["field"].endswith(field) and e.value.detail["line"] == line, e.value.detail
    assert says in e.value.message and f"(line {line})" in e.value.message


@pytest.mark.parametrize(
    ("text", "says"),
    [("sites: [\n", "not valid YAML (line 2)"), ("", "empty"), ("- a\n", "expected a mapping with 'sites'")],
)
def test_text_that_is_no_inventory_is_refused(text: str, says: str) -> None:
    with pytest.raises(BadRequest, match=r".") as e:
        parse_inventory(text)
    assert says in e.value.message


# ---- the diff -----------------------------------------------------------------------------------


def d(serial: str, host: str = "h1", slot: int = 0, gen: str = "sim-g1", rev: str | None = None) -> DeclaredBoard:
    return DeclaredBoard(serial, host, slot, gen, rev, "sjc1", "r01")


def f(
    serial: str, host: str = "h1", slot: int = 0, gen: str = "sim-g1", rev: str | None = "r1", state: S = S.AVAILABLE
) -> FoundBoard:
    return FoundBoard(serial, host, slot, gen, rev, state)


def test_diff_names_each_kind_of_difference() -> None:
    declared = [
        d("A", slot=0),  # in place
        d("B", slot=1),  # found elsewhere
        d("C", slot=2),  # never found
        d("D", slot=3),  # offline
        d("E", slot=4, gen="sim-g2", rev="r2"),  # found as another generation and revision
        d("F", slot=5),  # new in this file
    ]
    known = [d("A", slot=0), d("B", slot=1), d("C", slot=2), d("D", slot=3), d("E", slot=4), d("Z", slot=9)]
    found = [
        f("A", slot=0),
        f("B", host="h2", slot=7),
        f("D", slot=3, state=S.OFFLINE),
        f("E", slot=4),
        f("F", slot=5, state=S.DISCOVERED),
        f("X", host="h3", slot=0, state=S.DISCOVERED),  # nobody declared it
        f("Y", host="h3", slot=1, state=S.RETIRED),  # gone: neither missing nor unexpected
    ]
    got = diff(declared, known, found)
    assert [b.serial for b in got.new] == ["F"]
    assert [b.serial for b in got.removed] == ["Z"]
    assert [b.serial for b in got.changed] == ["E"]  # declared as sim-g2 now
    assert [(m.board.serial, m.why) for m in got.missing] == [
        ("C", "no agent has found it"),
        ("D", "offline (last on h1 slot 3)"),
    ]
    assert got.moved == (Moved("B", "h1", 1, "h2", 7),)
    assert [u.serial for u in got.unexpected] == ["X"]
    assert got.mismatched == (
        Mismatched("E", "generation", "sim-g2", "sim-g1"),
        Mismatched("E", "hardware_revision", "r2", "r1"),
    )
    assert got.counts == {"declared": 6, "stored": 6, "found": 5} and not got.empty


def test_a_fleet_in_line_with_its_synced_inventory_has_no_differences() -> None:
    declared = [d("A", slot=0, rev="r1"), d("B", slot=1)]  # no revision declared: any is fine
    found = [f("A", slot=0), f("B", slot=1, rev="r7")]
    assert diff(declared, declared, found).empty


# ---- admission of a new board -------------------------------------------------------------------


def test_admission_follows_the_inventory() -> None:
    named = d("A", host="h1")
    open_fleet = admit("A", "sim-g1", host="h1", synced=False, declared=None, auto_approve=())
    assert open_fleet.state is S.AVAILABLE and open_fleet.reason == "found by the agent of h1"
    a = admit("A", "sim-g1", host="h9", synced=True, declared=named, auto_approve=())
    assert (a.state, a.batch) == (S.ONBOARDING, "sjc1/r01") and "named in the inventory" in a.reason
    wrong = admit("A", "sim-g3", host="h1", synced=True, declared=named, auto_approve=("sim-g3",))
    assert wrong.state is S.DISCOVERED and "names it as sim-g1 but the agent reports sim-g3" in wrong.reason
    auto = admit("Q", "sim-g3", host="h2", synced=True, declared=None, auto_approve=("sim-g3",))
    assert (auto.state, auto.batch) == (S.ONBOARDING, "auto/h2")
    wait = admit("Q", "sim-g1", host="h2", synced=True, declared=None, auto_approve=("sim-g3",))
    assert wait.state is S.DISCOVERED and wait.batch is None
    assert wait.reason == "found by the agent of h2; not in the inventory: approve it with fleetyard boards approve Q"


def test_a_sync_approves_only_discovered_boards_it_names_or_auto_approves() -> None:
    found = [
        f("A", state=S.DISCOVERED),
        f("B", state=S.DISCOVERED, gen="sim-g3", host="h2"),
        f("C", state=S.DISCOVERED),
        f("D", state=S.AVAILABLE),
        f("E", state=S.DISCOVERED, gen="sim-g2"),
    ]
    declared = {"A": d("A"), "D": d("D"), "E": d("E")}  # E: declared sim-g1, found sim-g2
    got = approvals(found, declared, ["sim-g3"])
    assert [(s, a.batch) for s, a in got] == [("A", "sjc1/r01"), ("B", "auto/h2")]


# ---- through the API ----------------------------------------------------------------------------


def sync(fleet: Fleet, text: str, token: str | None = None, dry_run: bool = False) -> tuple[int, dict]:
    r = fleet.client.post(
        "/v1/inventory/sync", json={"text": text, "dry_run": dry_run}, headers=fleet.h(token or fleet.admin)
    )
    return r.status_code, r.json()


def board(fleet: Fleet, serial: str) -> dict:
    r = fleet.client.get(f"/v1/boards/{serial}", headers=fleet.h(fleet.user))
    assert r.status_code == 200, r.text
    return r.json()


def test_registration_before_and_after_an_inventory_sync(fleet: Fleet) -> None:
    fleet.register("h1", n=2)  # the open fleet: serves at once
    assert {board(fleet, f"h1-b{i}")["state"] for i in range(2)} == {"available"}
    text = inventory_yaml({"h2": [("h2-b0", "sim-g1", 0), ("h2-b2", "sim-g2", 2)]}, auto=("sim-g3",))
    code, dry = sync(fleet, text, dry_run=True)
    assert code == 200 and dry["dry_run"] and dry["synced_at"] is None
    assert fleet.client.get("/v1/inventory", headers=fleet.h(fleet.user)).json()["synced_at"] is None
    code, body = sync(fleet, text)
    assert code == 200 and [b["serial"] for b in body["diff"]["new"]] == ["h2-b0", "h2-b2"]
    assert body["approved"] == []  # nothing waits in discovered yet
    fleet.register("h2", n=3)  # h2-b0 named; h2-b1 not; h2-b2 named as sim-g2 but reports sim-g1
    b0, b1, b2 = (board(fleet, f"h2-b{i}") for i in range(3))
    assert (b0["state"], b0["onboard_batch"], b0["hardware_revision"]) == ("onboarding", "sjc1/r01", None)
    assert b1["state"] == "discovered" and "fleetyard boards approve h2-b1" in b1["state_reason"]
    assert b2["state"] == "discovered" and "names it as sim-g2 but the agent reports sim-g1" in b2["state_reason"]
    hist = fleet.client.get("/v1/boards/h2-b0/history", headers=fleet.h(fleet.user)).json()
    assert [(e["from_state"], e["to_state"]) for e in reversed(hist)] == [
        (None, "discovered"),
        ("discovered", "onboarding"),
    ]
    # The fixed inventory approves h2-b2 at sync; h2-b1 still waits.
    fixed = inventory_yaml({"h2": [("h2-b0", "sim-g1", 0), ("h2-b2", "sim-g1", 2)]}, parallelism=4)
    code, body = sync(fleet, fixed)
    assert code == 200 and [a["serial"] for a in body["approved"]] == ["h2-b2"]
    assert [b["serial"] for b in body["diff"]["changed"]] == ["h2-b2"]
    assert board(fleet, "h2-b2")["state"] == "onboarding" and board(fleet, "h2-b1")["state"] == "discovered"
    shown = fleet.client.get("/v1/inventory", headers=fleet.h(fleet.user)).json()
    assert shown["parallelism"] == 4 and shown["auto_approve"] == [] and shown["synced_by"] == "admin"
    assert [(h["id"], h["site"], h["rack"], h["boards"]) for h in shown["hosts"]] == [("h2", "sjc1", "r01", 2)]
    log = fleet.client.get("/v1/audit", params={"action": "inventory.sync"}, headers=fleet.h(fleet.admin)).json()
    assert len(log) == 2 and log[0]["detail"]["approved"] == ["h2-b2"]  # the dry run left no entry


def test_approve_moves_discovered_boards_to_onboarding_and_refuses_others(fleet: Fleet) -> None:
    assert sync(fleet, inventory_yaml({}))[0] == 200
    fleet.register("h1", n=3)
    assert {board(fleet, f"h1-b{i}")["state"] for i in range(3)} == {"discovered"}

    def approve(boards: list[str], token: str | None = None, **body: object) -> tuple[int, object]:
        r = fleet.client.post(
            "/v1/boards/approve",
            json={"boards": boards, "reason": "racked by hand", **body},
            headers=fleet.h(token or fleet.admin),
        )
        return r.status_code, r.json()

    assert approve(["h1-b0"], token=fleet.user)[0] == 403
    code, body = approve(["h1-b0", "nope"])
    assert code == 404 and "no board nope" in body["error"]["message"]  # type: ignore[index]
    assert board(fleet, "h1-b0")["state"] == "discovered"  # all or none
    code, got = approve(["h1-b0", "h1-b1"], batch="bench-7")
    assert code == 200 and [(b["id"], b["state"], b["onboard_batch"]) for b in got] == [  # type: ignore[union-attr]
        ("h1-b0", "onboarding", "bench-7"),
        ("h1-b1", "onboarding", "bench-7"),
    ]
    assert board(fleet, "h1-b0")["state_reason"] == "approved by admin: racked by hand"
    code, body = approve(["h1-b0"])
    assert (
        code == 409
        and "only a board waiting in discovered is approved: h1-b0 is onboarding" in body["error"]["message"]
    )  # type: ignore[index]
    code, got = approve(["h1-b2"])
    assert code == 200 and got[0]["onboard_batch"].startswith("approved-2")  # type: ignore[index]
    log = fleet.client.get("/v1/audit", params={"action": "board.approve"}, headers=fleet.h(fleet.admin)).json()
    assert sorted(e["target"] for e in log) == ["h1-b0", "h1-b1", "h1-b2"]
    assert {e["reason"] for e in log} == {"racked by hand"}


def test_a_bad_inventory_is_a_422_naming_the_field_and_only_staff_sync(fleet: Fleet) -> None:
    code, body = sync(fleet, "sites:\n  - name: s\n    rackz: []\n")
    assert code == 422 and "sites.0.rackz (line 3): unknown key 'rackz'" in body["error"]["message"]
    assert body["error"]["detail"] == {"field": "sites.0.rackz", "line": 3}
    assert sync(fleet, inventory_yaml({}), token=fleet.user)[0] == 403
    r = fleet.client.post("/v1/inventory/diff", json={"text": "sites: [\n"}, headers=fleet.h(fleet.admin))
    assert r.status_code == 422 and "not valid YAML" in r.json()["error"]["message"]


def test_a_discovered_board_back_from_offline_still_waits_for_approval(fleet: Fleet) -> None:
    assert sync(fleet, inventory_yaml({}))[0] == 200
    fleet.register("h1", n=2)
    fleet.register("h1", n=1, session="s2")  # its agent no longer finds h1-b1
    assert board(fleet, "h1-b1")["state"] == "offline"
    fleet.register("h1", n=2, session="s3")
    back = board(fleet, "h1-b1")
    assert back["state"] == "discovered" and "still not approved" in back["state_reason"]
    hist = fleet.client.get("/v1/boards/h1-b1/history", headers=fleet.h(fleet.user)).json()
    assert [e["to_state"] for e in reversed(hist)] == ["discovered", "offline", "discovered"]


def test_a_board_lost_while_onboarding_starts_its_onboarding_over(fleet: Fleet) -> None:
    assert sync(fleet, inventory_yaml({"h1": [("h1-b0", "sim-g1", 0), ("h1-b1", "sim-g1", 1)]}))[0] == 200
    fleet.register("h1", n=2)
    assert board(fleet, "h1-b1")["state"] == "onboarding"
    fleet.register("h1", n=1, session="s2")  # its agent no longer finds h1-b1
    assert board(fleet, "h1-b1")["state"] == "offline"
    fleet.register("h1", n=2, session="s3")
    back = board(fleet, "h1-b1")
    assert back["state"] == "onboarding" and "starts over" in back["state_reason"]
    hist = fleet.client.get("/v1/boards/h1-b1/history", headers=fleet.h(fleet.user)).json()
    assert [e["to_state"] for e in reversed(hist)] == ["discovered", "onboarding", "offline", "onboarding"]
