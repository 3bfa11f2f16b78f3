"""The ``bench`` kind: scenarios, minimums, verdicts, stopping and what a result records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import models
import numpy as np
import pytest
from pydantic import ValidationError

from fleetyard.domain.job import Outcome
from fleetyard.workloads.base import required_blobs, workload_class
from fleetyard.workloads.bench import BenchParams, BenchWorkload, bench_local, execute, required_queries
from fleetyard.workloads.tensors import save_arrays

FAST = {"warmup_s": 0.0, "warmup_queries": 2, "min_duration_s": 0.2, "min_queries": 50}


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    path: Path = models.save(models.mlp(batch="batch"), tmp_path / "mlp.onnx")
    return path


def _params(path: Path, **kw: object) -> BenchParams:
    return BenchParams.model_validate({"artifact": hashlib.sha256(path.read_bytes()).hexdigest(), **FAST, **kw})


def test_single_stream_meets_both_minimums_and_records_everything(tmp_path: Path, mlp_path: Path) -> None:
    params = _params(mlp_path, dims={"batch": 2})
    res = bench_local(params, artifact_path=mlp_path, inputs_path=None, output_dir=tmp_path / "out")
    assert res.outcome is Outcome.SUCCESS, res.message
    r = res.result
    assert r["verdict"] == "VALID" and r["reasons"] == [], r["reasons"]
    assert r["queries"] >= 50 and r["duration_s"] >= 0.2 and r["scenario"] == "single-stream"
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert r["queries_per_s"] > 0 and r["samples_per_query"] == 2
    assert r["runtime"]["runtime"] == "onnxruntime" and r["runtime"]["providers"]
    assert {"fleetyard", "python", "numpy", "onnxruntime"} <= set(r["versions"])
    assert r["artifact"] == params.artifact and r["inputs"]["x"]["shape"] == [2, 4]
    assert r["settings"]["min_queries"] == 50 and r["board"]["device"] == "local cpu"
    if r["queries"] < 1000:
        assert "p99.9" in r["unsupported_percentiles"]
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == r
    assert (tmp_path / "out" / "inputs.npz").exists()


def test_offline_counts_samples_by_batch(tmp_path: Path, mlp_path: Path) -> None:
    params = _params(mlp_path, scenario="offline", batch=8, min_queries=20, min_duration_s=0.05)
    res = bench_local(params, artifact_path=mlp_path, inputs_path=None, output_dir=tmp_path)
    r = res.result
    assert res.outcome is Outcome.SUCCESS and r["verdict"] == "VALID", r["reasons"]
    assert r["samples_per_query"] == 8 and r["inputs"]["x"]["shape"] == [8, 4]
    assert r["samples"] == 8 * r["queries"] and r["samples_per_s"] > 0
    assert r["samples_per_s"] == pytest.approx(8 * r["queries_per_s"], rel=1e-3)
    # Given inputs: a batch that disagrees with them is the user's error, naming both.
    given = save_arrays(tmp_path / "in.npz", {"x": np.ones((3, 4), np.float32)})
    bad = bench_local(params, artifact_path=mlp_path, inputs_path=given, output_dir=tmp_path / "b")
    assert bad.outcome is Outcome.USER_ERROR and "batch is 8" in (bad.message or "") and "3" in (bad.message or "")


def test_a_cap_below_the_minimums_is_invalid_with_its_reasons(tmp_path: Path, mlp_path: Path) -> None:
    params = _params(mlp_path, min_duration_s=5.0, min_queries=10_000_000, max_duration_s=0.05)
    res = bench_local(params, artifact_path=mlp_path, inputs_path=None, output_dir=tmp_path)
    r = res.result
    assert res.outcome is Outcome.SUCCESS and r["verdict"] == "INVALID"
    assert any(x.startswith("min_queries not reached") for x in r["reasons"]), r["reasons"]
    assert any("min_duration_s not reached" in x and "cap" in x for x in r["reasons"]), r["reasons"]
    assert 0.05 <= r["duration_s"] < 5.0  # the cap, not the minimums


def test_too_few_queries_for_the_claimed_percentile_is_invalid(tmp_path: Path, mlp_path: Path) -> None:
    assert [required_queries(p) for p in (50, 90, 99, 99.9)] == [2, 10, 100, 1000]
    params = _params(mlp_path, min_queries=20, min_duration_s=0.0, target_percentile=99.9, max_duration_s=0.5)
    r = bench_local(params, artifact_path=mlp_path, inputs_path=None, output_dir=tmp_path).result
    assert r["verdict"] == "INVALID" and any("p99.9 needs at least 1000 queries" in x for x in r["reasons"])
    with pytest.raises(ValidationError, match="target_percentile"):
        _params(mlp_path, target_percentile=95)
    with pytest.raises(ValidationError, match="scenario"):
        _params(mlp_path, scenario="server")


def test_stop_during_measurement_is_canceled_and_invalid(tmp_path: Path, mlp_path: Path) -> None:
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 30  # the 2 warm-up checks, then 28 measured queries

    params = _params(mlp_path, min_duration_s=60.0)
    res = execute(
        params, artifact_path=mlp_path, inputs_path=None, output_dir=tmp_path, env={}, should_stop=should_stop
    )
    assert res.outcome is Outcome.CANCELED and "stopped during measurement" in (res.message or "")
    r = res.result
    assert r["verdict"] == "INVALID" and r["queries"] == 28
    assert any(x.startswith("stopped during measurement") for x in r["reasons"])


def test_board_env_is_recorded_and_the_kind_is_registered(tmp_path: Path, mlp_path: Path) -> None:
    env = {
        "FLEETYARD_DEVICE": "sim:0",
        "FLEETYARD_BOARD_ID": "h1-b0",
        "FLEETYARD_BOARD_SERIAL": "SG2-0001",
        "FLEETYARD_SIM_GENERATION": "sim-g2",
        "FLEETYARD_SIM_LATENCY_FACTOR": "0.6",
    }
    params = _params(mlp_path, min_queries=5, min_duration_s=0.0)
    res = execute(params, artifact_path=mlp_path, inputs_path=None, output_dir=tmp_path, env=env)
    board = res.result["board"]
    assert board["id"] == "h1-b0" and board["serial"] == "SG2-0001" and board["device"] == "sim:0"
    assert board["sim"]["generation"] == "sim-g2" and board["sim"]["latency_factor"] == 0.6

    assert workload_class("bench") is BenchWorkload
    inputs = "c" * 64
    assert required_blobs("bench", {"artifact": params.artifact, "inputs": inputs}) == [params.artifact, inputs]
    with pytest.raises(ValidationError):
        BenchParams.model_validate({"artifact": params.artifact, "nope": 1})
