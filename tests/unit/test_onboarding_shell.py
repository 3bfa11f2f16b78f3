"""The onboarding shell over a real SQLite store: the controller's passes, the agent played here."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from tests.unit.test_api_flow import Fleet, finish

from fleetyard.domain.board import Actor, BoardState
from fleetyard.store import tables as t
from fleetyard.store.boards import switch_board_state
from fleetyard.store.settings import put_setting

S = BoardState


def quarantine_and_repair(fleet: Fleet, *boards: str) -> None:
    with fleet.store.write() as conn:
        for b in boards:
            for to in (S.REMEDIATING, S.QUARANTINED):
                switch_board_state(conn, b, to, reason="remediation exhausted", actor=Actor.POLICY, at=time.time())
    for b in boards:
        r = fleet.client.post(f"/v1/boards/{b}/repaired", json={"reason": "HBM swapped"}, headers=fleet.h(fleet.admin))
        assert r.status_code == 200, r.text


def register_standard(fleet: Fleet, generation: str, version: str, revisions: list[str] | None = None) -> None:
    with fleet.store.write() as conn:
        conn.execute(
            t.firmware_images.insert().values(
                generation=generation, version=version, sha256="ab" * 32, size=1, notes="",
                hardware_revisions=revisions or [], standard=True, uploaded_by="ops", uploaded_at=time.time(),
            )
        )  # fmt: skip


def board(fleet: Fleet, board_id: str) -> dict[str, Any]:
    return dict(fleet.client.get(f"/v1/boards/{board_id}", headers=fleet.h(fleet.user)).json())


def progress(fleet: Fleet, batch: str | None = None) -> Any:
    path = "/v1/onboarding" if batch is None else f"/v1/onboarding/{batch}"
    r = fleet.client.get(path, headers=fleet.h(fleet.user))
    assert r.status_code == 200, r.text
    return r.json()


def report(fleet: Fleet, host: str, op: dict[str, Any], *, ok: bool, message: str) -> None:
    now = time.time()
    result = {"id": op["id"], "ok": ok, "message": message, "started_at": now, "finished_at": now}
    fleet.beat(host, op_results=[result])


def test_a_repaired_board_is_inspected_flashed_to_the_standard_and_burnt_in(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    register_standard(fleet, "sim-g1", "1.5.0")
    quarantine_and_repair(fleet, "h1-b0")
    assert fleet.rec.health(time.time()).released == []
    [op] = fleet.beat("h1")["ops"]
    assert (op["op"], op["version"], op["image"]) == ("flash", "1.5.0", "ab" * 32)
    [b] = progress(fleet, "repair")
    assert (b["board_id"], b["step"], b["op_id"]) == ("h1-b0", "flash", op["id"])
    assert b["evidence"]["facts"]["standard"] == {"version": "1.5.0", "hardware_revisions": []}
    assert fleet.take("h1") == []  # no burn-in before the flash is done
    report(fleet, "h1", op, ok=True, message="firmware 1.5.0 flashed")
    assert board(fleet, "h1-b0")["firmware"] == "1.5.0"  # the op's result wrote it
    fleet.rec.health(time.time())
    [burn_in] = fleet.take("h1")
    assert burn_in["kind"] == "health-check" and burn_in["params"]["tier"] == "L3"
    fleet.events("h1", finish(burn_in))
    assert fleet.rec.health(time.time()).released == ["h1-b0"]
    got = board(fleet, "h1-b0")
    assert (got["state"], got["state_reason"], got["firmware"]) == ("available", "passed its L3 burn-in", "1.5.0")
    [b] = progress(fleet, "repair")
    assert (b["step"], b["outcome"]) == ("done", "available")
    assert [(e["step"], e["note"]) for e in b["evidence"]["log"]] == [
        ("queued", "queued in batch repair"),
        ("inspect", "admitted: at most 32 boards onboard at once"),
        ("flash", "runs firmware 1.0, not the standard 1.5.0: flash it"),
        ("burn_in", "flashed firmware 1.5.0 (firmware 1.5.0 flashed)"),
        ("done", "passed its L3 burn-in"),
    ]
    [batch] = progress(fleet)
    assert (batch["batch"], batch["boards"], batch["done"], batch["failed"]) == ("repair", 1, 1, 0)
    assert batch["steps"] == {"queued": 0, "inspect": 0, "flash": 0, "burn_in": 0, "done": 1, "failed": 0}
    with fleet.store.read() as conn:
        row = conn.execute(sa.select(t.boards.c.l1_at, t.boards.c.onboard_batch).where(t.boards.c.id == "h1-b0")).one()
    assert row.l1_at is not None and row.onboard_batch is None


def test_a_failed_flash_quarantines_the_board_with_the_ops_message(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    register_standard(fleet, "sim-g1", "1.5.0")
    quarantine_and_repair(fleet, "h1-b0")
    fleet.rec.health(time.time())
    [op] = fleet.beat("h1")["ops"]
    report(fleet, "h1", op, ok=False, message="flash of firmware 1.5.0 failed: verify mismatch at block 0x3f00")
    assert fleet.rec.health(time.time()).quarantined == ["h1-b0"]
    got = board(fleet, "h1-b0")
    assert got["state"] == "quarantined"
    why = "flash of firmware 1.5.0 failed: verify mismatch at block 0x3f00"
    assert got["state_reason"] == f"onboarding failed: {why}"
    [b] = progress(fleet, "repair")
    assert (b["step"], b["outcome"], b["evidence"]["reason"], b["evidence"]["failed_step"]) == (
        "failed",
        "quarantined",
        why,
        "flash",
    )
    assert progress(fleet)[0]["failed"] == 1


def test_an_inspection_that_fails_quarantines_with_the_problems(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    register_standard(fleet, "sim-g1", "1.5.0", revisions=["r3"])
    with fleet.store.write() as conn:
        conn.execute(t.boards.update().where(t.boards.c.id == "h1-b1").values(hardware_revision="r2"))
        conn.execute(
            t.inventory_boards.insert().values(
                serial="h1-b0", host_id="h1", slot=0, generation="sim-g2", hardware_revision=None, synced_at=0.0
            )
        )
    quarantine_and_repair(fleet, "h1-b0", "h1-b1")
    assert sorted(fleet.rec.health(time.time()).quarantined) == ["h1-b0", "h1-b1"]
    by_board = {b["board_id"]: b for b in progress(fleet, "repair")}
    assert by_board["h1-b0"]["evidence"]["problems"] == [
        "the inventory says generation sim-g2; the board reports sim-g1"
    ]
    assert by_board["h1-b1"]["evidence"]["problems"] == [
        "sim-g1's standard firmware 1.5.0 supports hardware revisions r3, not this board's r2"
    ]
    assert board(fleet, "h1-b1")["state_reason"].startswith("onboarding failed: inspection failed: sim-g1's")
    assert fleet.beat("h1")["ops"] == []  # nothing flashed


def test_parallelism_lets_one_board_at_a_time_past_queued(fleet: Fleet) -> None:
    fleet.register("h1", n=3)
    with fleet.store.write() as conn:
        put_setting(conn, "onboarding.parallelism", 1, by="ops", at=time.time())
    quarantine_and_repair(fleet, "h1-b0", "h1-b1", "h1-b2")
    order = []
    for _ in range(3):
        fleet.rec.health(time.time())
        steps = {b["board_id"]: b["step"] for b in progress(fleet, "repair")}
        under_way = [b for b, s in steps.items() if s not in ("queued", "done", "failed")]
        assert len(under_way) == 1, steps
        order += under_way
        [burn_in] = fleet.take("h1")
        fleet.events("h1", finish(burn_in))
        fleet.rec.health(time.time())
    assert order == ["h1-b0", "h1-b1", "h1-b2"]  # in the order they came back
    assert {board(fleet, b)["state"] for b in order} == {"available"}


def test_the_watchdog_leaves_queued_boards_alone_and_records_follow_boards_that_leave(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    with fleet.store.write() as conn:
        put_setting(conn, "onboarding.parallelism", 1, by="ops", at=time.time())
    quarantine_and_repair(fleet, "h1-b0", "h1-b1")
    fleet.rec.health(time.time())
    # Hours later, b1 still waits for its place: its record has no deadline while queued, and the
    # watchdog does not fail it (b0's burn-in check holds it: the check's own limit applies).
    assert fleet.rec.watchdog(time.time() + 3 * 3600) == []
    assert board(fleet, "h1-b1")["state"] == "onboarding"
    # An operator retires b1: its record is closed, as abandoned.
    with fleet.store.write() as conn:
        switch_board_state(conn, "h1-b1", S.RETIRED, reason="scrap", actor=Actor.OPERATOR, at=time.time())
    fleet.rec.health(time.time())
    by_board = {b["board_id"]: b for b in progress(fleet, "repair")}
    assert (by_board["h1-b1"]["step"], by_board["h1-b1"]["outcome"]) == ("failed", "abandoned")
    assert by_board["h1-b1"]["evidence"]["reason"].startswith("the board left onboarding: retired")


def test_progress_of_an_unknown_batch_is_a_404_and_batches_may_hold_slashes(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    r = fleet.client.get("/v1/onboarding/sjc1/r01", headers=fleet.h(fleet.user))
    assert r.status_code == 404 and "no onboarding batch 'sjc1/r01'" in r.json()["error"]["message"]
    with fleet.store.write() as conn:  # as an approval puts a board of a rack into onboarding
        conn.execute(t.boards.update().where(t.boards.c.id == "h1-b0").values(onboard_batch="sjc1/r01"))
        for to in (S.REMEDIATING, S.QUARANTINED, S.ONBOARDING):
            switch_board_state(conn, "h1-b0", to, reason="approved", actor=Actor.OPERATOR, at=time.time())
    fleet.rec.health(time.time())
    [b] = progress(fleet, "sjc1%2Fr01")
    assert (b["board_id"], b["batch"], b["step"]) == ("h1-b0", "sjc1/r01", "burn_in")
    assert [x["batch"] for x in progress(fleet)] == ["sjc1/r01"]
