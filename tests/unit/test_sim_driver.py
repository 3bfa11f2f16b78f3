"""The sim driver: identity, telemetry, every fault's effect, reset, flash, shared state."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleetyard.drivers.base import (
    BoardDriver,
    BoardFault,
    FaultInjectable,
    Flashable,
    Probe,
    Resettable,
    load_driver,
)
from fleetyard.drivers.sim import GENERATIONS, SimDriver, corrupt
from fleetyard.errors import BadRequest


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETYARD_SIM_TIME_SCALE", "0")


def test_loads_through_entry_point_and_implements_protocols(tmp_path: Path) -> None:
    d = load_driver("sim:2", host="h1", state_dir=tmp_path)
    assert isinstance(d, SimDriver)
    for proto in (BoardDriver, Resettable, Flashable, FaultInjectable):
        assert isinstance(d, proto)


def test_discovery_cycles_generations_and_is_deterministic() -> None:
    d = SimDriver("sim:6:sim-g1,sim-g2,sim-g3", host="rack1-h3", state_dir=None)
    boards = d.discover()
    assert [b.slot for b in boards] == list(range(6))
    assert [b.generation for b in boards] == ["sim-g1", "sim-g2", "sim-g3"] * 2
    assert [b.device for b in boards] == [f"sim:{i}" for i in range(6)]
    assert boards[1].firmware == GENERATIONS["sim-g2"].firmware
    assert boards[1].serial.startswith("SG2-") and len(boards[1].serial) == 12
    assert boards[2].labels == {"generation": "sim-g3"}
    again = SimDriver("sim:6:sim-g1,sim-g2,sim-g3", host="rack1-h3", state_dir=None).discover()
    assert [b.serial for b in again] == [b.serial for b in boards]
    other = SimDriver("sim:6:sim-g1,sim-g2,sim-g3", host="rack1-h4", state_dir=None).discover()
    assert not {b.serial for b in other} & {b.serial for b in boards}
    assert len({b.serial for b in boards}) == 6


@pytest.mark.parametrize(
    "spec", ["sim:x", "sim:4:sim-g9", "sim:4:bogus=1", "sim:4:faults=-1", "sim:-1", "sim:2:seed=z"]
)
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(BadRequest):
        SimDriver(spec, host="h", state_dir=None)


def test_default_spec_and_options() -> None:
    d = SimDriver("sim", host="h", state_dir=None)
    assert len(d.discover()) == 1 and d.discover()[0].generation == "sim-g1"
    d = SimDriver("sim:3:seed=5:faults=2.5", host="h", state_dir=None)
    assert (d.seed, d.fault_rate, len(d.discover())) == (5, 2.5, 3)


def test_telemetry_is_seeded_and_reflects_busy() -> None:
    def readings(seed: int) -> list[dict[str, float]]:
        d = SimDriver(f"sim:2:seed={seed}", host="h", state_dir=None)
        s = d.discover()[0].serial
        return [d.telemetry(s) for _ in range(3)]

    a, b = readings(1), readings(1)
    # Everything but the wall-clock-driven ECC counters repeats for the same seed.
    assert a == b
    assert readings(2) != a

    d = SimDriver("sim:1", host="h", state_dir=None)
    s = d.discover()[0].serial
    idle = d.telemetry(s)
    assert set(idle) >= {
        "temperature_c",
        "power_w",
        "utilization_pct",
        "memory_used_mb",
        "ecc_corrected",
        "ecc_uncorrected",
    }
    assert idle["utilization_pct"] < 10
    d.set_busy(s, True)
    busy = d.telemetry(s)
    assert busy["utilization_pct"] > 50
    assert busy["power_w"] > idle["power_w"]
    assert busy["memory_used_mb"] > idle["memory_used_mb"]
    d.set_busy(s, False)
    assert d.telemetry(s)["utilization_pct"] < 10


def test_generations_differ() -> None:
    d = SimDriver("sim:3:sim-g1,sim-g2,sim-g3", host="h", state_dir=None)
    sessions = [d.open_session(b.serial) for b in d.discover()]
    factors = [s.latency_factor for s in sessions]
    assert factors == sorted(factors, reverse=True) and factors[0] == 1.0
    assert len({g.firmware for g in GENERATIONS.values()}) == len(GENERATIONS) >= 3


def test_session_env_and_check() -> None:
    d = SimDriver("sim:2", host="h", state_dir=None)
    b = d.discover()[1]
    session = d.open_session(b.serial)
    env = session.env()
    assert env["FLEETYARD_DEVICE"] == "sim:1"
    assert env["FLEETYARD_BOARD_SERIAL"] == b.serial
    # What results record of the board: its firmware now (a flash changes it), generation, driver.
    assert (env["FLEETYARD_BOARD_FIRMWARE"], env["FLEETYARD_BOARD_GENERATION"]) == (b.firmware, b.generation)
    assert env["FLEETYARD_DRIVER"].startswith("sim (fleetyard ")
    session.check()
    assert session.active_faults() == set()


def test_hang_fails_probe_and_session_until_reset() -> None:
    d = SimDriver("sim:2", host="h", state_dir=None)
    s = d.discover()[0].serial
    d.inject(s, "hang")
    probe = d.probe(s)
    assert not probe.ok and probe.reason == "board not responding"
    with pytest.raises(BoardFault, match="not responding"):
        d.open_session(s).check()
    assert d.probe(d.discover()[1].serial).ok  # only that board
    d.reset(s, "soft")
    assert d.probe(s).ok
    assert d.active_faults(s) == set()


def test_bus_drop_hides_board_until_cleared() -> None:
    d = SimDriver("sim:3", host="h", state_dir=None)
    s = d.discover()[1].serial
    d.inject(s, "bus_drop")
    assert s not in {b.serial for b in d.discover()}
    assert len(d.discover()) == 2
    assert d.probe(s).reason == "fell off the bus"
    with pytest.raises(BoardFault):
        d.telemetry(s)
    with pytest.raises(BoardFault, match="bus"):
        d.open_session(s).check()
    d.clear(s, "bus_drop")
    assert len(d.discover()) == 3 and d.probe(s).ok


def test_hard_reset_clears_bus_drop_and_crash_but_not_hardware_faults() -> None:
    d = SimDriver("sim:1", host="h", state_dir=None)
    s = d.discover()[0].serial
    for kind in ("bus_drop", "crash", "ecc_storm", "silent_corruption"):
        d.inject(s, kind)
    d.reset(s, "hard")
    assert d.active_faults(s) == {"ecc_storm", "silent_corruption"}
    with pytest.raises(BadRequest):
        d.reset(s, "warm")


def test_crash_is_reported_and_probe_still_ok() -> None:
    d = SimDriver("sim:1", host="h", state_dir=None)
    s = d.discover()[0].serial
    d.inject(s, "crash")
    assert d.probe(s).ok
    assert d.active_faults(s) == {"crash"}
    d.clear(s, "crash")  # the agent consumes it when a run triggers it
    assert d.active_faults(s) == set()


def test_ecc_storm_counters_climb_and_stay_after_clear() -> None:
    d = SimDriver("sim:1", host="h", state_dir=None)
    s = d.discover()[0].serial
    assert d.telemetry(s)["ecc_corrected"] == 0
    d.inject(s, "ecc_storm")
    assert d.probe(s).ok
    first = d.telemetry(s)["ecc_corrected"]
    assert first >= 1
    d.clear(s, "ecc_storm")
    after = d.telemetry(s)["ecc_corrected"]
    assert after >= first
    assert d.telemetry(s)["ecc_corrected"] == after  # no longer climbing


def test_ecc_storm_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetyard.drivers.sim as sim

    now = [1000.0]
    monkeypatch.setattr(sim.time, "time", lambda: now[0])
    d = SimDriver("sim:1", host="h", state_dir=None)
    s = d.discover()[0].serial
    d.inject(s, "ecc_storm")
    now[0] += 10
    t = d.telemetry(s)
    assert t["ecc_corrected"] > 1000
    assert t["ecc_uncorrected"] >= 1


def test_silent_corruption_perturbs_outputs() -> None:
    d = SimDriver("sim:1", host="h", state_dir=None)
    s = d.discover()[0].serial
    session = d.open_session(s)
    values = [1.0, 2.0, 3.0] * 5
    assert session.perturb(values) == values
    d.inject(s, "silent_corruption")
    assert d.probe(s).ok
    session.check()
    bad = session.perturb(values)
    assert bad != values and len(bad) == len(values)
    assert bad[1] == values[1]  # mostly right: that is what makes it silent
    assert session.perturb(tuple(values)) == tuple(bad)
    assert "silent_corruption" in session.env()["FLEETYARD_SIM_FAULTS"]
    assert corrupt([0.0])[0] != 0.0


def test_flash_changes_firmware_and_bad_flash_fails(tmp_path: Path) -> None:
    image = tmp_path / "fw.bin"
    image.write_bytes(b"\x7fFW" * 100)
    d = SimDriver("sim:2:sim-g2", host="h", state_dir=None)
    s = d.discover()[0].serial
    assert d.flash(s, image, "2.2.0") == "2.2.0"
    assert d.discover()[0].firmware == "2.2.0"
    assert d.discover()[1].firmware == "2.1.0"
    d.inject(s, "bad_flash")
    with pytest.raises(BoardFault, match="flash"):
        d.flash(s, image, "2.3.0")
    assert d.discover()[0].firmware == "2.2.0"
    assert not d.probe(s).ok  # a failed flash leaves the board unusable
    d.clear(s, "bad_flash")
    assert d.probe(s).ok
    assert d.flash(s, image, "2.3.0") == "2.3.0"
    with pytest.raises(FileNotFoundError):
        d.flash(s, tmp_path / "missing.bin", "9")


def test_unknown_fault_and_board() -> None:
    d = SimDriver("sim:1", host="h", state_dir=None)
    s = d.discover()[0].serial
    with pytest.raises(BadRequest):
        d.inject(s, "meltdown")
    with pytest.raises(BadRequest):
        d.probe("SG1-NOPE")


def test_state_is_shared_between_instances_on_one_state_dir(tmp_path: Path) -> None:
    agent = SimDriver("sim:2", host="h", state_dir=tmp_path)
    worker = SimDriver("sim:2", host="h", state_dir=tmp_path)
    s = agent.discover()[0].serial
    session = worker.open_session(s)
    agent.inject(s, "hang")
    assert worker.active_faults(s) == {"hang"}
    with pytest.raises(BoardFault):
        session.check()
    worker.reset(s)
    assert agent.probe(s).ok
    image = tmp_path / "fw.bin"
    image.write_bytes(b"fw")
    worker.flash(s, image, "1.5.0")
    assert agent.discover()[0].firmware == "1.5.0"
    assert sorted(p.name for p in (tmp_path / "sim").glob("*.json")) == [f"{s}.json"]
    # A separate in-memory driver sees none of it.
    assert SimDriver("sim:2", host="h", state_dir=None).discover()[0].firmware == "1.4.2"


def test_random_fault_model_is_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetyard.drivers.sim as sim

    def run(seed: int) -> list[set[str]]:
        clock = [0.0]
        monkeypatch.setattr(sim.time, "monotonic", lambda: clock[0])
        d = SimDriver(f"sim:4:seed={seed}:faults=3600", host="h", state_dir=None)
        serials = [b.serial for b in d.boards()]
        for _ in range(3):
            for s in serials:
                d.probe(s)
            clock[0] += 0.5  # 0.5 s at 3600 faults/board-hour: ~40% per board per step
        return [d.active_faults(s) for s in serials]

    first = run(3)
    assert first == run(3)
    assert any(first)
    quiet = SimDriver("sim:4", host="h", state_dir=None)
    for b in quiet.boards():
        quiet.probe(b.serial)
        assert quiet.active_faults(b.serial) == set()


def test_reset_and_flash_take_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import time

    monkeypatch.setenv("FLEETYARD_SIM_TIME_SCALE", "0.05")
    d = SimDriver("sim:1", host="h", state_dir=None)
    s = d.discover()[0].serial
    t0 = time.monotonic()
    d.reset(s, "hard")  # 1.0 s * 0.05
    assert time.monotonic() - t0 >= 0.04


def test_firmware_sits_in_two_banks_and_an_image_that_does_not_boot_falls_back(tmp_path: Path) -> None:
    from fleetyard.domain.firmware_image import sim_image

    d = SimDriver("sim:1:sim-g2", host="h", state_dir=tmp_path)
    s = d.discover()[0].serial
    good, dud = tmp_path / "good.bin", tmp_path / "dud.bin"
    good.write_bytes(sim_image("sim-g2", "2.2.0"))
    dud.write_bytes(sim_image("sim-g2", "2.3.0", boots=False))
    assert d.flash(s, good, "2.2.0") == "2.2.0"
    with pytest.raises(
        BoardFault, match=re.escape("2.3.0 did not boot; fell back to the other bank, still running 2.2.0")
    ):
        d.flash(s, dud, "2.3.0")
    assert d.discover()[0].firmware == "2.2.0" and d.probe(s).ok  # the old bank runs on
    # A bricked board: no bank boots, no flash or reset helps; a repair (clear) does.
    d.inject(s, "brick")
    assert d.probe(s) == Probe(False, "bricked: no firmware bank boots")
    with pytest.raises(BoardFault, match="bricked"):
        d.flash(s, good, "2.2.0")
    d.reset(s, "hard")
    assert not d.probe(s).ok
    d.clear(s, "brick")
    assert d.probe(s).ok


def test_an_image_can_raise_its_boards_crash_and_corruption_rates(tmp_path: Path) -> None:
    import time

    from fleetyard.domain.firmware_image import sim_image

    d = SimDriver("sim:2:sim-g1", host="h", state_dir=tmp_path)  # no random faults of its own
    bad_board, calm_board = (b.serial for b in d.discover())
    bad = tmp_path / "bad.bin"
    bad.write_bytes(sim_image("sim-g1", "1.5.0", sdc_per_hour=3.6e9))  # a fault every microsecond
    assert d.flash(bad_board, bad, "1.5.0") == "1.5.0"
    for board in (bad_board, calm_board):
        d.telemetry(board)  # time starts being observed
    time.sleep(0.01)
    for board in (bad_board, calm_board):
        d.telemetry(board)
    assert d.active_faults(bad_board) == {"silent_corruption"}
    assert d.active_faults(calm_board) == set()
