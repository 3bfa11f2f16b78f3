"""The ``validate`` kind: references, goldens, tolerances, many sets, layer-wise; its CLI's --local and --junit."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import graph_models as gm
import models
import numpy as np
import onnx
import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from fleetyard.cli.validate import junit_xml, rank_row, validate
from fleetyard.domain.job import Outcome
from fleetyard.validation.localize import ort_runner
from fleetyard.workloads.base import required_blobs
from fleetyard.workloads.tensors import generate_inputs, load_arrays, save_arrays
from fleetyard.workloads.validate import ValidateParams, execute, validate_local


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    return models.save(models.mlp(batch="batch"), tmp_path / "mlp.onnx")


def _golden(tmp_path: Path, seed: int, batch: int, *, wrong: bool = False) -> Path:
    from fleetyard.runtimes import inspect

    sig = inspect(tmp_path / "mlp.onnx").signature
    x = generate_inputs(sig, seed=seed, dims={"batch": batch})["x"]
    y = models.mlp_reference(x).astype(np.float32)
    if wrong:
        y[0, 0] += 0.5
    return save_arrays(tmp_path / ("wrong.npz" if wrong else "golden.npz"), {"y": y})


def test_passes_against_onnxruntime_and_keeps_what_reproduces_it(tmp_path: Path, mlp_path: Path) -> None:
    params = ValidateParams(artifact=_sha(mlp_path), seed=3, dims={"batch": 4})
    out = tmp_path / "out"
    res = validate_local(params, artifact_path=mlp_path, inputs_path=None, expected_path=None, output_dir=out)
    assert res.outcome is Outcome.SUCCESS, res.message
    r = res.result
    assert r["passed"] and r["sets"] == 1 and r["failing_sets"] == 0 and r["seeds"] == [3, 3]
    assert r["reference"]["kind"] == "onnxruntime" and r["runtime"]["runtime"]
    assert {p.name for p in out.iterdir()} == {
        "report.json",
        "report.html",
        "inputs.npz",
        "candidate.npz",
        "reference.npz",
    }
    assert json.loads((out / "report.json").read_text())["passed"] is True
    x = load_arrays(out / "inputs.npz")["x"]
    np.testing.assert_allclose(load_arrays(out / "reference.npz")["y"], models.mlp_reference(x), rtol=1e-5, atol=1e-6)


def test_golden_outputs_pass_and_a_wrong_golden_is_a_user_error_naming_the_output(
    tmp_path: Path, mlp_path: Path
) -> None:
    good, bad = _golden(tmp_path, 7, 3), _golden(tmp_path, 7, 3, wrong=True)
    for path, ok in ((good, True), (bad, False)):
        params = ValidateParams(artifact=_sha(mlp_path), seed=7, dims={"batch": 3}, expected=_sha(path))
        res = validate_local(
            params, artifact_path=mlp_path, inputs_path=None, expected_path=path, output_dir=tmp_path / path.stem
        )
        assert res.result["reference"]["kind"] == "expected"
        if ok:
            assert res.outcome is Outcome.SUCCESS, res.message
            continue
        assert res.outcome is Outcome.USER_ERROR
        assert (
            res.message and "numerical mismatch: 1 of 1 sets failed" in res.message and "worst output y" in res.message
        )
        assert res.result["worst_output"] == "y" and res.result["worst_max_abs"] == pytest.approx(0.5, rel=1e-3)
        assert res.result["failing_report"]["outputs"][0]["name"] == "y"
        # A looser tolerance for that output turns the failure into a pass.
        loose = params.model_copy(update={"atol": ["y:0.6"]})
        res2 = validate_local(
            loose, artifact_path=mlp_path, inputs_path=None, expected_path=path, output_dir=tmp_path / "l"
        )
        assert res2.outcome is Outcome.SUCCESS, res2.message
        assert res2.result["failing_report"] is None


def test_many_sets_stream_and_count_failing_sets(tmp_path: Path, mlp_path: Path) -> None:
    from fleetyard.runtimes import load

    model = load(mlp_path)
    calls: list[int] = []

    def candidate(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(1)
        out = model.run(inputs)
        if len(calls) in (3, 5):  # sets 2 and 4 come back wrong
            out = {"y": out["y"] + np.float32(1e-2)}
        return out

    params = ValidateParams(artifact=_sha(mlp_path), input_sets=6, seed=10, dims={"batch": 2})
    out = tmp_path / "out"
    out.mkdir()
    res = execute(params, artifact_path=mlp_path, inputs_path=None, expected_path=None, output_dir=out, env={},
                  candidate=candidate)  # fmt: skip
    assert res.outcome is Outcome.USER_ERROR
    r = res.result
    assert r["sets"] == 6 and r["failing_sets"] == 2 and r["first_failing_set"] == 2 and r["saved_set"] == 2
    assert r["comparison"]["outputs"][0]["sets_failed"] == 2 and r["seeds"] == [10, 15]
    assert res.message and "2 of 6 sets failed" in res.message
    # The saved inputs are set 2's, i.e. seed 12.
    from fleetyard.runtimes import inspect

    x = generate_inputs(inspect(mlp_path).signature, seed=12, dims={"batch": 2})["x"]
    np.testing.assert_array_equal(load_arrays(out / "inputs.npz")["x"], x)


def test_layerwise_finds_the_perturbed_node(tmp_path: Path) -> None:
    model = gm.branchy_mlp()
    path = tmp_path / "branchy.onnx"
    onnx.save(model, str(path))
    planted = gm.plant_bug(model, "a_tanh")
    ref = ort_runner("disable")

    def candidate(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return ref(planted, inputs)

    params = ValidateParams(artifact=_sha(path), layerwise=True)
    out = tmp_path / "out"
    out.mkdir()
    res = execute(params, artifact_path=path, inputs_path=None, expected_path=None, output_dir=out, env={},
                  candidate=candidate, layerwise_candidate=gm.planted_runner("a_tanh"))  # fmt: skip
    assert res.outcome is Outcome.USER_ERROR
    layer = res.result["layerwise"]
    assert layer["first_divergent"]["name"] == "a_tanh" and layer["first_divergent"]["origin"] == "here"
    assert res.message and "a_tanh" in res.message


def test_sim_corruption_fails_validation(tmp_path: Path, mlp_path: Path) -> None:
    params = ValidateParams(artifact=_sha(mlp_path), dims={"batch": 4})
    out = tmp_path / "out"
    out.mkdir()
    env = {"FLEETYARD_SIM_FAULTS": "silent_corruption"}
    res = execute(params, artifact_path=mlp_path, inputs_path=None, expected_path=None, output_dir=out, env=env)
    assert res.outcome is Outcome.USER_ERROR and res.result["failing_sets"] == 1


def test_params_are_checked_and_declare_blobs() -> None:
    a, i, e = "a" * 64, "b" * 64, "c" * 64
    with pytest.raises(ValidationError):
        ValidateParams(artifact=a, expected=e, reference="onnxruntime")
    with pytest.raises(ValidationError):
        ValidateParams(artifact=a, expected=e, input_sets=2)
    with pytest.raises(ValidationError):
        ValidateParams(artifact=a, atol=["y:nope"])
    with pytest.raises(ValidationError):
        ValidateParams.model_validate({"artifact": a, "bogus": 1})
    assert required_blobs("validate", {"artifact": a, "inputs": i, "expected": e}) == [a, i, e]


def test_iree_needs_expected_outputs_and_passes_with_them(tmp_path: Path) -> None:
    pytest.importorskip("iree.runtime")
    pytest.importorskip("iree.compiler")
    vmfb = models.compile_mlir(models.ADD_MLIR, tmp_path / "add.vmfb")
    params = ValidateParams(artifact=_sha(vmfb))
    res = validate_local(params, artifact_path=vmfb, inputs_path=None, expected_path=None, output_dir=tmp_path / "a")
    assert res.outcome is Outcome.CONFIG_ERROR and res.message and "--expected" in res.message
    a = np.arange(4, dtype=np.float32)
    from fleetyard.runtimes import inspect

    sig = inspect(vmfb).signature
    inputs = save_arrays(tmp_path / "in.npz", {sig.inputs[0].name: a, sig.inputs[1].name: a})
    golden = save_arrays(tmp_path / "gold.npz", {sig.outputs[0].name: a + a})
    params = ValidateParams(artifact=_sha(vmfb), inputs=_sha(inputs), expected=_sha(golden))
    res = validate_local(
        params, artifact_path=vmfb, inputs_path=inputs, expected_path=golden, output_dir=tmp_path / "b"
    )
    assert res.outcome is Outcome.SUCCESS, res.message


def test_junit_has_one_testcase_per_rank() -> None:
    ok = {"passed": True, "sets": 2, "failing_sets": 0}
    bad = {"passed": False, "sets": 2, "failing_sets": 1, "worst_output": "y", "failing_report": {"passed": False}}
    rows = [
        rank_row(rank=0, board_id="b0", generation="g1", outcome="success", message=None, result=ok, outputs={}),
        rank_row(
            rank=1,
            board_id="b1",
            generation="g1",
            outcome="user_error",
            message="numerical mismatch: 1 of 2",
            result=bad,
            outputs={},
        ),
        rank_row(rank=2, board_id="b2", generation=None, outcome="infra_error", message="hang", result={}, outputs={}),
    ]
    root = ET.fromstring(junit_xml(rows))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 3
    assert cases[0].find("failure") is None and cases[0].find("error") is None
    failure = cases[1].find("failure")
    assert failure is not None and "numerical mismatch" in failure.get("message", "")
    assert cases[2].find("error") is not None
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "1"


def test_cli_local_exit_codes_json_and_junit(tmp_path: Path, mlp_path: Path) -> None:
    app = typer.Typer()
    app.command()(validate)
    runner = CliRunner()
    junit = tmp_path / "v.xml"
    args = [str(mlp_path), "--local", "--dim", "batch=3", "--seed", "7", "--json", "--junit", str(junit)]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["passed"] is True
    assert len(ET.parse(junit).getroot().findall("./testsuite/testcase")) == 1
    wrong = _golden(tmp_path, 7, 3, wrong=True)
    r = runner.invoke(app, [*args, "--expected", str(wrong), "--out", str(tmp_path / "b")])
    assert r.exit_code == 1, r.output
    data = json.loads(r.stdout)
    assert data["passed"] is False and data["ranks"][0]["worst_output"] == "y"
    r = runner.invoke(app, [str(mlp_path), "--local", "--dim", "batch=3", "--expected", str(wrong), "--out",
                            str(tmp_path / "c")])  # fmt: skip
    assert r.exit_code == 1 and "FAIL" in r.stdout and "MAX ABS ERR" in r.stdout


def test_an_inputs_file_of_several_sets_pairs_with_golden_sets(tmp_path: Path, mlp_path: Path) -> None:
    from fleetyard.runtimes import inspect

    sig = inspect(mlp_path).signature
    xs = [generate_inputs(sig, seed=s, dims={"batch": 2})["x"] for s in range(4)]
    inputs = save_arrays(tmp_path / "in.npz", {f"{i}/x": x for i, x in enumerate(xs)})
    ys = [models.mlp_reference(x).astype(np.float32) for x in xs]
    good = save_arrays(tmp_path / "good.npz", {f"{i}/y": y for i, y in enumerate(ys)})
    ys[2] = ys[2] + np.float32(0.25)
    bad = save_arrays(tmp_path / "bad.npz", {f"{i}/y": y for i, y in enumerate(ys)})

    def run(expected: Path | None, out: str) -> tuple[Outcome, dict]:
        params = ValidateParams(artifact=_sha(mlp_path), inputs=_sha(inputs), expected=expected and _sha(expected))
        res = validate_local(
            params, artifact_path=mlp_path, inputs_path=inputs, expected_path=expected, output_dir=tmp_path / out
        )
        return res.outcome, res.result

    outcome, r = run(None, "ort")  # against onnxruntime: every set of the file
    assert outcome is Outcome.SUCCESS and r["sets"] == 4 and r["seeds"] is None
    outcome, r = run(good, "good")
    assert outcome is Outcome.SUCCESS and r["sets"] == 4
    outcome, r = run(bad, "bad")
    assert outcome is Outcome.USER_ERROR and r["failing_sets"] == 1 and r["first_failing_set"] == 2
    np.testing.assert_array_equal(load_arrays(tmp_path / "bad" / "inputs.npz")["x"], xs[2])
    one = save_arrays(tmp_path / "one.npz", {"y": ys[0]})
    params = ValidateParams(artifact=_sha(mlp_path), inputs=_sha(inputs), expected=_sha(one))
    res = validate_local(
        params, artifact_path=mlp_path, inputs_path=inputs, expected_path=one, output_dir=tmp_path / "x"
    )
    assert res.outcome is Outcome.USER_ERROR and "golden outputs file has 1 set(s) but there are 4 input set(s)" in (
        res.message or ""
    )
