"""Closed-loop steps/s of the ``rollout`` job kind (policy on a ``cpu`` board through Fleetyard's
workload path) against the same loop calling ONNX Runtime directly.

    python bench/policy_rollout.py [--quick] [--episodes N] [--rounds N]

(Not the firmware rollout benchmark, ``bench/rollout.py``.)

The environment is gymnasium's ``CartPole-v1`` and the policy the kind's built-in CartPole
controller (:func:`fleetyard.workloads.policy_rollout.cartpole_policy`: a 4x2 MatMul+Add, logits
out, argmax), which balances for the full 500 steps, so every episode is 500 steps. Both sides run
the same seeds in this process: after one uncounted warm-up pass of each, ``--rounds`` rounds, each
running both sides back to back (which goes first alternates), so a round's two figures see the
same neighbours on this shared machine. Each round gives one ratio; the median of those counts
(many short rounds: a burst of other work spoils a few, which the median ignores):

- Fleetyard: the kind's worker entry, ``PolicyRolloutWorkload().run(ctx)``, in this process on a
  ``cpu`` board's session environment (the ``cpu`` driver's ``open_session(...).env()``: all of
  this process's cores, as the agent gives its one board), the control arm off. The policy runs
  through the runtimes layer's warm session cache at every step (the loaded model's single-input
  path, ``OnnxModel.runner``: one ``session.run`` a step; per-step latency timing, the action
  mapping) and trajectories are recorded (observations, actions, rewards, every step).
  ``steps_per_s`` is the job result's own figure (the episode loop, environment included);
  ``job_steps_per_s`` is wall time around the whole rank (cache lookup, writing
  ``trajectories.npz``, ``episodes.jsonl`` and ``rollout.json``). The warm-up loads the model;
  the cache keeps it warm for the rounds, as on a board.
- Direct: a plain loop with an ``onnxruntime.InferenceSession`` made as a ``cpu`` board's session
  makes it (``intra_op_num_threads`` = the cores, ``inter_op_num_threads`` = 1, CPU provider),
  made once before the warm-up and kept warm across rounds as the board's cache keeps its own:
  ``reset(seed)``, then ``session.run`` -> ``ndarray.argmax`` -> ``env.step`` until the episode ends.

What is not measured: the server, agent and worker process (submitting, fetching the artifact,
uploading outputs); ``bench/overhead.py`` and ``bench/warm.py`` measure those for every kind.

Metric: ``ratio`` = the median over rounds of Fleetyard steps/s / direct steps/s (target >= 0.95);
``ratio_p25``/``ratio_p75`` give the spread and ``ratio_best`` the best round of each side against
each other. Both sides must reach the same returns on the same seeds, or the benchmark stops with
an error. Prints one JSON line last and exits 0 whether or not the target is met.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import emit, interrupts_unwind, percentile, ratio, rnd, say, target

BENCH = "policy_rollout"
TARGET_RATIO = 0.95
ENV_ID = "CartPole-v1"


def direct_session(model: Path, threads: int) -> Any:
    """The plain loop's session, made once and kept (as the board's cache keeps its own warm)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])


def direct(sess: Any, seeds: list[int]) -> tuple[float, list[float]]:
    """Steps/s and returns of the plain loop: gymnasium + onnxruntime, nothing else."""
    import gymnasium as gym

    name, out = sess.get_inputs()[0].name, [sess.get_outputs()[0].name]
    env = gym.make(ENV_ID)
    returns: list[float] = []
    steps = 0
    t0 = time.perf_counter()
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        ret, done = 0.0, False
        while not done:
            logits = sess.run(out, {name: obs.reshape(1, -1).astype(np.float32, copy=False)})[0]
            obs, reward, terminated, truncated, _ = env.step(int(logits.argmax()))
            ret += float(reward)
            steps += 1
            done = terminated or truncated
        returns.append(ret)
    elapsed = time.perf_counter() - t0
    env.close()
    return steps / elapsed, returns


def board_env() -> dict[str, str]:
    """The session environment of this machine's ``cpu`` board (all of this process's cores)."""
    from fleetyard.drivers.cpu import CpuDriver

    driver = CpuDriver("cpu", host="bench")
    serial = driver.discover()[0].serial
    return {"FLEETYARD_BOARD_ID": serial, **driver.open_session(serial).env()}


def fleetyard(model: Path, sha: str, seeds: list[int], out: Path) -> tuple[float, float, list[float], dict[str, Any]]:
    """Steps/s of the kind's episode loop (its own figure), of the whole rank, its returns, result."""
    from fleetyard.workloads.base import WorkloadContext
    from fleetyard.workloads.policy_rollout import PolicyRolloutWorkload, RolloutParams

    env = board_env()
    serial = env["FLEETYARD_BOARD_ID"]
    out.mkdir(parents=True)
    ctx = WorkloadContext(
        assignment_id=1,
        job_id=1,
        rank=0,
        world_size=1,
        board_id=serial,
        device=env.get("FLEETYARD_DEVICE", "cpu"),
        params=RolloutParams(artifact=sha, env=ENV_ID, seeds=seeds, control=False),
        time_limit_s=3600.0,
        env=env,
        workdir=out,
        output_dir=out,
        log=lambda _line: None,
        should_stop=lambda: False,
        blobs={sha: model},
    )
    t0 = time.perf_counter()
    res = PolicyRolloutWorkload().run(ctx)
    elapsed = time.perf_counter() - t0
    if res.result.get("board") is None:
        raise SystemExit(f"the rollout failed: {res.outcome} {res.message}")
    r = res.result
    return r["steps_per_s"]["board"], r["board"]["steps"] / elapsed, [e["return"] for e in r["episodes"]], r


def call_costs(model: Path, calls: int = 20_000) -> dict[str, float]:
    """Microseconds per call, best of 5, of the runtimes layer's ``LoadedModel.run`` and of its
    single-input path (``OnnxModel.runner``, what the kind calls each step), as a cpu board loads
    the model, and of the same ``InferenceSession.run`` called directly for the first output: what
    the runtimes layer adds to every step, apart from the kind's own loop."""
    from fleetyard.runtimes import DeviceSettings, default_cache

    loaded, _ = default_cache().lookup(model, DeviceSettings.from_env(board_env()))
    sess = loaded.session  # type: ignore[attr-defined]
    x = np.zeros((1, 4), np.float32)
    feeds = {"obs": x}
    first = [sess.get_outputs()[0].name]
    runner = loaded.runner(x)  # type: ignore[attr-defined]
    best = {"layer_us": float("inf"), "runner_us": float("inf"), "session_us": float("inf")}
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            loaded.run(feeds, check=False)
        best["layer_us"] = min(best["layer_us"], (time.perf_counter() - t0) / calls * 1e6)
        t0 = time.perf_counter()
        for _ in range(calls):
            runner(x)
        best["runner_us"] = min(best["runner_us"], (time.perf_counter() - t0) / calls * 1e6)
        t0 = time.perf_counter()
        for _ in range(calls):
            sess.run(first, {"obs": x})
        best["session_us"] = min(best["session_us"], (time.perf_counter() - t0) / calls * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 episodes x 9 rounds (default 10 x 41)")
    ap.add_argument("--episodes", type=int, default=None, help="episodes (seeds 0..N-1) a round")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (each runs both sides)")
    args = ap.parse_args(argv)
    episodes = args.episodes or 10
    rounds = args.rounds or (9 if args.quick else 41)
    seeds = list(range(episodes))
    cores = sorted(os.sched_getaffinity(0))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from fleetyard.workloads.policy_rollout import cartpole_policy

    work = Path(tempfile.mkdtemp(prefix="fy-bench-policy-rollout-"))
    fy_loop: list[float] = []
    fy_job: list[float] = []
    dr: list[float] = []
    try:
        with interrupts_unwind():
            data = cartpole_policy()
            model = work / "cartpole.onnx"
            model.write_bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            # Warm-up, not counted: loads the model into the cache, warms gymnasium and the allocator.
            sess = direct_session(model, len(cores))
            direct(sess, seeds[:2])
            fleetyard(model, sha, seeds[:2], work / "warmup")
            result: dict[str, Any] = {}
            for i in range(rounds):
                out = work / f"out{i}"
                if i % 2 == 0:
                    d_sps, d_returns = direct(sess, seeds)
                    f_sps, f_job, f_returns, result = fleetyard(model, sha, seeds, out)
                else:
                    f_sps, f_job, f_returns, result = fleetyard(model, sha, seeds, out)
                    d_sps, d_returns = direct(sess, seeds)
                if d_returns != f_returns:
                    raise SystemExit(f"returns differ: direct {d_returns} vs fleetyard {f_returns}")
                shutil.rmtree(out, ignore_errors=True)
                dr.append(d_sps)
                fy_loop.append(f_sps)
                fy_job.append(f_job)
                say(
                    f"round {i + 1}/{rounds}: direct {d_sps:,.0f} steps/s, fleetyard {f_sps:,.0f} "
                    f"(job {f_job:,.0f}), ratio {f_sps / d_sps:.3f}"
                )
            costs = call_costs(model)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratios = [f / d for f, d in zip(fy_loop, dr, strict=True)]
    job_ratios = [f / d for f, d in zip(fy_job, dr, strict=True)]
    overheads_us = [(1 / f - 1 / d) * 1e6 for f, d in zip(fy_loop, dr, strict=True)]
    value = round(statistics.median(ratios), 4)
    metrics: dict[str, Any] = {
        "ratio": value,
        "ratio_p25": rnd(percentile(ratios, 25), 4),
        "ratio_p75": rnd(percentile(ratios, 75), 4),
        "ratio_best": ratio(max(fy_loop), max(dr)),
        "steps_per_s": rnd(statistics.median(fy_loop), 0),
        "direct_steps_per_s": rnd(statistics.median(dr), 0),
        "job_steps_per_s": rnd(statistics.median(fy_job), 0),
        "job_ratio": rnd(statistics.median(job_ratios), 4),
        "step_overhead_us": rnd(statistics.median(overheads_us), 2),
        "loaded_model_run_us": rnd(costs["layer_us"], 2),
        "runner_us": rnd(costs["runner_us"], 2),
        "session_run_us": rnd(costs["session_us"], 2),
        "inference_p50_us": rnd(result["board"]["latency_ms"]["p50"] * 1000, 2),
        "inference_p99_us": rnd(result["board"]["latency_ms"]["p99"] * 1000, 2),
        "episodes": episodes,
        "steps_per_round": result["board"]["steps"],
        "rounds": rounds,
        "success_rate": result["board"]["success_rate"],
        "env": ENV_ID,
        "cores": len(cores),
        "session": result["timing"]["session"],
    }
    emit(BENCH, metrics, {"ratio": target(value, at_least=TARGET_RATIO)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
