"""What a pipeline run does next (pure): start, retry, skip, and its verdict.

A run is its spec's instances (:func:`fleetyard.domain.pipeline.expand`), each ``waiting``,
``running``, ``succeeded``, ``failed`` or ``skipped``. Each pass over a snapshot:

- an instance whose every need (each instance of each stage it needs) succeeded starts, with its
  job spec rendered from the params, its matrix combination and the metrics and outputs of the
  stages it needs; unless its condition (``if:``) is false: then it is skipped, and the run's
  verdict will be ``gated`` (a CI pipeline exits non-zero);
- an instance with a need that failed or was skipped is skipped, saying which;
- a failed instance with retries left starts again;
- past the run's time limit, everything not finished is canceled and the run is ``timed_out``.

The verdict, once every instance is finished: ``failed`` if one failed (retries spent),
``gated`` if a condition held one back, else ``succeeded``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fleetyard.domain.pipeline import Instance, PipelineSpec, condition, expand, render

__all__ = ["Decision", "Seen", "StageState", "Verdict", "advance", "context", "stage_outputs"]


class StageState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class Verdict(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    GATED = "gated"  # a stage's condition held it back
    TIMED_OUT = "timed_out"

    @property
    def ok(self) -> bool:
        return self is Verdict.SUCCEEDED


@dataclass(frozen=True)
class Seen:
    """An instance as the run's record has it."""

    state: StageState = StageState.WAITING
    attempts: int = 0  # jobs started for it so far
    metrics: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    gated: bool = False  # skipped because its condition was false


@dataclass
class Decision:
    start: list[tuple[Instance, dict[str, Any]]] = field(default_factory=list)  # with its rendered job spec
    skip: list[tuple[Instance, str, bool]] = field(default_factory=list)  # why; gated by its condition
    fail: list[tuple[Instance, str]] = field(default_factory=list)  # could not start (e.g. a reference unset)
    cancel: list[Instance] = field(default_factory=list)
    verdict: Verdict | None = None


def stage_outputs(ranks: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """A job's outputs as its stage records them (``ranks``: rank -> its files by name).

    The rule, so that ranks that write files of one name never overwrite each other silently:

    - a job of one rank: its files, by name;
    - a job of several ranks (a gang, an eval sharded over boards): every rank's file ``X`` as
      ``X@RANK`` (``report.json@0``, ``report.json@1``…), and the bare ``X`` is the lowest rank's
      that wrote one (rank 0's when every rank writes it).

    So ``${{ stages.S.outputs.X }}`` reads rank 0's file and ``${{ stages.S.outputs.X@2 }}`` rank 2's.
    (A matrix stage's outputs are not readable at all: :func:`~fleetyard.domain.pipeline.parse_pipeline`
    refuses the reference, naming the stage, since which instance it means is unclear.)
    """
    if len(ranks) == 1:
        [only] = ranks.values()
        return dict(only)
    out: dict[str, Any] = {}
    for rank in sorted(ranks):
        for name, value in ranks[rank].items():
            out.setdefault(name, value)
    for rank in sorted(ranks):
        for name, value in ranks[rank].items():
            out[f"{name}@{rank}"] = value
    return out


def context(spec: PipelineSpec, inst: Instance, seen: Mapping[str, Seen]) -> dict[str, Any]:
    """What an instance's templates and condition read: params, its matrix, earlier stages."""
    stages = {
        s: {"metrics": dict(seen[s].metrics), "outputs": dict(seen[s].outputs)}
        for s in spec.ancestors(inst.stage)
        if not spec.stages[s].matrix and s in seen and seen[s].state is StageState.SUCCEEDED
    }
    return {"params": dict(spec.params), "matrix": dict(inst.matrix), "stages": stages}


def advance(spec: PipelineSpec, seen: Mapping[str, Seen], *, started_at: float, now: float) -> Decision:
    """The acts of one pass over the run (``seen``: instance name -> its record; absent: waiting)."""
    d = Decision()
    instances = expand(spec)
    by_stage: dict[str, list[Instance]] = {}
    for i in instances:
        by_stage.setdefault(i.stage, []).append(i)
    state = {i.name: seen.get(i.name, Seen()) for i in instances}
    if now >= started_at + spec.time_limit_s:
        d.cancel = [i for i in instances if state[i.name].state is StageState.RUNNING]
        if any(not _finished(state[i.name], spec, i) for i in instances):
            d.verdict = Verdict.TIMED_OUT
            return d
    for inst in instances:
        s = state[inst.name]
        st = spec.stages[inst.stage]
        if s.state is StageState.FAILED and s.attempts <= st.retries:
            d.start.append((inst, _job(spec, inst, state)))
            state[inst.name] = Seen(StageState.RUNNING, s.attempts + 1)
            continue
        if s.state is not StageState.WAITING:
            continue
        needs = [n for stage in st.needs for n in by_stage[stage]]
        blocked = [n for n in needs if _lost(state[n.name], spec, n)]
        if blocked:
            why = ", ".join(f"{n.name} {state[n.name].state}" for n in blocked)
            d.skip.append((inst, f"needs {why}", False))
            state[inst.name] = Seen(StageState.SKIPPED)
            continue
        if any(state[n.name].state is not StageState.SUCCEEDED for n in needs):
            continue
        ctx = context(spec, inst, state)
        if st.when is not None and not condition(st.when, ctx):
            d.skip.append((inst, f"its condition is false: {st.when}", True))
            state[inst.name] = Seen(StageState.SKIPPED, gated=True)
            continue
        try:
            job = render(st.job, ctx)
        except KeyError as e:
            d.fail.append((inst, f"cannot fill its job: {e.args[0]}"))
            state[inst.name] = Seen(StageState.FAILED, s.attempts + 1 + st.retries)
            continue
        d.start.append((inst, job))
        state[inst.name] = Seen(StageState.RUNNING, s.attempts + 1)
    if all(_finished(state[i.name], spec, i) for i in instances):
        if any(_lost(state[i.name], spec, i) and state[i.name].state is StageState.FAILED for i in instances):
            d.verdict = Verdict.FAILED
        elif any(state[i.name].gated for i in instances):
            d.verdict = Verdict.GATED
        elif any(state[i.name].state is StageState.SKIPPED for i in instances):
            d.verdict = Verdict.FAILED
        else:
            d.verdict = Verdict.SUCCEEDED
    return d


def _job(spec: PipelineSpec, inst: Instance, state: Mapping[str, Seen]) -> dict[str, Any]:
    return dict(render(spec.stages[inst.stage].job, context(spec, inst, state)))


def _lost(s: Seen, spec: PipelineSpec, inst: Instance) -> bool:
    """Finished without success, for good (a failure with retries left is not)."""
    if s.state is StageState.SKIPPED:
        return True
    return s.state is StageState.FAILED and s.attempts > spec.stages[inst.stage].retries


def _finished(s: Seen, spec: PipelineSpec, inst: Instance) -> bool:
    return s.state is StageState.SUCCEEDED or _lost(s, spec, inst)
