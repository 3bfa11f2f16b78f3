"""The warm session cache, format detection, device settings and the missing-runtime errors."""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tests.unit import models

from fleetyard import runtimes
from fleetyard.errors import BadRequest
from fleetyard.runtimes import (
    ArtifactError,
    ArtifactFormat,
    CacheKey,
    DeviceSettings,
    DeviceUnavailable,
    ExecutionFailed,
    InputMismatch,
    RuntimeUnavailable,
    SessionCache,
    UnknownFormat,
)
from fleetyard.runtimes.base import format_cpu_list, parse_cpu_list


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cache")
    return {
        "a": models.save(models.mlp(batch=2, seed=0), d / "a.onnx"),
        "b": models.save(models.mlp(batch=2, seed=1), d / "b.onnx"),
        "c": models.save(models.mlp(batch=2, seed=2), d / "c.onnx"),
    }


X = np.ones((2, 4), np.float32)


def test_second_get_is_the_same_loaded_model(onnx_models: dict[str, Path]) -> None:
    cache = SessionCache(capacity=2)
    first = cache.get(onnx_models["a"])
    assert cache.get(onnx_models["a"]) is first
    assert (cache.hits, cache.misses) == (1, 1)
    # Keyed by content: the same bytes elsewhere (another blob path) are the same model.
    copy = onnx_models["a"].parent / "copy-of-a"
    shutil.copy(onnx_models["a"], copy)
    assert cache.get(copy) is first
    # ... and by device settings: other threads are another session.
    other = cache.get(onnx_models["a"], DeviceSettings(threads=1))
    assert other is not first and len(cache) == 2
    key = cache.keys()[-1]
    assert key == CacheKey(runtimes.file_sha256(onnx_models["a"]), DeviceSettings(threads=1), None)


def test_least_recently_used_is_evicted_and_released(onnx_models: dict[str, Path]) -> None:
    cache = SessionCache(capacity=2)
    a = cache.get(onnx_models["a"])
    b = cache.get(onnx_models["b"])
    assert cache.get(onnx_models["a"]) is a  # a is now the most recent
    c = cache.get(onnx_models["c"])  # b goes
    assert cache.evictions == 1 and len(cache) == 2
    with pytest.raises(ExecutionFailed, match="released"):
        b.run({"x": X})
    np.testing.assert_allclose(a.run({"x": X})["y"], models.mlp_reference(X, seed=0), rtol=1e-6)
    np.testing.assert_allclose(c.run({"x": X})["y"], models.mlp_reference(X, seed=2), rtol=1e-6)
    assert cache.get(onnx_models["b"]) is not b  # loaded again
    assert cache.evict(cache.keys()[0]) and not cache.evict(CacheKey("0" * 64, DeviceSettings()))
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ExecutionFailed):
        c.run({"x": X})


def test_caller_known_sha256_is_the_key(onnx_models: dict[str, Path]) -> None:
    cache = SessionCache()
    model = cache.get(onnx_models["a"], sha256="ab" * 32)
    assert model.info.sha256 == "ab" * 32
    assert cache.keys() == [CacheKey("ab" * 32, DeviceSettings(), None)]


def test_lookup_tells_a_hit_from_a_miss(onnx_models: dict[str, Path]) -> None:
    cache = SessionCache(capacity=1)
    model, hit = cache.lookup(onnx_models["a"])
    assert hit is False and (cache.hits, cache.misses) == (0, 1)
    again, hit = cache.lookup(onnx_models["a"])
    assert again is model and hit is True and (cache.hits, cache.misses) == (1, 1)
    assert cache.get(onnx_models["a"]) is model and cache.hits == 2  # get() is lookup()'s model
    _, hit = cache.lookup(onnx_models["a"], DeviceSettings(threads=1))  # another key: a miss
    assert hit is False
    _, hit = cache.lookup(onnx_models["a"])  # evicted by the last (capacity 1): loaded again
    assert hit is False and cache.evictions == 2


def test_a_failed_load_caches_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07" + b"\xff" * 40)
    cache = SessionCache()
    with pytest.raises(ArtifactError):
        cache.get(bad)
    assert len(cache) == 0


def test_default_cache_is_one_per_process() -> None:
    assert runtimes.default_cache() is runtimes.default_cache()


# ---- formats ------------------------------------------------------------------------------------


def test_onnx_detected_by_content_without_a_name(onnx_models: dict[str, Path], tmp_path: Path) -> None:
    blob = tmp_path / "9f2c"
    shutil.copy(onnx_models["a"], blob)
    assert runtimes.detect_format(blob) is ArtifactFormat.ONNX
    assert runtimes.inspect(blob).signature.input_names == ("x",)


def test_unknown_formats_say_what_is_supported(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64))
    with pytest.raises(UnknownFormat, match=r"starts with bytes 7f 45 4c 46.*Supported: ONNX models .* IREE modules"):
        runtimes.detect_format(junk)
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a model\n")
    with pytest.raises(UnknownFormat):
        runtimes.inspect(text)
    archive = tmp_path / "stuff.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(UnknownFormat, match="a ZIP archive"):
        runtimes.detect_format(archive)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ArtifactError, match="is empty"):
        runtimes.detect_format(empty)
    with pytest.raises(ArtifactError, match="not found"):
        runtimes.detect_format(tmp_path / "missing.onnx")


def test_a_corrupt_torch_archive_is_recognised_and_refused_naming_it(tmp_path: Path) -> None:
    ts = tmp_path / "model.pt"
    with zipfile.ZipFile(ts, "w") as z:
        z.writestr("model/data.pkl", b"\x80\x02")
        z.writestr("model/code/__torch__.py", "")
    assert runtimes.detect_format(ts) is ArtifactFormat.TORCHSCRIPT
    with pytest.raises(ArtifactError, match=r"model\.pt is not a loadable torchscript archive"):
        runtimes.load(ts)


def test_missing_runtime_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # An entry of None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "iree.runtime", None)
    from fleetyard.runtimes.iree_runtime import IreeRuntime

    with pytest.raises(RuntimeUnavailable, match=r"pip install 'fleetyard\[iree\]'") as e:
        IreeRuntime().version()
    assert e.value.detail == {"extra": "iree", "package": "iree-base-runtime"}


# ---- device settings ----------------------------------------------------------------------------


def test_settings_from_a_board_environment() -> None:
    cpu = DeviceSettings.from_env({"FLEETYARD_DEVICE": "cpu:0-3"})
    assert cpu == DeviceSettings(kind="cpu", threads=4, cpu_ids=(0, 1, 2, 3))
    assert DeviceSettings.from_env({"FLEETYARD_DEVICE": "cpu:0,2", "FLEETYARD_INTRA_OP_THREADS": "1"}).threads == 1
    assert DeviceSettings.from_env({"FLEETYARD_DEVICE": "sim:3"}) == DeviceSettings()
    assert DeviceSettings.from_env({}) == DeviceSettings()
    gpu = DeviceSettings.from_env({"FLEETYARD_DEVICE": "cuda:1", "FLEETYARD_GPU_UUID": "GPU-1234"})
    assert (gpu.kind, gpu.index, gpu.uuid) == ("cuda", 1, "GPU-1234")
    with pytest.raises(DeviceUnavailable, match="no runtime runs on device 'acme:0'"):
        DeviceSettings.from_env({"FLEETYARD_DEVICE": "acme:0"})
    assert cpu.describe() == "cpu:0-3, 4 threads"
    with pytest.raises(ValueError):
        DeviceSettings(threads=0)


def test_cpu_lists() -> None:
    assert parse_cpu_list("0-3,8,10-11") == (0, 1, 2, 3, 8, 10, 11)
    assert format_cpu_list((0, 1, 2, 3)) == "0-3"
    assert format_cpu_list([4, 0, 2]) == "0,2,4"
    assert format_cpu_list((5,)) == "5"
    with pytest.raises(ValueError):
        parse_cpu_list("0-x")


def test_public_surface_is_pinned() -> None:
    # What workloads and the CLI may use; everything else in fleetyard.runtimes may change.
    assert runtimes.__all__ == [
        "ArtifactError",
        "ArtifactFormat",
        "ArtifactInfo",
        "CacheKey",
        "CpuFallbackRefused",
        "DeviceSettings",
        "DeviceUnavailable",
        "ExecutionFailed",
        "FunctionChoice",
        "InputMismatch",
        "LoadedModel",
        "Runtime",
        "RuntimeRecord",
        "RuntimeUnavailable",
        "SessionCache",
        "Signature",
        "TensorSpec",
        "UnknownFormat",
        "check_inputs",
        "default_cache",
        "detect_format",
        "file_sha256",
        "inspect",
        "load",
        "runtime_for",
    ]
    for err in (InputMismatch, UnknownFormat, RuntimeUnavailable, DeviceUnavailable):
        assert issubclass(err, BadRequest) and err.status == 422
