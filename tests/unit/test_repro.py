"""Reproducing results: the pure comparison, and `fleetyard repro FOLDER` of --local runs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import models
import numpy as np
import pytest
from typer.testing import CliRunner

from fleetyard.cli.main import app
from fleetyard.workloads.reproduce import RankRecord, compare, reproduced
from fleetyard.workloads.tensors import save_arrays


def _validate(passed: bool, candidate: str, firmware: str = "1.0", saved_set: int = 0) -> RankRecord:
    result = {
        "passed": passed,
        "sets": 3,
        "failing_sets": 0 if passed else 1,
        "first_failing_set": None if passed else saved_set,
        "saved_set": saved_set,
        "runtime": {"runtime": "onnxruntime", "runtime_version": "1.2"},
        "board": {"id": "b0", "serial": "S0", "firmware": firmware},
    }
    outcome = "success" if passed else "user_error"
    return RankRecord("validate", outcome, 0 if passed else 1, result, {"candidate.npz": candidate})


def test_validate_reproduces_on_same_verdict_and_identical_outputs() -> None:
    checks = compare(_validate(False, "a" * 64), _validate(False, "a" * 64, firmware="2.0"))
    assert reproduced(checks)
    by = {c.name: c for c in checks}
    assert by["candidate outputs of set 0"].decisive and by["candidate outputs of set 0"].same
    # A firmware change is context: shown as differing, not part of the verdict.
    assert not by["firmware"].same and not by["firmware"].decisive
    # The same verdict with other bits is not a reproduction.
    assert not reproduced(compare(_validate(False, "a" * 64), _validate(False, "b" * 64)))
    # Nor is the other verdict, even when the outputs are not comparable (another set was saved).
    checks = compare(_validate(False, "a" * 64, saved_set=2), _validate(True, "b" * 64))
    assert not reproduced(checks) and "candidate outputs of set 2" not in {c.name for c in checks}


def test_run_compares_every_output_bit_for_bit_and_bench_judges_only_the_verdict() -> None:
    def run(**shas: str) -> RankRecord:
        return RankRecord("run", "success", 0, {"outputs": {n: {"sha256": s} for n, s in shas.items()}})

    assert reproduced(compare(run(y="1", z="2"), run(y="1", z="2")))
    diff = compare(run(y="1", z="2"), run(y="1", z="3"))
    assert not reproduced(diff) and [c.name for c in diff if not c.same] == ["output z"]
    assert not reproduced(compare(run(y="1"), run(y="1", z="2")))  # an output appeared

    def bench(verdict: str, sps: float) -> RankRecord:
        return RankRecord("bench", "success", 0, {"verdict": verdict, "samples_per_s": sps, "latency_ms": {}})

    checks = compare(bench("VALID", 100.0), bench("VALID", 90.0))
    assert reproduced(checks)
    assert next(c for c in checks if c.name == "samples/s").note == "-10.0%"
    assert not reproduced(compare(bench("VALID", 100.0), bench("INVALID", 100.0)))
    cmd = compare(RankRecord("command", "user_error", 2), RankRecord("command", "user_error", 3))
    assert not reproduced(cmd)


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    return models.save(models.mlp(batch="batch"), tmp_path / "mlp.onnx")


def test_repro_of_a_local_validate_run(tmp_path: Path, mlp_path: Path) -> None:
    out = tmp_path / "v"
    r = CliRunner().invoke(
        app, ["validate", str(mlp_path), "--local", "--out", str(out), "--dim", "batch=3", "--sets", "2"]
    )
    assert r.exit_code == 0, r.output
    record = json.loads((out / "job.json").read_text())
    assert record["kind"] == "validate" and record["params"]["input_sets"] == 2
    assert record["result"]["board"]["device"] == "local cpu"
    r = CliRunner().invoke(app, ["repro", str(out), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["reproduced"] and {c["name"] for c in got["checks"]} >= {"passed", "candidate outputs of set 0"}
    # A result the re-run does not match: exit 1, the differing check named.
    record["outputs"]["candidate.npz"] = "0" * 64
    (out / "job.json").write_text(json.dumps(record))
    r = CliRunner().invoke(app, ["repro", str(out)])
    assert r.exit_code == 1 and "not reproduced" in r.stdout and "DIFFERS" in r.stdout
    # The artifact changed since: refused, not silently re-run on other bytes.
    mlp_path.write_bytes(mlp_path.read_bytes() + b"\x00")
    r = CliRunner().invoke(app, ["repro", str(out)])
    assert r.exit_code == 1 and "changed since the run" in r.output


def test_repro_of_a_local_run_with_an_inputs_file(tmp_path: Path, mlp_path: Path) -> None:
    inputs = save_arrays(tmp_path / "in.npz", {"x": np.ones((2, 4), np.float32)})
    out = tmp_path / "r"
    junit = tmp_path / "run.xml"
    args = ["run", str(mlp_path), "--local", "--inputs", str(inputs), "--out", str(out), "--junit", str(junit)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    [case] = ET.parse(junit).getroot().findall("./testsuite/testcase")
    assert case.get("name") == "rank 0 board local" and not list(case)  # passed: no failure element
    assert json.loads((out / "job.json").read_text())["params"]["inputs"] is not None
    r = CliRunner().invoke(app, ["repro", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert any(c["name"] == "output y" and c["same"] for c in json.loads(r.stdout)["checks"])


def test_repro_refuses_what_it_cannot_reproduce(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["repro", str(tmp_path)])
    assert r.exit_code == 1 and "has no job.json" in r.output
    r = CliRunner().invoke(app, ["repro", "not-a-job"])
    assert r.exit_code == 1 and "neither a job" in r.output
    r = CliRunner().invoke(app, ["repro", "12", "--board", "b", "--local"])
    assert r.exit_code == 1 and "exclude each other" in r.output
