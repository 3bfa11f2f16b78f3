"""The fleet simulator on scripted faults: what each policy does, step by step, on a small fleet."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fleetyard.domain.board import BoardState
from fleetyard.domain.health_config import BreakerPolicy
from fleetyard.policy.brakes import BreakerLimits
from fleetyard.sim import FaultKind, FaultModel, FleetSim, Scenario, SimPolicy, SimReport, compare, simulate

QUIET = FaultModel(
    board_faults_per_1000_board_days=0.0,
    silent_corruption_per_1000_board_days=0.0,
    host_loss_per_1000_host_days=0.0,
    lemon_share=0.0,
)
SMALL = Scenario(boards=32, days=1.0, faults=QUIET, seed=3)
BOARD = "h00001-2"
T = 5000.0  # when the fault strikes


def _trail(sim: FleetSim, board: str = BOARD) -> list[tuple[float, BoardState, str]]:
    return [(t.at, t.to_state, t.reason) for t in sim.transitions if t.board == board and t.at > 0]


def _run(
    policy: SimPolicy, kind: FaultKind, *, permanent: bool = False, scenario: Scenario = SMALL
) -> tuple[FleetSim, SimReport]:
    sim = FleetSim(scenario, policy)
    sim.inject(T, BOARD, kind, permanent=permanent)
    return sim, sim.run()


def test_a_hung_board_is_seen_within_a_heartbeat_and_healed_by_a_soft_reset() -> None:
    sim, report = _run(SimPolicy.FLEETYARD, FaultKind.HANG)
    trail = _trail(sim)
    (t0, s0, why0), (t1, s1, _), (t2, s2, why2) = trail[:3]
    assert s0 is BoardState.SUSPECT and why0 == "failed its probe: board not responding"
    assert T < t0 <= T + SMALL.heartbeat_s + SMALL.health_pass_s
    assert s1 is BoardState.REMEDIATING and t1 == t0
    assert s2 is BoardState.AVAILABLE and why2.startswith("healed by soft_reset")
    assert t2 == pytest.approx(t0 + 60.0 + 120.0)  # the reset, then its L2 check
    assert sim.board_state(BOARD) in (BoardState.AVAILABLE, BoardState.ALLOCATED)
    assert report.mttd_s == pytest.approx(t0 - T)


def test_a_permanent_fault_goes_up_the_ladder_to_quarantine_with_the_evidence() -> None:
    sim, _ = _run(SimPolicy.FLEETYARD, FaultKind.HANG, permanent=True)
    states = [s for _, s, _ in _trail(sim)]
    assert states == [BoardState.SUSPECT, BoardState.REMEDIATING, BoardState.QUARANTINED]
    reason = _trail(sim)[-1][2]
    assert reason.startswith("remediation exhausted after: failed its probe: board not responding")
    hung = "L2 check: failed (over its time limit of 900 s)"  # the agent stops a hung check at its limit
    for step in ("soft_reset: passed", "reflash: passed", "host_reboot: passed", hung):
        assert step in reason
    assert sim.board_state(BOARD) is BoardState.QUARANTINED


def test_silent_corruption_is_caught_by_the_next_l1_check_and_quarantined() -> None:
    sim, report = _run(SimPolicy.FLEETYARD, FaultKind.SILENT_CORRUPTION, permanent=True)
    (t0, s0, why0), *_ = _trail(sim)
    assert s0 is BoardState.SUSPECT and why0 == "L1 check failed: output differs from the golden result"
    l1 = SMALL.health.of("sim-g1").l1
    longest_job = max(SMALL.workload.time_limit_s(k.max_s) for t in SMALL.workload.teams for k in t.jobs)
    assert t0 - T <= l1.every_s + longest_job
    assert sim.board_state(BOARD) is BoardState.QUARANTINED
    assert (report.sdc_caught, report.sdc_missed) == (1, 0)
    assert report.jobs_corrupt >= 1  # the work it did before its check computed wrong numbers


def test_without_checks_silent_corruption_is_never_seen_and_counts_as_down() -> None:
    sim, report = _run(SimPolicy.NO_CHECKS, FaultKind.SILENT_CORRUPTION, permanent=True)
    assert _trail(sim) == []
    assert (report.sdc_caught, report.sdc_missed) == (0, 1)
    assert report.availability_accounted == 1.0  # the event log sees nothing wrong …
    down = (SMALL.days * 86400 - T) / (SMALL.boards * SMALL.days * 86400)
    assert report.availability == pytest.approx(1.0 - down)  # … but the board was not sound
    assert report.goodput_loss > 0


def test_manual_clearing_waits_for_the_operator() -> None:
    sim, _ = _run(SimPolicy.MANUAL, FaultKind.HANG)
    (t0, s0, _), (t1, s1, why1), (_, s2, why2) = _trail(sim)[:3]
    assert s0 is BoardState.SUSPECT
    assert s1 is BoardState.REMEDIATING and t1 == pytest.approx(t0 + SMALL.operator_response_s)
    assert why1 == "operator: soft_reset"
    assert s2 is BoardState.AVAILABLE and why2 == "passed its L1 check"


def test_without_checks_a_hung_board_is_seen_when_its_job_times_out() -> None:
    sim, report = _run(SimPolicy.NO_CHECKS, FaultKind.HANG)
    (t0, s0, why0), (_, s1, why1), (_, s2, _) = _trail(sim)[:3]
    assert s0 is BoardState.SUSPECT and why0 == "timeout of a job (board hung)"
    assert t0 - T > 600  # a job's time limit, not a heartbeat
    assert s1 is BoardState.REMEDIATING and "soft_reset" in why1 and s2 is BoardState.AVAILABLE
    assert report.jobs_failed >= 1  # a timeout fails the job (DESIGN.md's outcome table)
    assert report.availability < report.availability_accounted


def test_a_lost_host_goes_offline_its_work_is_requeued_and_its_boards_pass_l1_when_back() -> None:
    sim = FleetSim(SMALL, SimPolicy.FLEETYARD)
    sim.lose_host(T, 1, 3600.0)
    report = sim.run()
    trail = _trail(sim)
    (t0, s0, why0), (_, s1, why1), (_, s2, why2) = trail[:3]
    assert s0 is BoardState.OFFLINE and why0 == "host lost: no heartbeat for 60 s"
    grace = SMALL.liveness.lost_after_s  # the controller's: a shorter silence is a blip
    assert grace - SMALL.heartbeat_s < t0 - T <= grace + SMALL.health_pass_s
    assert s1 is BoardState.SUSPECT and why1 == "host back: must pass a check before service"
    assert s2 is BoardState.AVAILABLE and why2.startswith("passed its L1 check")
    assert report.attempts_lost >= 1 and report.jobs_failed == 0  # re-queued, not failed


def test_a_board_that_keeps_failing_is_quarantined_as_a_lemon() -> None:
    sim = FleetSim(SMALL, SimPolicy.FLEETYARD)
    for k in range(5):
        sim.inject(T + k * 3600.0, BOARD, FaultKind.HANG)
    report = sim.run()
    assert sim.board_state(BOARD) is BoardState.QUARANTINED
    assert _trail(sim)[-1][2].startswith("lemon: 4 incidents in 7 days (more than 3)")
    assert report.lemons == 1


def test_the_circuit_breaker_stops_taking_boards_out() -> None:
    health = SMALL.health.model_copy(update={"breaker": BreakerPolicy(fraction=0.01, boards=2)})
    scenario = dataclasses.replace(SMALL, health=health)
    sim = FleetSim(scenario, SimPolicy.FLEETYARD)
    boards = [f"h0000{h}-{s}" for h in range(2) for s in range(2)]  # one generation
    for i, b in enumerate(boards):
        sim.inject(T + i, b, FaultKind.HANG, permanent=True)
    report = sim.run()
    assert BreakerLimits.of(scenario.health).limit(32) == 1
    # The first board goes out; the next trips the breaker, and nothing more goes out until an
    # operator resets it (here: after the operator's response time; then it trips again).
    left = sorted((t.at, t.board) for t in sim.transitions if t.at > 0 and t.to_state is BoardState.SUSPECT)
    assert left[0][1] == "h00000-0" and T < left[0][0] < T + 20
    assert left[1][0] >= T + scenario.operator_response_s
    assert report.breaker_trips >= 1


def test_the_same_scenario_gives_the_same_figures() -> None:
    scenario = dataclasses.replace(SMALL, faults=FaultModel(board_faults_per_1000_board_days=200.0), boards=64)
    a, b = simulate(scenario, "fleetyard").as_dict(), simulate(scenario, "fleetyard").as_dict()
    for timing in ("wall_s", "plan_p50_ms", "plan_p99_ms"):  # the host's clock, not the model's
        a.pop(timing)
        b.pop(timing)
    assert a == b
    assert a["faults"]  # the fault model struck


def test_under_a_heavy_fault_load_self_healing_beats_both_baselines() -> None:
    scenario = Scenario(
        boards=256, days=4.0, seed=1, faults=FaultModel(board_faults_per_1000_board_days=40.0,
                                                        silent_corruption_per_1000_board_days=4.0)
    )  # fmt: skip
    fy, manual, none = compare(scenario, workers=1)
    assert (fy.policy, manual.policy, none.policy) == ("fleetyard", "manual", "no-checks")
    assert fy.availability > manual.availability
    assert fy.availability > none.availability
    assert fy.mttd_s is not None and fy.mttd_s <= 3 * scenario.heartbeat_s
    assert none.mttd_s is None or none.mttd_s > fy.mttd_s
    assert fy.sdc_missed <= none.sdc_missed


def test_fleetyard_sim_prints_the_policies_side_by_side(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fleetyard.cli.main import app

    runner = CliRunner()
    table = runner.invoke(app, ["sim", "--boards", "64", "--days", "1", "--faults", "50", "--workers", "1"])
    assert table.exit_code == 0, table.output
    for text in ("fleetyard", "manual", "no-checks", "availability (in service and sound)", "MTTD, dead board"):
        assert text in table.stdout
    health = tmp_path / "health.yaml"
    health.write_text("generations: {default: {l1: {every_s: 3600}}}\nbreaker: {fraction: 0.5}\n")
    js = runner.invoke(
        app, ["sim", "--boards", "64", "--days", "1", "--policy", "fleetyard", "--health", str(health), "--json"]
    )
    assert js.exit_code == 0, js.output
    [report] = json.loads(js.stdout)
    assert report["policy"] == "fleetyard" and report["boards"] == 64 and 0 < report["availability"] <= 1
    health.write_text("generations: {default: {l1: {every_s: -1}}}\n")
    bad = runner.invoke(app, ["sim", "--boards", "64", "--days", "1", "--health", str(health)])
    assert bad.exit_code == 1 and "generations.default.l1.every_s" in bad.output and str(health) in bad.output


@pytest.mark.parametrize("policy", list(SimPolicy))
def test_under_a_storm_of_faults_every_transition_keeps_to_the_lifecycle(policy: SimPolicy) -> None:
    # The board lifecycle's allow-list is checked on every transition the simulator makes.
    storm = FaultModel(
        board_faults_per_1000_board_days=80.0,
        host_loss_per_1000_host_days=40.0,
        silent_corruption_per_1000_board_days=8.0,
        lemon_share=0.05,
    )
    report = simulate(Scenario(boards=200, days=6.0, seed=11, faults=storm), policy)
    assert sum(report.faults.values()) > 50 and report.faults.get("host_loss", 0) > 0
    assert 0.5 < report.availability <= report.availability_accounted <= 1.0
    assert report.jobs_done > 0


# ---- noise: none of it is a fault


def test_a_blip_within_the_grace_changes_nothing_and_one_past_it_counts_against_the_policy() -> None:
    sim = FleetSim(SMALL, SimPolicy.FLEETYARD)
    host = sim.by_id[BOARD].host
    sim.blip(T, host, 40.0)  # unreachable (no new work) for a while, never lost
    report = sim.run()
    assert not [t for t in sim.transitions if t.at > 0 and t.to_state is BoardState.OFFLINE]
    assert (report.blips, report.false_requeues, report.false_takeouts_per_1000_board_days) == (1, 0, 0.0)
    # Silent past the grace: lost as a failed host would be (the controller cannot tell), and
    # the figures say that it was for nothing.
    sim = FleetSim(SMALL, SimPolicy.FLEETYARD)
    sim.blip(T, host, SMALL.liveness.lost_after_s + 30.0)
    report = sim.run()
    assert _trail(sim)[0][1] is BoardState.OFFLINE
    assert report.false_takeouts_per_1000_board_days > 0 and report.false_requeues >= 1


def test_a_control_plane_that_falls_behind_loses_no_host_and_a_host_down_across_it_gets_its_grace_again() -> None:
    """For 90 s nothing records heartbeats and the controller does not pass (past the 60 s grace):
    caught up, it judges every host by the policy and loses none for its own absence; a host that
    went down just before is lost a whole grace after the controller caught up, not at once."""
    grace = SMALL.liveness.lost_after_s
    sim = FleetSim(SMALL, SimPolicy.FLEETYARD)
    host = sim.by_id[BOARD].host
    sim.stall(T, 90.0)
    sim.lose_host(T - 10.0, host, 3600.0)
    report = sim.run()
    assert report.stalls == 1
    assert (report.false_requeues, report.false_takeouts_per_1000_board_days) == (0, 0.0)
    offline = [t for t in sim.transitions if t.at > 0 and t.to_state is BoardState.OFFLINE]
    assert {t.board for t in offline} == {b.id for b in sim.host_boards[host]}
    assert all(T + 90.0 + grace <= t.at <= T + 90.0 + grace + 2 * SMALL.health_pass_s for t in offline)
    # Without the stall the same host is lost a grace after its last heartbeat.
    sim = FleetSim(SMALL, SimPolicy.FLEETYARD)
    sim.lose_host(T - 10.0, host, 3600.0)
    sim.run()
    [first, *_] = [t for t in sim.transitions if t.at > 0 and t.to_state is BoardState.OFFLINE]
    assert first.at < T + grace


def test_a_check_that_could_not_run_is_run_again_and_takes_nothing_out() -> None:
    noisy = dataclasses.replace(QUIET, checks_lost_share=0.3)
    report = FleetSim(dataclasses.replace(SMALL, faults=noisy), SimPolicy.FLEETYARD).run()
    assert report.checks_lost > 0
    assert report.false_takeouts_per_1000_board_days == 0.0 and report.false_requeues == 0


def test_a_noisy_fleet_takes_no_board_out_and_reruns_no_work_for_the_noise() -> None:
    scenario = Scenario(boards=400, days=3.0, faults=FaultModel().noisy(blips_per_host_day=0.5), seed=5)
    report = FleetSim(scenario, SimPolicy.FLEETYARD).run()
    assert report.blips > 0 and report.checks_lost > 0
    assert report.false_takeouts_per_1000_board_days == 0.0
    assert report.false_requeues == 0 and report.unapproved_boards_served == 0
    assert report.availability > 0.99
