"""The ``run`` kind: run_local against numpy, saved outputs, sim corruption, errors; and in a worker."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from tests.unit import models

from fleetyard.domain.job import Outcome
from fleetyard.runtimes import SessionCache
from fleetyard.workloads import bench, run
from fleetyard.workloads.base import required_blobs, workload_class
from fleetyard.workloads.bench import BenchParams
from fleetyard.workloads.run import RunParams, RunWorkload, execute, run_local
from fleetyard.workloads.tensors import array_sha256, save_arrays


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    return models.save(models.mlp(batch="batch"), tmp_path / "mlp.onnx")


def test_run_local_matches_numpy_and_saves_outputs(tmp_path: Path, mlp_path: Path) -> None:
    params = RunParams(artifact=_sha(mlp_path), seed=5, dims={"batch": 8}, repeat=3)
    out = tmp_path / "out"
    res = run_local(params, artifact_path=mlp_path, inputs_path=None, output_dir=out)
    assert res.outcome is Outcome.SUCCESS, res.message
    with np.load(out / "inputs.npz") as i, np.load(out / "outputs.npz") as o:
        x, y = i["x"], o["y"]
    assert x.shape == (8, 4) and y.shape == (8, 3)
    np.testing.assert_allclose(y, models.mlp_reference(x), rtol=1e-5, atol=1e-6)
    r = res.result
    assert r["outputs"]["y"] == {"shape": [8, 3], "dtype": "float32", "sha256": array_sha256(y)}
    assert r["seed"] == 5 and len(r["latency_ms"]) == 3 and r["latency_ms_median"] >= 0
    assert r["runtime"]["runtime"] == "onnxruntime" and r["inputs_generated"] is True
    # Same seed, same numbers; given inputs are used as they are, and not saved again.
    again = run_local(params, artifact_path=mlp_path, inputs_path=None, output_dir=tmp_path / "again")
    assert again.result["outputs"] == r["outputs"]
    given = save_arrays(tmp_path / "in.npz", {"x": x})
    res2 = run_local(params, artifact_path=mlp_path, inputs_path=given, output_dir=tmp_path / "given")
    assert res2.outcome is Outcome.SUCCESS and res2.result["outputs"] == r["outputs"]
    assert not (tmp_path / "given" / "inputs.npz").exists() and res2.result["inputs_generated"] is False


def test_silent_corruption_changes_outputs_without_failing(tmp_path: Path, mlp_path: Path) -> None:
    params = RunParams(artifact=_sha(mlp_path), dims={"batch": 4}, ranges={"x": (1, 2)})
    env = {"FLEETYARD_DEVICE": "sim:0", "FLEETYARD_SIM_FAULTS": "silent_corruption"}
    good = execute(params, artifact_path=mlp_path, inputs_path=None, output_dir=_mk(tmp_path / "g"), env={})
    bad = execute(params, artifact_path=mlp_path, inputs_path=None, output_dir=_mk(tmp_path / "b"), env=env)
    assert good.outcome is bad.outcome is Outcome.SUCCESS
    assert good.result["inputs"] == bad.result["inputs"]
    assert good.result["outputs"]["y"]["sha256"] != bad.result["outputs"]["y"]["sha256"]


def _mk(p: Path) -> Path:
    p.mkdir()
    return p


def test_bad_artifact_and_inputs_are_user_errors(tmp_path: Path, mlp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    params = RunParams(artifact=_sha(junk))
    res = run_local(params, artifact_path=junk, inputs_path=None, output_dir=tmp_path / "o1")
    assert res.outcome is Outcome.USER_ERROR and res.message
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"x": [[1.0, 2.0]]}))
    res = run_local(RunParams(artifact=_sha(mlp_path)), artifact_path=mlp_path, inputs_path=wrong, output_dir=tmp_path)
    assert res.outcome is Outcome.USER_ERROR
    assert "input 'x'" in (res.message or "") and "float32" in (res.message or "")
    res = run_local(
        RunParams(artifact=_sha(mlp_path), ranges={"nope": (0, 1)}),
        artifact_path=mlp_path,
        inputs_path=None,
        output_dir=tmp_path,
    )
    assert res.outcome is Outcome.USER_ERROR and "'nope'" in (res.message or "")


def test_run_and_bench_report_a_loaded_then_a_cached_session(
    tmp_path: Path, mlp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh cache each (other tests may have loaded this very model into the process's one).
    for module in (run, bench):
        cache = SessionCache()
        monkeypatch.setattr(module, "default_cache", lambda cache=cache: cache)
    sha = _sha(mlp_path)
    fast = {"warmup_s": 0.0, "warmup_queries": 1, "min_duration_s": 0.0, "min_queries": 3}
    kinds: dict[str, tuple[Any, Any]] = {
        "run": (run.execute, RunParams(artifact=sha, dims={"batch": 2})),
        "bench": (bench.execute, BenchParams.model_validate({"artifact": sha, "dims": {"batch": 2}, **fast})),
    }
    for kind, (execute_kind, params) in kinds.items():
        sessions = []
        for i in range(2):
            t0 = time.time()
            out = _mk(tmp_path / f"{kind}-{i}")
            res = execute_kind(
                params, artifact_path=mlp_path, inputs_path=None, output_dir=out, env={}, artifact_sha256=sha
            )
            assert res.outcome is Outcome.SUCCESS, res.message
            timing = res.result["timing"]
            sessions.append(timing["session"])
            assert timing["load_s"] >= 0
            assert t0 <= timing["rank_started_at"] <= timing["compute_started_at"] <= time.time()
        assert sessions == ["loaded", "cached"], kind


def test_params_and_declared_blobs() -> None:
    a, b = "a" * 64, "b" * 64
    assert workload_class("run") is RunWorkload
    assert required_blobs("run", {"artifact": a, "inputs": b}) == [a, b]
    assert required_blobs("run", {"artifact": a}) == [a]
    assert required_blobs("command", {"command": "true"}) == []
    with pytest.raises(ValidationError):
        RunParams.model_validate({"artifact": "xyz"})
    with pytest.raises(ValidationError):
        RunParams.model_validate({"artifact": a, "extra": 1})
    with pytest.raises(ValidationError):
        RunParams.model_validate({"artifact": a, "repeat": 0})
