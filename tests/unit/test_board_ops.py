"""Board ops (resets, reflash, host reboot): ordered through the API, delivered in heartbeat
answers, carried out by the agent through its driver, their results stored once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_api_flow import Fleet, finish
from tests.unit.test_worker import HOST, SPEC, Events, assignment

from fleetyard.agent.daemon import Agent
from fleetyard.domain.job import Outcome
from fleetyard.drivers.sim import SimDriver
from fleetyard.errors import Conflict
from fleetyard.protocol.agent import BoardOp, EventType, OpOrder, OpResult
from fleetyard.store.healing import close_case, open_cases, save_case


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETYARD_SIM_TIME_SCALE", "0")


# ---- the server's half -------------------------------------------------------------------------


def order(fleet: Fleet, board: str, op: str, token: str | None = None, **body: object) -> dict[str, Any]:
    r = fleet.client.post(f"/v1/boards/{board}/ops", json={"op": op, **body}, headers=fleet.h(token or fleet.admin))
    assert r.status_code == 201, r.text
    return dict(r.json())


def history(fleet: Fleet, board: str) -> list[dict[str, Any]]:
    r = fleet.client.get(f"/v1/boards/{board}/ops", headers=fleet.h(fleet.user))
    assert r.status_code == 200, r.text
    return list(r.json())


def test_an_op_reaches_its_hosts_agent_and_its_result_is_stored_once(fleet: Fleet) -> None:
    fleet.register("h1")
    fleet.register("h2")
    op = order(fleet, "h1-b0", "soft_reset", reason="stuck")
    assert (op["state"], op["reason"], op["actor"], op["timeout_s"]) == (
        "ordered",
        "ordered by admin: stuck",
        "operator",
        120,
    )
    assert fleet.beat("h2")["ops"] == []
    answer = fleet.beat("h1")
    assert answer["ops"] == [
        {"id": op["id"], "board_id": "h1-b0", "op": "soft_reset", "timeout_s": 120.0, "image": None, "version": None}
    ]
    assert history(fleet, "h1-b0")[0]["state"] == "delivered"
    now = time.time()
    done = {"id": op["id"], "ok": True, "message": "soft reset done", "started_at": now - 1, "finished_at": now}
    # Another host's agent cannot report it (acked all the same: it is not that host's to send).
    assert fleet.beat("h2", op_results=[{**done, "ok": False}])["op_acks"] == [op["id"]]
    assert history(fleet, "h1-b0")[0]["state"] == "delivered"
    # The board's own: acked only once stored, and no longer listed.
    answer = fleet.beat("h1", op_results=[done])
    assert answer["op_acks"] == [op["id"]] and answer["ops"] == []
    [got] = history(fleet, "h1-b0")
    assert (got["state"], got["ok"], got["message"], got["finished_at"]) == ("succeeded", True, "soft reset done", now)
    # Sent again (the ack was lost): nothing changes.
    fleet.beat("h1", op_results=[{**done, "ok": False, "message": "again"}])
    assert history(fleet, "h1-b0") == [got]


def test_a_result_is_not_acked_before_a_flush_stored_it(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    op = order(fleet, "h1-b0", "reflash")
    fleet.beat("h1")
    now = time.time()
    result = {"id": op["id"], "ok": False, "message": "verify mismatch", "started_at": now, "finished_at": now}
    r = fleet.client.post(
        "/v1/agent/heartbeat", json={"session": "s1", "op_results": [result]}, headers=fleet.h(fleet.agents["h1"])
    )
    # Answered from the last flush's view: not stored yet, so not acked (and not offered again).
    assert r.json()["op_acks"] == [] and r.json()["ops"] == []
    fleet.app.state.heartbeats.flush()
    assert history(fleet, "h1-b0")[0]["state"] == "failed"


def test_ordering_an_op_by_hand_is_for_staff_and_known_boards_and_ops(fleet: Fleet) -> None:
    fleet.register("h1", n=1)

    def post(board: str, body: dict[str, Any], token: str) -> int:
        return int(fleet.client.post(f"/v1/boards/{board}/ops", json=body, headers=fleet.h(token)).status_code)

    assert post("h1-b0", {"op": "soft_reset"}, fleet.user) == 403
    assert post("nope", {"op": "soft_reset"}, fleet.admin) == 404
    assert post("h1-b0", {"op": "power_cycle"}, fleet.admin) == 422
    assert post("h1-b0", {"op": "soft_reset", "timeout_s": 0}, fleet.admin) == 422
    assert fleet.client.get("/v1/boards/nope/ops", headers=fleet.h(fleet.user)).status_code == 404
    assert history(fleet, "h1-b0") == []


def test_an_op_by_hand_on_a_board_under_remediation_is_refused_unless_the_operator_takes_the_case_over(
    fleet: Fleet,
) -> None:
    fleet.register("h1", n=2)
    board, sibling = "h1-b0", "h1-b1"
    # A failed probe: the board goes straight up the ladder; after its first step, an L2 check.
    fleet.beat("h1", boards=[{"id": board, "ok": False, "reason": "flaky link"}])
    fleet.rec.health(time.time())
    fleet.beat("h1", boards=[{"id": board, "ok": True}])
    [op] = fleet.beat("h1")["ops"]  # the ladder's first step
    now = time.time()
    fleet.beat("h1", op_results=[{"id": op["id"], "ok": True, "message": None, "started_at": now, "finished_at": now}])
    fleet.rec.health(time.time())
    [check] = fleet.take("h1")
    assert check["kind"] == "health-check" and check["board_id"] == board

    def post(b: str, **body: object) -> Any:
        return fleet.client.post(f"/v1/boards/{b}/ops", json=body, headers=fleet.h(fleet.admin))

    # A reset by hand would kill the ladder's check: refused, naming the case and the way out.
    for b, what in ((board, "soft_reset"), (sibling, "host_reboot")):  # a host reboot touches the board too
        r = post(b, op=what, reason="try it")
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert f"board {board} is under automatic remediation" in err["message"] and "--take-over" in err["message"]
        assert "L2 check is under way" in err["message"]
    assert [o["id"] for o in history(fleet, board)] == [op["id"]]  # only the ladder's own op
    [open_case] = fleet.client.get(f"/v1/boards/{board}/repairs", headers=fleet.h(fleet.user)).json()
    assert open_case["closed_at"] is None
    # An op on a board of another host, or on a sibling that is not under remediation, goes ahead.
    assert post(sibling, op="soft_reset").status_code == 201

    with fleet.store.read() as conn:
        [stale] = open_cases(conn, [board])  # as a ladder pass running meanwhile read it
    r = post(board, op="hard_reset", reason="I will look at it", take_over=True)
    assert r.status_code == 201, r.text
    # That pass writes nothing of the case it read: its transaction is rolled back, the next reads afresh.
    for write in (
        lambda conn: save_case(conn, stale.case, row_id=stale.id, at=time.time()),
        lambda conn: close_case(conn, stale.id, outcome="healed", reason="x", evidence={}, at=time.time()),
    ):
        with pytest.raises(Conflict, match="closed meanwhile"), fleet.store.write() as conn:
            write(conn)
    [case] = fleet.client.get(f"/v1/boards/{board}/repairs", headers=fleet.h(fleet.user)).json()
    assert case["outcome"] == "taken_over" and case["closed_at"] is not None
    assert case["reason"] == "remediation taken over by admin for a hard_reset: I will look at it"
    got = fleet.client.get(f"/v1/boards/{board}", headers=fleet.h(fleet.user)).json()
    assert got["state"] == "drained" and got["drain_reason"] == case["reason"]
    assert fleet.job(check["job_id"])["message"] == case["reason"]  # its check is stopped
    [audit] = fleet.client.get("/v1/audit", params={"action": "board.take_over"}, headers=fleet.h(fleet.admin)).json()
    assert audit["target"] == board and audit["detail"]["case"] == case["id"]
    # The ladder leaves the board alone; the operator's op goes to the agent.
    fleet.rec.health(time.time())
    assert fleet.client.get(f"/v1/boards/{board}/repairs", headers=fleet.h(fleet.user)).json() == [case]
    assert [o["op"] for o in fleet.beat("h1")["ops"]] == ["soft_reset", "hard_reset"]
    fleet.events("h1", finish(check, code=-9, outcome="canceled"))
    fleet.rec.health(time.time())
    got = fleet.client.get(f"/v1/boards/{board}", headers=fleet.h(fleet.user)).json()
    assert got["state"] == "drained" and fleet.job(check["job_id"])["state"] == "canceled"


def test_an_op_past_its_timeout_is_no_longer_delivered(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    op = order(fleet, "h1-b0", "hard_reset", timeout_s=0.01)
    time.sleep(0.02)
    assert fleet.beat("h1")["ops"] == []
    assert history(fleet, "h1-b0")[0]["state"] == "timed_out" and op["timeout_s"] == 0.01


# ---- the agent's half --------------------------------------------------------------------------


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Agent, Events]]:
    """An agent on two sim boards, its runners live, without the server threads."""
    a = Agent(server="http://127.0.0.1:9", token="t", host=HOST, driver=SPEC, state_dir=tmp_path, stop_grace_s=0.3)
    events = Events()
    a._emit = events  # type: ignore[method-assign]
    a._add_boards(a.driver.discover())
    yield a, events
    for r in a.runners.values():
        r.close()
    for r in a.runners.values():
        r.join(5)


def carry_out(agent: Agent, board: str, op: BoardOp) -> OpResult:
    o = OpOrder(id=_next_id(), board_id=board, op=op, timeout_s=60)
    threads = agent.apply_ops([o, o])  # the same order twice: carried out once
    assert len(threads) == 1
    threads[0].join(30)
    [result] = [r for r in agent.pending_op_results() if r.id == o.id]
    assert result.started_at <= result.finished_at
    return result


_ids = iter(range(1, 1_000_000))
_ids_lock = threading.Lock()


def _next_id() -> int:
    with _ids_lock:
        return next(_ids)


def sim(agent: Agent) -> SimDriver:
    assert isinstance(agent.driver, SimDriver)
    return agent.driver


def test_a_soft_reset_ends_the_boards_rank_as_an_infra_error_and_clears_a_hang(agent: tuple[Agent, Events]) -> None:
    a, events = agent
    board, other = a.serials
    busy = assignment(board, {"command": "sleep 30"})
    a.dispatch(busy)
    with events.cond:
        assert events.cond.wait_for(
            lambda: any(e.assignment_id == busy.id and e.type is EventType.STARTED for e, _ in events.items), 20
        )
    result = carry_out(a, board, BoardOp.SOFT_RESET)
    assert result.ok and result.message == "soft reset done"
    ended = events.finished(busy.id)
    assert ended.outcome is Outcome.INFRA_ERROR
    assert ended.message == f"the board is being soft-reset (op {result.id}) (worker killed)"
    sim(a).inject(board, "hang")
    assert not a.driver.probe(board).ok
    assert carry_out(a, board, BoardOp.SOFT_RESET).ok
    assert a.driver.probe(board).ok
    # The board takes work again, on a fresh worker; the other board was never touched.
    after = assignment(board, {"command": "true"})
    a.dispatch(after)
    assert events.finished(after.id).outcome is Outcome.SUCCESS
    assert a.driver.probe(other).ok


def test_reflash_repairs_a_corrupt_flash_unless_the_flash_path_is_still_bad(
    agent: tuple[Agent, Events], tmp_path: Path
) -> None:
    a, _ = agent
    board = a.serials[0]
    image = tmp_path / "fw.bin"
    image.write_bytes(b"fw")
    sim(a).inject(board, "bad_flash")
    with pytest.raises(Exception, match="verify mismatch"):
        sim(a).flash(board, image, "9.9.9")
    assert a.driver.probe(board).reason == "firmware corrupt (failed flash)"
    still_bad = carry_out(a, board, BoardOp.REFLASH)
    assert not still_bad.ok and "verify mismatch" in (still_bad.message or "")
    sim(a).clear(board, "bad_flash")
    sim(a).flash(board, image, "9.9.9")  # a good flash, then one that fails: corrupt again
    sim(a).inject(board, "bad_flash")
    with pytest.raises(Exception, match="verify mismatch"):
        sim(a).flash(board, image, "9.9.10")
    sim(a).clear(board, "bad_flash")  # the flash path is fixed; the firmware is not, yet
    sim(a).inject(board, "hang")
    result = carry_out(a, board, BoardOp.REFLASH)
    assert result.ok and result.message == "firmware 9.9.9 written again"
    assert a.driver.probe(board).ok  # the image is good again, and the hang went with the restart
    assert sim(a).discover()[0].firmware == "9.9.9"


def test_a_host_reboot_hard_resets_every_board_and_restarts_the_workers(agent: tuple[Agent, Events]) -> None:
    a, events = agent
    working, dropped = a.serials
    sim(a).inject(dropped, "bus_drop")
    busy = assignment(working, {"command": "sleep 30"})
    a.dispatch(busy)
    result = carry_out(a, dropped, BoardOp.HOST_REBOOT)
    assert result.ok and result.message == "host reboot: 2 boards hard-reset"
    ended = events.finished(busy.id)
    assert ended.outcome is Outcome.INFRA_ERROR and f"the host is being rebooted (op {result.id})" in (
        ended.message or ""
    )
    assert all(b.ok for b in a.reports()) and len(a.driver.discover()) == 2
    assert all(r.handle.alive for r in a.runners.values())
    for serial in a.serials:
        again = assignment(serial, {"command": "true"})
        a.dispatch(again)
        assert events.finished(again.id).outcome is Outcome.SUCCESS


def test_an_op_the_driver_cannot_do_fails_and_names_the_driver(tmp_path: Path) -> None:
    a = Agent(server="http://127.0.0.1:9", token="t", host=HOST, driver="cpu:1", state_dir=tmp_path)
    a._add_boards(a.driver.discover())
    try:
        [board] = a.serials
        for op, what in ((BoardOp.SOFT_RESET, "reset"), (BoardOp.HOST_REBOOT, "reset"), (BoardOp.REFLASH, "reflash")):
            result = carry_out(a, board, op)
            assert not result.ok and result.message == f"driver cpu:1 cannot {what} boards"
        missing = carry_out(a, "elsewhere", BoardOp.SOFT_RESET)
        assert not missing.ok and missing.message == f"board elsewhere is not on host {HOST}"
        assert a.runners[board].handle.alive  # nothing was stopped for an op that cannot run
    finally:
        for r in a.runners.values():
            r.close()
            r.join(5)
