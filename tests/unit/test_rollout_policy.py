"""The rollout policy (pure): waves, gates, capacity, rollback and pause."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetyard.policy.rollout import (
    CONTROL,
    BoardSeen,
    Do,
    Figures,
    Gates,
    RolloutPlan,
    RolloutState,
    Step,
    WaveSeen,
    after,
    control_swaps,
    gate,
    next_acts,
    plan_waves,
    queue_need,
    soak_checks_in,
)

GATES = Gates()


def _ids(n: int) -> list[str]:
    return [f"B{i:04d}" for i in range(n)]


# ---- plan_waves


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 300),
    canary=st.integers(1, 20),
    control=st.integers(0, 20),
    shares=st.lists(st.floats(0.01, 1.0), min_size=0, max_size=4).map(lambda xs: (*sorted(xs), 1.0)),
    salt=st.text(max_size=8),
)
def test_waves_cover_every_board_exactly_once(n: int, canary: int, control: int, shares: tuple[float, ...],
                                              salt: str) -> None:  # fmt: skip
    plan = RolloutPlan(canary=canary, shares=shares, control=control)
    boards = _ids(n)
    waves, ctl = plan_waves(boards, plan, salt=salt)
    flat = [b for w in waves for b in w]
    assert sorted(flat) == sorted(boards)  # every board, once
    assert all(w for w in waves)  # no empty wave
    assert len(ctl) == (min(control, n - 1) if n > 1 else 0)  # at least one board is rolled before the controls
    assert set(ctl) <= set(waves[-1]) if waves else not ctl  # the controls go last
    if n > len(ctl):
        assert len([b for b in waves[0] if b not in ctl]) == min(canary, n - len(ctl))  # the canary first
    # Cumulative sizes never run ahead of the shares (besides the canary and one board a wave).
    taken = 0
    for i, w in enumerate(waves[1:-1], start=1):
        taken += len(waves[i - 1])
        assert taken + len(w) <= max(math.ceil(max(shares) * n), taken + 1)


def test_waves_of_a_small_generation() -> None:
    waves, ctl = plan_waves(_ids(8), RolloutPlan(canary=1, shares=(0.5, 1.0), control=1), salt="x")
    assert [len(w) for w in waves] == [1, 3, 4] and len(ctl) == 1 and ctl[0] in waves[-1]
    waves, ctl = plan_waves(_ids(1), RolloutPlan(canary=8, control=8), salt="x")
    assert waves == [["B0000"]] and ctl == []


def test_the_order_depends_on_the_salt_not_the_input_order() -> None:
    plan = RolloutPlan(canary=2, shares=(0.5, 1.0), control=2)
    a, _ = plan_waves(_ids(40), plan, salt="r1")
    b, _ = plan_waves(list(reversed(_ids(40))), plan, salt="r1")
    c, _ = plan_waves(_ids(40), plan, salt="r2")
    assert a == b and a != c


@pytest.mark.parametrize(
    ("kw", "what"),
    [
        ({"canary": 0}, "canary"),
        ({"shares": (0.5, 0.25, 1.0)}, "shares"),
        ({"shares": (0.5,)}, "last share"),
        ({"drain": "now"}, "drain"),
        ({"soak_s": -1}, "negative"),
    ],
)
def test_a_bad_plan_is_refused(kw: dict[str, object], what: str) -> None:
    with pytest.raises(ValueError, match=what):
        RolloutPlan(**kw)  # type: ignore[arg-type]


def test_a_plan_round_trips_through_its_dict() -> None:
    plan = RolloutPlan(canary=3, shares=(0.1, 1.0), soak_s=60, control=2, drain="requeue", gates=Gates(0.1))
    assert RolloutPlan.of(plan.as_dict()) == plan


def test_queue_need_counts_each_quota_as_far_as_its_work_uses_it() -> None:
    assert queue_need({"a": 10, "b": 4}, {"a": 3, "b": 9}) == 3 + 4
    assert queue_need({"a": 10}, {}) == 0
    assert queue_need({}, {"a": 5}) == 0


# ---- gate


def test_gate_passes_a_wave_like_its_control_boards() -> None:
    f = Figures(checks=10, check_failures=0, attempts=100, infra_errors=1, validations=10, validation_passes=10,
                throughput={"k": [100.0, 102.0]})  # fmt: skip
    v = gate(f, f, GATES)
    assert v.passed and not v.reasons
    assert v.table["throughput_ratio"]["wave"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("wave", "measure"),
    [
        (Figures(checks=10, check_failures=1), "health-check failure rate"),
        (Figures(attempts=100, infra_errors=5), "infra-error rate"),
        (Figures(validations=10, validation_passes=9), "validation pass rate"),
        (Figures(throughput={"k": [90.0]}), "benchmark throughput"),
    ],
)
def test_gate_fails_a_wave_worse_than_its_control_on_each_measure(wave: Figures, measure: str) -> None:
    control = Figures(checks=10, attempts=100, validations=10, validation_passes=10, throughput={"k": [100.0]})
    v = gate(wave, control, GATES)
    assert not v.passed
    assert len(v.reasons) == 1 and measure in v.reasons[0]


def test_a_failed_gate_says_what_it_compared() -> None:
    control = Figures(checks=8, check_failures=0, validations=20, validation_passes=20)
    wave = Figures(checks=16, check_failures=6, validations=10, validation_passes=7)
    assert gate(wave, control, GATES).reasons == (
        "health-check failure rate 37.5% on the wave (6 of 16) vs 0.0% on control boards (0 of 8), limit +2.0%",
        "validation pass rate 70.0% on the wave (7 of 10) vs 100.0% on control boards (20 of 20), limit -2.0%",
    )


def test_gate_within_the_margins_passes_and_no_data_on_the_wave_is_not_judged() -> None:
    control = Figures(checks=100, check_failures=1, attempts=100, throughput={"k": [100.0]})
    wave = Figures(checks=100, check_failures=2, attempts=100, infra_errors=1, throughput={"k": [96.0]})
    assert gate(wave, control, GATES).passed
    # Nothing on one side: reported, not judged.
    v = gate(Figures(), control, GATES)
    assert v.passed and v.table["check_failure_rate"] == {"wave": None, "control": 0.01, "limit": 0.03}
    v = gate(Figures(checks=1, check_failures=1), Figures(), GATES)
    assert v.passed and v.table["check_failure_rate"] == {"wave": 1.0, "control": None, "limit": None}
    # Benchmarks compare like with like only.
    assert gate(Figures(throughput={"a": [1.0]}), Figures(throughput={"b": [100.0]}), GATES).passed


def test_without_control_boards_a_wave_is_judged_against_a_clean_record() -> None:
    """A rollout without control boards still halts on a canary that fails its check after the
    flash, or a validation it no longer passes."""
    v = gate(Figures(checks=1, check_failures=1), Figures(), GATES, no_control=True)
    assert not v.passed and v.table["check_failure_rate"] == {"wave": 1.0, "control": None, "limit": 0.02}
    assert v.reasons == (
        "health-check failure rate 100.0% on the wave (1 of 1) vs no control boards: against none, limit +2.0%",
    )
    v = gate(Figures(validations=4, validation_passes=3, attempts=4), Figures(), GATES, no_control=True)
    assert not v.passed and "75.0% on the wave (3 of 4) vs no control boards: against all passed" in v.reasons[0]
    clean = Figures(checks=50, attempts=50, validations=5, validation_passes=5, throughput={"k": [10.0]})
    assert gate(clean, Figures(), GATES, no_control=True).passed  # throughput: no baseline, not judged


def test_gate_may_fail_on_several_measures_at_once() -> None:
    v = gate(Figures(checks=4, check_failures=4, attempts=10, infra_errors=10), Figures(checks=4, attempts=10), GATES)
    assert not v.passed and len(v.reasons) == 2


# ---- next_acts


def _board(i: int, wave: int, step: Step = Step.PENDING, **kw: object) -> BoardSeen:
    return BoardSeen(f"B{i:04d}", wave, step, 0.0, **{"drained": False, **kw})  # type: ignore[arg-type]


def _acts(boards: list[BoardSeen], *, state: RolloutState = RolloutState.RUNNING, wave: int = 0,
          waves: list[WaveSeen] | None = None, in_service: int = 100, need: int = 0, plan: RolloutPlan | None = None,
          now: float = 10.0, size: int = 100) -> list:  # type: ignore[type-arg]  # fmt: skip
    waves = waves or [WaveSeen(started_at=0.0), WaveSeen(), WaveSeen()]
    return next_acts(
        state=state, wave=wave, waves=waves, sizes=len(waves), boards=boards, plan=plan or RolloutPlan(canary=2),
        generation_size=size, in_service=in_service, need=need, now=now,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    wave_size=st.integers(1, 30),
    in_flight=st.integers(0, 30),
    in_service=st.integers(0, 60),
    need=st.integers(0, 60),
)
def test_drains_never_exceed_the_wave_cap_nor_what_the_queues_leave(
    wave_size: int, in_flight: int, in_service: int, need: int
) -> None:
    boards = [_board(i, 0) for i in range(wave_size)]
    boards += [_board(100 + i, 0, Step.FLASHING) for i in range(in_flight)]
    drains = [a for a in _acts(boards, in_service=in_service, need=need) if a.do is Do.DRAIN]
    total = wave_size + in_flight
    assert len(drains) <= max(0, min(total - in_flight, in_service - need))
    assert len(drains) + in_flight <= max(1, total) or not drains
    assert {a.board for a in drains} <= {b.id for b in boards if b.step is Step.PENDING}


def test_only_the_wave_under_way_is_drained_and_control_boards_wait() -> None:
    boards = [_board(0, 0), _board(1, 1), _board(2, CONTROL)]
    assert [(a.do, a.board) for a in _acts(boards)] == [(Do.DRAIN, "B0000")]


def test_each_step_moves_on_as_its_op_and_check_come_in() -> None:
    b = [
        _board(0, 0, Step.DRAINING, drained=True),
        _board(1, 0, Step.FLASHING, op_ok=True),
        _board(2, 0, Step.FLASHING, op_ok=False, detail="verify mismatch"),
        _board(3, 0, Step.CHECKING, check_ok=True),
        _board(4, 0, Step.CHECKING, check_ok=False, detail="wrong numbers"),
        _board(5, 0, Step.DRAINING),  # still runs its job: waits
    ]
    acts = {a.board: a for a in _acts(b)}
    assert acts["B0000"].do is Do.FLASH and acts["B0001"].do is Do.CHECK and acts["B0003"].do is Do.RELEASE
    assert acts["B0002"].do is Do.FAIL and "verify mismatch" in acts["B0002"].reason
    assert acts["B0004"].do is Do.FAIL and "wrong numbers" in acts["B0004"].reason
    assert "B0005" not in acts
    assert [after(s) for s in (Step.PENDING, Step.DRAINING, Step.FLASHING, Step.CHECKING)] == [
        Step.DRAINING, Step.FLASHING, Step.CHECKING, Step.DONE,
    ]  # fmt: skip


def test_steps_that_take_too_long_fail_and_requeue_drains_after_its_timeout() -> None:
    plan = RolloutPlan(canary=2, step_timeout_s=5, drain="requeue", drain_timeout_s=3)
    b = [_board(0, 0, Step.FLASHING), _board(1, 0, Step.CHECKING), _board(2, 0, Step.DRAINING)]
    assert {a.do for a in _acts(b, plan=plan, now=2.0)} == set()
    acts = {a.board: a.do for a in _acts(b, plan=plan, now=6.0)}
    assert acts == {"B0000": Do.FAIL, "B0001": Do.FAIL, "B0002": Do.REQUEUE}


def test_a_settled_wave_soaks_then_is_checked_then_gated() -> None:
    done = [_board(0, 0, Step.DONE), _board(1, 0, Step.FAILED)]
    plan = RolloutPlan(canary=2, soak_s=60)
    w = WaveSeen(started_at=0.0, flashed_at=100.0)
    assert _acts(done, plan=plan, waves=[w, WaveSeen()], now=150.0) == []
    assert [a.do for a in _acts(done, plan=plan, waves=[w, WaveSeen()], now=160.0)] == [Do.SOAK_CHECKS]
    w = WaveSeen(started_at=0.0, flashed_at=100.0, soak_checks_at=160.0)
    assert _acts(done, plan=plan, waves=[w, WaveSeen()], now=170.0) == []  # checks not in yet
    w = WaveSeen(started_at=0.0, flashed_at=100.0, soak_checks_at=160.0, checks_in=True)
    assert [a.do for a in _acts(done, plan=plan, waves=[w, WaveSeen()], now=170.0)] == [Do.GATE]
    passed = WaveSeen(0.0, 100.0, 160.0, True, verdict=True)
    assert [a.do for a in _acts(done, plan=plan, waves=[passed, WaveSeen()], now=170.0)] == [Do.NEXT_WAVE]
    assert [a.do for a in _acts(done, plan=plan, waves=[passed], now=170.0)] == [Do.FINISH]
    failed = WaveSeen(0.0, 100.0, 160.0, True, verdict=False)
    assert [a.do for a in _acts(done, plan=plan, waves=[failed, WaveSeen()], now=170.0)] == [Do.HALT]


def test_rolling_back_drains_every_board_to_revert_at_once_and_finishes_when_none_is_left() -> None:
    plan = RolloutPlan(canary=1, shares=(0.5, 1.0))
    boards = [_board(i, 0, Step.REVERT_PENDING) for i in range(4)] + [_board(9, 1)]
    acts = _acts(boards, state=RolloutState.ROLLING_BACK, plan=plan, size=4, in_service=0)
    # An image that failed its gate comes off every board at once, whatever the capacity; boards
    # of later waves (still on the old firmware) are not touched.
    assert sorted(a.board for a in acts if a.do is Do.DRAIN) == [f"B{i:04d}" for i in range(4)]
    assert Do.FINISH not in {a.do for a in acts}
    reverting = [
        _board(0, 0, Step.REVERT_DRAINING, drained=True),
        _board(1, 0, Step.REVERT_FLASHING, op_ok=True),
        _board(2, 0, Step.REVERT_CHECKING, check_ok=True),
    ]
    acts = {a.board: a.do for a in _acts(reverting, state=RolloutState.ROLLING_BACK, plan=plan)}
    assert acts == {"B0000": Do.FLASH, "B0001": Do.CHECK, "B0002": Do.RELEASE}
    assert after(Step.REVERT_CHECKING) is Step.REVERTED
    over = [_board(0, 0, Step.REVERTED), _board(1, 0, Step.FAILED), _board(2, 1)]
    assert [a.do for a in _acts(over, state=RolloutState.ROLLING_BACK, plan=plan)] == [Do.FINISH]


def test_a_paused_rollout_finishes_what_is_in_flight_and_starts_nothing() -> None:
    boards = [_board(0, 0), _board(1, 0, Step.DRAINING, drained=True), _board(2, 0, Step.CHECKING, check_ok=True)]
    acts = _acts(boards, state=RolloutState.PAUSED)
    assert {(a.do, a.board) for a in acts} == {(Do.FLASH, "B0001"), (Do.RELEASE, "B0002")}
    settled = [_board(0, 0, Step.DONE)]
    w = WaveSeen(0.0, 1.0, 2.0, True, verdict=True)
    assert _acts(settled, state=RolloutState.PAUSED, waves=[w, WaveSeen()]) == []


@pytest.mark.parametrize("state", [RolloutState.COMPLETED, RolloutState.ROLLED_BACK, RolloutState.ABORTED])
def test_an_ended_rollout_does_nothing(state: RolloutState) -> None:
    assert _acts([_board(0, 0, Step.DRAINING, drained=True)], state=state) == []


def test_a_board_gone_from_the_fleet_is_skipped() -> None:
    acts = _acts([_board(0, 0, Step.FLASHING, gone="quarantined"), _board(1, 0, gone="retired")])
    assert {(a.do, a.board) for a in acts} == {(Do.SKIP, "B0000"), (Do.SKIP, "B0001")}


# ---- the weather: hosts lost and back, checks that could not run


def test_a_board_whose_host_is_lost_mid_step_goes_back_to_its_wave() -> None:
    plan = RolloutPlan(canary=4, step_timeout_s=100)
    boards = [
        _board(0, 0, Step.DRAINING, away=5.0),
        _board(1, 0, Step.FLASHING, op_ok=False, detail="board not answering", away=5.0),
        _board(2, 0, Step.CHECKING, check_ok=False, away=5.0),
        _board(3, 0, Step.REVERT_FLASHING, away=5.0),
        _board(4, 0, away=5.0),  # pending: not drained while away, nor skipped yet
    ]
    acts = {a.board: a.do for a in _acts(boards, plan=plan, now=10.0)}
    # A flash or check on a host that stopped answering says nothing either way: none FAILs.
    assert acts == {"B0000": Do.RETURN, "B0001": Do.RETURN, "B0002": Do.RETURN, "B0003": Do.RETURN}
    # The wave waits for it (it is not settled), and skips it only after step_timeout_s away.
    w = WaveSeen(started_at=0.0, flashed_at=None)
    done = [_board(0, 0, Step.DONE), _board(4, 0, away=5.0)]
    assert _acts(done, plan=plan, waves=[w, WaveSeen()], now=50.0) == []
    [skip] = _acts(done, plan=plan, waves=[w, WaveSeen()], now=106.0)
    assert (skip.do, skip.board) == (Do.SKIP, "B0004") and "lost for more than 100 s" in skip.reason
    # Back (no longer away): drained with its wave like any other.
    assert [(a.do, a.board) for a in _acts([_board(4, 0)], plan=plan)] == [(Do.DRAIN, "B0004")]


def test_a_check_after_the_flash_that_could_not_run_runs_again_within_the_step_time() -> None:
    plan = RolloutPlan(canary=2, step_timeout_s=100)
    lost = _board(0, 0, Step.CHECKING, checks_lost=1, detail="host lost")
    [act] = _acts([lost], plan=plan, now=50.0)
    assert act.do is Do.RECHECK and "could not run (host lost)" in act.reason
    [act] = _acts([lost], plan=plan, now=101.0)
    assert act.do is Do.FAIL and "took more than 100 s" in act.reason
    # Not forever: a check that cannot start would be retried every pass. The third that could
    # not run counts as failed (the board's host, its worker, keep it from running).
    assert _acts([_board(0, 0, Step.CHECKING, checks_lost=2, detail="x")], plan=plan, now=50.0)[0].do is Do.RECHECK
    [act] = _acts([_board(0, 0, Step.CHECKING, checks_lost=3, detail="agent error")], plan=plan, now=50.0)
    assert act.do is Do.FAIL and "could not run 3 times (the last: agent error)" in act.reason


def test_a_control_board_away_or_gone_is_replaced_by_a_later_waves_board() -> None:
    boards = [
        _board(0, 0, Step.DONE),
        _board(1, CONTROL, away=3.0),
        _board(2, CONTROL, gone="quarantined"),
        _board(3, CONTROL, serving=True),  # here: stays
        _board(4, 1, serving=True),
        _board(5, 2, serving=True),
        _board(6, 2, serving=False),  # drained or out of service: no control board
        _board(7, 2, serving=True, away=1.0),
        _board(8, 2, Step.DONE, serving=True),
    ]
    swaps = control_swaps(boards, wave=0)
    assert [(a.do, a.board, a.other) for a in swaps] == [
        (Do.SWAP_CONTROL, "B0001", "B0005"),  # the latest wave first
        (Do.SWAP_CONTROL, "B0002", "B0004"),
    ]
    assert "host was lost" in swaps[0].reason and "left service" in swaps[1].reason
    # next_acts asks for them while control boards are control boards, and never skips one.
    acts = _acts(boards)
    assert {(a.do, a.board) for a in acts if a.do is Do.SWAP_CONTROL} == {
        (Do.SWAP_CONTROL, "B0001"), (Do.SWAP_CONTROL, "B0002"),
    }  # fmt: skip
    assert Do.SKIP not in {a.do for a in acts}
    # Nothing to take their place: they stay (and are judged with the last wave).
    assert control_swaps([_board(1, CONTROL, away=3.0), _board(4, 0, serving=True)], wave=0) == []
    # In the last wave, control boards are wave boards: no swap.
    last = [_board(1, 2, away=3.0), _board(5, 2, serving=True)]
    assert not [a for a in _acts(last, wave=2) if a.do is Do.SWAP_CONTROL]


@pytest.mark.parametrize(
    ("wave", "control", "now", "expected"),
    [
        ((4, 4), (2, 2), 50.0, True),  # every board judged
        ((3, 4), (2, 2), 50.0, False),  # one lacks: wait (its check runs again)
        ((3, 4), (2, 2), 101.0, True),  # past the deadline: 3 of 4 >= 75 %
        ((2, 4), (2, 2), 101.0, False),  # past the deadline but too few judged: still waits
        ((4, 4), (0, 2), 500.0, False),  # no control board judged: no comparison to make
        ((1, 1), (0, 0), 50.0, True),  # no control boards at all
    ],
)
def test_a_gate_waits_for_judged_soak_checks(
    wave: tuple[int, int], control: tuple[int, int], now: float, expected: bool
) -> None:
    plan = RolloutPlan(canary=2, step_timeout_s=100)
    assert soak_checks_in(wave=wave, control=control, since=0.0, now=now, plan=plan) is expected
