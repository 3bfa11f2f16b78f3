"""Uptime accounting: availability, incidents, MTTR, MTBI, MTTD from board transitions (pure),
and the same through the API and ``fleetyard fleet stats``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleetyard.domain.board import Actor, BoardState
from fleetyard.policy.uptime import Fault, Transition, cause_of, uptime

S = BoardState
H = 3600.0


def tr(board: str, at: float, to: BoardState, actor: Actor = Actor.POLICY, reason: str = "") -> Transition:
    return Transition(board, at, to, actor, reason)


def test_availability_counts_in_service_over_counted_time() -> None:
    events = [
        tr("a", 0.0, S.AVAILABLE),
        tr("a", 10 * H, S.ALLOCATED),
        tr("a", 20 * H, S.SUSPECT, reason="failed its probe: ecc storm"),
        tr("a", 22 * H, S.REMEDIATING),
        tr("a", 24 * H, S.AVAILABLE, reason="passed its probe after the cooldown"),
        # b: drained by an operator (planned: not counted), then back.
        tr("b", 0.0, S.AVAILABLE),
        tr("b", 50 * H, S.DRAINED, Actor.OPERATOR, "firmware flash"),
        tr("b", 60 * H, S.AVAILABLE, Actor.OPERATOR),
    ]
    f = uptime(events, {"a": "g1", "b": "g2"}, since=0.0, until=100 * H)
    a, b = f.boards
    assert (a.counted_s, a.in_service_s, a.incidents) == (100 * H, 96 * H, 1)
    assert (b.counted_s, b.in_service_s, b.incidents) == (90 * H, 90 * H, 0)
    assert f.availability == pytest.approx(186 / 190)
    [i] = f.incidents
    assert (i.board, i.start, i.end, i.state, i.cause, i.repaired) == (
        "a",
        20 * H,
        24 * H,
        S.SUSPECT,
        "failed its probe",
        True,
    )
    assert f.mttr_s == 4 * H and f.mtbi_s == 186 * H
    assert f.incidents_per_1000_board_days == pytest.approx(1000 / (190 / 24))
    assert f.by_cause == {"suspect: failed its probe": 1}
    assert f.by_generation == {
        "g1": {"boards": 1, "availability": 0.96, "incidents": 1},
        "g2": {"boards": 1, "availability": 1.0, "incidents": 0},
    }


def test_the_window_clips_time_and_takes_the_state_it_opens_with() -> None:
    events = [
        tr("a", 0.0, S.AVAILABLE),
        tr("a", 5 * H, S.OFFLINE, Actor.AGENT, "host lost: no heartbeat for 15 s"),  # before the window
        tr("a", 12 * H, S.SUSPECT, reason="host back: must pass a check before service"),
        tr("a", 13 * H, S.AVAILABLE),
        tr("a", 30 * H, S.OFFLINE, reason="host lost: no heartbeat for 15 s"),  # still down at the end
        tr("b", 15 * H, S.DISCOVERED),  # arrives in the window: counted from when it is in the fleet
        tr("b", 16 * H, S.AVAILABLE),
        tr("b", 25 * H, S.RETIRED, Actor.OPERATOR),
    ]
    f = uptime(events, {"a": "g1", "b": "g1"}, since=10 * H, until=40 * H)
    a, b = f.boards
    # a: down 10-13 (an incident from before the window: not counted as one), up 13-30, down 30-40.
    assert (a.counted_s, a.in_service_s, a.incidents) == (30 * H, 17 * H, 1)
    [i] = f.incidents
    assert (i.start, i.end, i.state, i.cause, i.repaired) == (30 * H, None, S.OFFLINE, "host lost", False)
    assert f.mttr_s is None  # nothing repaired in the window
    assert (b.counted_s, b.in_service_s) == (9 * H, 9 * H)


def test_policy_drains_are_down_time_and_an_incident_ends_when_the_board_leaves_the_fleet() -> None:
    events = [
        tr("a", 0.0, S.AVAILABLE),
        tr("a", 1 * H, S.DRAINED, Actor.POLICY, "lemon: 4 incidents in 7 days"),
        tr("a", 3 * H, S.REMEDIATING),
        tr("a", 4 * H, S.QUARANTINED, reason="remediation failed"),
        tr("a", 6 * H, S.RETIRED, Actor.OPERATOR),
    ]
    f = uptime(events, {"a": "g1"}, since=0.0, until=10 * H)
    [i] = f.incidents
    assert (i.start, i.end, i.state, i.cause, i.repaired) == (1 * H, 6 * H, S.DRAINED, "lemon", False)
    assert f.boards[0].counted_s == 6 * H and f.boards[0].in_service_s == 1 * H


def test_mttd_is_from_an_injected_fault_to_its_boards_next_incident() -> None:
    events = [
        tr("a", 0.0, S.AVAILABLE),
        tr("a", 100.0, S.SUSPECT, reason="failed its probe: hung"),
        tr("a", 200.0, S.AVAILABLE),
        tr("b", 0.0, S.AVAILABLE),
    ]
    faults = [Fault("a", 70.0, "hang"), Fault("b", 50.0, "silent_corruption"), Fault("a", 5000.0, "late")]
    f = uptime(events, {"a": "g1", "b": "g1"}, since=0.0, until=1000.0, faults=faults)
    assert f.mttd_s == 30.0 and f.faults_detected == 1 and f.faults_undetected == 1  # the late one: out of the window


def test_causes_lose_their_specifics() -> None:
    assert cause_of("failed its probe: driver error: -5") == "failed its probe"
    assert cause_of("host lost: no heartbeat for 15 s") == "host lost"
    assert cause_of("job 12 failed here (job 12, infra_error)") == "job N failed here"
    assert cause_of("") == "no reason given"


def test_fleet_stats_through_the_api_and_the_cli_view(tmp_path: Path) -> None:
    from rich.console import Console
    from tests.unit.test_api_flow import Fleet

    from fleetyard.cli.fleet import stats_view
    from fleetyard.client import FleetStatsOut
    from fleetyard.server.services import stats

    f = Fleet(tmp_path)
    with f.client:
        f.register("h1", n=2)
        r = f.client.post("/v1/admin/boards/h1-b0/faults", json={"kind": "hang"}, headers=f.h(f.admin))
        assert r.status_code == 201
        f.beat("h1", boards=[{"id": "h1-b0", "ok": False, "reason": "hung"}])
        t0 = time.time()
        assert f.rec.health(t0)[0] == ["h1-b0"]
        f.beat("h1", boards=[{"id": "h1-b0", "ok": True}])
        assert f.rec.health(t0 + 1)[1] == ["h1-b0"]
        r = f.client.get("/v1/fleet/stats", params={"since_s": 3600}, headers=f.h(f.user))
        assert r.status_code == 200, r.text
        s = FleetStatsOut.model_validate(r.json())
        assert s.boards == 2 and s.incidents == 1 and s.by_cause == {"suspect: failed its probe": 1}
        # The board came back at t0 + 1 (the reconciler's clock): a window that ends after it.
        s = stats.fleet_stats(f.store, since=t0 - 3600, until=t0 + 10)
        assert s.faults_detected == 1 and s.mttd_s is not None and 0 <= s.mttd_s < 60
        assert s.mttr_s is not None and 0 < s.mttr_s < 60
        assert s.availability is not None and 0 < s.availability < 1
        assert [b for b, _ in s.worst_boards] == ["h1-b0"]
        [i] = s.recent_incidents
        assert (i.board, i.state, i.repaired) == ("h1-b0", "suspect", True)
        bad = f.client.get("/v1/fleet/stats", params={"since_s": -1}, headers=f.h(f.user))
        assert bad.status_code == 422
    f.store.dispose()
    console = Console(record=True, width=120)
    console.print(stats_view(s))
    text = console.export_text()
    assert "availability" in text and "suspect: failed its probe" in text and "h1-b0" in text


# ---- lemons --------------------------------------------------------------------------------------


def test_a_board_with_more_than_k_incidents_in_the_window_is_a_lemon() -> None:
    from fleetyard.policy.brakes import LEMON_WINDOW_S, lemon_reason
    from fleetyard.policy.uptime import Incident

    def incident(start: float, cause: str = "failed its probe", state: BoardState = S.SUSPECT) -> Incident:
        return Incident("a", "g1", start, start + 60.0, state, cause, True)

    now = 10 * LEMON_WINDOW_S
    three = [incident(now - k * H) for k in (1, 2, 3)]
    assert lemon_reason(three, now=now) is None
    old = incident(now - LEMON_WINDOW_S - 1)  # out of the window: forgiven
    assert lemon_reason([*three, old], now=now) is None
    why = lemon_reason([*three, incident(now - 4 * H, "host lost", S.OFFLINE)], now=now)
    assert why == "lemon: 4 incidents in 7 days (more than 3): suspect: failed its probe (3), offline: host lost (1)"


def test_a_lemon_is_quarantined_instead_of_returning_to_service(tmp_path: Path) -> None:
    from tests.unit.test_api_flow import Fleet

    from fleetyard.policy.brakes import LEMON_INCIDENTS

    f = Fleet(tmp_path)
    with f.client:
        f.register("h1", n=1)

        def fail_then_pass(at: float) -> tuple[list[str], list[str], list[str]]:
            f.beat("h1", boards=[{"id": "h1-b0", "ok": False, "reason": "hung"}])
            assert f.rec.health(at).failing == ["h1-b0"]
            f.beat("h1", boards=[{"id": "h1-b0", "ok": True}])
            p = f.rec.health(at + 10.0)
            return p.failing, p.released, p.quarantined

        # The reconciler's clock runs behind the heartbeats' (a probe must pass after the failure);
        # incidents 20 min apart, past the circuit breaker's window (one board of a generation of one).
        t0 = time.time() - 10_000.0
        for k in range(LEMON_INCIDENTS):
            assert fail_then_pass(t0 + 1200.0 * k) == ([], ["h1-b0"], [])
        assert fail_then_pass(t0 + 1200.0 * LEMON_INCIDENTS) == ([], [], ["h1-b0"])
        board = f.client.get("/v1/boards/h1-b0", headers=f.h(f.user)).json()
        assert board["state"] == "quarantined"
        assert board["state_reason"].startswith(f"lemon: {LEMON_INCIDENTS + 1} incidents in 7 days")
        history = f.client.get("/v1/boards/h1-b0/history", headers=f.h(f.user)).json()
        assert [e["to_state"] for e in history[:2]] == ["quarantined", "remediating"]  # newest first
    f.store.dispose()


# ---- the circuit breaker ------------------------------------------------------------------------


def test_the_breaker_lets_a_tenth_of_a_generation_out_then_trips() -> None:
    from fleetyard.policy.brakes import BreakerLimits, take_out

    limits = BreakerLimits()
    assert [limits.limit(n) for n in (1, 9, 10, 11, 200, 10_000)] == [1, 1, 1, 2, 20, 50]
    candidates = {"g1": ["b3", "b1", "b2"], "g2": ["c1"], "g3": ["d1"]}
    intake = take_out(candidates, recent={"g1": 19}, sizes={"g1": 200, "g2": 10, "g3": 10}, tripped={"g3"})
    # g1: 19 out lately, limit 20: b1 goes out, b2 would be the 21st: the breaker trips.
    assert intake.boards == ["b1", "c1"] and list(intake.trips) == ["g1"]
    assert intake.trips["g1"].startswith("circuit breaker: 21 boards of g1 would be out of service within 15 min")
    assert "more than 20 (10% of 200, at most 50)" in intake.trips["g1"]


def test_a_tripped_breaker_stops_automatic_remediation_until_an_operator_resets_it(tmp_path: Path) -> None:
    from tests.unit.test_api_flow import Fleet

    f = Fleet(tmp_path)
    with f.client:
        f.register("h1", n=4)  # one generation of 4: at most 1 out within 15 minutes
        t0 = time.time() - 100.0

        def fail(*boards: str) -> None:
            f.beat("h1", boards=[{"id": b, "ok": b not in boards, "reason": "hung"} for b in sorted(f_ids)])

        f_ids = ["h1-b0", "h1-b1", "h1-b2", "h1-b3"]
        fail("h1-b0")
        assert f.rec.health(t0).failing == ["h1-b0"]
        fail("h1-b0", "h1-b1", "h1-b2")
        p = f.rec.health(t0 + 1)
        assert p.failing == [] and p.tripped == ["sim-g1"]
        [b] = f.client.get("/v1/fleet/breakers", headers=f.h(f.user)).json()
        assert b["generation"] == "sim-g1" and b["tripped"] and "circuit breaker: 2 boards" in b["reason"]
        assert f.rec.health(t0 + 2).failing == []  # stays tripped: nothing more is taken out
        states = {x["id"]: x["state"] for x in f.client.get("/v1/boards", headers=f.h(f.user)).json()}
        assert states == {"h1-b0": "suspect", "h1-b1": "available", "h1-b2": "available", "h1-b3": "available"}
        # Users may not reset it; an operator may, once; then the policy goes on, counting anew.
        body = {"reason": "a probe bug, fixed"}
        assert f.client.post("/v1/fleet/breakers/sim-g1/reset", json=body, headers=f.h(f.user)).status_code == 403
        r = f.client.post("/v1/fleet/breakers/sim-g1/reset", json=body, headers=f.h(f.admin))
        assert r.status_code == 200 and not r.json()["tripped"] and r.json()["reset_reason"] == body["reason"]
        assert f.client.post("/v1/fleet/breakers/sim-g1/reset", json=body, headers=f.h(f.admin)).status_code == 404
        assert f.rec.health(time.time()).failing == ["h1-b1"]  # the limit again, since the reset
    f.store.dispose()


# ---- watchdogs ----------------------------------------------------------------------------------


def test_watchdogs_fail_boards_stuck_in_a_transitional_state() -> None:
    from fleetyard.policy.watchdog import StateView, overdue

    now = 100_000.0
    boards = [
        StateView("a", S.REMEDIATING, now - 31 * 60),
        StateView("b", S.REMEDIATING, now - 29 * 60),  # not yet
        StateView("c", S.SUSPECT, now - 2 * H),
        StateView("d", S.SERVICING, now - 9 * H),
        StateView("e", S.ONBOARDING, now - 3 * H),
        StateView("f", S.AVAILABLE, now - 100 * H),  # not transitional
    ]
    got = {o.board: (o.path, o.reason) for o in overdue(boards, now=now)}
    assert got == {
        "a": ((S.QUARANTINED,), "watchdog: remediation did not finish within 30 min"),
        "c": ((S.REMEDIATING, S.QUARANTINED), "watchdog: still not passing its checks within 1 h"),
        "d": (
            (S.SUSPECT,),
            "watchdog: servicing did not finish within 8 h; it must pass a check before it serves again",
        ),
        "e": ((S.QUARANTINED,), "watchdog: onboarding did not finish within 2 h"),
    }


def test_a_board_that_stays_suspect_is_quarantined_by_its_watchdog(tmp_path: Path) -> None:
    from tests.unit.test_api_flow import Fleet

    f = Fleet(tmp_path)
    with f.client:
        f.register("h1", n=2)
        f.beat("h1", boards=[{"id": "h1-b0", "ok": False, "reason": "hung"}, {"id": "h1-b1"}])
        t0 = time.time()
        assert f.rec.health(t0).failing == ["h1-b0"]
        assert f.rec.watchdog(t0 + 3500.0) == []  # within its hour
        [o] = f.rec.watchdog(t0 + 3601.0)
        assert o.board == "h1-b0"
        board = f.client.get("/v1/boards/h1-b0", headers=f.h(f.user)).json()
        assert board["state"] == "quarantined" and board["state_reason"].startswith("watchdog: still not passing")
        assert f.client.get("/v1/boards/h1-b1", headers=f.h(f.user)).json()["state"] == "available"
    f.store.dispose()
