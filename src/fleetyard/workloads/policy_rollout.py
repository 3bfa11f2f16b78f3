"""The ``rollout`` job kind: closed-loop evaluation of a policy with the policy on the board.

(Not the staged *firmware* rollouts of :mod:`fleetyard.policy.rollout`: this kind rolls a control
policy out in a simulated environment, as robotics engineers say.)

A gymnasium environment (classic control: ``CartPole-v1``, ``Pendulum-v1``, ``MountainCar-v0``,
``Acrobot-v1``, ...; MuJoCo ones only where the ``mujoco`` package is installed) steps on the
host CPU; the policy, an ONNX artifact (observation in, action or logits out), runs on the board
through the runtimes layer's warm session cache at every step, as the ``run`` kind runs its model
(by the loaded model's single-input path, ``OnnxModel.runner``, where it has one), and a sim
board's fault model applies to every step's outputs (silent corruption perturbs them; the
generation's latency factor is recorded, not applied, as in ``run``/``bench``).

Each seed is one episode: ``reset(seed=s)``, then observation -> policy -> action -> ``step``
until the environment terminates or truncates, or ``max_steps`` is reached. The policy's output
becomes an action by ``action``: ``argmax`` of logits (one value per discrete action), ``round``
(one value, rounded and clipped to the discrete range), ``clip`` (continuous: the output reshaped
to the action space's shape and clipped to its bounds); ``auto`` picks argmax for a discrete
space and clip for a box.

Success (``success``): ``return`` (the episode's return is at least ``success_threshold``, by
default the environment's registered ``reward_threshold``: 475 for CartPole-v1), ``terminated``
(the environment ended the episode itself: the goal of MountainCar/Acrobot was reached) or
``survived`` (it was not terminated before truncation or ``max_steps``: the pole stayed up).

The control arm (``control``, on by default) runs the same seeds with the reference runtime, ONNX
Runtime on the host CPU called directly (one thread, CPU provider, no Fleetyard in between). On a
sound board both arms take identical actions, so their trajectories are identical; a board that
computes wrong numbers makes them diverge. The result reports both arms' success rates (with
Wilson 95 % intervals) and returns, the number of seeds whose trajectories diverge (and the first
step where each does), and a paired comparison of per-seed returns (mean difference, and the exact
two-sided sign test's p-value; ``differs`` when p < 0.05).

Seeds shard across ranks by index: rank r of world_size w runs ``seeds[i]`` for ``i % w == r``.
Outputs per rank: ``episodes.jsonl`` (one line per episode and arm), ``trajectories.npz``
(``{arm}_seed{S}_observations`` / ``_actions`` / ``_rewards`` per episode; observations hold the
initial one too, so one more row than actions) and ``rollout.json`` (the result).

:func:`cartpole_policy` and :func:`linear_policy` build small ONNX controllers in code for tests
and examples; :func:`rollout_local` runs a job's params here, on this machine's CPU.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleetyard.domain.job import Outcome
from fleetyard.drivers.sim import FAULTS_ENV, as_computed_by
from fleetyard.errors import BadRequest, FleetyardError
from fleetyard.runtimes import (
    DeviceSettings,
    DeviceUnavailable,
    LoadedModel,
    RuntimeUnavailable,
    check_inputs,
    default_cache,
)
from fleetyard.workloads.admission import Registry, admit_artifact_job
from fleetyard.workloads.base import WorkloadContext, WorkloadResult, board_record, params_as
from fleetyard.workloads.run import SHA256, timing

__all__ = [
    "CARTPOLE_WEIGHTS",
    "EPISODES_FILE",
    "RESULT_FILE",
    "TRAJECTORIES_FILE",
    "PolicyRolloutWorkload",
    "RolloutParams",
    "cartpole_policy",
    "execute",
    "linear_policy",
    "rank_seeds",
    "rollout_local",
    "sign_test_p",
    "wilson_interval",
]

EPISODES_FILE = "episodes.jsonl"
TRAJECTORIES_FILE = "trajectories.npz"
RESULT_FILE = "rollout.json"
Z95 = 1.959963984540054
ActionMap = Literal["auto", "argmax", "round", "clip"]
SuccessRule = Literal["return", "terminated", "survived"]


# ---- statistics ---------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % by default); (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test_p(diffs: Sequence[float]) -> float:
    """The exact two-sided sign test's p-value for paired differences (zeros dropped); 1 if none."""
    nonzero = [d for d in diffs if d != 0]
    n = len(nonzero)
    if n == 0:
        return 1.0
    k = min(sum(d > 0 for d in nonzero), sum(d < 0 for d in nonzero))
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return float(min(1.0, 2 * tail))


def rank_seeds(seeds: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The seeds rank ``rank`` of ``world_size`` runs: those at index i with i % world_size == rank."""
    return [s for i, s in enumerate(seeds) if i % max(1, world_size) == rank]


# ---- the environment ----------------------------------------------------------------------------


def _gym() -> Any:
    import gymnasium  # Imported here: a server or worker that never runs this kind does not pay for it.

    return gymnasium


@functools.cache
def _known_env_ids() -> tuple[str, ...]:
    return tuple(sorted(_gym().envs.registry))


def _classic_examples() -> str:
    return "CartPole-v1, Pendulum-v1, MountainCar-v0, MountainCarContinuous-v0, Acrobot-v1"


def make_env(env_id: str, max_steps: int | None = None) -> Any:
    """``gymnasium.make(env_id)``; a :class:`BadRequest` that says why when it cannot be made."""
    gym = _gym()
    if env_id not in gym.envs.registry:
        close = [e for e in _known_env_ids() if env_id.split("-")[0].lower() in e.lower()][:5]
        hint = f"; close: {', '.join(close)}" if close else ""
        raise BadRequest(
            f"params.env: unknown gymnasium environment {env_id!r}{hint}; e.g. {_classic_examples()}",
            detail={"field": "params.env"},
        )
    try:
        kw: dict[str, Any] = {} if max_steps is None else {"max_episode_steps": max_steps}
        return gym.make(env_id, **kw)
    except gym.error.DependencyNotInstalled as exc:
        needs = "mujoco" if "mujoco" in str(exc).lower() else "an extra package"
        raise BadRequest(
            f"params.env: {env_id} needs {needs}, which is not installed here ({exc}); MuJoCo environments run only "
            f"where the `mujoco` package is importable (pip install mujoco); classic control needs nothing: "
            f"{_classic_examples()}",
            detail={"field": "params.env"},
        ) from None
    except Exception as exc:  # any failure to build an environment is the spec's
        raise BadRequest(f"params.env: {env_id} could not be made: {exc}", detail={"field": "params.env"}) from None


def _space_facts(env: Any) -> dict[str, Any]:
    gym = _gym()
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, gym.spaces.Box):
        raise BadRequest(
            f"params.env: the observation space is {obs}; this kind feeds a Box (an array) to the policy",
            detail={"field": "params.env"},
        )
    facts: dict[str, Any] = {"obs_shape": tuple(int(d) for d in obs.shape)}
    if isinstance(act, gym.spaces.Discrete):
        facts.update(discrete=True, n=int(act.n), start=int(act.start))
    elif isinstance(act, gym.spaces.Box):
        facts.update(discrete=False, act_shape=tuple(int(d) for d in act.shape), low=act.low, high=act.high)
    else:
        raise BadRequest(
            f"params.env: the action space is {act}; this kind maps outputs to Discrete or Box actions",
            detail={"field": "params.env"},
        )
    return facts


@functools.cache
def _env_facts(env_id: str) -> dict[str, Any]:
    env = make_env(env_id)
    try:
        facts = _space_facts(env)
        facts["reward_threshold"] = env.spec.reward_threshold if env.spec is not None else None
        facts["max_episode_steps"] = env.spec.max_episode_steps if env.spec is not None else None
        return facts
    finally:
        env.close()


# ---- params -------------------------------------------------------------------------------------


class RolloutParams(BaseModel):
    """Parameters of a ``rollout`` job."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field("CartPole-v1", description="gymnasium environment id (classic control; MuJoCo if installed)")
    artifact: str = Field(
        pattern=SHA256, description="sha256 of a registered ONNX policy: observation in, action or logits out"
    )
    seeds: list[int] | None = Field(None, min_length=1, max_length=100_000, description="the episodes' seeds")
    episodes: int = Field(10, ge=1, le=100_000, description="without seeds: seeds seed .. seed+episodes-1")
    seed: int = Field(0, ge=0, description="the first seed when seeds is not given")
    max_steps: int | None = Field(
        None, ge=1, le=1_000_000, description="cap on steps per episode (default: the environment's own limit)"
    )
    action: ActionMap = Field("auto", description="output -> action: argmax (discrete logits), round, clip (box)")
    success: SuccessRule = Field(
        "return", description="return >= success_threshold, terminated (goal reached) or survived (not terminated)"
    )
    success_threshold: float | None = Field(None, description="for success=return; default: the env's reward_threshold")
    control: bool = Field(True, description="also run the seeds with ONNX Runtime on the host CPU directly")

    @field_validator("env")
    @classmethod
    def _env_exists(cls, v: str) -> str:
        try:
            _env_facts(v)
        except BadRequest as exc:
            raise ValueError(exc.message.removeprefix("params.env: ")) from None
        return v

    @model_validator(mode="after")
    def _rules(self) -> RolloutParams:
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        facts = _env_facts(self.env)
        if self.success == "return" and self.threshold() is None:
            raise ValueError(f"{self.env} registers no reward_threshold; give success_threshold (or another success)")
        if self.action == "clip" and facts["discrete"]:
            raise ValueError(f"action clip is for continuous (Box) action spaces; {self.env}'s is discrete")
        if self.action in ("argmax", "round") and not facts["discrete"]:
            raise ValueError(f"action {self.action} is for discrete action spaces; {self.env}'s is a Box (use clip)")
        return self

    def seed_list(self) -> list[int]:
        return list(self.seeds) if self.seeds is not None else list(range(self.seed, self.seed + self.episodes))

    def threshold(self) -> float | None:
        if self.success_threshold is not None:
            return self.success_threshold
        t = _env_facts(self.env)["reward_threshold"]
        return None if t is None else float(t)

    def action_map(self) -> str:
        if self.action != "auto":
            return self.action
        return "argmax" if _env_facts(self.env)["discrete"] else "clip"


def check_policy_fits(params: RolloutParams, signature: Mapping[str, Any]) -> None:
    """Refuse a policy whose one input cannot take the observation or whose first output cannot
    be mapped to the action space (``signature`` as ``Signature.to_dict()``)."""
    facts = _env_facts(params.env)
    inputs, outputs = list(signature.get("inputs") or []), list(signature.get("outputs") or [])
    if len(inputs) != 1 or not outputs:
        raise BadRequest(
            f"params.artifact: a policy takes one input (the observation) and returns the action or logits first; "
            f"this one takes {len(inputs)} input(s) and returns {len(outputs)} output(s)",
            detail={"field": "params.artifact"},
        )

    def last(spec: Mapping[str, Any]) -> int | None:
        shape = spec.get("shape")
        return shape[-1] if shape and isinstance(shape[-1], int) else None

    obs_n = int(np.prod(facts["obs_shape"]))
    have = last(inputs[0])
    if have is not None and have != obs_n:
        raise BadRequest(
            f"params.artifact: the policy's input {inputs[0]['name']} takes {have} values; {params.env}'s observation "
            f"has {obs_n}",
            detail={"field": "params.artifact", "input": inputs[0]},
        )
    out_n, mapping = last(outputs[0]), params.action_map()
    want = {"argmax": facts.get("n"), "round": 1, "clip": int(np.prod(facts.get("act_shape", ()) or (1,)))}[mapping]
    if out_n is not None and out_n != want:
        space = f"{facts['n']} discrete actions" if facts["discrete"] else f"a Box of shape {list(facts['act_shape'])}"
        raise BadRequest(
            f"params.artifact: the policy's output {outputs[0]['name']} has {out_n} values, but action={mapping} on "
            f"{params.env} ({space}) needs {want}",
            detail={"field": "params.artifact", "output": outputs[0]},
        )


# ---- the kind -----------------------------------------------------------------------------------


class PolicyRolloutWorkload:
    """Runs :class:`RolloutParams` in the board's worker process."""

    kind: ClassVar[str] = "rollout"
    params_model: ClassVar[type[BaseModel]] = RolloutParams

    @classmethod
    def blobs(cls, params: BaseModel) -> list[str]:
        return [params_as(params, RolloutParams).artifact]

    @classmethod
    def admit(cls, params: BaseModel, registry: Registry) -> None:
        p = params_as(params, RolloutParams)
        admit_artifact_job(registry, artifact=p.artifact)
        info = registry.artifact_info(p.artifact)
        assert info is not None  # Invariant: admit_artifact_job refused an unregistered one.
        if info.get("format") != "onnx":
            raise BadRequest(
                f"params.artifact: a rollout policy must be ONNX (the control arm runs it with ONNX Runtime); "
                f"this artifact is {info.get('format')}",
                detail={"field": "params.artifact"},
            )
        check_policy_fits(p, info["signature"])

    def run(self, ctx: WorkloadContext) -> WorkloadResult:
        p = params_as(ctx.params, RolloutParams)
        return execute(
            p,
            artifact_path=ctx.blob(p.artifact),
            output_dir=ctx.output_dir,
            env=ctx.env,
            rank=ctx.rank,
            world_size=ctx.world_size,
            log=ctx.log,
            should_stop=ctx.should_stop,
            artifact_sha256=p.artifact,
        )


def rollout_local(params: RolloutParams, *, artifact_path: Path, output_dir: Path) -> WorkloadResult:
    """Run ``params`` here, on this machine's CPU, with no server: the desk loop."""
    output_dir.mkdir(parents=True, exist_ok=True)
    return execute(params, artifact_path=artifact_path, output_dir=output_dir, env={})


Infer = Callable[[np.ndarray], np.ndarray]  # the policy's input array -> its first output


def _board_infer(model: LoadedModel, env: Mapping[str, str], example: np.ndarray) -> Infer:
    """The board's inference for one step, bound once per rank: the policy's one input -> its
    first output, through the runtimes layer (the warm session), with the sim board's fault model.

    A sound board takes the loaded model's single-input fast path where it has one (ONNX:
    ``OnnxModel.runner``: the names bound once, ``example`` checked against the signature once,
    then one ``session.run`` a step); a board whose fault model perturbs outputs goes through
    ``LoadedModel.run`` and :func:`as_computed_by` at every step, as other kinds do.
    """
    name, out = model.signature.inputs[0].name, model.signature.outputs[0].name
    # The board's session environment is fixed for the rank: whether its fault model perturbs
    # outputs is known once, and a sound board's step pays nothing for it.
    if "silent_corruption" in env.get(FAULTS_ENV, "").split(","):
        run = model.run

        def faulty(x: np.ndarray) -> np.ndarray:
            return as_computed_by(env, run({name: x}, check=False))[out]  # type: ignore[no-any-return]

        return faulty
    runner = getattr(model, "runner", None)
    if runner is not None:
        return runner(example)  # type: ignore[no-any-return]
    check_inputs(model.signature, {name: example})  # other runtimes: the input checked once, here
    run = model.run

    def sound(x: np.ndarray) -> np.ndarray:
        return run({name: x}, check=False)[out]

    return sound


def reference_session(artifact_path: Path) -> Any:
    """The control arm's runtime: an ONNX Runtime session on the host CPU, one thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(artifact_path), sess_options=so, providers=["CPUExecutionProvider"])


def _reference_infer(session: Any) -> Infer:
    name, out = session.get_inputs()[0].name, [session.get_outputs()[0].name]
    run = session.run

    def infer(x: np.ndarray) -> np.ndarray:
        return np.asarray(run(out, {name: x})[0])

    return infer


def to_action(output: np.ndarray, mapping: str, facts: Mapping[str, Any]) -> Any:
    """The environment action for the policy's output under ``mapping``."""
    if mapping == "argmax":
        return int(np.asarray(output).argmax()) + facts["start"]  # argmax over the flattened output
    flat = np.asarray(output, dtype=np.float64).reshape(-1)
    if mapping == "round":
        lo, hi = facts["start"], facts["start"] + facts["n"] - 1
        return int(min(hi, max(lo, round(float(flat[0])))))
    low, high = facts["low"], facts["high"]
    return np.clip(flat.reshape(facts["act_shape"]), low, high).astype(low.dtype)


def _latency(values_s: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 (linear interpolation) and mean of per-step inference latencies (s), in ms."""
    if not values_s:
        return {"p50": None, "p99": None, "mean": None}
    ms = np.asarray(values_s, dtype=np.float64) * 1e3
    q = np.percentile(ms, [50, 99])
    return {"p50": round(float(q[0]), 6), "p99": round(float(q[1]), 6), "mean": round(float(ms.mean()), 6)}


STOP_EVERY = 64  # steps between calls of should_stop


def _episode(
    env: Any,
    infer: Infer,
    seed: int,
    *,
    dtype: np.dtype[Any],
    mapping: str,
    facts: Mapping[str, Any],
    latencies: list[float],
    max_steps: int | None,
    should_stop: Callable[[], bool] | None,
) -> dict[str, Any]:
    """One episode: each step the observation as the policy's input (a batch of one, ``dtype``),
    the inference timed (seconds, into ``latencies``), its output mapped to the action, the step, and
    the trajectory recorded (references kept, stacked once at the end)."""
    obs, _ = env.reset(seed=seed)
    observations: list[Any] = [obs]
    actions: list[Any] = []
    rewards: list[Any] = []
    keep_obs, keep_action, keep_reward = observations.append, actions.append, rewards.append
    # perf_counter's float: its difference costs less than perf_counter_ns's (two big ints), and
    # a double holds the monotonic clock to a few nanoseconds even after a year of uptime.
    clock, record = time.perf_counter, latencies.append
    # The argmax mapping (discrete logits) is written out in the loop; others call to_action.
    to_act = None if mapping == "argmax" else functools.partial(to_action, mapping=mapping, facts=facts)
    start = int(facts.get("start", 0))
    # A vector observation of the policy's dtype is fed as a view, obs[None] (the same (1, n)
    # array as reshape + astype, for less than half their cost); anything else is flattened and
    # cast. The dtype is looked at every step: an environment may return another than its space's.
    vector = len(facts["obs_shape"]) == 1
    limit = max_steps if max_steps is not None else math.inf
    terminated = truncated = False
    step, n = env.step, 0
    # One comparison a step: at check_at, whichever is due of asking should_stop (every
    # STOP_EVERY steps) and the max_steps cap.
    check_at = 0
    while not (terminated or truncated):
        if n == check_at:
            if n >= limit:
                truncated = True
                break
            if should_stop is not None and should_stop():
                raise _Stopped
            check_at = int(min(limit, n + STOP_EVERY))
        x = obs[None] if vector and obs.dtype is dtype else obs.reshape(1, -1).astype(dtype, copy=False)
        t0 = clock()
        y = infer(x)
        record(clock() - t0)
        action = int(y.argmax()) + start if to_act is None else to_act(y)  # argmax over the flattened output
        obs, reward, terminated, truncated, _ = step(action)
        keep_obs(obs)
        keep_action(action)
        keep_reward(reward)
        n += 1
    if n >= limit:
        truncated = True
    return {
        # One np.array over the kept references: as np.stack (same shape, dtype, errors), without
        # its per-item work (a third of the cost; np.stack was ~0.2 µs a step on CartPole).
        "observations": np.array(observations),
        "actions": np.asarray(actions) if actions else np.zeros((0,)),
        "rewards": np.asarray(rewards, dtype=np.float64),
        "terminated": bool(terminated),
        "truncated": bool(truncated and not terminated),
    }


class _Stopped(Exception):
    pass


def _success(params: RolloutParams, ep: Mapping[str, Any], ret: float) -> bool:
    if params.success == "terminated":
        return bool(ep["terminated"])
    if params.success == "survived":
        return not ep["terminated"]
    threshold = params.threshold()
    assert threshold is not None  # Invariant: the params' validator refused a rule without one.
    return ret >= threshold


def _diverged_at(a: Mapping[str, Any], b: Mapping[str, Any]) -> int | None:
    """The first step where two trajectories of one seed differ (action or next observation)."""
    n = min(len(a["actions"]), len(b["actions"]))
    for i in range(n):
        if not np.array_equal(a["actions"][i], b["actions"][i]) or not np.array_equal(
            a["observations"][i + 1], b["observations"][i + 1]
        ):
            return i
    return None if len(a["actions"]) == len(b["actions"]) else n


def _arm_summary(episodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    n = len(episodes)
    k = sum(e["success"] for e in episodes)
    returns = [e["return"] for e in episodes]
    lo, hi = wilson_interval(k, n)
    lat = [x for e in episodes for x in e.pop("_latencies", [])]
    return {
        "episodes": n,
        "successes": k,
        "success_rate": round(k / n, 6) if n else None,
        "success_ci95": [round(lo, 6), round(hi, 6)],
        "return_mean": round(statistics.fmean(returns), 6) if returns else None,
        "return_std": round(statistics.pstdev(returns), 6) if returns else None,
        "length_mean": round(statistics.fmean(e["length"] for e in episodes), 3) if n else None,
        "latency_ms": _latency(lat),
        "steps": sum(e["length"] for e in episodes),
    }


def execute(
    params: RolloutParams,
    *,
    artifact_path: Path,
    output_dir: Path,
    env: Mapping[str, str],
    rank: int = 0,
    world_size: int = 1,
    log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    artifact_sha256: str | None = None,
) -> WorkloadResult:
    """Roll this rank's seeds out on the board (and in the control arm); save and summarise."""
    rank_started_at = time.time()
    seeds = rank_seeds(params.seed_list(), rank, world_size)
    mapping = params.action_map()
    try:
        settings = DeviceSettings.from_env(env)
        t_load = time.perf_counter()
        model, hit = default_cache().lookup(artifact_path, settings, sha256=artifact_sha256)
        load_s = time.perf_counter() - t_load
        check_policy_fits(params, model.signature.to_dict())
        reference = reference_session(artifact_path) if params.control else None
    except (RuntimeUnavailable, DeviceUnavailable) as exc:
        return WorkloadResult(Outcome.CONFIG_ERROR, message=exc.message)
    except FleetyardError as exc:
        return WorkloadResult(Outcome.USER_ERROR, message=exc.message)
    except Exception as exc:  # onnxruntime refusing the file for the control arm
        return WorkloadResult(Outcome.USER_ERROR, message=f"the control arm cannot load the policy: {exc}")

    gym_env = make_env(params.env, params.max_steps)
    facts = _space_facts(gym_env)
    arms: dict[str, list[dict[str, Any]]] = {"board": []}
    if reference is not None:
        arms["control"] = []
    trajectories: dict[str, np.ndarray] = {"seeds": np.asarray(seeds, dtype=np.int64)}
    diverged: dict[int, int | None] = {}
    compute_started_at: float | None = time.time() if seeds else None
    arm_s = dict.fromkeys(arms, 0.0)
    try:
        # Bound once per rank: each arm's inference and its input dtype.
        board_in = model.signature.inputs[0]
        board_dtype = np.dtype(board_in.dtype or "float32")
        example = np.zeros((1, int(np.prod(facts["obs_shape"]))), board_dtype)
        infer: dict[str, tuple[Infer, np.dtype[Any]]] = {"board": (_board_infer(model, env, example), board_dtype)}
        if reference is not None:
            ref_double = reference.get_inputs()[0].type == "tensor(double)"
            infer["control"] = (_reference_infer(reference), np.dtype(np.float64 if ref_double else np.float32))
        for seed in seeds:
            per_arm: dict[str, dict[str, Any]] = {}
            for arm in arms:
                lat: list[float] = []
                t_arm = time.perf_counter()
                arm_infer, dtype = infer[arm]
                ep = _episode(
                    gym_env,
                    arm_infer,
                    seed,
                    dtype=dtype,
                    mapping=mapping,
                    facts=facts,
                    latencies=lat,
                    max_steps=params.max_steps,
                    should_stop=should_stop,
                )
                per_arm[arm] = ep
                arm_s[arm] += time.perf_counter() - t_arm
                ret = float(ep["rewards"].sum())
                arms[arm].append(
                    {
                        "arm": arm,
                        "seed": seed,
                        "return": round(ret, 6),
                        "success": _success(params, ep, ret),
                        "length": len(ep["actions"]),
                        "terminated": ep["terminated"],
                        "truncated": ep["truncated"],
                        "latency_ms": _latency(lat),
                        "_latencies": lat,
                    }
                )
                for key in ("observations", "actions", "rewards"):
                    trajectories[f"{arm}_seed{seed}_{key}"] = ep[key]
            if "control" in per_arm:
                at = _diverged_at(per_arm["board"], per_arm["control"])
                diverged[seed] = at
                arms["board"][-1]["diverged_at"] = at
                arms["control"][-1]["diverged_at"] = at
            if log is not None:
                b = arms["board"][-1]
                log(
                    f"seed {seed}: return {b['return']:g}, {b['length']} steps, success {b['success']}"
                    + (f", diverged at step {diverged[seed]}" if diverged.get(seed) is not None else "")
                    + "\n"
                )
    except _Stopped:
        return WorkloadResult(Outcome.CANCELED, message=f"stopped after {len(arms['board'])} of {len(seeds)} episodes")
    except FleetyardError as exc:  # the board refused a step
        return WorkloadResult(Outcome.USER_ERROR, message=exc.message)
    finally:
        gym_env.close()

    output_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output_dir / TRAJECTORIES_FILE, **trajectories)  # type: ignore[arg-type]
    summaries = {arm: _arm_summary(eps) for arm, eps in arms.items()}
    with (output_dir / EPISODES_FILE).open("w") as f:
        for i in range(len(seeds)):
            for arm in arms:
                f.write(json.dumps(arms[arm][i]) + "\n")
    result: dict[str, Any] = {
        "env": params.env,
        "artifact": artifact_sha256,
        "rank": rank,
        "world_size": world_size,
        "seeds": seeds,
        "action": mapping,
        "success_rule": params.success,
        "success_threshold": params.threshold() if params.success == "return" else None,
        "max_steps": params.max_steps,
        "board": summaries["board"],
        "episodes": [{k: e[k] for k in ("seed", "return", "success", "length")} for e in arms["board"]],
        "steps_per_s": {a: round(summaries[a]["steps"] / t, 3) if t > 0 else None for a, t in arm_s.items()},
        "runtime": model.record().to_dict(),
        "board_record": board_record(env),
        "timing": timing(
            hit=hit, load_s=load_s, compute_started_at=compute_started_at, rank_started_at=rank_started_at
        ),
        "outputs": [EPISODES_FILE, TRAJECTORIES_FILE, RESULT_FILE],
    }
    if "control" in arms:
        diffs = [b["return"] - c["return"] for b, c in zip(arms["board"], arms["control"], strict=True)]
        p = sign_test_p(diffs)
        result["control"] = summaries["control"]
        result["comparison"] = {
            "diverged_seeds": sorted(s for s, at in diverged.items() if at is not None),
            "diverged": sum(at is not None for at in diverged.values()),
            "return_diff_mean": round(statistics.fmean(diffs), 6) if diffs else None,
            "return_diff_ci95": _mean_ci(diffs),
            "sign_test_p": round(p, 6),
            "differs": p < 0.05,
            # identical: every seed's trajectory matched the control arm's, step for step (a sound
            # board); diverged: some did not, but returns do not differ significantly; differs: they do.
            "verdict": "differs"
            if p < 0.05
            else "diverged"
            if any(at is not None for at in diverged.values())
            else "identical",
            "success_rate_diff": (
                round(summaries["board"]["success_rate"] - summaries["control"]["success_rate"], 6) if seeds else None
            ),
        }
    (output_dir / RESULT_FILE).write_text(json.dumps(result, indent=1))
    if log is not None:
        b = summaries["board"]
        line = f"{len(seeds)} episodes on the board: success {b['successes']}/{b['episodes']}"
        if "comparison" in result:
            c = result["comparison"]
            line += f"; control arm {summaries['control']['successes']}/{b['episodes']}, {c['diverged']} diverged"
        log(line + "\n")
    return WorkloadResult(Outcome.SUCCESS, exit_code=0, result=result)


def _mean_ci(diffs: Sequence[float]) -> list[float] | None:
    """A normal-approximation 95 % interval of the mean paired difference (None under 2 pairs)."""
    if len(diffs) < 2:
        return None
    m, s = statistics.fmean(diffs), statistics.stdev(diffs)
    half = Z95 * s / math.sqrt(len(diffs))
    return [round(m - half, 6), round(m + half, 6)]


# ---- policies built in code ---------------------------------------------------------------------

# CartPole-v1: push right when 0.5 x + 1 x_dot + 10 theta + 2 theta_dot > 0. Balances the pole for
# the full 500 steps on every seed tried (0..19).
CARTPOLE_WEIGHTS: tuple[float, ...] = (0.5, 1.0, 10.0, 2.0)


def linear_policy(
    weights: np.ndarray | Sequence[Sequence[float]], bias: Sequence[float] | None = None, *, name: str = "linear_policy"
) -> bytes:
    """A serialized ONNX policy ``y = obs @ W + b``: input ``obs`` float32[batch, n_obs], output
    ``action`` float32[batch, n_out] (logits or a continuous action)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.asarray(weights, dtype=np.float32)
    b = np.zeros(w.shape[1], dtype=np.float32) if bias is None else np.asarray(bias, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["action"])],
        name,
        inputs=[helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", w.shape[0]])],
        outputs=[helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", w.shape[1]])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="fleetyard-rollout")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def cartpole_policy() -> bytes:
    """A CartPole-v1 controller: logits [-z, z] with z = CARTPOLE_WEIGHTS . obs (argmax: z > 0 pushes right)."""
    w = np.asarray(CARTPOLE_WEIGHTS, dtype=np.float32)
    return linear_policy(np.stack([-w, w], axis=1), name="cartpole_policy")
