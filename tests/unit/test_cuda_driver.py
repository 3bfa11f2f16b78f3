"""The cuda driver. Tests marked ``gpu`` need an NVIDIA GPU (run on the lent device machine);
here only the fail-closed path and the parts that need no GPU run."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

from fleetyard.drivers import BoardDriver, Resettable
from fleetyard.errors import BadRequest
from fleetyard.runtimes import DeviceSettings


def _nvml_works() -> bool:
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
        return int(nvml.nvmlDeviceGetCount()) > 0
    except Exception:
        return False


HAS_GPU = _nvml_works()
gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU and NVML")


@pytest.mark.skipif(HAS_GPU, reason="NVML works here")
def test_fails_closed_without_nvml() -> None:
    from fleetyard.drivers.cuda import CudaDriver

    with pytest.raises(BadRequest, match=r"fleetyard\[cuda\]|NVML cannot start") as e:
        CudaDriver("cuda", host="h")
    if importlib.util.find_spec("pynvml") is not None:  # installed (the dev extra), but no NVIDIA driver
        assert "is the NVIDIA driver installed" in e.value.message


def test_generation_names() -> None:
    from fleetyard.drivers.cuda import cuda_generation

    assert cuda_generation("NVIDIA H100 80GB HBM3") == "cuda-h100-80gb-hbm3"
    assert cuda_generation("Tesla T4") == "cuda-tesla-t4"


def test_settings_follow_cuda_visible_devices() -> None:
    env = {"FLEETYARD_DEVICE": "cuda:3", "FLEETYARD_GPU_UUID": "GPU-abc", "CUDA_VISIBLE_DEVICES": "GPU-abc"}
    assert DeviceSettings.from_env(env) == DeviceSettings(kind="cuda", index=0, uuid="GPU-abc")
    assert DeviceSettings.from_env({"FLEETYARD_DEVICE": "cuda:3"}).index == 3


@gpu
@needs_gpu
def test_discover_identity_and_telemetry() -> None:
    from fleetyard.drivers.cuda import CudaDriver

    driver = CudaDriver("cuda", host="h")
    assert isinstance(driver, BoardDriver) and isinstance(driver, Resettable)
    boards = driver.discover()
    assert boards and all(b.generation.startswith("cuda-") and b.device.startswith("cuda:") for b in boards)
    board = boards[0]
    assert board.labels["uuid"].startswith("GPU-")
    t = driver.telemetry(board.serial)
    for key in ("temperature_c", "utilization_pct", "memory_used_mb", "memory_total_mb"):
        assert key in t, (key, t)
    assert 0 < t["temperature_c"] < 110 and t["memory_used_mb"] <= t["memory_total_mb"]
    assert driver.probe(board.serial).ok, driver.probe(board.serial)
    print("cuda board:", board, "telemetry:", t)


@gpu
@needs_gpu
def test_reset_is_refused_by_default() -> None:
    from fleetyard.drivers.cuda import CudaDriver

    driver = CudaDriver("cuda", host="h")
    with pytest.raises(BadRequest, match=r"reset of .* refused"):
        driver.reset(driver.discover()[0].serial)


@gpu
@needs_gpu
def test_session_restricts_the_worker_to_its_gpu() -> None:
    code = (
        "from fleetyard.drivers import load_driver\n"
        "import os\n"
        "d = load_driver('cuda', host='h'); b = d.discover()[0]\n"
        "s = d.open_session(b.serial); s.check()\n"
        "print(os.environ['CUDA_VISIBLE_DEVICES'] == b.labels['uuid'], s.device_settings().index)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "0"]
