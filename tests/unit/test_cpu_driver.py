"""The cpu driver: this host's cores as boards, identity, telemetry, and sessions pinned to cores."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.unit import models

from fleetyard.drivers import BoardDriver, Flashable, Resettable, load_driver
from fleetyard.drivers.base import BoardFault
from fleetyard.drivers.cpu import CpuDriver, cpu_generation
from fleetyard.errors import BadRequest
from fleetyard.runtimes import DeviceSettings

CORES = tuple(sorted(os.sched_getaffinity(0)))


def test_one_board_of_every_usable_core() -> None:
    driver = load_driver("cpu", host="h1")
    assert isinstance(driver, CpuDriver) and isinstance(driver, BoardDriver)
    (board,) = driver.discover()
    assert re.fullmatch(r"CPU-[0-9A-F]{8}", board.serial)
    assert board.slot == 0 and board.labels["cores"] == str(len(CORES))
    assert board.device == (f"cpu:{CORES[0]}-{CORES[-1]}" if len(CORES) > 1 else f"cpu:{CORES[0]}")
    assert board.generation.startswith("cpu-") and board.generation == cpu_generation()
    assert board.firmware.startswith(("microcode ", "linux "))
    # Stable: the same host and cores give the same identity, whatever the agent is called.
    assert CpuDriver("cpu", host="another-name").discover() == [board]
    assert driver.probe(board.serial).ok


@pytest.mark.skipif(len(CORES) < 2, reason="needs at least 2 usable cores")
def test_split_into_equal_boards() -> None:
    driver = CpuDriver("cpu:2", host="h1")
    boards = driver.discover()
    assert [b.slot for b in boards] == [0, 1]
    size = len(CORES) // 2
    assert [driver.cores(b.serial) for b in boards] == [CORES[:size], CORES[size : 2 * size]]
    assert len({b.serial for b in boards}) == 2
    assert {b.serial for b in boards}.isdisjoint({b.serial for b in CpuDriver("cpu", host="h1").discover()})


def test_bad_specs_name_the_core_count() -> None:
    n = len(CORES)
    with pytest.raises(BadRequest, match=rf"cannot split {n} cores into {n + 1} boards.*use cpu:1 … cpu:{n}"):
        CpuDriver(f"cpu:{n + 1}", host="h")
    with pytest.raises(BadRequest, match="board count must be an integer"):
        CpuDriver("cpu:two", host="h")
    with pytest.raises(BadRequest, match="at least 1"):
        CpuDriver("cpu:0", host="h")
    with pytest.raises(BadRequest, match="no cpu board 'CPU-00000000'"):
        CpuDriver("cpu", host="h").telemetry("CPU-00000000")


def test_telemetry_keys() -> None:
    driver = CpuDriver("cpu", host="h")
    serial = driver.discover()[0].serial
    sum(i * i for i in range(200_000))  # some busy time on this process's cores
    t = driver.telemetry(serial)
    assert 0.0 <= t["utilization_pct"] <= 100.0
    assert 0 < t["memory_used_mb"] <= t["memory_total_mb"]
    assert set(t) <= {"utilization_pct", "memory_used_mb", "memory_total_mb", "freq_mhz", "temperature_c"}
    assert all(isinstance(v, float) for v in t.values())
    if "freq_mhz" in t:
        assert t["freq_mhz"] > 0


def test_no_reset_and_no_flash() -> None:
    driver = CpuDriver("cpu", host="h")
    assert not isinstance(driver, Resettable) and not isinstance(driver, Flashable)


def test_session_pins_the_process_and_restores_on_close() -> None:
    driver = CpuDriver(f"cpu:{len(CORES)}", host="h")
    last = driver.discover()[-1]
    before = os.sched_getaffinity(0)
    session = driver.open_session(last.serial)
    try:
        assert os.sched_getaffinity(0) == {CORES[-1]}
        session.check()
        env = session.env()
        assert env["FLEETYARD_DEVICE"] == f"cpu:{CORES[-1]}" == last.device
        assert env["OMP_NUM_THREADS"] == env["FLEETYARD_INTRA_OP_THREADS"] == "1"
        settings = session.device_settings()
        assert settings == DeviceSettings(kind="cpu", threads=1, cpu_ids=(CORES[-1],))
        assert DeviceSettings.from_env(env) == settings  # what a workload derives from its env
    finally:
        session.close()
    assert os.sched_getaffinity(0) == before


def test_a_worker_process_runs_on_its_board_cores() -> None:
    # As the agent's worker does: build the driver, open the board, then run (here: report affinity).
    # A thread started before the session (the worker has some) is pinned too, not only the caller.
    code = (
        "import os, threading\n"
        "from fleetyard.drivers import load_driver\n"
        f"d = load_driver('cpu:{len(CORES)}', host='h')\n"
        "go = threading.Event(); seen = []\n"
        "t = threading.Thread(target=lambda: (go.wait(), seen.append(sorted(os.sched_getaffinity(0)))))\n"
        "t.start()\n"
        "s = d.open_session(d.discover()[0].serial)\n"
        "go.set(); t.join()\n"
        "print(sorted(os.sched_getaffinity(0)), seen[0], s.env()['FLEETYARD_DEVICE'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == [f"[{CORES[0]}]", f"[{CORES[0]}]", f"cpu:{CORES[0]}"]


def test_a_board_whose_cores_left_the_cpu_set_is_faulty() -> None:
    if len(CORES) < 2:
        pytest.skip("needs at least 2 usable cores")
    driver = CpuDriver("cpu:2", host="h")
    first, second = driver.discover()
    session = driver.open_session(first.serial)  # this process now only has the first board's cores
    try:
        assert driver.probe(first.serial).ok
        probe = driver.probe(second.serial)
        assert not probe.ok and "no longer in this process's CPU set" in (probe.reason or "")
        assert [b.serial for b in driver.discover()] == [first.serial]
        with pytest.raises(BoardFault):
            driver.open_session(second.serial)
    finally:
        session.close()


def test_generation_names() -> None:
    def gen(model: str, vendor: str) -> str:
        return cpu_generation({0: {"model name": model, "vendor_id": vendor}}, "x86_64")

    assert gen("Intel(R) Xeon(R) Platinum 8480+", "GenuineIntel") == "cpu-x86_64-intel-xeon-platinum-8480plus"
    assert gen("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz", "GenuineIntel") == "cpu-x86_64-intel-core-i7-8700k"
    assert gen("AMD EPYC 7763 64-Core Processor", "AuthenticAMD") == "cpu-x86_64-amd-epyc-7763"
    arm = cpu_generation({0: {"CPU implementer": "0x41", "CPU part": "0xd0c"}}, "aarch64")
    assert arm == "cpu-aarch64-arm-41-d0c"


def test_runtimes_run_on_the_board_cores(tmp_path: Path) -> None:
    # A worker's view: open the board, derive runtime settings from the session's environment,
    # run an ONNX model and an IREE module; every thread the runtimes started stays on the board.
    onnx_path = models.save(models.mlp(), tmp_path / "mlp.onnx")
    vmfb = models.compile_mlir(models.ADD_MLIR, tmp_path / "add.vmfb")
    code = f"""
import os, numpy as np
from fleetyard.drivers import load_driver
from fleetyard.runtimes import DeviceSettings, default_cache
d = load_driver('cpu:{len(CORES)}', host='h')
s = d.open_session(d.discover()[-1].serial)
settings = DeviceSettings.from_env(s.env())
m = default_cache().get({str(onnx_path)!r}, settings)
y = m.run({{"x": np.ones((2, 4), np.float32)}})["y"]
v = default_cache().get({str(vmfb)!r}, settings)
z = v.run({{"input0": np.ones(4, np.float32), "input1": np.ones(4, np.float32)}})["output0"]
pins = {{tuple(sorted(os.sched_getaffinity(int(t)))) for t in os.listdir("/proc/self/task")}}
print(m.record().threads, v.record().threads, sorted(pins), float(z.sum()), y.shape)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"1 1 [({CORES[-1]},)] 8.0 (2, 3)"
