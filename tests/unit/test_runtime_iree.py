"""The IREE runtime: modules compiled from MLIR at test time, run on local-task, checked with numpy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tests.unit import models

from fleetyard import runtimes
from fleetyard.runtimes import (
    ArtifactError,
    ArtifactFormat,
    DeviceSettings,
    DeviceUnavailable,
    FunctionChoice,
    InputMismatch,
)
from fleetyard.runtimes.iree_runtime import parse_declaration

pytest.importorskip("iree.runtime")
pytest.importorskip("iree.compiler")


@pytest.fixture(scope="module")
def vmfb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("iree")
    return {
        "add": models.compile_mlir(models.ADD_MLIR, d / "add.vmfb"),
        "two": models.compile_mlir(models.TWO_FUNCTIONS_MLIR, d / "two.vmfb"),
        "torch": models.compile_mlir(models.TORCH_ADD_MLIR, d / "torch.vmfb", input_type="torch"),
        "async": models.compile_mlir(
            models.ADD_MLIR, d / "async.vmfb", extra_args=("--iree-execution-model=async-external",)
        ),
    }


def test_detects_vmfb_by_content(vmfb: dict[str, Path], tmp_path: Path) -> None:
    blob = tmp_path / "0123abcd"  # the blob store names files by sha256, with no extension
    blob.write_bytes(vmfb["add"].read_bytes())
    assert runtimes.detect_format(blob) is ArtifactFormat.IREE_VMFB


def test_inspect_and_run_match_numpy(vmfb: dict[str, Path]) -> None:
    info = runtimes.inspect(vmfb["add"])
    assert info.format is ArtifactFormat.IREE_VMFB and info.runtime == "iree"
    assert info.function == "main" and info.functions == ("main",)  # __init is not offered
    assert [t.to_dict() for t in info.signature.inputs] == [
        {"name": "input0", "shape": [4], "dtype": "float32"},
        {"name": "input1", "shape": [4], "dtype": "float32"},
    ]
    assert info.signature.output_names == ("output0",)
    assert info.metadata["devices"] == "local"
    assert any(t.startswith("embedded-elf-") for t in info.targets)

    model = runtimes.load(vmfb["add"], DeviceSettings(threads=1))
    a = np.arange(4, dtype=np.float32)
    b = np.array([0.5, -1.0, 2.0, 10.0], np.float32)
    out = model.run({"input0": a, "input1": b})
    assert list(out) == ["output0"]
    np.testing.assert_array_equal(out["output0"], a + b)
    record = model.record()
    assert record.runtime == "iree" and record.providers == ("local-task",) and record.function == "main"


def test_several_functions_need_a_choice(vmfb: dict[str, Path]) -> None:
    info = runtimes.inspect(vmfb["two"])
    assert info.function is None and info.functions == ("add", "square")
    assert info.signatures["square"].inputs[0].shape == (None, 3)
    assert info.signatures["square"].output_names == ("output0", "output1")
    with pytest.raises(FunctionChoice, match=r"exports several functions: add, square; name the one"):
        runtimes.load(vmfb["two"])
    with pytest.raises(FunctionChoice, match=r"has no function 'cube'; callable functions: add, square"):
        runtimes.load(vmfb["two"], function="cube")
    with pytest.raises(FunctionChoice, match=r"'__init' is an internal function"):
        runtimes.load(vmfb["two"], function="__init")

    square = runtimes.load(vmfb["two"], function="square")
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    out = square.run({"input0": x})
    np.testing.assert_array_equal(out["output0"], x * x)
    np.testing.assert_array_equal(out["output1"], x)


def test_async_twin_is_skipped(vmfb: dict[str, Path]) -> None:
    info = runtimes.inspect(vmfb["torch"])
    assert info.functions == ("main",) and info.function == "main"
    # No reflection in torch-imported modules: the calling convention gives the arity only.
    assert [(t.name, t.shape, t.dtype) for t in info.signature.inputs] == [
        ("input0", None, None),
        ("input1", None, None),
    ]
    with pytest.raises(FunctionChoice, match=r"'main\$async' is the fence-taking twin of 'main'"):
        runtimes.load(vmfb["torch"], function="main$async")
    model = runtimes.load(vmfb["torch"])
    a = np.ones(4, np.float32)
    np.testing.assert_array_equal(model.run({"input0": a, "input1": a})["output0"], a + a)


def test_async_only_module_is_refused_with_the_fix(vmfb: dict[str, Path]) -> None:
    with pytest.raises(FunctionChoice, match=r"no function that can be called.*--iree-execution-model=async-external"):
        runtimes.load(vmfb["async"])


def test_bad_inputs_are_named_before_iree_sees_them(vmfb: dict[str, Path]) -> None:
    model = runtimes.load(vmfb["add"])
    a = np.zeros(4, np.float32)
    with pytest.raises(InputMismatch, match="missing input 'input1'"):
        model.run({"input0": a})
    with pytest.raises(InputMismatch, match=r"input 'input1': dtype: expected float32, got float64"):
        model.run({"input0": a, "input1": np.zeros(4)})
    with pytest.raises(InputMismatch, match=r"input 'input0': shape: expected \[4\], got \(5,\)"):
        model.run({"input0": np.zeros(5, np.float32), "input1": a})


def test_module_for_another_device_is_refused_naming_both(tmp_path: Path) -> None:
    cuda = models.compile_mlir(models.ADD_MLIR, tmp_path / "cuda.vmfb", target="cuda")
    info = runtimes.inspect(cuda)
    assert info.metadata["devices"] == "cuda" and "cuda-nvptx-fb" in info.targets
    with pytest.raises(DeviceUnavailable, match=r"compiled for cuda devices but this board runs cpu"):
        runtimes.load(cuda)


def test_corrupt_module(vmfb: dict[str, Path], tmp_path: Path) -> None:
    data = vmfb["add"].read_bytes()
    cut = tmp_path / "cut.vmfb"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError, match=r"cut\.vmfb is not a loadable IREE module"):
        runtimes.load(cut)
    fake = tmp_path / "fake.vmfb"
    fake.write_bytes(b"not a module at all")
    with pytest.raises(ArtifactError, match=r"named \.vmfb but has no IREE module identifier"):
        runtimes.inspect(fake)


def test_local_task_threads_follow_the_board(vmfb: dict[str, Path]) -> None:
    # The thread count is fixed per process at the first load, so look in a fresh one.
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from fleetyard import runtimes
        before = set(os.listdir("/proc/self/task"))
        m = runtimes.load({str(vmfb["add"])!r}, runtimes.DeviceSettings(threads=1, cpu_ids=(0,)))
        m.run({{"input0": np.ones(4, np.float32), "input1": np.ones(4, np.float32)}})
        new = set(os.listdir("/proc/self/task")) - before
        pinned = sorted(",".join(map(str, sorted(os.sched_getaffinity(int(t))))) for t in new)
        print(m.record().threads, " ".join(pinned))
        m2 = runtimes.load({str(vmfb["add"])!r}, runtimes.DeviceSettings(threads=2))
        print(m2.record().threads, "|".join(m2.record().notes))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    first, second = out.stdout.strip().splitlines()
    threads, *pinned = first.split()
    # One worker, pinned to CPU 0 (IREE may add an unpinned helper thread).
    assert threads == "1" and pinned.count("0") == 1
    assert not [p for p in pinned if p != "0" and p != ",".join(map(str, sorted(os.sched_getaffinity(0))))]
    assert second.startswith("1 local-task was configured earlier in this process")


def test_parse_declaration_types() -> None:
    parsed = parse_declaration(
        "sync func @f(%input0: tensor<?x3xbf16>, %input1: tensor<i1>, %input2: f32, %input3: !hal.buffer_view) "
        "-> (%output0: tensor<2x2xcomplex<f32>>, %output1: tensor<8xui8>)"
    )
    assert parsed is not None
    sig, scalars, is_async = parsed
    assert [(t.shape, t.dtype) for t in sig.inputs] == [
        ((None, 3), "bfloat16"),
        ((), "bool"),
        ((), "float32"),
        (None, None),
    ]
    assert scalars == (False, False, True, False) and not is_async
    assert [(t.shape, t.dtype) for t in sig.outputs] == [((2, 2), "complex64"), ((8,), "uint8")]
    assert parse_declaration("async func @g(%input0: tensor<4xf32>) -> (%output0: tensor<4xf32>)")[2]  # type: ignore[index]
