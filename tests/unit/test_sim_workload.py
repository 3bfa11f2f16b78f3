"""The simulator's workload files (sim/workload.py) and what a preemptible workload does in the
fleet simulator: the same policy code as the controller, pass after pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetyard.errors import BadRequest
from fleetyard.sim import Scenario
from fleetyard.sim.fleet import simulate
from fleetyard.sim.model import FaultModel
from fleetyard.sim.workload import load_workload, parse_workload

ROOT = Path(__file__).resolve().parents[2]
QUIET = FaultModel(
    board_faults_per_1000_board_days=0.0, silent_corruption_per_1000_board_days=0.0, host_loss_per_1000_host_days=0.0
)

LENDER_AND_BORROWER = """
teams:
  - name: lender
    share: 0.5
    cohort: c
    jobs: [{name: eval, boards: [1], median: 30m, sigma: 0.3, max: 1h}]
    arrivals: [{backlog: 40, from: 2h}]    # idle for 2 h, then keeps 40 queued
  - name: borrower
    share: 0.5
    cohort: c
    jobs: [{name: sweep, boards: [1, 2], median: 40m, sigma: 0.5, max: 2h}]
    arrivals: [{backlog: 40}]
"""


def test_the_multi_team_day_parses() -> None:
    work = load_workload(ROOT / "examples" / "workloads" / "multi_team_day.yaml")
    assert len(work.teams) == 5
    assert {t.cohort for t in work.teams} == {"build", "research"}
    assert sum(t.share for t in work.teams) == pytest.approx(1.0)
    assert {k.priority_class for t in work.teams for k in t.jobs} == {"ci-gate", "interactive", "batch", "scavenger"}
    assert work.preemptible and not work.without_preemption().preemptible


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("teams: [{name: a, share: 0.5, jobs: [{class: urgent}]}]", "class 'urgent' is not a priority class"),
        ("teams: [{name: a, share: 0.7, jobs: [{}]}, {name: b, share: 0.7, jobs: [{}]}]", "sum to 1.4"),
        ("teams: [{name: a, share: 1, jobs: [{}], arrivals: [{backlog: 3, per_hour: 2}]}]", "exactly one of"),
        ("teams: [{name: a, share: 1, jobs: [{name: x}], arrivals: [{backlog: 3, kinds: [y]}]}]", "kinds ['y']"),
        ("teams: [{name: a, share: 1, jobs: [{median: soon}]}]", "teams.0.jobs.0.median"),
        ("teams: [{name: a, share: 1, jobs: [{boards: [0]}]}]", "teams.0.jobs.0.boards.0"),
        ("teams: [{name: a, share: 1, jobs: [{}], colour: red}]", "colour"),
        ("[1, 2]", "expected a mapping with a 'teams' list"),
        ("teams: [", "not valid YAML"),
    ],
)
def test_a_bad_workload_names_the_field_and_the_fix(text: str, named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_workload(text, source="w.yaml")
    assert named in str(caught.value)
    assert str(caught.value).startswith("w.yaml: ")


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="cannot read it"):
        load_workload(tmp_path / "nope.yaml")


def test_durations_read_as_an_engineer_writes_them() -> None:
    work = parse_workload(
        "teams: [{name: a, share: 1, jobs: [{median: 30m, max: 2h}], arrivals: [{burst: [1, 2], every: 3h}]}]"
    )
    kind, arrival = work.teams[0].jobs[0], work.teams[0].arrivals[0]
    assert (kind.median_s, kind.max_s, arrival.every_s) == (1800.0, 7200.0, 10800.0)


def test_a_lender_coming_back_reclaims_its_quota_by_preemption_and_no_job_is_thrown_about() -> None:
    work = parse_workload(LENDER_AND_BORROWER)
    scenario = Scenario(boards=64, days=0.5, hosts_per_rack=4, seed=3, faults=QUIET, workload=work, pass_s=30.0)
    r = simulate(scenario, "fleetyard")
    # The borrower ran on the lender's idle quota for 2 h; the lender took it back by preemption.
    assert r.preemptions > 0
    assert 0 < r.wasted_board_hours < 0.1 * r.board_hours_run
    assert r.max_preemptions_per_job <= 2
    assert r.utilisation_waiting is not None and r.utilisation_waiting > 0.9
    assert r.plan_passes > 0 and r.plan_p99_ms is not None
    # The same work with nothing preemptible: no preemption, and the lender waits for boards to free.
    peer = simulate(Scenario(**{**scenario.__dict__, "workload": work.without_preemption()}), "fleetyard")
    assert peer.preemptions == 0 and peer.wasted_board_hours == 0.0
    assert peer.utilisation_waiting is None  # not asked for: the fault study skips the count


def test_a_burst_arrives_every_period_and_none_after_until() -> None:
    work = parse_workload(
        """
teams:
  - name: ci
    share: 1
    jobs: [{name: gate, boards: [1], median: 5m, sigma: 0.1, max: 10m, class: ci-gate, preemptible: false}]
    arrivals: [{burst: [10, 10], every: 1h, first: 30m, until: 3h}]
"""
    )
    r = simulate(Scenario(boards=64, days=0.25, hosts_per_rack=4, faults=QUIET, workload=work), "fleetyard")
    assert r.jobs_started == 30  # at 0:30, 1:30 and 2:30; none at 3:30, nor at 0:00


def test_fleetyard_sim_runs_a_workload_file_and_shows_how_the_scheduler_held(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fleetyard.cli.main import app

    path = tmp_path / "day.yaml"
    path.write_text(LENDER_AND_BORROWER)
    args = ["sim", "--boards", "64", "--days", "0.2", "-p", "fleetyard", "--workers", "1", "--hosts-per-rack", "4"]
    result = CliRunner().invoke(app, [*args, "--workload", str(path)])
    assert result.exit_code == 0, result.output
    assert "preemptions" in result.output and "fair-share error" in result.output
    path.write_text("teams: [{name: a, share: 2, jobs: [{}]}]")
    result = CliRunner().invoke(app, [*args, "--workload", str(path)])
    assert result.exit_code == 1
    assert "teams.0.share" in result.output
