"""Rollouts in the fleet simulator: the controller's rollout policy over a small simulated fleet."""

from __future__ import annotations

from fleetyard.domain.board import BoardState
from fleetyard.drivers.sim import GENERATIONS
from fleetyard.policy.rollout import RolloutPlan, Step
from fleetyard.sim import FaultModel, Scenario
from fleetyard.sim.rollout import Image, RolloutRun, RolloutSim

QUIET = FaultModel(
    board_faults_per_1000_board_days=0.0,
    silent_corruption_per_1000_board_days=0.0,
    host_loss_per_1000_host_days=0.0,
    lemon_share=0.0,
)
HOUR = 3600.0
# Short jobs, so that drains do not wait for hours; quotas promise 80 % of each generation.
FLEET = Scenario(boards=240, days=2.0, faults=QUIET, seed=5, quota_share=0.8)
PLAN = RolloutPlan(canary=4, shares=(0.25, 0.5, 1.0), soak_s=HOUR, control=4, drain="requeue", drain_timeout_s=600)


def _sim(image: Image, *, plan: RolloutPlan = PLAN, scenario: Scenario = FLEET) -> RolloutSim:
    return RolloutSim(scenario, [RolloutRun("sim-g1", image, 2 * HOUR, plan)])


def _gen_boards(sim: RolloutSim, gen: str = "sim-g1") -> list[str]:
    return [b.id for b in sim.boards if b.gen == gen]


def test_a_good_image_reaches_every_board_of_its_generation_wave_by_wave() -> None:
    sim = _sim(Image("1.5.0"))
    _, (report,) = sim.run_rollouts()
    assert report.state == "completed", report.waves
    boards = _gen_boards(sim)
    assert {sim.firmware[b] for b in boards} == {"1.5.0"}
    others = [b.id for b in sim.boards if b.gen != "sim-g1"]
    assert {sim.firmware[b] for b in others} <= {g.firmware for g in GENERATIONS.values()}  # untouched
    assert all(w["verdict"] is True for w in report.waves)
    assert report.waves[0]["boards"] == 4
    assert sum(w["boards"] for w in report.waves) == len(boards)
    starts = [w["started_at"] for w in report.waves]
    assert starts == sorted(starts)
    for prev, nxt in zip(report.waves, report.waves[1:], strict=False):
        # a wave starts only after the one before it was flashed and soaked
        assert nxt["started_at"] >= prev["flashed_at"] + PLAN.soak_s
    assert report.exposed_boards == len(boards)
    assert report.min_headroom_at_drain is not None and report.min_headroom_at_drain >= 0


def test_an_image_that_corrupts_results_halts_at_the_canary_and_every_flashed_board_goes_back() -> None:
    sim = _sim(Image("1.5.0-bad", sdc_per_board_hour=2.0))
    _, (report,) = sim.run_rollouts()
    assert report.state == "rolled_back"
    assert report.halted_at_wave == 0
    assert any("health-check failure rate" in r for r in report.reasons)
    assert report.exposed_boards == 4  # only the canary ever ran it
    r = sim.rollouts[0]
    canary = [b for b, w in r.wave_of.items() if w == 0]
    for b in canary:
        assert r.steps[b] in (Step.REVERTED, Step.FAILED)
        if r.steps[b] is Step.REVERTED:
            assert sim.firmware[b] == GENERATIONS["sim-g1"].firmware
            assert sim.board_state(b) in (BoardState.AVAILABLE, BoardState.ALLOCATED)
    assert all(s is Step.PENDING for b, s in r.steps.items() if r.wave_of[b] not in (0,))
    # A board the image broke beyond the ladder is quarantined: onboarding flashes the generation's
    # standard (still the old image) after its repair. Every other board runs the old image.
    serving = [b for b in _gen_boards(sim) if sim.board_state(b) is not BoardState.QUARANTINED]
    assert {sim.firmware[b] for b in serving} == {GENERATIONS["sim-g1"].firmware}


def test_the_same_image_unstaged_reaches_the_whole_generation() -> None:
    """The peer: one wave of everything. The gate still halts it, but only after every board ran it."""
    plan = RolloutPlan(canary=10_000, shares=(1.0,), soak_s=HOUR, control=4, drain="requeue", drain_timeout_s=600)
    staged = _sim(Image("1.5.0-bad", sdc_per_board_hour=2.0)).run_rollouts()[1][0]
    unstaged = _sim(Image("1.5.0-bad", sdc_per_board_hour=2.0), plan=plan).run_rollouts()[1][0]
    assert unstaged.exposed_boards > 10 * staged.exposed_boards
    assert unstaged.jobs_corrupt_on_image > staged.jobs_corrupt_on_image


def test_drains_never_take_the_generation_below_what_the_quotas_need() -> None:
    # Quotas that promise 97 % leave a sliver of headroom: the rollout crawls but never cuts into it.
    tight = Scenario(boards=240, days=1.0, faults=QUIET, seed=5, quota_share=0.97)
    sim = _sim(Image("1.5.0"), scenario=tight)
    _, (report,) = sim.run_rollouts()
    assert report.min_headroom_at_drain is not None and report.min_headroom_at_drain >= 0
    gen = len(_gen_boards(sim))
    assert report.peak_out_share <= (gen - int(0.97 * gen) + 3) / gen


def test_a_wave_whose_flashes_fail_halts_the_rollout() -> None:
    sim = _sim(Image("1.5.0", flash_fails=1.0))
    _, (report,) = sim.run_rollouts()
    assert report.state == "rolled_back" and report.halted_at_wave == 0
    assert any("flashes failed" in r for r in report.reasons)
    assert report.exposed_boards == 0
    r = sim.rollouts[0]
    failed = [b for b, s in r.steps.items() if s is Step.FAILED]
    assert sorted(failed) == sorted(b for b, w in r.wave_of.items() if w == 0)
    for b in _gen_boards(sim):  # a failed flash leaves the old image (the sim driver's A/B banks)
        assert sim.firmware[b] == GENERATIONS["sim-g1"].firmware
