"""Pipeline specs (parsing, matrices, references, conditions) and what a run does next (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetyard.domain.pipeline import Instance, condition, expand, parse_pipeline, render
from fleetyard.errors import BadRequest
from fleetyard.policy.pipeline import Seen, StageState, Verdict, advance, stage_outputs

CI = """
name: compiler-ci
params: {artifact: null, min_top1: 0.75}
time_limit: 2h
stages:
  validate:
    matrix: {generation: [sim-g1, sim-g2, sim-g3]}
    job:
      kind: validate
      generations: ["${{ matrix.generation }}"]
      params: {artifact: "${{ params.artifact }}", input_sets: 4}
    retries: 1
  eval:
    needs: [validate]
    job: {kind: eval, boards: 2, params: {artifact: "${{ params.artifact }}"}}
  report:
    needs: [eval]
    if: "${{ stages.eval.metrics.top1 >= params.min_top1 and not stages.eval.metrics.top1 > 1 }}"
    job:
      kind: command
      params: {command: "echo top1=${{ stages.eval.metrics.top1 }} ${{ stages.eval.outputs.report }}"}
"""
SHA = "a" * 64
S = StageState


def _spec():  # type: ignore[no-untyped-def]
    return parse_pipeline(CI, overrides={"artifact": SHA})


def test_a_matrix_stage_expands_to_one_instance_per_combination_in_dependency_order() -> None:
    spec = _spec()
    assert spec.time_limit_s == 7200.0 and spec.params["artifact"] == SHA
    names = [i.name for i in expand(spec)]
    assert names == [
        "validate[generation=sim-g1]", "validate[generation=sim-g2]", "validate[generation=sim-g3]", "eval", "report",
    ]  # fmt: skip


def test_a_run_starts_what_is_ready_renders_its_job_and_gates_on_metrics() -> None:
    spec = _spec()
    d = advance(spec, {}, started_at=0.0, now=1.0)
    assert [i.name for i, _ in d.start] == [f"validate[generation=sim-g{n}]" for n in (1, 2, 3)]
    job = d.start[0][1]
    assert job == {"kind": "validate", "generations": ["sim-g1"], "params": {"artifact": SHA, "input_sets": 4}}
    assert d.verdict is None
    seen = {i.name: Seen(S.SUCCEEDED, 1) for i, _ in d.start}
    d = advance(spec, seen, started_at=0.0, now=2.0)
    assert [(i.name, j["boards"]) for i, j in d.start] == [("eval", 2)]
    seen["eval"] = Seen(S.SUCCEEDED, 1, metrics={"top1": 0.8}, outputs={"report": "b" * 64})
    d = advance(spec, seen, started_at=0.0, now=3.0)
    [(inst, job)] = d.start
    assert inst.name == "report" and job["params"]["command"] == f"echo top1=0.8 {'b' * 64}"
    seen["report"] = Seen(S.SUCCEEDED, 1)
    assert advance(spec, seen, started_at=0.0, now=4.0).verdict is Verdict.SUCCEEDED
    # Below the bar: the report is skipped by its condition, and the run is gated (CI fails).
    seen["eval"] = Seen(S.SUCCEEDED, 1, metrics={"top1": 0.5})
    del seen["report"]
    d = advance(spec, seen, started_at=0.0, now=3.0)
    assert d.start == [] and [(i.name, gated) for i, _, gated in d.skip] == [("report", True)]
    assert d.verdict is Verdict.GATED and not d.verdict.ok


def test_a_failed_stage_retries_then_skips_what_needs_it_and_fails_the_run() -> None:
    spec = _spec()
    first = "validate[generation=sim-g1]"
    seen = {i.name: Seen(S.SUCCEEDED, 1) for i in expand(spec) if i.stage == "validate"}
    seen[first] = Seen(S.FAILED, 1)
    d = advance(spec, seen, started_at=0.0, now=1.0)
    assert [i.name for i, _ in d.start] == [first]  # retries: 1
    seen[first] = Seen(S.FAILED, 2)
    d = advance(spec, seen, started_at=0.0, now=2.0)
    assert (d.skip[0][0].name, d.skip[0][1]) == ("eval", f"needs {first} failed")
    assert [i.name for i, _, _ in d.skip] == ["eval", "report"]
    assert d.verdict is Verdict.FAILED


def test_past_its_time_limit_a_run_cancels_what_runs_and_times_out() -> None:
    spec = _spec()
    seen = {i.name: Seen(S.RUNNING, 1) for i in expand(spec) if i.stage == "validate"}
    d = advance(spec, seen, started_at=0.0, now=7200.0)
    assert d.verdict is Verdict.TIMED_OUT and len(d.cancel) == 3 and d.start == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("needs: [validate]\n    job: {kind: eval}", None),
        ("needs: [nope]\n    job: {kind: eval}", "needs 'nope', which is not a stage"),
        ("job: {kind: eval, params: {x: '${{ stages.validate.metrics.a }}'}}", "which it does not need"),
        ("needs: [validate]\n    job: {kind: eval, params: {x: '${{ stages.validate.metrics.a }}'}}", "matrix stage"),
        ("job: {kind: eval, params: {x: '${{ params.nope }}'}}", "params.nope is not declared"),
        ("job: {params: {}}", "names no kind"),
        ("needs: [validate]\n    if: 'stages.validate.metrics.a >'\n    job: {kind: eval}", "ends too soon"),
        ("job: {kind: eval}\n    typo: 1", "eval.typo"),
    ],
)
def test_a_bad_pipeline_is_refused_naming_the_stage_and_the_fix(change: str, says: str | None) -> None:
    text = CI.split("  eval:")[0] + "  eval:\n    " + change + "\n"
    if says is None:
        parse_pipeline(text)
        return
    with pytest.raises(BadRequest, match=says):
        parse_pipeline(text)


def test_cycles_and_unknown_overrides_are_refused() -> None:
    cyc = "name: c\nstages:\n  a: {needs: [b], job: {kind: command}}\n  b: {needs: [a], job: {kind: command}}\n"
    with pytest.raises(BadRequest, match="need each other"):
        parse_pipeline(cyc)
    with pytest.raises(BadRequest, match="no such param"):
        parse_pipeline(CI, overrides={"artefact": SHA})


def test_conditions_compare_and_combine_without_evaluating_code() -> None:
    ctx = {"params": {"x": 3, "name": "g1"}, "matrix": {}, "stages": {"e": {"metrics": {"m": 0.5}, "outputs": {}}}}
    assert condition("${{ params.x > 2 and stages.e.metrics.m == 0.5 }}", ctx)
    assert condition("params.name == 'g1' or params.x < 0", ctx)
    assert not condition("not (params.x >= 3)", ctx)
    assert not condition("stages.e.metrics.missing > 0", ctx)  # an unreported metric: false
    with pytest.raises(ValueError, match="'__import__' is not a reference"):
        condition("__import__('os') == 1", ctx)
    with pytest.raises(ValueError, match="cannot read"):
        condition("params.x + 1 > 2", ctx)
    assert render({"a": ["${{ params.x }}", "n=${{ params.x }}"]}, ctx) == {"a": [3, "n=3"]}


@given(st.dictionaries(st.sampled_from("abc"), st.lists(st.integers(0, 5), min_size=1, max_size=3), max_size=3))
def test_a_matrix_has_the_product_of_its_axes_and_names_each_once(matrix: dict[str, list[int]]) -> None:
    spec = parse_pipeline("name: m\nstages:\n  s:\n    job: {kind: command}\n")
    spec.stages["s"].matrix = matrix
    inst = expand(spec)
    n = 1
    for values in matrix.values():
        n *= len(values)
    assert len(inst) == n
    assert all(isinstance(i, Instance) and i.stage == "s" for i in inst)


def test_the_example_compiler_ci_pipeline_parses_and_expands() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "examples" / "pipelines" / "compiler-ci.yaml").read_text()
    spec = parse_pipeline(text, overrides={"artifact": SHA})
    assert [i.name for i in expand(spec)][-3:] == ["bench", "eval", "report"]
    assert len(expand(spec)) == 6


def test_a_gangs_outputs_keep_every_rank_and_the_bare_name_is_the_lowest_ranks() -> None:
    one = {"report.json": "a" * 64}
    assert stage_outputs({0: one}) == one  # one rank: its names, nothing added
    gang = stage_outputs(
        {1: {"samples.jsonl": "s1", "report.json": "r1"}, 0: {"samples.jsonl": "s0"}, 2: {"extra": "e2"}}
    )
    assert gang == {
        "samples.jsonl": "s0", "report.json": "r1", "extra": "e2",  # bare: the lowest rank that wrote it
        "samples.jsonl@0": "s0", "samples.jsonl@1": "s1", "report.json@1": "r1", "extra@2": "e2",
    }  # fmt: skip
    assert stage_outputs({}) == {}
    # A reference reads either; a condition may name a rank's output too.
    ctx = {"params": {}, "matrix": {}, "stages": {"eval": {"metrics": {}, "outputs": gang}}}
    assert render("${{ stages.eval.outputs.samples.jsonl@1 }}", ctx) == "s1"
    assert render("x ${{ stages.eval.outputs.samples.jsonl }}", ctx) == "x s0"
    assert condition("${{ stages.eval.outputs.report.json@1 == 'r1' }}", ctx)
    spec = parse_pipeline(CI.replace("outputs.report }}", "outputs.report@1 }}"), overrides={"artifact": SHA})
    assert "report@1" in str(spec.stages["report"].job)


def test_reading_a_matrix_stages_outputs_is_refused_naming_the_stage() -> None:
    text = CI.replace("needs: [eval]", "needs: [eval, validate]").replace(
        "${{ stages.eval.outputs.report }}", "${{ stages.validate.outputs.report }}"
    )
    with pytest.raises(BadRequest, match="reads matrix stage validate"):
        parse_pipeline(text, overrides={"artifact": SHA})
