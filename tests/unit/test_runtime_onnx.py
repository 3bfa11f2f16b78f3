"""The ONNX runtime: inspect, load, run against numpy, input errors, providers and fail-closed GPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tests.unit import models

from fleetyard import runtimes
from fleetyard.errors import BadRequest
from fleetyard.runtimes import (
    ArtifactError,
    ArtifactFormat,
    DeviceSettings,
    DeviceUnavailable,
    ExecutionFailed,
    InputMismatch,
)
from fleetyard.runtimes.onnx_runtime import nodes_from_profile, onnx_type_to_dtype


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("onnx")
    models.save(models.mlp(batch=2), d / "mlp.onnx")
    models.save(models.mlp(batch="batch"), d / "mlp_dyn.onnx")
    models.save(models.two_inputs(), d / "two.onnx")
    models.save(models.paired_batch(), d / "paired.onnx")
    return d


def test_inspect_reports_names_shapes_dtypes_without_a_session(model_dir: Path) -> None:
    info = runtimes.inspect(model_dir / "mlp_dyn.onnx")
    assert info.format is ArtifactFormat.ONNX and info.runtime == "onnxruntime"
    assert [t.to_dict() for t in info.signature.inputs] == [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}]
    assert [t.to_dict() for t in info.signature.outputs] == [{"name": "y", "shape": ["batch", 3], "dtype": "float32"}]
    assert info.sha256 == runtimes.file_sha256(model_dir / "mlp_dyn.onnx")
    assert info.metadata["opsets"] == f"ai.onnx:{models.OPSET}"
    assert info.metadata["producer"] == "fleetyard-tests"
    # Initializers (W, b) are not inputs; a second model shows dtypes other than float32.
    two = runtimes.inspect(model_dir / "two.onnx").signature
    assert [(t.name, t.shape, t.dtype) for t in two.inputs] == [("a", (3,), "float32"), ("k", (3,), "int64")]
    assert two.output_names == ("sum", "prod")
    assert json.loads(json.dumps(info.to_dict()))["signature"]["inputs"][0]["shape"] == ["batch", 4]


def test_run_matches_numpy(model_dir: Path) -> None:
    model = runtimes.load(model_dir / "mlp.onnx")
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    out = model.run({"x": x})
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"], models.mlp_reference(x), rtol=1e-6, atol=1e-6)
    assert model.signature.inputs[0].shape == (2, 4)

    two = runtimes.load(model_dir / "two.onnx")
    a = np.array([1.5, -2.0, 3.0], np.float32)
    k = np.array([2, 3, -1], np.int64)
    got = two.run({"k": k, "a": a})  # order of the dict does not matter
    np.testing.assert_array_equal(got["sum"], a + k.astype(np.float32))
    np.testing.assert_array_equal(got["prod"], a * k.astype(np.float32))


def test_symbolic_batch_runs_any_batch(model_dir: Path) -> None:
    model = runtimes.load(model_dir / "mlp_dyn.onnx")
    assert model.signature.inputs[0].shape == ("batch", 4)
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
        np.testing.assert_allclose(model.run({"x": x})["y"], models.mlp_reference(x), rtol=1e-6, atol=1e-6)


def test_missing_and_unknown_inputs_are_named(model_dir: Path) -> None:
    two = runtimes.load(model_dir / "two.onnx")
    with pytest.raises(InputMismatch) as e:
        two.run({"a": np.zeros(3, np.float32), "kk": np.zeros(3, np.int64)})
    msg = e.value.message
    assert "missing input 'k'" in msg and "unknown input 'kk'" in msg
    assert "a: float32[3], k: int64[3]" in msg  # what the model takes
    assert isinstance(e.value, BadRequest) and e.value.code == "input_mismatch"
    assert {p["input"] for p in e.value.detail["problems"]} == {"k", "kk"}


def test_wrong_dtype_and_shape_name_the_input(model_dir: Path) -> None:
    model = runtimes.load(model_dir / "mlp.onnx")
    with pytest.raises(InputMismatch, match=r"input 'x': dtype: expected float32, got float64"):
        model.run({"x": np.zeros((2, 4))})
    with pytest.raises(InputMismatch, match=r"input 'x': shape: expected \[2, 4\], got \(3, 4\)"):
        model.run({"x": np.zeros((3, 4), np.float32)})
    with pytest.raises(InputMismatch, match=r"input 'x': rank: expected 2 dims \[2, 4\], got 1 \(8,\)"):
        model.run({"x": np.zeros(8, np.float32)})
    with pytest.raises(InputMismatch) as e:
        model.run({"x": np.zeros((2, 5), np.float32)})
    problem = e.value.detail["problems"][0]
    assert problem["expected"] == {"name": "x", "shape": [2, 4], "dtype": "float32"}
    assert problem["given"] == {"shape": [2, 5], "dtype": "float32"}


def test_a_symbol_must_agree_across_inputs(model_dir: Path) -> None:
    model = runtimes.load(model_dir / "paired.onnx")
    p = np.ones((3, 2), np.float32)
    np.testing.assert_array_equal(model.run({"p": p, "q": p})["r"], np.zeros((3, 2), np.float32))
    with pytest.raises(InputMismatch, match=r"input 'q'.*'n', which input 'p' set to 3"):
        model.run({"p": p, "q": np.ones((4, 2), np.float32)})


def test_unchecked_run_reaches_the_runtime_error(model_dir: Path) -> None:
    model = runtimes.load(model_dir / "mlp.onnx")
    with pytest.raises(ExecutionFailed, match="onnxruntime failed"):
        model.run({"x": np.zeros((2, 4))}, check=False)


def test_cpu_record_names_provider_and_every_node(model_dir: Path) -> None:
    model = runtimes.load(model_dir / "mlp.onnx", DeviceSettings(threads=1))
    record = model.record()
    assert record.runtime == "onnxruntime" and record.runtime_version == ort.__version__
    assert record.providers == ("CPUExecutionProvider",)
    assert record.providers_used == ("CPUExecutionProvider",)
    assert record.threads == 1
    model.run({"x": np.ones((2, 4), np.float32)})
    record = model.record()
    assert record.nodes_complete
    nodes = record.nodes_by_provider["CPUExecutionProvider"]
    # After ORT's optimisation MatMul+Add may be fused (into a Gemm/FusedMatMul): names vary, count does not drop to 0.
    assert nodes and set(record.nodes_by_provider) == {"CPUExecutionProvider"}
    assert record.to_dict()["providers_used"] == ["CPUExecutionProvider"]


def test_profile_trace_gives_nodes_per_provider(model_dir: Path, tmp_path: Path) -> None:
    # The path used with onnxruntime < 1.24: profile one run, read each node's provider.
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model_dir / "mlp.onnx"), sess_options=so, providers=["CPUExecutionProvider"])
    sess.run(None, {"x": np.ones((2, 4), np.float32)})
    trace = sess.end_profiling()
    assert nodes_from_profile(trace) == {"CPUExecutionProvider": ("matmul", "add", "relu")}


def test_cuda_board_without_cuda_provider_fails_closed(model_dir: Path) -> None:
    assert "CUDAExecutionProvider" not in ort.get_available_providers()  # this machine's onnxruntime
    with pytest.raises(DeviceUnavailable) as e:
        runtimes.load(model_dir / "mlp.onnx", DeviceSettings(kind="cuda", index=0))
    assert "CUDAExecutionProvider" in e.value.message and "refusing to run on the CPU" in e.value.message
    assert e.value.detail["requested"] == "CUDAExecutionProvider"
    assert "CPUExecutionProvider" in e.value.detail["available"]


def test_corrupt_and_missing_models_are_named(model_dir: Path, tmp_path: Path) -> None:
    good = (model_dir / "mlp.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArtifactError, match=r"cut\.onnx is not a valid ONNX model"):
        runtimes.inspect(cut)
    with pytest.raises(ArtifactError, match=r"onnxruntime cannot load cut\.onnx"):
        runtimes.load(cut)
    with pytest.raises(ArtifactError, match="not found"):
        runtimes.load(tmp_path / "nope.onnx")


def test_released_model_refuses_to_run(model_dir: Path) -> None:
    model = runtimes.load(model_dir / "mlp.onnx")
    model.release()
    with pytest.raises(ExecutionFailed, match="released"):
        model.run({"x": np.ones((2, 4), np.float32)})
    model.release()  # twice is fine


def test_runner_is_run_for_the_first_output_with_the_input_checked_once(model_dir: Path) -> None:
    # The single-input path a closed loop calls every step (the rollout kind): names bound once,
    # the example checked against the signature at bind, then one session.run per call.
    model = runtimes.load(model_dir / "mlp_dyn.onnx")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    run_first = model.runner(x)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(run_first(x), model.run({"x": x})["y"])
    np.testing.assert_allclose(run_first(x[:1]), models.mlp_reference(x[:1]), rtol=1e-6, atol=1e-6)
    with pytest.raises(InputMismatch, match="dtype: expected float32, got float64"):
        model.runner(np.zeros((1, 4)))  # type: ignore[attr-defined]
    with pytest.raises(ExecutionFailed, match="onnxruntime failed running"):
        run_first(np.zeros((1, 4)))  # not checked per call: the runtime's own error, wrapped
    with pytest.raises(InputMismatch, match="takes 2 inputs"):
        runtimes.load(model_dir / "two.onnx").runner()  # type: ignore[attr-defined]
    model.release()
    with pytest.raises(ExecutionFailed, match="released"):
        run_first(x)
    with pytest.raises(ExecutionFailed, match="released"):
        model.runner()  # type: ignore[attr-defined]


def test_without_load_time_assignment_the_first_run_is_profiled_then_not(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # onnxruntime < 1.24: the first run (through run() or a runner) profiles; later runs do not.
    name = "get_provider_graph_assignment_info"
    for cls in ort.InferenceSession.__mro__:  # the base Session defines it in 1.24+
        if name in vars(cls):
            monkeypatch.delattr(cls, name)
    assert not hasattr(ort.InferenceSession, name)
    model = runtimes.load(model_dir / "mlp.onnx", DeviceSettings(kind="cpu"))
    assert model.record().nodes_complete is False
    x = np.ones((2, 4), np.float32)
    run_first = model.runner(x)  # type: ignore[attr-defined]
    np.testing.assert_allclose(run_first(x), models.mlp_reference(x), rtol=1e-6, atol=1e-6)
    rec = model.record()
    assert rec.nodes_complete is True and list(rec.nodes_by_provider) == ["CPUExecutionProvider"]
    assert rec.nodes_by_provider["CPUExecutionProvider"]  # the optimised graph's nodes (fused names)
    assert model._run == model.session.run  # type: ignore[attr-defined]
    np.testing.assert_array_equal(model.run({"x": x})["y"], run_first(x))


def test_onnx_type_names() -> None:
    assert onnx_type_to_dtype("tensor(float)") == "float32"
    assert onnx_type_to_dtype("tensor(double)") == "float64"
    assert onnx_type_to_dtype("tensor(bfloat16)") == "bfloat16"
    assert onnx_type_to_dtype("tensor(string)") == "str"
    assert onnx_type_to_dtype("BOOL") == "bool"
    assert onnx_type_to_dtype("seq(tensor(float))") is None
