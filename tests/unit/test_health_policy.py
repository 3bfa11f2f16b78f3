"""The health-check configuration, telemetry rules, L1 scheduling and the remediation ladder (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetyard.domain.health_config import (
    DEFAULT_HEALTH,
    CheckTier,
    GenerationHealth,
    L1Policy,
    RemedyOp,
    RuleAction,
    parse_health_config,
)
from fleetyard.errors import BadRequest
from fleetyard.policy.health import Reading, findings, l1_due, worst
from fleetyard.policy.remediation import Do, Phase, on_result, on_time, open_case

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config" / "health.yaml"


def test_the_shipped_example_is_the_default() -> None:
    assert parse_health_config(EXAMPLE.read_text(), source=str(EXAMPLE)) == DEFAULT_HEALTH


def test_a_generation_overrides_default_key_by_key() -> None:
    cfg = parse_health_config(
        """
        generations:
          default:
            l1: {every_s: 3600, every_jobs: 10}
            ladder: [{step: soft_reset, timeout_s: 60}]
          sim-g3:
            l1: {every_s: 600}
        """
    )
    assert cfg.of("sim-g1").l1.every_s == 3600
    assert cfg.of("sim-g3").l1 == L1Policy(every_s=600)  # l1 replaced whole, not merged field by field
    assert [s.step for s in cfg.of("sim-g3").ladder] == [RemedyOp.SOFT_RESET]  # from default
    assert cfg.of("never-named") == cfg.generations["default"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("generations: {default: {rules: [{name: t, metric: temperature_c}]}}", "exactly one of above"),
        ("generations: {default: {rules: [{name: t, metric: x, above: 1, below: 0}]}}", "sets above, below"),
        (
            "generations: {default: {rules: [{name: t, metric: x, above: 1, action: quarantine}]}}",
            "make it critical",
        ),
        ("generations: {default: {ladder: [{step: kick, timeout_s: 5}]}}", "ladder.0.step"),
        ("generations: {default: {ladder: []}}", "ladder"),
        ("generations: {default: {l2: {duration_s: 600, timeout_s: 60}}}", "at least duration_s"),
        ("rules: []", "'generations'"),
        ("generations: {default: {}}\nextra: 1", "unknown top-level"),
        ("generations: [", "not valid YAML"),
        (
            "generations: {default: {rules: [{name: a, metric: x, above: 1}, {name: a, metric: y, above: 1}]}}",
            "repeated: a",
        ),
    ],
)
def test_a_bad_config_names_the_field_and_the_fix(text: str, says: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_health_config(text, source="health.yaml")
    assert "health.yaml" in exc.value.message
    assert says in exc.value.message


RULES = DEFAULT_HEALTH.of("any").rules


def test_threshold_rules_fire_on_the_value() -> None:
    hot = findings(RULES, Reading(10.0, {"temperature_c": 97.0}))
    assert [f.rule for f in hot] == ["overheating", "running-hot"]
    top = worst(hot)
    assert top is not None and top.action is RuleAction.REMEDIATE and "97" in top.message
    warm = findings(RULES, Reading(10.0, {"temperature_c": 88.0}))
    assert [f.rule for f in warm] == ["running-hot"] and worst(warm) is None  # a warning does not act
    assert findings(RULES, Reading(10.0, {"temperature_c": 60.0, "power_w": 300.0})) == []


def test_counter_rules_fire_on_growth_not_on_the_total() -> None:
    old_board = Reading(100.0, {"ecc_corrected": 1e6, "ecc_uncorrected": 12.0})
    # A long-lived board's totals are large, but they did not move: nothing fires.
    assert findings(RULES, Reading(110.0, dict(old_board.values)), old_board) == []
    # Without a previous report, growth rules stay quiet.
    assert findings(RULES, old_board) == []
    storm = Reading(110.0, {"ecc_corrected": 1e6 + 2500.0, "ecc_uncorrected": 12.0})
    assert [f.rule for f in findings(RULES, storm, old_board)] == ["ecc-storm"]  # 250/s > 50/s
    fatal = Reading(110.0, {"ecc_corrected": 1e6 + 2500.0, "ecc_uncorrected": 13.0})
    top = worst(findings(RULES, fatal, old_board))
    assert top is not None and top.rule == "ecc-uncorrectable" and top.action is RuleAction.QUARANTINE


def test_l1_is_due_by_time_or_by_jobs_and_before_first_service() -> None:
    pol = L1Policy(every_s=3600, every_jobs=5)
    assert l1_due(pol, last_l1_at=None, jobs_since=0, now=0.0) == "L1 due: never checked"
    assert l1_due(pol, last_l1_at=0.0, jobs_since=4, now=3599.0) is None
    assert "5 jobs" in (l1_due(pol, last_l1_at=0.0, jobs_since=5, now=10.0) or "")
    assert "1.0 h" in (l1_due(pol, last_l1_at=0.0, jobs_since=0, now=3600.0) or "")


POLICY = GenerationHealth()


def test_a_suspect_board_that_passes_its_first_check_heals_without_a_step() -> None:
    case, act = open_case("b1", cause="infrastructure error", now=0.0, policy=POLICY, check_first=True)
    assert case is not None and case.phase is Phase.CHECK and act.do is Do.CHECK and act.tier is CheckTier.L2
    done, act = on_result(case, ok=True, detail="", now=130.0, policy=POLICY)
    assert done is None and act.do is Do.HEAL and "passed its L2 check" in act.reason


def test_a_check_that_could_not_run_runs_again_and_counts_as_no_failure() -> None:
    case, act = open_case("b1", cause="infrastructure error", now=0.0, policy=POLICY, check_first=True)
    assert case is not None
    again, act = on_result(case, ok=None, detail="host lost", now=30.0, policy=POLICY)
    assert again is not None and act.do is Do.CHECK and act.tier is CheckTier.L2
    assert (again.step, again.phase, again.deadline) == (case.step, case.phase, case.deadline)  # no escalation
    assert "could not run" in again.evidence[-1] and "host lost" in again.evidence[-1]
    done, act = on_result(again, ok=True, detail="", now=130.0, policy=POLICY)
    assert done is None and act.do is Do.HEAL
    # Not forever: the third check that could not run counts as failed, and the ladder goes on.
    twice, _ = on_result(again, ok=None, detail="agent error", now=40.0, policy=POLICY)
    assert twice is not None
    escalated, act = on_result(twice, ok=None, detail="agent error", now=50.0, policy=POLICY)
    assert act.do is Do.OPERATE and escalated is not None and escalated.step == 0
    assert "could not run 3 times" in escalated.evidence[-1]


def test_the_ladder_escalates_step_by_step_and_ends_in_quarantine_with_the_evidence() -> None:
    case, act = open_case("b1", cause="failed its probe", now=0.0, policy=POLICY, check_first=False)
    seen = []
    now = 0.0
    while case is not None:
        seen.append((act.do, act.op))
        now += 10.0
        # every operation runs, but no check passes
        ok = act.do is Do.OPERATE
        case, act = on_result(case, ok=ok, detail="" if ok else "still hung", now=now, policy=POLICY)
    assert seen == [
        (Do.OPERATE, RemedyOp.SOFT_RESET),
        (Do.CHECK, None),
        (Do.OPERATE, RemedyOp.REFLASH),
        (Do.CHECK, None),
        (Do.OPERATE, RemedyOp.HOST_REBOOT),
        (Do.CHECK, None),
    ]
    assert act.do is Do.QUARANTINE
    assert act.reason.startswith("remediation exhausted after: failed its probe")
    assert "soft_reset: passed; L2 check: failed (still hung); reflash: passed" in act.reason


def test_a_step_that_heals_returns_the_board_after_its_check() -> None:
    case, _ = open_case("b1", cause="hang", now=0.0, policy=POLICY, check_first=False)
    assert case is not None
    case, act = on_result(case, ok=True, detail="", now=60.0, policy=POLICY)
    assert case is not None and act.do is Do.CHECK
    case, act = on_result(case, ok=True, detail="", now=200.0, policy=POLICY)
    assert case is None and act.do is Do.HEAL and act.reason.startswith("healed by soft_reset")


def test_a_phase_past_its_deadline_fails() -> None:
    case, _ = open_case("b1", cause="hang", now=0.0, policy=POLICY, check_first=False)
    assert case is not None and case.deadline == 120.0  # soft_reset's timeout
    assert on_time(case, now=120.0, policy=POLICY) is None
    moved = on_time(case, now=121.0, policy=POLICY)
    assert moved is not None
    nxt, act = moved
    assert nxt is not None and act.op is RemedyOp.REFLASH
    assert "soft_reset: failed (no answer within 120 s)" in nxt.evidence


@given(st.lists(st.booleans(), max_size=20), st.booleans())
def test_every_case_ends_healed_or_quarantined_within_the_ladder(results: list[bool], check_first: bool) -> None:
    case, act = open_case("b", cause="c", now=0.0, policy=POLICY, check_first=check_first)
    steps = 0
    for ok in [*results, *([False] * 10)]:
        if case is None:
            break
        case, act = on_result(case, ok=ok, detail="", now=float(steps), policy=POLICY)
        steps += 1
    assert case is None
    assert act.do in (Do.HEAL, Do.QUARANTINE)
    assert steps <= 2 * len(POLICY.ladder) + 1  # a first check, then an operation and a check per step


def test_a_board_where_the_same_job_fails_while_it_passes_elsewhere_is_blamed() -> None:
    from fleetyard.policy.blame import RankEnd, blame, fingerprint

    fp = fingerprint("validate", {"artifact": "a" * 64, "sets": 4})
    assert fp == fingerprint("validate", {"sets": 4, "artifact": "a" * 64})  # key order does not matter
    assert fp != fingerprint("validate", {"artifact": "a" * 64, "sets": 5})

    def end(board: str, passed: bool, at: float = 100.0, job: int = 1, f: str = fp) -> RankEnd:
        return RankEnd(f, board, passed, at, job, "success" if passed else "user_error")

    ends = [end("x", False, job=7), end("y", True), end("z", True)]
    assert blame(ends, now=200.0) == {"x": "job 7 failed here (user_error) while the same job passed on y, z"}
    # The job fails as often as it passes: the job's fault, not the boards'.
    assert blame([end("x", False), end("w", False), end("y", True), end("z", True)], now=200.0) == {}
    # It passed on x too: no blame. Another job's passes prove nothing. Out of the window: forgotten.
    assert blame([*ends, end("x", True)], now=200.0) == {}
    assert blame([end("x", False), end("y", True, f="other"), end("z", True, f="other")], now=200.0) == {}
    assert blame(ends, now=100.0 + 7 * 3600.0) == {}
