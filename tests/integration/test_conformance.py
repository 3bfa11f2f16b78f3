"""One lifecycle, two shells: the same story through the real server and controller (the API
and the reconciler's passes over a real store, the agent's part played by the test) and through
the fleet simulator, with the same transitions, reasons, cases and refusals out of both.

The story: a host of eight boards, one in each lifecycle state (available, running a job,
drained, suspect with its L2 check under way, remediating with a soft reset under way,
quarantined, discovered, onboarding), is lost and comes back; then an operator orders a reset
by hand on the board whose case is open, first without, then with ``--take-over``. Both shells
must take each board to the same place for the same reason (DESIGN.md's lifecycle), because
both call the same rules (:mod:`fleetyard.policy`): a rule copied into one shell, or a shell
that skips one, shows here as a difference.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.firmware_image import sim_image
from fleetyard.domain.health_config import RemedyOp, parse_health_config
from fleetyard.drivers.sim import GENERATIONS
from fleetyard.policy.liveness import Liveness
from fleetyard.policy.remediation import Phase
from fleetyard.policy.rollout import RolloutPlan
from fleetyard.sim.fleet import FleetSim
from fleetyard.sim.model import FaultModel, Scenario
from fleetyard.sim.rollout import Image, RolloutRun, RolloutSim
from fleetyard.sim.workload import Arrival, JobKind, Team, WorkloadModel
from fleetyard.store import tables as t
from fleetyard.store.boards import switch_board_state
from fleetyard.store.healing import open_cases
from tests.unit.test_api_flow import Fleet, finish

# Checks and steps slow enough to be under way when the host is lost (the burn-in, all through
# the simulated story); a breaker that lets the story's two take-outs of one generation through.
HEALTH = parse_health_config(
    """
generations:
  default:
    l1: {every_s: 86400, every_jobs: 1000, repeat: 1, timeout_s: 900}
    l2: {duration_s: 600, timeout_s: 900}
    l3: {duration_s: 1800, timeout_s: 2400}
    ladder:
      - {step: soft_reset, timeout_s: 3600}
      - {step: reflash, timeout_s: 3600}
      - {step: host_reboot, timeout_s: 3600}
breaker: {fraction: 1.0, boards: 50, window_s: 900}
""",
    source="tests/integration/test_conformance.py",
)
T = TypeVar("T")
LIVENESS = Liveness(unreachable_after_s=5.0, lost_after_s=10.0)
ROLES = ("available", "running", "drained", "suspect", "remediating", "quarantined", "discovered", "onboarding")
HAND = "remediation taken over by admin for a hard_reset"

# What each shell tells of the story: per board (by role), the (state, reason) it went through
# from the host's loss on; each remediation case closed, with its steps; the refusal of the op by hand.
Told = tuple[dict[str, list[tuple[str, str]]], dict[str, list[tuple[str, tuple[str, ...]]]], str]


def test_a_lost_host_and_an_op_during_a_case_go_the_same_way_in_the_controller_and_the_simulator(
    db_url: str, tmp_path: Path
) -> None:
    real, sim = through_the_stack(db_url, tmp_path, _stack_story), through_the_simulator()
    assert real == sim
    transitions, cases, refusal = real
    # And the same way as DESIGN.md's lifecycle says.
    lost = ("offline", "host lost: no heartbeat for 10 s")
    checked = ("suspect", "host back: must pass a check before service")
    passed = ("available", "passed its L1 check (left service for: host back: must pass a check before service)")
    assert transitions == {
        "available": [lost, checked, passed],
        "running": [lost, checked, passed],
        "drained": [lost, ("drained", "host back: still drained")],
        "suspect": [
            lost,
            ("suspect", "host back: its remediation case resumes"),
            (
                "available",
                "passed its L2 check (left service for: infrastructure error during a job (job 2, infra_error))",
            ),
        ],
        "remediating": [lost, ("remediating", "host back: its remediation case resumes"), ("drained", HAND)],
        "quarantined": [],
        "discovered": [lost, ("discovered", "host back; still not approved: fleetyard boards approve {board}")],
        "onboarding": [lost, ("onboarding", "host back: its onboarding starts over")],
    }
    interrupted = "{} is under way; interrupted (its host was lost): again"
    assert cases["suspect"] == [("healed", (interrupted.format("its L2 check"), "L2 check: passed"))]
    assert cases["remediating"] == [("taken_over", (interrupted.format("ladder step 1"),))]
    assert cases["available"] == cases["running"] == [("healed", ("L1 check: passed",))]
    assert "under automatic remediation (ladder step 1 is under way" in refusal and "--take-over" in refusal


def through_the_stack(db_url: str, tmp: Path, story: Callable[[Fleet], T]) -> T:
    """``story`` played on the API and the reconciler over the store at ``db_url``."""
    f = Fleet(tmp, url=db_url, health=HEALTH)
    f.rec.liveness_config = LIVENESS
    with f.client:
        try:
            return story(f)
        finally:
            f.store.dispose()


def _stack_story(f: Fleet) -> Told:
    f.register("h1", n=8)
    ids = dict(zip(ROLES, (f"h1-b{i}" for i in range(8)), strict=True))
    admin = f.h(f.admin)
    with f.store.write() as conn:  # as a fleet running for a while would have them
        for role in ("quarantined", "onboarding"):
            for to in (BoardState.REMEDIATING, BoardState.QUARANTINED):
                switch_board_state(conn, ids[role], to, reason="placed", actor=Actor.POLICY, at=time.time())
        conn.execute(t.boards.update().where(t.boards.c.id == ids["discovered"]).values(state="discovered"))
    r = f.client.post(f"/v1/boards/{ids['onboarding']}/repaired", json={"reason": "placed"}, headers=admin)
    assert r.status_code == 200, r.text
    r = f.client.post(f"/v1/boards/{ids['drained']}/drain", json={"reason": "drained by hand"}, headers=admin)
    assert r.status_code == 200, r.text
    jobs = {role: f.submit(board_ids=[ids[role]])["id"] for role in ("running", "suspect")}
    f.rec.schedule(time.time())
    ranks = {a["board_id"]: a for a in f.take("h1")}
    crashed = finish(ranks[ids["suspect"]], code=-11, outcome="infra_error")
    crashed[-1]["cause"] = "board_fault"
    f.events("h1", crashed)
    f.beat("h1", boards=[{"id": ids["remediating"], "ok": False, "reason": "board not responding"}])
    f.rec.health(time.time())
    assert f.job(jobs["running"])["state"] == "running"

    with f.store.write() as conn:
        mark = conn.execute(sa.select(sa.func.max(t.board_events.c.id))).scalar_one()
    later = time.time()
    f.rec.watching_since = later - 600
    with f.store.write() as conn:
        conn.execute(t.hosts.update().where(t.hosts.c.id == "h1").values(last_heartbeat_at=later - 30))
        conn.execute(t.servers.update().values(seen_at=later))  # a server was listening all along
    assert f.rec.liveness(later) == ["h1"]
    assert f.job(jobs["running"])["state"] == "queued"
    f.register("h1", n=8, session="s2")  # its agent, back
    f.rec.health(time.time())

    op = {"op": "hard_reset", "reason": ""}
    refused = f.client.post(f"/v1/boards/{ids['remediating']}/ops", json=op, headers=admin)
    assert refused.status_code == 409, refused.text
    r = f.client.post(f"/v1/boards/{ids['remediating']}/ops", json={**op, "take_over": True}, headers=admin)
    assert r.status_code == 201, r.text
    # The checks the cases run now, played to a pass (the onboarding board's burn-in runs on).
    checks = [a for a in f.take("h1", session="s2") if a["board_id"] != ids["onboarding"]]
    assert sorted(a["board_id"] for a in checks) == sorted(ids[r] for r in ("available", "running", "suspect"))
    for a in checks:
        f.events("h1", finish(a), session="s2")
    f.rec.health(time.time())

    with f.store.read() as conn:
        e = t.board_events.c
        events = conn.execute(
            sa.select(e.board_id, e.to_state, e.reason).where(e.id > mark, e.from_state != e.to_state).order_by(e.id)
        ).all()
        r_ = t.remediations.c
        closed = conn.execute(
            sa.select(r_.board_id, r_.outcome, r_.evidence).where(r_.closed_at.is_not(None)).order_by(r_.id)
        ).all()
        assert not open_cases(conn)
    by_board = {b: role for role, b in ids.items()}
    transitions: dict[str, list[tuple[str, str]]] = {role: [] for role in ROLES}
    for ev in events:
        transitions[by_board[ev.board_id]].append((ev.to_state, ev.reason.replace(ev.board_id, "{board}")))
    cases: dict[str, list[tuple[str, tuple[str, ...]]]] = {role: [] for role in ROLES}
    for c in closed:
        cases[by_board[c.board_id]].append((c.outcome, tuple(c.evidence["steps"])))
    return transitions, cases, refused.json()["error"]["message"].replace(ids["remediating"], "{board}")


def through_the_simulator() -> Told:
    sim = FleetSim(_scenario(boards=8, seconds=1500.0), "fleetyard")
    ids = dict(zip(ROLES, (b.id for b in sim.boards), strict=True))
    for role in ("quarantined", "discovered", "onboarding"):
        sim.place(ids[role], role)
    sim.drain(5.0, ids["drained"])
    for role in ("running", "suspect"):
        sim.run_job(5.0, ids[role], 3000.0)
    sim.inject(10.0, ids["suspect"], "crash")
    sim.inject(10.0, ids["remediating"], "hang")
    lost_at = 60.0
    sim.lose_host(lost_at, 0, 30.0)
    sim.order_op(300.0, ids["remediating"], "hard_reset", by="admin")
    sim.order_op(310.0, ids["remediating"], "hard_reset", take_over=True, by="admin")
    sim.run()

    by_board = {b: role for role, b in ids.items()}
    transitions: dict[str, list[tuple[str, str]]] = {role: [] for role in ROLES}
    for tr in sim.transitions:
        if tr.at > lost_at:
            transitions[by_board[tr.board]].append((str(tr.to_state), tr.reason.replace(tr.board, "{board}")))
    assert not [b.id for b in sim.boards if b.case is not None]
    cases: dict[str, list[tuple[str, tuple[str, ...]]]] = {role: [] for role in ROLES}
    for board, outcome, steps in sim.cases_closed:
        cases[by_board[board]].append((outcome, steps))
    [(_, board, refusal)] = sim.refusals
    return transitions, cases, refusal.replace(board, "{board}")


def test_a_board_failing_its_check_after_a_rollouts_flash_goes_the_same_way_in_the_controller_and_the_simulator(
    db_url: str, tmp_path: Path
) -> None:
    """A one-board canary (no control boards), flashed, hangs: its check after the flash times
    out. Both shells fail it out of the rollout, halt at the gate (judged against a clean
    record), take it back from the ladder for the flash back, which fails, and send it up the
    ladder (a check first: its probe never failed)."""
    real, sim = through_the_stack(db_url, tmp_path, _rollout_story), rollout_through_the_simulator()
    assert real == sim
    transitions, (state, verdicts, step, failure_rate), evidence = real
    old = GENERATIONS["sim-g1"].firmware
    assert transitions == [
        ("drained", "rollout 1: flashing sim-g1 to 2.0.0"),
        ("servicing", "rollout 1: flashing 2.0.0"),
        ("suspect", "rollout 1: check after the flash failed: over its time limit of 900 s"),
        ("drained", "rollout 1: rolling sim-g1 back from 2.0.0"),
        ("servicing", f"rollout 1: rolling back to {old}"),
        ("suspect", "rollout 1: flash failed: board not answering"),
        ("remediating", "remediation step 1: soft_reset"),
    ]
    assert (state, verdicts, step, failure_rate) == ("rolled_back", [False], "failed", 1.0)
    assert evidence == ("L2 check: failed (over its time limit of 900 s)",)


Rolled = tuple[list[tuple[str, str]], tuple[str, list[bool | None], str, float | None], tuple[str, ...]]


def _rollout_story(f: Fleet) -> Rolled:
    old = GENERATIONS["sim-g1"].firmware  # what the simulator's boards run
    f.register("h1", n=1, firmware=old)
    f.beat("h1")
    admin = f.h(f.admin)
    for version in (old, "2.0.0"):
        data = sim_image("sim-g1", version, payload=b"fw")  # the app here takes small blobs
        sha = hashlib.sha256(data).hexdigest()
        assert f.client.put(f"/v1/blobs/{sha}", content=data, headers=admin).status_code < 300
        body = {"generation": "sim-g1", "version": version, "sha256": sha}
        assert f.client.post("/v1/firmware", json=body, headers=admin).status_code == 201
    plan = {"canary": 1, "control": 0, "soak_s": 0, "shares": [1.0]}
    r = f.client.post("/v1/rollouts", json={"generation": "sim-g1", "version": "2.0.0", "reason": "t", **plan},
                      headers=admin)  # fmt: skip
    assert r.status_code == 201, r.text
    rollout = r.json()["id"]
    # The agent's part: the flash succeeds; then the board hangs: every check runs out its time,
    # and the flash back fails, the board not answering; the ladder's ops wait (the simulator's
    # take longer than the story).
    hung = {"cause": "timeout", "message": f"over its time limit of {HEALTH.of('sim-g1').l1.timeout_s:g} s"}
    tiers: list[str] = []
    flashes = 0
    for _ in range(30):
        f.rec.health(time.time())
        now = time.time()
        flashed = []
        for op in f.beat("h1")["ops"]:
            if op["op"] == "flash":
                flashes += 1
                ok = flashes == 1
                message = None if ok else "board not answering"
                flashed.append({"id": op["id"], "ok": ok, "message": message, "started_at": now, "finished_at": now})
        if flashed:
            f.beat("h1", op_results=flashed)
        for check in f.take("h1"):
            tiers.append(check["params"]["tier"])
            ended = finish(check, code=None, outcome="timeout")
            ended[-1].update(hung)
            f.events("h1", ended)
        with f.store.read() as conn:
            if [c for c in open_cases(conn) if c.case.phase is Phase.OPERATE]:
                break
    assert tiers == ["L1", "L2"], tiers  # after the flash, then the case's after the flash back failed

    status = f.client.get(f"/v1/rollouts/{rollout}", headers=admin).json()
    [board] = status["boards"]
    [wave] = status["wave_records"]
    with f.store.read() as conn:
        e = t.board_events.c
        events = conn.execute(
            sa.select(e.to_state, e.reason).where(e.from_state != e.to_state, e.from_state.is_not(None)).order_by(e.id)
        ).all()
        [case] = open_cases(conn)
    figures = (status["state"], [wave["verdict"]], board["step"], wave["gate"]["check_failure_rate"]["wave"])
    return [(ev.to_state, ev.reason) for ev in events], figures, case.case.evidence


def rollout_through_the_simulator() -> Rolled:
    sc = _scenario(boards=1, seconds=3000.0)  # ends during the soft reset (3000 s)
    plan = RolloutPlan(canary=1, control=0, soak_s=0, shares=(1.0,))
    sim = RolloutSim(sc, [RolloutRun("sim-g1", Image("2.0.0"), 10.0, plan)])
    [b] = sim.boards
    sim.inject(GENERATIONS["sim-g1"].flash_s + 45.0, b.id, "hang")  # flashed, before its check
    _, [report] = sim.run_rollouts()
    transitions = [(str(tr.to_state), tr.reason) for tr in sim.transitions if tr.at > 0]
    [wave] = report.waves
    r = sim.rollouts[0]
    figures = (report.state, [wave["verdict"]], str(r.steps[b.id]), wave["gate"]["check_failure_rate"]["wave"])
    assert b.case is not None
    return transitions, figures, b.case.evidence


def _scenario(*, boards: int, seconds: float) -> Scenario:
    """One host of ``boards`` boards, quiet (no fault but the story's), idle (no job but the
    story's), with the story's health configuration and host thresholds."""
    quiet = FaultModel(
        board_faults_per_1000_board_days=0.0, silent_corruption_per_1000_board_days=0.0, lemon_share=0.0,
        host_loss_per_1000_host_days=0.0,
    )  # fmt: skip
    never = Arrival.model_validate({"per_hour": 1, "from": 1e9})
    idle = WorkloadModel(teams=(Team(name="compiler", share=1.0, jobs=(JobKind(),), arrivals=(never,)),))
    return Scenario(
        boards=boards, days=seconds / 86400, boards_per_host=boards, generations=("sim-g1",), faults=quiet,
        workload=idle, health=HEALTH, heartbeat_s=2.0, liveness=LIVENESS, op_s=dict.fromkeys(RemedyOp, 3000.0),
    )  # fmt: skip
