"""Uptime accounting: availability, incidents, MTTR, MTBI, MTTD from board transitions (pure),
and the same through the API and ``fleetyard fleet stats``."""

from __future__ import annotations

import time

import pytest
from tests.unit.test_api_flow import Fleet, fail_and_heal

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


def test_fleet_stats_through_the_api_and_the_cli_view(fleet: Fleet) -> None:
    from rich.console import Console

    from fleetyard.cli.fleet import stats_view
    from fleetyard.client import FleetStatsOut
    from fleetyard.server.services import stats

    f = fleet
    f.register("h1", n=2)
    r = f.client.post("/v1/admin/boards/h1-b0/faults", json={"kind": "hang"}, headers=f.h(f.admin))
    assert r.status_code == 201
    t0 = time.time()
    assert fail_and_heal(f, "h1-b0").released == ["h1-b0"]  # out, up the ladder, healed
    r = f.client.get("/v1/fleet/stats", params={"since_s": 3600}, headers=f.h(f.user))
    assert r.status_code == 200, r.text
    s = FleetStatsOut.model_validate(r.json())
    assert s.boards == 2 and s.incidents == 1 and s.by_cause == {"suspect: failed its probe": 1}
    # The board came back within a few seconds of t0: a window that ends after it.
    s = stats.fleet_stats(f.store, since=t0 - 3600, until=t0 + 10)
    assert s.faults_detected == 1 and s.mttd_s is not None and 0 <= s.mttd_s < 60
    assert s.mttr_s is not None and 0 < s.mttr_s < 60
    assert s.availability is not None and 0 < s.availability < 1
    assert [b for b, _ in s.worst_boards] == ["h1-b0"]
    [i] = s.recent_incidents
    assert (i.board, i.state, i.repaired) == ("h1-b0", "suspect", True)
    bad = f.client.get("/v1/fleet/stats", params={"since_s": -1}, headers=f.h(f.user))
    assert bad.status_code == 422
    console = Console(record=True, width=120)
    console.print(stats_view(s))
    text = console.export_text()
    assert "availability" in text and "suspect: failed its probe" in text and "h1-b0" in text
