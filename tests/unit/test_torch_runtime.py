"""The torch runtime: TorchScript and ExportedProgram archives built at test time, run on the CPU."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fleetyard import runtimes
from fleetyard.cli.main import app
from fleetyard.domain.job import Outcome
from fleetyard.runtimes import (
    ArtifactError,
    ArtifactFormat,
    DeviceSettings,
    DeviceUnavailable,
    InputMismatch,
    RuntimeUnavailable,
    SessionCache,
)
from fleetyard.runtimes.torch_runtime import TorchRuntime
from fleetyard.workloads.validate import ValidateParams, validate_local

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")  # building .pt files


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.fc = torch.nn.Linear(2 * 6 * 6, 5)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(img)).flatten(1))


class TwoOut(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lin(x), y * 2


class DictOut(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"double": x * 2, "total": x.sum(dim=1)}


def _model(cls: type[torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    return cls().eval()


def _eager(module: torch.nn.Module, *arrays: np.ndarray) -> Any:
    with torch.no_grad():
        return module(*(torch.from_numpy(a) for a in arrays))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("torch")
    batch = torch.export.Dim("batch", min=1, max=64)
    paths = {
        "mlp.pt2": d / "mlp.pt2",
        "conv.pt2": d / "conv.pt2",
        "two.pt2": d / "two.pt2",
        "dict.pt2": d / "dict.pt2",
        "two.pt": d / "two.pt",
        "conv.pt": d / "conv.pt",
    }
    ep = torch.export.export(_model(Mlp), (torch.randn(2, 4),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, paths["mlp.pt2"])
    torch.export.save(torch.export.export(_model(ConvNet), (torch.randn(1, 1, 6, 6),)), paths["conv.pt2"])
    two_args = (torch.randn(2, 4), torch.randn(3, dtype=torch.float64))
    torch.export.save(torch.export.export(_model(TwoOut), two_args), paths["two.pt2"])
    torch.export.save(torch.export.export(_model(DictOut), (torch.randn(2, 3),)), paths["dict.pt2"])
    torch.jit.script(_model(TwoOut)).save(str(paths["two.pt"]))
    torch.jit.trace(_model(ConvNet), (torch.randn(1, 1, 6, 6),)).save(str(paths["conv.pt"]))
    return paths


def _symbol(path: Path) -> str:
    dim = runtimes.inspect(path).signature.inputs[0].shape[0]  # type: ignore[index]
    assert isinstance(dim, str)
    return dim


X5 = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
IMG = np.random.default_rng(2).standard_normal((1, 1, 6, 6)).astype(np.float32)


def test_formats_are_detected_and_inspected_without_a_device(built: dict[str, Path], tmp_path: Path) -> None:
    assert runtimes.detect_format(built["mlp.pt2"]) is ArtifactFormat.TORCH_EXPORT
    assert runtimes.detect_format(built["two.pt"]) is ArtifactFormat.TORCHSCRIPT
    blob = tmp_path / "0123abcd"  # blobs have no extension: detected by content
    blob.write_bytes(built["mlp.pt2"].read_bytes())
    assert runtimes.detect_format(blob) is ArtifactFormat.TORCH_EXPORT
    assert runtimes.inspect(blob).signature == runtimes.inspect(built["mlp.pt2"]).signature
    script_blob = tmp_path / "4567cdef"
    script_blob.write_bytes(built["two.pt"].read_bytes())
    assert runtimes.inspect(script_blob).signature.input_names == ("x", "y")
    assert runtimes.runtime_for(ArtifactFormat.TORCHSCRIPT) is runtimes.runtime_for(ArtifactFormat.TORCH_EXPORT)

    info = runtimes.inspect(built["mlp.pt2"])
    assert info.format is ArtifactFormat.TORCH_EXPORT and info.runtime == "torch"
    assert info.sha256 == runtimes.file_sha256(built["mlp.pt2"]) and info.size == built["mlp.pt2"].stat().st_size
    sym = _symbol(built["mlp.pt2"])  # the dynamic batch dim is a named symbol ("s17" or such)
    assert [t.to_dict() for t in info.signature.inputs] == [{"name": "x", "shape": [sym, 4], "dtype": "float32"}]
    assert [t.to_dict() for t in info.signature.outputs] == [
        {"name": "output_0", "shape": [sym, 3], "dtype": "float32"}
    ]
    assert f"{sym}: [1, 64]" in info.metadata["range_constraints"]

    conv = runtimes.inspect(built["conv.pt2"]).signature
    assert conv.inputs[0].describe() == "img: float32[1, 1, 6, 6]" and conv.outputs[0].shape == (1, 5)
    two = runtimes.inspect(built["two.pt2"]).signature
    assert [t.describe() for t in two.inputs] == ["x: float32[2, 4]", "y: float64[3]"]
    assert [t.describe() for t in two.outputs] == ["output_0: float32[2, 2]", "output_1: float64[3]"]
    assert runtimes.inspect(built["dict.pt2"]).signature.output_names == ("double", "total")

    script = runtimes.inspect(built["two.pt"])
    assert script.format is ArtifactFormat.TORCHSCRIPT and script.signature.input_names == ("x", "y")
    assert all(t.shape is None and t.dtype is None for t in script.signature.inputs)
    assert script.signature.output_names == ("output_0", "output_1")
    assert "checked by name only" in script.metadata["shapes"]


def test_load_and_run_match_eager(built: dict[str, Path]) -> None:
    model = runtimes.load(built["mlp.pt2"], DeviceSettings(threads=1))
    out = model.run({"x": X5})
    assert list(out) == ["output_0"]
    np.testing.assert_allclose(out["output_0"], _eager(_model(Mlp), X5).numpy(), rtol=1e-6, atol=1e-6)
    record = model.record()
    assert (record.runtime, record.providers, record.threads) == ("torch", ("cpu",), 1)
    assert record.runtime_version == torch.__version__

    conv = runtimes.load(built["conv.pt2"]).run({"img": IMG})["output_0"]
    np.testing.assert_allclose(conv, _eager(_model(ConvNet), IMG).numpy(), rtol=1e-5, atol=1e-6)
    traced = runtimes.load(built["conv.pt"]).run({"img": IMG})["output_0"]
    np.testing.assert_allclose(traced, conv, rtol=1e-5, atol=1e-6)

    x, y = X5[:2], np.arange(3, dtype=np.float64)
    want = _eager(_model(TwoOut), x, y)
    for name in ("two.pt2", "two.pt"):
        got = runtimes.load(built[name]).run({"x": x, "y": y})
        assert list(got) == ["output_0", "output_1"]
        np.testing.assert_allclose(got["output_0"], want[0].numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got["output_1"], y * 2)
    got = runtimes.load(built["dict.pt2"]).run({"x": X5[:2, :3]})
    np.testing.assert_array_equal(got["total"], X5[:2, :3].sum(axis=1))

    model.release()
    with pytest.raises(runtimes.ExecutionFailed, match="was released"):
        model.run({"x": X5})


def test_the_session_cache_reuses_a_loaded_torch_model(built: dict[str, Path], tmp_path: Path) -> None:
    cache = SessionCache(capacity=2)
    first = cache.get(built["mlp.pt2"])
    copy = tmp_path / "same-bytes"
    copy.write_bytes(built["mlp.pt2"].read_bytes())
    assert cache.get(copy) is first and (cache.hits, cache.misses) == (1, 1)
    assert cache.get(built["two.pt"]) is not first and len(cache) == 2
    cache.clear()


def test_wrong_inputs_name_expected_and_given(built: dict[str, Path]) -> None:
    model = runtimes.load(built["mlp.pt2"])
    with pytest.raises(InputMismatch, match=r"missing input 'x'; unknown input 'z'") as e:
        model.run({"z": X5})
    assert "The model takes x: float32[" in e.value.message and "given z: float32[5, 4]" in e.value.message
    with pytest.raises(InputMismatch, match=r"input 'x': shape: expected \[\w+, 4\], got \(5, 3\)") as e:
        model.run({"x": X5[:, :3]})
    assert e.value.detail["given"] == [{"name": "x", "shape": [5, 3], "dtype": "float32"}]
    with pytest.raises(InputMismatch, match="dtype: expected float32, got float64"):
        model.run({"x": X5.astype(np.float64)})
    with pytest.raises(InputMismatch, match=r"missing input 'y'.*The model takes x: \?\[\?\], y: \?\[\?\]"):
        runtimes.load(built["two.pt"]).run({"x": X5})


def test_corrupt_archives_are_artifact_errors(built: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(built["mlp.pt2"]) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, b"{ not json" if item.filename.endswith("models/model.json") else data)
    assert runtimes.detect_format(bad) is ArtifactFormat.TORCH_EXPORT
    with pytest.raises(ArtifactError, match=r"bad.pt2 is not a loadable torch-export archive .*torch.export.save"):
        runtimes.inspect(bad)
    with pytest.raises(ArtifactError, match="not a loadable torch-export archive"):
        runtimes.load(bad)
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(built["mlp.pt2"].read_bytes()[:300])
    with pytest.raises(ArtifactError):
        runtimes.inspect(cut)
    ts = tmp_path / "fake.pt"  # looks like TorchScript, is not
    with zipfile.ZipFile(ts, "w") as z:
        z.writestr("model/data.pkl", b"\x80\x02")
        z.writestr("model/code/__torch__.py", "")
    with pytest.raises(ArtifactError, match=r"fake\.pt is not a loadable torchscript archive"):
        runtimes.load(ts)


def test_missing_torch_and_missing_cuda_name_the_fix(built: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailable, match=r"cannot use CUDA for cuda:0.*refusing to run on the CPU"):
            runtimes.load(built["mlp.pt2"], DeviceSettings(kind="cuda"))
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(RuntimeUnavailable, match=r"pip install 'fleetyard\[torch\]'") as e:
        TorchRuntime().version()
    assert e.value.detail == {"extra": "torch", "package": "torch"}
    with pytest.raises(RuntimeUnavailable, match="need the torch package"):
        runtimes.inspect(built["mlp.pt2"])


def test_validate_local_uses_torch_on_the_cpu_as_reference(built: dict[str, Path], tmp_path: Path) -> None:
    path = built["mlp.pt2"]
    sha = runtimes.file_sha256(path)
    params = ValidateParams(artifact=sha, seed=3, input_sets=2, dims={_symbol(path): 4})
    res = validate_local(params, artifact_path=path, inputs_path=None, expected_path=None, output_dir=tmp_path / "a")
    assert res.outcome is Outcome.SUCCESS, res.message
    assert res.result["reference"]["kind"] == "torch" and res.result["reference"]["version"] == torch.__version__
    assert res.result["runtime"]["runtime"] == "torch" and res.result["sets"] == 2
    explicit = params.model_copy(update={"reference": "torch"})
    res = validate_local(explicit, artifact_path=path, inputs_path=None, expected_path=None, output_dir=tmp_path / "b")
    assert res.outcome is Outcome.SUCCESS, res.message

    ort = params.model_copy(update={"reference": "onnxruntime"})
    res = validate_local(ort, artifact_path=path, inputs_path=None, expected_path=None, output_dir=tmp_path / "c")
    assert (
        res.outcome is Outcome.CONFIG_ERROR
        and "the onnxruntime reference does not run torch-export artifacts; use --reference torch" in res.message
    )
    from tests.unit.models import mlp, save

    onnx_path = save(mlp(), tmp_path / "mlp.onnx")
    on_onnx = ValidateParams(artifact=runtimes.file_sha256(onnx_path), reference="torch")
    res = validate_local(on_onnx, artifact_path=onnx_path, inputs_path=None, expected_path=None, output_dir=tmp_path)
    assert (
        res.outcome is Outcome.CONFIG_ERROR
        and "the torch reference does not run onnx artifacts; use --reference onnxruntime" in res.message
    )


def test_cli_inspects_and_runs_a_pt2_locally(built: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    path = built["mlp.pt2"]
    shown = runner.invoke(app, ["artifacts", "inspect", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "torch-export" in shown.stdout and "float32" in shown.stdout and "output_0" in shown.stdout
    out = tmp_path / "local"
    ran = runner.invoke(app, ["run", str(path), "--local", "--dim", f"{_symbol(path)}=3", "--out", str(out)])
    assert ran.exit_code == 0, ran.output
    with np.load(out / "inputs.npz") as i, np.load(out / "outputs.npz") as o:
        assert o["output_0"].shape == (3, 3)
        np.testing.assert_allclose(o["output_0"], _eager(_model(Mlp), i["x"]).numpy(), rtol=1e-6, atol=1e-6)
