"""Brakes and watchdogs on automatic healing: lemons quarantined, a generation's circuit breaker,
boards stuck in a transitional state failed safely (pure, and through the controller and API)."""

from __future__ import annotations

import time
from typing import Any

from tests.unit.test_api_flow import Fleet, fail_and_heal

from fleetyard.domain.board import BoardState

S = BoardState
H = 3600.0


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


def test_a_lemon_is_quarantined_instead_of_returning_to_service(fleet: Fleet) -> None:
    from fleetyard.policy.brakes import LEMON_INCIDENTS, BreakerLimits

    f = fleet
    f.register("h1", n=1)
    f.rec.breaker = BreakerLimits(fraction=100.0)  # a generation of one board: let it out every time
    for _ in range(LEMON_INCIDENTS):
        p = fail_and_heal(f, "h1-b0")
        assert (p.released, p.quarantined) == (["h1-b0"], [])
    p = fail_and_heal(f, "h1-b0")
    assert (p.released, p.quarantined) == ([], ["h1-b0"])
    board = f.client.get("/v1/boards/h1-b0", headers=f.h(f.user)).json()
    assert board["state"] == "quarantined"
    assert board["state_reason"].startswith(f"lemon: {LEMON_INCIDENTS + 1} incidents in 7 days")
    history = f.client.get("/v1/boards/h1-b0/history", headers=f.h(f.user)).json()
    assert [e["to_state"] for e in history[:2]] == ["quarantined", "remediating"]  # newest first
    [record, *_] = f.client.get("/v1/boards/h1-b0/repairs", headers=f.h(f.user)).json()
    assert record["outcome"] == "quarantined" and record["reason"].startswith("lemon: ")


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


def test_a_tripped_breaker_stops_automatic_remediation_until_an_operator_resets_it(fleet: Fleet) -> None:

    f = fleet
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
    # The one taken out before the trip is on the ladder; the others stay where they are.
    assert states == {"h1-b0": "remediating", "h1-b1": "available", "h1-b2": "available", "h1-b3": "available"}
    # Users may not reset it; an operator may, once; then the policy goes on, counting anew.
    body = {"reason": "a probe bug, fixed"}
    assert f.client.post("/v1/fleet/breakers/sim-g1/reset", json=body, headers=f.h(f.user)).status_code == 403
    r = f.client.post("/v1/fleet/breakers/sim-g1/reset", json=body, headers=f.h(f.admin))
    assert r.status_code == 200 and not r.json()["tripped"] and r.json()["reset_reason"] == body["reason"]
    assert f.client.post("/v1/fleet/breakers/sim-g1/reset", json=body, headers=f.h(f.admin)).status_code == 404
    assert f.rec.health(time.time()).failing == ["h1-b1"]  # the limit again, since the reset


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


def test_a_suspect_board_no_case_looks_after_is_quarantined_by_its_watchdog(fleet: Fleet) -> None:
    from fleetyard.domain.board import Actor
    from fleetyard.store.boards import switch_board_state

    f = fleet
    f.register("h1", n=2)
    t0 = time.time()
    # A board on the ladder keeps its case's deadlines; one left suspect with a drain pending
    # (an operator's to deal with: no case opens) is the watchdog's.
    with f.store.write() as conn:
        switch_board_state(conn, "h1-b0", S.SUSPECT, reason="x", actor=Actor.OPERATOR, at=t0, drain_reason="rma")
    f.beat("h1", boards=[{"id": "h1-b1", "ok": False, "reason": "hung"}])
    assert f.rec.health(t0).failing == ["h1-b1"]
    assert f.rec.watchdog(t0 + 3500.0) == []  # within its hour
    [o] = f.rec.watchdog(t0 + 3601.0)
    assert o.board == "h1-b0"
    board = f.client.get("/v1/boards/h1-b0", headers=f.h(f.user)).json()
    assert board["state"] == "quarantined" and board["state_reason"].startswith("watchdog: still not passing")
    assert f.client.get("/v1/boards/h1-b1", headers=f.h(f.user)).json()["state"] == "remediating"


def test_the_breaker_counts_boards_taken_out_of_service_not_boards_coming_back(fleet: Fleet) -> None:
    from fleetyard.store import tables as t
    from fleetyard.store.breakers import taken_out_since

    fleet.register("h1", n=4)
    events = [
        ("h1-b0", "available", "suspect", "policy"),  # taken out: counts
        ("h1-b1", "allocated", "suspect", "policy"),  # an infrastructure error during a job: counts
        ("h1-b1", "suspect", "remediating", "policy"),  # the same board, further down: once
        ("h1-b2", "offline", "suspect", "policy"),  # its host came back: must pass a check, not a fault
        ("h1-b3", "allocated", "drained", "operator"),  # an operator's drain: planned
        ("h1-b3", "available", "offline", "policy"),  # a lost host: its own brake
    ]
    now = time.time()
    with fleet.store.write() as conn:
        conn.execute(
            t.board_events.insert(),
            [
                {"board_id": b, "at": now, "from_state": f, "to_state": to, "reason": "x", "actor": actor}
                for b, f, to, actor in events
            ],
        )
        assert taken_out_since(conn, window_start=now - 60) == {"sim-g1": 2}
        assert taken_out_since(conn, window_start=now + 1) == {}


# ---- the control plane's brake ------------------------------------------------------------------


def test_hosts_silent_together_trip_the_control_plane_breaker_nothing_is_lost_and_it_resets_when_they_answer(
    fleet: Fleet,
) -> None:
    from fleetyard.domain.auth import Role
    from fleetyard.policy.brakes import CONTROL_PLANE as CP
    from fleetyard.store import tables as t
    from fleetyard.store.tokens import create_token

    f = fleet
    hosts = ["h1", "h2", "h3", "h4"]  # four hosts: more than two silent together is the control plane's
    for h in hosts[2:]:
        f.agents[h] = create_token(f.url, name=f"agent-{h}", role=Role.AGENT, host=h)
    for h in hosts:
        f.register(h, n=1)
    job = f.submit(params={"command": "sleep 600"})
    assert f.rec.schedule(time.time()) == 1
    [a] = [x for h in hosts for x in f.take(h)]
    f.events(a["board_id"].split("-")[0], [{"assignment_id": a["id"], "seq": 0, "type": "started", "at": time.time()}])

    def passes(until: float, *answering: str) -> list[str]:
        """Liveness passes every 2 s up to ``until``, the server alive and ``answering`` heard from
        at each; the hosts lost."""
        lost: list[str] = []
        while clock[0] < until:
            clock[0] = min(until, clock[0] + 2.0)
            with f.store.write() as conn:
                conn.execute(t.servers.update().values(seen_at=clock[0]))
                conn.execute(t.hosts.update().where(t.hosts.c.id.in_(answering)).values(last_heartbeat_at=clock[0]))
            lost += f.rec.liveness(clock[0])
        return lost

    def states() -> dict[str, str]:
        return {h["id"]: h["state"] for h in f.client.get("/v1/hosts", headers=f.h(f.user)).json()}

    def control_plane() -> dict[str, Any]:
        [cp] = [b for b in f.client.get("/v1/fleet/breakers", headers=f.h(f.user)).json() if b["generation"] == CP]
        return dict(cp)

    clock = [time.time() - 100.0]  # the passes' times, behind the wall clock the API stamps its acts with
    with f.store.write() as conn:  # a server alive throughout (its pings are the store's, not the app's here)
        conn.execute(t.servers.delete())
        conn.execute(t.servers.insert().values(id="s", started_at=clock[0], seen_at=clock[0]))
    assert passes(clock[0] + 4.0, *hosts) == []
    assert passes(clock[0] + 30.0, "h4") == []  # h1-h3 silent past the grace (10 s) together: none lost
    assert states() == {"h1": "unreachable", "h2": "unreachable", "h3": "unreachable", "h4": "online"}
    assert f.job(job["id"])["state"] == "running"  # nothing re-queued
    assert {b["state"] for b in f.client.get("/v1/boards", headers=f.h(f.user)).json()} <= {"available", "allocated"}
    cp = control_plane()
    assert cp["tripped"] and cp["reason"].startswith("3 of 4 hosts went silent within 60 s")
    assert f'fleetyard_breaker_tripped{{generation="{CP}"}} 1.0' in f.client.get("/metrics", headers=f.h(f.user)).text
    page = f.client.get("/ui/fleet", headers=f.h(f.user)).text
    assert 'data-testid="breaker-tripped"' in page and "3 of 4 hosts went silent" in page
    # No board is taken out automatically meanwhile, whatever its probe says.
    f.beat("h4", boards=[{"id": "h4-b0", "ok": False, "reason": "hung"}])
    assert f.rec.health(clock[0]).failing == []
    # They answer again: the policy resets its breaker, and the hosts are online.
    assert passes(clock[0] + 4.0, *hosts) == []
    assert set(states().values()) == {"online"}
    assert not control_plane()["tripped"] and control_plane()["reset_by"] == "policy"
    # Silent together again, and an operator decides it is the hosts after all: they are lost.
    assert passes(clock[0] + 30.0, "h4") == [] and control_plane()["tripped"]
    r = f.client.post(f"/v1/fleet/breakers/{CP}/reset", json={"reason": "rack power"}, headers=f.h(f.admin))
    assert r.status_code == 200, r.text
    assert sorted(passes(clock[0] + 2.0, "h4")) == ["h1", "h2", "h3"]
    assert f.job(job["id"])["attempts"] >= 1 and not control_plane()["tripped"]
    assert f.rec.health(time.time()).failing == ["h4-b0"]  # automatic take-outs resume
