"""The ``health-check`` kind: the golden constant, L1/L2 on clean and corrupting boards, params,
and a job through the API run by a real agent's board runner and worker process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from tests.unit.test_api_flow import Fleet

from fleetyard.agent.daemon import Agent
from fleetyard.agent.link import ServerLink
from fleetyard.agent.outbox import EventSender
from fleetyard.domain.job import Outcome
from fleetyard.drivers.sim import SimDriver, corrupt
from fleetyard.errors import BadRequest
from fleetyard.protocol.agent import Assignment, FaultOrder
from fleetyard.runtimes import DeviceSettings, SessionCache
from fleetyard.workloads import health_check
from fleetyard.workloads.base import WorkloadContext, WorkloadResult, required_blobs, validate_params, workload_class
from fleetyard.workloads.health_check import (
    GOLDEN_SHA256,
    HealthCheckParams,
    HealthCheckWorkload,
    first_mismatch,
    golden_bounds,
    golden_inputs,
    golden_model_bytes,
    golden_reference,
    outputs_sha256,
)

RESULT_KEYS = {
    "tier",
    "passed",
    "runs",
    "expected_sha256",
    "got_sha256",
    "first_mismatch",
    "duration_s",
    "board",
    "runtime",
}


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETYARD_SIM_TIME_SCALE", "0")


def sim_env(*faults: str) -> dict[str, str]:
    """The session environment of a real sim board with ``faults`` injected."""
    driver = SimDriver("sim:1", host="hc-test")
    serial = driver.discover()[0].serial
    for kind in faults:
        driver.inject(serial, kind)
    return {"FLEETYARD_BOARD_ID": serial, **driver.open_session(serial).env()}


class Ctx:
    """A WorkloadContext for one rank, and what the workload logged."""

    def __init__(
        self,
        tmp: Path,
        params: dict[str, Any],
        env: dict[str, str],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        time_limit_s: float = 60.0,
    ) -> None:
        self.lines: list[str] = []
        self.workdir, self.output_dir = tmp / "work", tmp / "out"
        self.workdir.mkdir()
        self.output_dir.mkdir()
        self.ctx = WorkloadContext(
            assignment_id=1,
            job_id=1,
            rank=0,
            world_size=1,
            board_id=env.get("FLEETYARD_BOARD_ID", "local"),
            device=env.get("FLEETYARD_DEVICE", ""),
            params=HealthCheckParams.model_validate(params),
            time_limit_s=time_limit_s,
            env=env,
            workdir=self.workdir,
            output_dir=self.output_dir,
            log=self.lines.append,
            should_stop=should_stop,
        )

    def run(self) -> WorkloadResult:
        return HealthCheckWorkload().run(self.ctx)


# ---- the golden artifact -----------------------------------------------------------------------


def test_golden_constant_from_the_numpy_reference_and_onnxruntime() -> None:
    ref = golden_reference()
    assert outputs_sha256(ref) == GOLDEN_SHA256
    # The premise of an exact check: every partial sum in any order, and every operand (TF32 too),
    # is an exactly representable integer.
    bounds = golden_bounds()
    assert bounds["layer1_abs_sum"] < 2**24 and bounds["layer2_abs_sum"] < 2**24
    assert bounds["max_operand"] <= 2**11
    for arr in ref.values():
        assert np.array_equal(arr, np.round(arr))
    # Not a degenerate result: a Relu that let nothing through would check nothing.
    assert 0.2 < np.mean(ref["hidden"] > 0) < 0.8 and np.count_nonzero(ref["logits"]) > 0.9 * ref["logits"].size
    # onnxruntime, fused and unfused, with one thread and several: other kernels and summation
    # orders, the same bits.
    for level, threads in (
        (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, 4),
        (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, 1),
    ):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        so.intra_op_num_threads = threads
        session = ort.InferenceSession(golden_model_bytes(), sess_options=so, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(names, golden_inputs()), strict=True))
        assert outputs_sha256(outputs) == GOLDEN_SHA256
        assert first_mismatch(ref, outputs) is None


def test_through_fleetyards_runtime(tmp_path: Path) -> None:
    path = tmp_path / "golden.onnx"
    path.write_bytes(golden_model_bytes())
    model = SessionCache().get(path, DeviceSettings(threads=2))
    assert outputs_sha256(model.run(golden_inputs())) == GOLDEN_SHA256


def test_digest_and_first_mismatch() -> None:
    ref = golden_reference()
    # -0.0 and +0.0 are one number; a kernel may return either.
    signed = {k: np.where(v == 0, np.float32(-0.0), v) for k, v in ref.items()}
    assert np.signbit(signed["hidden"]).any() and outputs_sha256(signed) == GOLDEN_SHA256
    assert first_mismatch(ref, signed) is None
    # One ulp anywhere is a mismatch, found where it is.
    off = golden_reference()
    off["logits"].flat[37] = np.nextafter(off["logits"].flat[37], np.float32(np.inf))
    assert outputs_sha256(off) != GOLDEN_SHA256
    m = first_mismatch(ref, off)
    assert m == {
        "output": "logits",
        "index": 37,
        "expected": float(ref["logits"].flat[37]),
        "got": float(off["logits"].flat[37]),
        "mismatched": 1,
    }
    # Missing, extra and reshaped outputs.
    assert first_mismatch(ref, {"logits": ref["logits"]}) == {
        "output": "hidden",
        "index": None,
        "expected": "float32[16, 128]",
        "got": "missing",
        "mismatched": None,
    }
    extra = {**ref, "zzz": np.zeros(1, np.float32)}
    assert first_mismatch(ref, extra)["output"] == "zzz"  # type: ignore[index]
    assert outputs_sha256(extra) != GOLDEN_SHA256
    flat = {**ref, "logits": ref["logits"].reshape(-1)}
    assert first_mismatch(ref, flat)["got"] == "float32[512]"  # type: ignore[index]
    assert outputs_sha256(flat) != GOLDEN_SHA256


# ---- L1 ------------------------------------------------------------------------------------------


def test_l1_passes_on_a_healthy_board(tmp_path: Path) -> None:
    c = Ctx(tmp_path, {"tier": "L1"}, sim_env())
    res = c.run()
    assert res.outcome is Outcome.SUCCESS, res.message
    r = res.result
    assert set(r) == RESULT_KEYS
    assert r["tier"] == "L1" and r["passed"] is True and r["runs"] == 3
    assert r["expected_sha256"] == r["got_sha256"] == GOLDEN_SHA256 and r["first_mismatch"] is None
    assert r["duration_s"] >= 0 and r["runtime"]["runtime"] == "onnxruntime"
    assert r["board"]["id"] == c.ctx.board_id and r["board"]["generation"] == "sim-g1"
    assert not any(c.output_dir.iterdir())  # evidence only when there is something wrong
    assert "passed" in "".join(c.lines)


def test_l1_fails_with_evidence_on_silent_corruption(tmp_path: Path) -> None:
    c = Ctx(tmp_path, {"tier": "L1", "repeat": 5}, sim_env("silent_corruption"))
    res = c.run()
    assert res.outcome is Outcome.INFRA_ERROR  # the board's fault, not the job's
    r = res.result
    bad = {k: corrupt(v) for k, v in golden_reference().items()}
    ref = golden_reference()
    assert r["passed"] is False and r["runs"] == 1  # stops at the first bad run
    assert r["expected_sha256"] == GOLDEN_SHA256 and r["got_sha256"] == outputs_sha256(bad) != GOLDEN_SHA256
    # The sim corrupts element 0 of each output first.
    assert r["first_mismatch"] == {
        "output": "hidden",
        "index": 0,
        "expected": float(ref["hidden"].flat[0]),
        "got": float(bad["hidden"].flat[0]),
        "mismatched": int(np.count_nonzero(ref["hidden"] != bad["hidden"])),
    }
    expected, got = np.float32(ref["hidden"].flat[0]), np.float32(bad["hidden"].flat[0])
    assert res.message is not None
    assert res.message.startswith("health check L1 failed on run 1: output differs from the golden result")
    assert f"at hidden[0] (expected {expected}, got {got};" in res.message
    with np.load(c.output_dir / "outputs.npz") as saved:
        assert set(saved.files) == {"hidden", "logits"}
        assert np.array_equal(saved["logits"], bad["logits"])


def test_an_unusable_device_is_a_config_error(tmp_path: Path) -> None:
    res = Ctx(tmp_path, {"tier": "L1"}, {"FLEETYARD_DEVICE": "bogus:1"}).run()
    assert res.outcome is Outcome.CONFIG_ERROR and "bogus" in (res.message or "")


# ---- L2 / L3 -------------------------------------------------------------------------------------


def test_l2_keeps_checking_for_its_duration_and_logs_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_check, "PROGRESS_EVERY_S", 0.05)
    c = Ctx(tmp_path, {"tier": "L2", "duration_s": 0.3}, sim_env())
    t0 = time.monotonic()
    res = c.run()
    assert res.outcome is Outcome.SUCCESS, res.message
    assert 0.3 <= time.monotonic() - t0 < 15
    r = res.result
    assert r["tier"] == "L2" and r["passed"] is True and r["runs"] > 3 and r["duration_s"] >= 0.3
    text = "".join(c.lines)
    assert "for 0.3 s" in text and text.count("all golden") >= 2


def test_l2_stops_when_told(tmp_path: Path) -> None:
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 4

    res = Ctx(tmp_path, {"tier": "L3", "duration_s": 60}, sim_env(), should_stop=should_stop).run()
    assert res.outcome is Outcome.CANCELED and "after 4 runs" in (res.message or "")
    assert res.result["runs"] == 4 and res.result["passed"] is False and res.result["first_mismatch"] is None


def test_l2_stops_at_the_first_bad_run(tmp_path: Path) -> None:
    res = Ctx(tmp_path, {"tier": "L2", "duration_s": 30}, sim_env("silent_corruption")).run()
    assert res.outcome is Outcome.INFRA_ERROR and res.result["runs"] == 1
    assert (res.message or "").startswith("health check L2 failed on run 1")


def test_a_duration_past_the_time_limit_is_cut_to_fit(tmp_path: Path) -> None:
    c = Ctx(tmp_path, {"tier": "L3"}, sim_env(), time_limit_s=0.5)  # L3's default is an hour
    t0 = time.monotonic()
    res = c.run()
    assert res.outcome is Outcome.SUCCESS and time.monotonic() - t0 < 15  # not L3's hour
    assert "does not fit the job's time limit of 0.5 s; running for 0.45 s" in "".join(c.lines)


# ---- params ----------------------------------------------------------------------------------------


def test_params() -> None:
    assert workload_class("health-check") is HealthCheckWorkload
    assert required_blobs("health-check", {"tier": "L1"}) == []
    l1 = HealthCheckParams(tier="L1")
    assert l1.repeat == 3 and l1.duration() is None
    assert HealthCheckParams(tier="L2").duration() == 120.0
    assert HealthCheckParams(tier="L3").duration() == 3600.0
    assert HealthCheckParams(tier="L3", duration_s=5).duration() == 5.0
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "params.tier"),
        ({"tier": "L4"}, "params.tier"),
        ({"tier": "L1", "duration_s": 10}, "duration_s applies to tiers L2 and L3"),
        ({"tier": "L2", "repeat": 2}, "repeat applies to tier L1"),
        ({"tier": "L2", "duration_s": 0}, "params.duration_s"),
        ({"tier": "L3", "duration_s": 7 * 24 * 3600 + 1}, "params.duration_s"),
        ({"tier": "L1", "repeat": 0}, "params.repeat"),
        ({"tier": "L1", "blobs": []}, "params.blobs"),
    ]
    for params, text in bad:
        with pytest.raises(BadRequest) as err:
            validate_params("health-check", params)
        assert text in err.value.message, (params, err.value.message)


# ---- through the API, run by a real agent's board runner and worker --------------------------


@pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument with the TestClient")
def test_a_job_through_the_api_passes_then_fails_on_a_corrupting_board(fleet: Fleet, tmp_path: Path) -> None:
    token = fleet.agents["h1"]
    agent = Agent(server="http://127.0.0.1:9", token=token, host="h1", driver="sim:1", state_dir=tmp_path / "agent")
    link = ServerLink("http://testserver", token)
    link.client.close()
    link.client = TestClient(fleet.app, headers={"Authorization": f"Bearer {token}"})
    stop = threading.Event()
    agent._register(link)  # the agent's own registration, with its sim board's identity; starts the worker
    sender = EventSender(
        agent.outbox, link, session=lambda: agent.session, reregister=agent._register, on_cancel=agent.cancel, stop=stop
    )
    sender.start()
    [board] = agent.serials
    fleet.app.state.max_blob_bytes = 1 << 20  # room for the evidence
    try:

        def run_check() -> dict[str, Any]:
            # Pinned to its board, where a failure must not move the check to another board.
            job = fleet.submit(
                token=fleet.admin, kind="health-check", params={"tier": "L1"}, board_ids=[board], max_infra_retries=0
            )
            assert fleet.rec.schedule(time.time()) == 1
            r = link.request("GET", "/v1/agent/assignments", params={"session": agent.session, "wait": 0})
            [a] = [Assignment.model_validate(x) for x in r.json()["assignments"]]
            agent.runners[board].submit(a)
            deadline = time.monotonic() + 30
            while (detail := fleet.job(job["id"]))["state"] in ("queued", "running"):
                assert time.monotonic() < deadline, detail
                time.sleep(0.05)
            return detail

        ok = run_check()
        assert ok["state"] == "succeeded", ok
        [rank] = ok["attempt_list"][0]["ranks"]
        assert rank["result"]["passed"] is True and rank["result"]["got_sha256"] == GOLDEN_SHA256

        # Silent corruption through the admin fault API; the agent applies the order it hears.
        r = fleet.client.post(
            f"/v1/admin/boards/{board}/faults", json={"kind": "silent_corruption"}, headers=fleet.h(fleet.admin)
        )
        assert r.status_code == 201, r.text
        orders = [FaultOrder.model_validate(f) for f in fleet.beat("h1", session=agent.session)["faults"]]
        agent.apply_faults(orders)
        assert "silent_corruption" in agent.driver.active_faults(board)  # type: ignore[attr-defined]

        bad = run_check()
        assert bad["state"] == "failed" and bad["outcome"] == "infra_error", bad
        [attempt] = bad["attempt_list"]
        [rank] = attempt["ranks"]
        assert "health check L1 failed on run 1" in rank["message"]
        assert rank["result"]["passed"] is False and rank["result"]["first_mismatch"]["output"] == "hidden"
        assert "outputs.npz" in rank["outputs"], rank["message"]  # the wrong numbers, kept as evidence
        board_now = fleet.client.get(f"/v1/boards/{board}", headers=fleet.h(fleet.admin)).json()
        assert board_now["state"] == "suspect"
    finally:
        for runner in agent.runners.values():
            runner.close()
        for runner in agent.runners.values():
            runner.join(5)
        stop.set()
        sender.join(5)
        link.close()
