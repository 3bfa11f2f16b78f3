"""The ``rollout`` kind (closed-loop policy evaluation): statistics, the built-in CartPole policy on
a cpu board through the kind's worker entry, the control arm on sound and corrupting sim boards,
seed sharding across ranks, trajectories, and refusals at submit."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.unit.test_api_flow import Fleet

from fleetyard.domain.job import Outcome
from fleetyard.drivers.cpu import CpuDriver
from fleetyard.drivers.sim import SimDriver
from fleetyard.errors import BadRequest
from fleetyard.runtimes import artifacts
from fleetyard.workloads import policy_rollout
from fleetyard.workloads.base import WorkloadContext, WorkloadResult, admit, required_blobs, validate_params
from fleetyard.workloads.policy_rollout import (
    CARTPOLE_WEIGHTS,
    EPISODES_FILE,
    TRAJECTORIES_FILE,
    PolicyRolloutWorkload,
    RolloutParams,
    cartpole_policy,
    linear_policy,
    rank_seeds,
    sign_test_p,
    wilson_interval,
)


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETYARD_SIM_TIME_SCALE", "0")


def _save(path: Path, data: bytes) -> tuple[Path, str]:
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture
def cartpole(tmp_path: Path) -> tuple[Path, str]:
    return _save(tmp_path / "cartpole.onnx", cartpole_policy())


def cpu_env() -> dict[str, str]:
    driver = CpuDriver("cpu", host="rollout-test")
    serial = driver.discover()[0].serial
    return {"FLEETYARD_BOARD_ID": serial, **driver.open_session(serial).env()}


def sim_env(*faults: str) -> dict[str, str]:
    driver = SimDriver("sim:1", host="rollout-test")
    serial = driver.discover()[0].serial
    for kind in faults:
        driver.inject(serial, kind)
    return {"FLEETYARD_BOARD_ID": serial, **driver.open_session(serial).env()}


def run_rank(
    tmp: Path, params: dict[str, Any], artifact: Path, env: dict[str, str], *, rank: int = 0, world_size: int = 1
) -> tuple[WorkloadResult, Path, list[str]]:
    """One rank through the kind's worker entry (``Workload.run``), as a board's worker calls it."""
    parsed = validate_params("rollout", params)
    out = Path(tempfile.mkdtemp(prefix=f"rank{rank}-", dir=tmp))
    lines: list[str] = []
    ctx = WorkloadContext(
        assignment_id=1,
        job_id=1,
        rank=rank,
        world_size=world_size,
        board_id=env.get("FLEETYARD_BOARD_ID", "local"),
        device=env.get("FLEETYARD_DEVICE", ""),
        params=parsed,
        time_limit_s=60.0,
        env=env,
        workdir=tmp,
        output_dir=out,
        log=lines.append,
        should_stop=lambda: False,
        blobs={params["artifact"]: artifact},
    )
    return PolicyRolloutWorkload().run(ctx), out, lines


# ---- statistics ---------------------------------------------------------------------------------


def test_wilson_interval_against_known_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (score interval, no continuity
    # correction): 81/263, 15/148, 0/20, 1/29; and 0/10, 5/10, 10/10 (e.g. statsmodels' "wilson").
    for (k, n), (lo, hi) in {
        (81, 263): (0.2553, 0.3662),
        (15, 148): (0.0624, 0.1605),
        (0, 20): (0.0, 0.1611),
        (1, 29): (0.0061, 0.1718),
        (0, 10): (0.0, 0.2775),
        (5, 10): (0.2366, 0.7634),
        (10, 10): (0.7225, 1.0),
    }.items():
        got = wilson_interval(k, n)
        assert got == pytest.approx((lo, hi), abs=6e-5), (k, n)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_sign_test_p() -> None:
    assert sign_test_p([]) == 1.0 and sign_test_p([0.0, 0.0]) == 1.0
    assert sign_test_p([1.0] * 5) == pytest.approx(2 / 32)
    assert sign_test_p([1.0] * 6 + [0.0]) == pytest.approx(2 / 64)  # zeros are dropped
    assert sign_test_p([1.0, -1.0, 2.0, -3.0]) == 1.0


# ---- closed loop --------------------------------------------------------------------------------


def test_cartpole_policy_balances_on_a_cpu_board_and_matches_the_control_arm(
    tmp_path: Path, cartpole: tuple[Path, str]
) -> None:
    path, sha = cartpole
    res, out, lines = run_rank(tmp_path, {"artifact": sha, "episodes": 4, "seed": 10}, path, cpu_env())
    assert res.outcome is Outcome.SUCCESS, res.message
    r = res.result
    assert r["seeds"] == [10, 11, 12, 13] and r["action"] == "argmax" and r["success_threshold"] == 475.0
    board, control, cmp = r["board"], r["control"], r["comparison"]
    assert board["successes"] == 4 and board["success_rate"] == 1.0 and board["return_mean"] == 500.0
    assert board["success_ci95"] == pytest.approx(list(wilson_interval(4, 4)), abs=1e-6)
    assert board["latency_ms"]["p50"] > 0 and board["latency_ms"]["p99"] >= board["latency_ms"]["p50"]
    assert control["successes"] == 4 and control["return_mean"] == 500.0
    assert cmp["diverged"] == 0 and cmp["verdict"] == "identical" and cmp["differs"] is False
    assert r["runtime"]["runtime"] == "onnxruntime" and r["board_record"]["driver"]
    # episodes.jsonl: one line per episode and arm; trajectories of both arms, identical here.
    rows = [json.loads(x) for x in (out / EPISODES_FILE).read_text().splitlines()]
    assert [(x["arm"], x["seed"]) for x in rows][:2] == [("board", 10), ("control", 10)] and len(rows) == 8
    assert all(x["length"] == 500 and x["success"] and x["diverged_at"] is None for x in rows)
    assert set(rows[0]["latency_ms"]) == {"p50", "p99", "mean"}
    with np.load(out / TRAJECTORIES_FILE) as z:
        obs, acts, rew = z["board_seed10_observations"], z["board_seed10_actions"], z["board_seed10_rewards"]
        assert obs.shape == (501, 4) and acts.shape == (500,) and rew.sum() == 500.0
        assert np.array_equal(obs, z["control_seed10_observations"])
        assert set(np.unique(acts)) == {0, 1}  # it pushes both ways, not a constant action
        assert list(z["seeds"]) == [10, 11, 12, 13]
    assert any("4/4" in line for line in lines)


def test_silent_corruption_makes_the_board_arm_diverge_from_the_control_arm(
    tmp_path: Path, cartpole: tuple[Path, str]
) -> None:
    path, sha = cartpole
    params = {"artifact": sha, "episodes": 5}
    sound, _, _ = run_rank(tmp_path, params, path, sim_env())
    bad, out, _ = run_rank(tmp_path, params, path, sim_env("silent_corruption"))
    assert sound.outcome is bad.outcome is Outcome.SUCCESS
    assert sound.result["comparison"]["diverged"] == 0
    assert sound.result["board_record"]["sim"]["generation"] == "sim-g1"
    cmp = bad.result["comparison"]
    assert cmp["diverged"] >= 1 and cmp["verdict"] in ("diverged", "differs"), cmp
    seed = cmp["diverged_seeds"][0]
    rows = [json.loads(x) for x in (out / EPISODES_FILE).read_text().splitlines()]
    at = next(x["diverged_at"] for x in rows if x["seed"] == seed)
    with np.load(out / TRAJECTORIES_FILE) as z:
        # Identical up to the first divergent step; then a different action (or next state).
        b_obs, c_obs = z[f"board_seed{seed}_observations"], z[f"control_seed{seed}_observations"]
        assert np.array_equal(b_obs[: at + 1], c_obs[: at + 1])
        assert z[f"board_seed{seed}_actions"][at] != z[f"control_seed{seed}_actions"][at] or not np.array_equal(
            b_obs[at + 1], c_obs[at + 1]
        )


def test_continuous_actions_are_clipped_to_the_box(tmp_path: Path) -> None:
    # Pendulum-v1: torque in [-2, 2]; a policy that pumps the swing with a huge gain saturates both ways.
    path, sha = _save(tmp_path / "p.onnx", linear_policy([[0.0], [0.0], [50.0]]))
    params = {"artifact": sha, "env": "Pendulum-v1", "seeds": [3, 4], "success_threshold": -2000.0, "control": False}
    res, out, _ = run_rank(tmp_path, params, path, cpu_env())
    assert res.outcome is Outcome.SUCCESS, res.message
    assert res.result["action"] == "clip" and "control" not in res.result
    with np.load(out / TRAJECTORIES_FILE) as z:
        acts = z["board_seed3_actions"]
        assert acts.shape == (200, 1) and acts.min() == -2.0 and acts.max() == 2.0


def test_a_mujoco_env_steps_on_the_host_with_the_policy_on_the_board(tmp_path: Path) -> None:
    """InvertedPendulum-v5 (MuJoCo: the dev extra installs gymnasium[mujoco]): a linear state
    feedback balances the pole for the whole episode on both arms; with no gain it falls at once."""
    gains = [[1.0], [10.0], [1.0], [1.0]]  # cart position, pole angle, cart velocity, pole velocity
    path, sha = _save(tmp_path / "pendulum.onnx", linear_policy(gains, name="pendulum_policy"))
    params = {"artifact": sha, "env": "InvertedPendulum-v5", "seeds": [0, 1]}
    res, out, _ = run_rank(tmp_path, params, path, cpu_env())
    assert res.outcome is Outcome.SUCCESS, res.message
    r = res.result
    assert r["action"] == "clip" and r["board"]["successes"] == 2 and r["board"]["return_mean"] == 1000.0
    assert r["control"]["return_mean"] == 1000.0 and r["comparison"]["diverged"] == 0
    with np.load(out / TRAJECTORIES_FILE) as z:
        assert z["board_seed0_observations"].shape == (1001, 4) and z["board_seed0_actions"].shape == (1000, 1)
    limp = _save(tmp_path / "limp.onnx", linear_policy([[0.0]] * 4, name="limp_policy"))
    res, _, _ = run_rank(tmp_path, {**params, "artifact": limp[1], "control": False}, limp[0], cpu_env())
    assert res.outcome is Outcome.SUCCESS and res.result["board"]["successes"] == 0
    assert res.result["board"]["return_mean"] < 100


def test_seeds_shard_across_ranks_exactly_once(tmp_path: Path, cartpole: tuple[Path, str]) -> None:
    assert rank_seeds([5, 6, 7, 8, 9], 1, 2) == [6, 8]
    path, sha = cartpole
    seeds = [3, 1, 4, 15, 9, 2, 6]
    seen: list[int] = []
    for rank in range(3):
        res, out, _ = run_rank(
            tmp_path, {"artifact": sha, "seeds": seeds, "max_steps": 20}, path, cpu_env(), rank=rank, world_size=3
        )
        assert res.outcome is Outcome.SUCCESS, res.message
        assert res.result["seeds"] == seeds[rank::3]
        assert all(e["length"] == 20 for e in res.result["episodes"])  # max_steps caps each episode
        with np.load(out / TRAJECTORIES_FILE) as z:
            assert list(z["seeds"]) == seeds[rank::3]
        seen += res.result["seeds"]
    assert sorted(seen) == sorted(seeds)


def test_stop_is_asked_before_the_first_step_and_every_64_steps(tmp_path: Path) -> None:
    # Stopping at the third ask (steps 0, 64, 128) cancels the rank before its first 500-step
    # episode ends.
    path, sha = _save(tmp_path / "cartpole.onnx", cartpole_policy())
    asks: list[int] = []

    def stop() -> bool:
        asks.append(1)
        return len(asks) >= 3

    res = policy_rollout.execute(
        validate_params("rollout", {"artifact": sha, "episodes": 1}),  # type: ignore[arg-type]
        artifact_path=path,
        output_dir=tmp_path / "stopped",
        env=cpu_env(),
        should_stop=stop,
    )
    assert res.outcome is Outcome.CANCELED and len(asks) == 3 and "stopped after 0 of 1" in res.message


def test_a_float64_policy_gets_the_observation_cast(tmp_path: Path) -> None:
    # CartPole's observations are float32; a policy that takes float64 gets each one cast (the
    # board's fast path feeds a view only when the dtypes agree), on the board and in the control arm.
    from onnx import TensorProto, helper, numpy_helper

    w = np.asarray(CARTPOLE_WEIGHTS, dtype=np.float64)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["action"])],
        "cartpole_f64",
        inputs=[helper.make_tensor_value_info("obs", TensorProto.DOUBLE, ["batch", 4])],
        outputs=[helper.make_tensor_value_info("action", TensorProto.DOUBLE, ["batch", 2])],
        initializer=[numpy_helper.from_array(np.stack([-w, w], axis=1), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path, sha = _save(tmp_path / "f64.onnx", model.SerializeToString())
    res, out, _ = run_rank(tmp_path, {"artifact": sha, "seeds": [0, 1]}, path, cpu_env())
    assert res.outcome is Outcome.SUCCESS, res.message
    assert res.result["board"]["return_mean"] == 500.0 and res.result["comparison"]["verdict"] == "identical"
    with np.load(out / TRAJECTORIES_FILE) as z:
        assert z["board_seed0_observations"].dtype == np.float32 and z["board_seed0_actions"].dtype == np.int64


# ---- params and admission -----------------------------------------------------------------------


class Registry:
    def __init__(self, info: dict[str, Any] | None) -> None:
        self.info = info

    def artifact_info(self, sha256: str) -> dict[str, Any] | None:
        return self.info

    def blob_path(self, sha256: str) -> Path | None:
        return None

    def board_devices(self) -> dict[str, str]:
        return {}


def test_unknown_env_is_refused_naming_valid_ones(cartpole: tuple[Path, str]) -> None:
    _, sha = cartpole
    with pytest.raises(BadRequest, match=r"params\.env.*CartPole-v1.*Pendulum-v1"):
        validate_params("rollout", {"artifact": sha, "env": "CartPoel-v9"})
    with pytest.raises(BadRequest, match="reward_threshold"):
        validate_params("rollout", {"artifact": sha, "env": "Pendulum-v1"})  # success=return needs a threshold
    with pytest.raises(BadRequest, match="discrete"):
        validate_params("rollout", {"artifact": sha, "action": "clip"})
    with pytest.raises(BadRequest, match="distinct"):
        validate_params("rollout", {"artifact": sha, "seeds": [1, 1]})
    assert required_blobs("rollout", {"artifact": sha}) == [sha]


def test_a_policy_that_does_not_fit_the_env_is_refused_at_submit(tmp_path: Path, cartpole: tuple[Path, str]) -> None:
    path, sha = cartpole
    ok = RolloutParams(artifact=sha)
    admit("rollout", ok, Registry(artifacts.inspect(path).to_dict()))  # fits: admitted
    with pytest.raises(BadRequest, match="not registered"):
        admit("rollout", ok, Registry(None))
    # Three logits for CartPole's two actions.
    p3, sha3 = _save(tmp_path / "three.onnx", linear_policy(np.ones((4, 3))))
    with pytest.raises(BadRequest, match=r"output action has 3 values.*2 discrete actions"):
        admit("rollout", RolloutParams(artifact=sha3), Registry(artifacts.inspect(p3).to_dict()))
    # A Pendulum observation (3 values) fed to the CartPole policy (4).
    pend = RolloutParams(artifact=sha, env="Pendulum-v1", success="survived")
    with pytest.raises(BadRequest, match=r"takes 4 values; Pendulum-v1's observation has 3"):
        admit("rollout", pend, Registry(artifacts.inspect(path).to_dict()))
    # And the same check on the board, should the artifact have skipped admission.
    res, _, _ = run_rank(tmp_path, {"artifact": sha3}, p3, cpu_env())
    assert res.outcome is Outcome.USER_ERROR and "3 values" in (res.message or "")


def test_the_server_refuses_bad_rollout_specs_at_submit(fleet: Fleet) -> None:
    fleet.register("h1")
    fleet.app.state.max_blob_bytes = 1 << 20
    data = linear_policy(np.ones((4, 3)))  # three logits: CartPole has two actions
    sha = hashlib.sha256(data).hexdigest()
    assert fleet.client.put(f"/v1/blobs/{sha}", content=data, headers=fleet.h(fleet.user)).status_code == 201
    assert fleet.client.post("/v1/artifacts", json={"sha256": sha}, headers=fleet.h(fleet.user)).status_code == 201

    def submit(params: dict[str, Any]) -> tuple[int, str]:
        r = fleet.client.post("/v1/jobs", json={"kind": "rollout", "params": params}, headers=fleet.h(fleet.user))
        return r.status_code, r.json().get("error", {}).get("message", "")

    code, msg = submit({"artifact": sha, "env": "NoSuchEnv-v0"})
    assert code == 422 and "unknown gymnasium environment 'NoSuchEnv-v0'" in msg and "CartPole-v1" in msg
    code, msg = submit({"artifact": sha})
    assert code == 422 and "has 3 values" in msg and "2 discrete actions" in msg
    code, msg = submit({"artifact": sha, "env": "Acrobot-v1", "action": "argmax"})  # Acrobot: 3 actions, 6 obs
    assert code == 422 and "takes 4 values; Acrobot-v1's observation has 6" in msg
