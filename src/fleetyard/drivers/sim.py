"""The ``sim`` driver: simulated accelerator boards with realistic latencies and a fault model.

Spec: ``sim[:COUNT[:GEN1,GEN2,…]][:seed=N][:faults=RATE]``, e.g. ``sim:8``, ``sim:8:sim-g2``,
``sim:16:sim-g1,sim-g3:seed=7:faults=0.5``. Boards cycle through the listed generations
(default ``sim-g1``); ``faults`` is a rate of random faults per board-hour (default 0).

Faults (``protocol.agent.FaultKind``, each injectable through the admin API):

    hang               persistent until reset/clear; probe fails; a workload started on it blocks
    crash              one-shot: the next workload's worker process dies abruptly
    ecc_storm          ECC counters climb fast in telemetry; probe ok
    silent_corruption  persistent: :meth:`SimSession.perturb` alters numeric outputs; probe ok
    bus_drop           the board vanishes from discover(); probe fails; cleared by reset or clear
    bad_flash          persistent: flash() and reflash() fail and leave the firmware corrupt until
                       a good flash (after a clear)
    brick              persistent: no bank boots; probe fails; no flash or reset helps (a repair does)

Firmware sits in two banks (A/B): a flash writes the inactive one and boots it; an image that does
not boot leaves the board on the bank it ran before. An image's header may raise its board's
crash and silent-corruption rates (:mod:`fleetyard.domain.firmware_image`).

Board state that the agent and the per-board worker processes share (faults, firmware) lives in
one small JSON file per board under ``state_dir/sim`` (written via tmp + rename under an flock),
or in memory when there is no ``state_dir``. Latencies scale with ``FLEETYARD_SIM_TIME_SCALE``
(tests set it to 0). A flash takes minutes, as on real boards (``Generation.flash_s``: sim-g1
240 s, sim-g2 180 s, sim-g3 120 s); ``FLEETYARD_SIM_FLASH_SCALE`` (default 1) scales flashes and
reflashes further, on top of the time scale (the integration tests: 0.05 x 0.1, about a second).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fleetyard import __version__
from fleetyard.domain.firmware_image import read_header
from fleetyard.drivers.base import BoardFault, BoardIdentity, DriverSpec, Probe
from fleetyard.errors import BadRequest
from fleetyard.protocol.agent import FaultKind

__all__ = ["FAULT_KINDS", "GENERATIONS", "Generation", "SimDriver", "SimSession", "corrupt", "time_scale"]

BAD_FLASH = FaultKind.BAD_FLASH.value
BRICK = FaultKind.BRICK.value
FAULT_KINDS: frozenset[str] = frozenset(k.value for k in FaultKind)
# Faults a reset clears; the others are hardware (or flash-path) trouble that a reset does not fix.
RESET_CLEARS = frozenset({FaultKind.HANG.value, FaultKind.BUS_DROP.value, FaultKind.CRASH.value})
# Relative weights of the random fault model.
_RANDOM_FAULT_WEIGHTS: dict[str, float] = {
    FaultKind.HANG.value: 0.3,
    FaultKind.CRASH.value: 0.3,
    FaultKind.ECC_STORM.value: 0.15,
    FaultKind.BUS_DROP.value: 0.15,
    FaultKind.SILENT_CORRUPTION.value: 0.1,
}
ECC_STORM_CORRECTED_PER_S = 250.0
ECC_STORM_UNCORRECTED_PER_S = 0.5


@dataclass(frozen=True)
class Generation:
    """What tells one simulated hardware generation from another."""

    name: str
    serial_prefix: str
    latency_factor: float  # workload latency relative to sim-g1 (lower is faster)
    base_temp_c: float
    idle_power_w: float
    busy_power_w: float
    memory_mb: int
    firmware: str  # what a new board ships with
    reset_soft_s: float
    reset_hard_s: float
    flash_s: float  # a firmware write and reboot: minutes, as on real boards (FLEETYARD_SIM_FLASH_SCALE)
    hardware_revision: str = "r1"  # what its boards report (firmware images name the revisions they support)


GENERATIONS: dict[str, Generation] = {
    g.name: g
    for g in (
        Generation("sim-g1", "SG1", 1.0, 46.0, 35.0, 150.0, 16384, "1.4.2", 0.2, 1.0, 240.0, hardware_revision="r1"),
        Generation("sim-g2", "SG2", 0.6, 41.0, 30.0, 220.0, 32768, "2.1.0", 0.15, 0.8, 180.0, hardware_revision="r2"),
        Generation("sim-g3", "SG3", 0.35, 38.0, 25.0, 300.0, 65536, "3.0.1", 0.1, 0.6, 120.0, hardware_revision="r1"),
    )
}

_T = TypeVar("_T")


def time_scale() -> float:
    """Factor applied to every simulated latency (env ``FLEETYARD_SIM_TIME_SCALE``, default 1)."""
    try:
        return max(0.0, float(os.environ.get("FLEETYARD_SIM_TIME_SCALE", "1")))
    except ValueError:
        return 1.0


def flash_scale() -> float:
    """Extra factor on flash (and reflash) times, on top of :func:`time_scale` (env
    ``FLEETYARD_SIM_FLASH_SCALE``, default 1): a flash takes minutes, so tests shorten it further."""
    try:
        return max(0.0, float(os.environ.get("FLEETYARD_SIM_FLASH_SCALE", "1")))
    except ValueError:
        return 1.0


def _sleep(seconds: float) -> None:
    scaled = seconds * time_scale()
    if scaled > 0:
        time.sleep(scaled)


FAULTS_ENV = "FLEETYARD_SIM_FAULTS"


def as_computed_by(env: Mapping[str, str], outputs: dict[str, Any]) -> dict[str, Any]:
    """The outputs as the board whose session environment is ``env`` returns them: a sim board with
    silent corruption active perturbs every non-empty float output (workloads call this on what they
    computed on the host CPU); any other board returns them as they are."""
    if "silent_corruption" not in env.get(FAULTS_ENV, "").split(","):
        return outputs
    return {
        n: corrupt(a) if getattr(a, "dtype", None) is not None and a.dtype.kind == "f" and a.size else a
        for n, a in outputs.items()
    }


def corrupt(values: _T) -> _T:
    """A copy of ``values`` (a list/tuple of floats, or an array with ``tolist``) with wrong numbers.

    Deterministic: every 7th element (and always the first) is off by 1% + 1e-3, small enough to
    pass a sloppy check and fail an exact one, as silent data corruption does.
    """

    def bad(i: int, x: float) -> float:
        return x * 1.01 + 1e-3 if i % 7 == 0 else x

    if isinstance(values, list | tuple):
        out = [bad(i, float(x)) for i, x in enumerate(values)]
        return type(values)(out) if isinstance(values, tuple) else out  # type: ignore[return-value]
    if hasattr(values, "reshape") and hasattr(values, "copy"):  # numpy-like, without importing numpy
        arr: Any = values.copy()
        flat = arr.reshape(-1)
        flat[::7] = flat[::7] * 1.01 + 1e-3
        return arr  # type: ignore[no-any-return]
    raise TypeError(f"cannot perturb {type(values).__name__}; pass a list of floats or an array")


# ---- board state: shared between processes through files, or in memory -----------------------


class _MemoryStore:
    def __init__(self) -> None:
        self._data: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def load(self, serial: str) -> dict[str, Any] | None:
        return self._data.get(serial)

    def update(self, serial: str, fn: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            new = fn(json.loads(json.dumps(self._data[serial])) if serial in self._data else None)
            self._data[serial] = new
            return new


class _FileStore:
    """One JSON file per board; readers never see a partial file (tmp + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # serial -> ((inode, mtime_ns, size), parsed state): a stat is cheaper than a parse.
        self._cache: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def path(self, serial: str) -> Path:
        return self.root / f"{serial}.json"

    def load(self, serial: str) -> dict[str, Any] | None:
        path = self.path(serial)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(serial)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        self._cache[serial] = (key, data)
        return data

    @contextlib.contextmanager
    def _locked(self, serial: str) -> Iterator[None]:
        with self._lock, open(self.root / f"{serial}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def update(self, serial: str, fn: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
        with self._locked(serial):
            path = self.path(serial)
            try:
                current: dict[str, Any] | None = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                current = None
            new = fn(current)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(new))
            os.replace(tmp, path)
            self._cache.pop(serial, None)
            return new


# ---- the driver --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Board:
    identity: BoardIdentity
    gen: Generation


class SimDriver:
    """Simulated boards; implements BoardDriver, Resettable, Flashable, Reflashable and FaultInjectable."""

    name = "sim"

    def __init__(self, spec: DriverSpec | str, *, host: str, state_dir: Path | None = None) -> None:
        parsed = spec if isinstance(spec, DriverSpec) else DriverSpec.parse(spec)
        count, gens, self.seed, self.fault_rate = _parse_args(parsed.args)
        self.spec = parsed
        self.host = host
        self._store: _MemoryStore | _FileStore = (
            _FileStore(Path(state_dir) / "sim") if state_dir is not None else _MemoryStore()
        )
        self._boards: dict[str, _Board] = {}
        for slot in range(count):
            gen = GENERATIONS[gens[slot % len(gens)]]
            digest = hashlib.sha256(f"{host}/{slot}/{gen.name}".encode()).hexdigest()[:8].upper()
            serial = f"{gen.serial_prefix}-{digest}"
            ident = BoardIdentity(
                serial=serial,
                generation=gen.name,
                slot=slot,
                firmware=gen.firmware,
                device=f"sim:{slot}",
                labels={"generation": gen.name},
                hardware_revision=gen.hardware_revision,
            )
            self._boards[serial] = _Board(ident, gen)
        self._busy: set[str] = set()
        self._noise = {s: random.Random(f"{self.seed}/{s}/noise") for s in self._boards}
        self._fault_rng = random.Random(f"{self.seed}/{host}/faults")
        self._last_draw: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- helpers

    def _board(self, serial: str) -> _Board:
        try:
            return self._boards[serial]
        except KeyError:
            raise BadRequest(f"no sim board {serial!r} on host {self.host!r}") from None

    def _state(self, serial: str) -> dict[str, Any]:
        board = self._board(serial)
        return self._store.load(serial) or _new_state(board.gen)

    def _update(self, serial: str, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        gen = self._board(serial).gen

        def apply(current: dict[str, Any] | None) -> dict[str, Any]:
            state = current if current is not None else _new_state(gen)
            fn(state)
            return state

        return self._store.update(serial, apply)

    def _maybe_random_fault(self, serial: str) -> None:
        """Draw faults from a Poisson process with the spec's rate, plus what the running image adds
        (``crash_per_hour``, ``sdc_per_hour``): only where time is observed (probes, telemetry)."""
        image = self._state(serial).get("image_rates") or {}
        weights = {k: self.fault_rate * w for k, w in _RANDOM_FAULT_WEIGHTS.items()}
        weights[FaultKind.CRASH.value] += image.get("crash_per_hour", 0.0)
        weights[FaultKind.SILENT_CORRUPTION.value] += image.get("sdc_per_hour", 0.0)
        rate = sum(weights.values())
        if rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            last = self._last_draw.get(serial)
            self._last_draw[serial] = now
            if last is None:
                return
            p = 1.0 - math.exp(-rate * (now - last) / 3600.0)
            if self._fault_rng.random() >= p:
                return
            kinds = list(weights)
            kind = self._fault_rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        self.inject(serial, kind)

    # -- BoardDriver

    def boards(self) -> list[BoardIdentity]:
        """Every board of this host's spec, including any that fell off the bus."""
        return [self._identity(s) for s in self._boards]

    def _identity(self, serial: str) -> BoardIdentity:
        board = self._boards[serial]
        fw = self._state(serial)["firmware"]
        if fw == board.identity.firmware:
            return board.identity
        return dataclasses.replace(board.identity, firmware=fw)

    def discover(self) -> list[BoardIdentity]:
        out = []
        for serial in self._boards:
            if FaultKind.BUS_DROP.value not in self._state(serial)["faults"]:
                out.append(self._identity(serial))
        return out

    def telemetry(self, serial: str) -> dict[str, float]:
        self._maybe_random_fault(serial)
        gen = self._board(serial).gen
        state = self._state(serial)
        faults: dict[str, float] = state["faults"]
        if FaultKind.BUS_DROP.value in faults:
            raise BoardFault("fell off the bus")
        rng = self._noise[serial]
        busy = serial in self._busy
        if FaultKind.HANG.value in faults:
            util = 100.0  # a hung board spins with its last kernel stuck
        elif busy:
            util = min(100.0, max(50.0, rng.gauss(93.0, 4.0)))
        else:
            util = max(0.0, rng.gauss(1.0, 0.7))
        now = time.time()
        ecc_c = float(state["ecc_corrected"])
        ecc_u = float(state["ecc_uncorrected"])
        storm_since = faults.get(FaultKind.ECC_STORM.value)
        temp = gen.base_temp_c + util * 0.3 + rng.gauss(0.0, 0.4)
        if storm_since is not None:
            elapsed = max(0.0, now - storm_since)
            ecc_c += math.floor(ECC_STORM_CORRECTED_PER_S * elapsed) + 1
            ecc_u += math.floor(ECC_STORM_UNCORRECTED_PER_S * elapsed)
            temp += 6.0
        mem_total = float(gen.memory_mb)
        mem_used = mem_total * 0.62 + rng.gauss(0, 64) if busy else 280.0 + rng.gauss(0, 8)
        power = gen.idle_power_w + (gen.busy_power_w - gen.idle_power_w) * util / 100.0 + rng.gauss(0, 1.5)
        return {
            "temperature_c": round(temp, 2),
            "power_w": round(max(0.0, power), 2),
            "utilization_pct": round(util, 2),
            "memory_used_mb": round(max(0.0, mem_used), 1),
            "memory_total_mb": mem_total,
            "ecc_corrected": ecc_c,
            "ecc_uncorrected": ecc_u,
        }

    def probe(self, serial: str) -> Probe:
        self._maybe_random_fault(serial)
        return _probe_state(self._state(serial))

    def open_session(self, serial: str) -> SimSession:
        return SimSession(self, self._board(serial).identity, self._board(serial).gen)

    def set_busy(self, serial: str, busy: bool) -> None:
        """Whether a workload runs on the board now (shows in utilization, power, memory)."""
        self._board(serial)
        if busy:
            self._busy.add(serial)
        else:
            self._busy.discard(serial)

    # -- Resettable

    def reset(self, serial: str, level: str = "soft") -> None:
        """Reset the board (soft or hard); clears hang, bus_drop and a pending crash."""
        gen = self._board(serial).gen
        if level not in ("soft", "hard"):
            raise BadRequest(f"unknown reset level {level!r}; use 'soft' or 'hard'")
        _sleep(gen.reset_soft_s if level == "soft" else gen.reset_hard_s)

        def apply(state: dict[str, Any]) -> None:
            for kind in RESET_CLEARS:
                state["faults"].pop(kind, None)

        self._update(serial, apply)

    # -- Flashable

    def flash(self, serial: str, image: Path, version: str) -> str:
        """Write a firmware image to the inactive bank and boot it (A/B banks).

        An image whose header names another generation (or version) is refused before writing.
        An image that does not boot (header ``"boots": false``) leaves the board on its old bank,
        and the flash fails saying so. While ``bad_flash`` is injected the write fails and leaves
        the firmware corrupt; a ``brick`` leaves the board dead for good. An image's
        ``crash_per_hour`` and ``sdc_per_hour`` raise its board's random fault rates while it runs."""
        gen = self._board(serial).gen
        if not Path(image).is_file():
            raise FileNotFoundError(f"firmware image {image} not found")
        header = read_header(Path(image)) or {}
        if header and header["generation"] != gen.name:
            raise BoardFault(f"image is for {header['generation']}, not for this {gen.name} board: nothing written")
        if header and header["version"] != version:
            raise BoardFault(f"image is version {header['version']}, not {version}: nothing written")
        rates = {k: float(header.get(k, 0.0)) for k in ("crash_per_hour", "sdc_per_hour")}
        return self._write_firmware(serial, version, boots=bool(header.get("boots", True)), rates=rates)

    def reflash(self, serial: str) -> str:
        """Write the board's current firmware again: repairs a corrupt flash unless ``bad_flash`` persists."""
        return self._write_firmware(serial, str(self._state(serial)["firmware"]))

    def _write_firmware(
        self, serial: str, version: str, *, boots: bool = True, rates: Mapping[str, float] | None = None
    ) -> str:
        gen = self._board(serial).gen
        faults = self._state(serial)["faults"]
        if FaultKind.BUS_DROP.value in faults:
            raise BoardFault("cannot flash: fell off the bus")
        if BRICK in faults:
            raise BoardFault("cannot flash: the board is bricked (no bank boots); it needs a repair")
        _sleep(gen.flash_s * flash_scale())
        outcome = "ok"

        def apply(state: dict[str, Any]) -> None:
            nonlocal outcome
            banks = state.setdefault("banks", {"active": "a", "a": state["firmware"], "b": None})
            other = "b" if banks["active"] == "a" else "a"
            if BAD_FLASH in state["faults"]:
                outcome = "bad_flash"
                state["firmware_corrupt"] = True
                return
            banks[other] = version
            if not boots:
                outcome = "no_boot"  # the boot loader falls back to the bank that ran before
                return
            banks["active"] = other
            state["firmware"] = version
            state["firmware_corrupt"] = False
            state["image_rates"] = {k: v for k, v in (rates or {}).items() if v > 0}
            # A fresh image restarts the board: transient faults go with it.
            for kind in RESET_CLEARS:
                state["faults"].pop(kind, None)

        state = self._update(serial, apply)
        if outcome == "bad_flash":
            raise BoardFault(f"flash of firmware {version} failed: verify mismatch at block 0x3f00")
        if outcome == "no_boot":
            raise BoardFault(
                f"firmware {version} did not boot; fell back to the other bank, still running {state['firmware']}"
            )
        return str(state["firmware"])

    # -- FaultInjectable

    def inject(self, serial: str, kind: str) -> None:
        """Start a fault on a board (see the module docstring for what each kind does)."""
        if kind not in FAULT_KINDS:
            raise BadRequest(f"unknown fault kind {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")

        def apply(state: dict[str, Any]) -> None:
            state["faults"].setdefault(kind, time.time())

        self._update(serial, apply)

    def clear(self, serial: str, kind: str | None = None) -> None:
        """End one fault, or every fault when ``kind`` is None."""
        if kind is not None and kind not in FAULT_KINDS:
            raise BadRequest(f"unknown fault kind {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")

        def apply(state: dict[str, Any]) -> None:
            kinds = list(state["faults"]) if kind is None else [kind]
            for k in kinds:
                since = state["faults"].pop(k, None)
                if k == FaultKind.ECC_STORM.value and since is not None:
                    # Counters never go back: fold what the storm counted into the base.
                    elapsed = max(0.0, time.time() - since)
                    state["ecc_corrected"] += math.floor(ECC_STORM_CORRECTED_PER_S * elapsed) + 1
                    state["ecc_uncorrected"] += math.floor(ECC_STORM_UNCORRECTED_PER_S * elapsed)
            if kind is None or kind == BAD_FLASH:
                state["firmware_corrupt"] = False

        self._update(serial, apply)

    def active_faults(self, serial: str) -> set[str]:
        return set(self._state(serial)["faults"])


def _new_state(gen: Generation) -> dict[str, Any]:
    # faults: kind -> wall-clock time it began (the ECC storm's counters grow from it)
    return {
        "faults": {},
        "firmware": gen.firmware,
        "firmware_corrupt": False,
        "ecc_corrected": 0,
        "ecc_uncorrected": 0,
    }


def _probe_state(state: dict[str, Any]) -> Probe:
    faults = state["faults"]
    if FaultKind.BUS_DROP.value in faults:
        return Probe(False, "fell off the bus")
    if FaultKind.HANG.value in faults:
        return Probe(False, "board not responding")
    if BRICK in faults:
        return Probe(False, "bricked: no firmware bank boots")
    if state.get("firmware_corrupt"):
        return Probe(False, "firmware corrupt (failed flash)")
    return Probe(True)


def _parse_args(args: tuple[str, ...]) -> tuple[int, list[str], int, float]:
    count, gens, seed, rate = 1, ["sim-g1"], 0, 0.0
    rest = list(args)
    if rest and "=" not in rest[0]:
        try:
            count = int(rest.pop(0))
        except ValueError:
            raise BadRequest(f"sim driver: board count must be an integer, got {args[0]!r}") from None
        if not 0 <= count <= 4096:
            raise BadRequest(f"sim driver: board count {count} out of range 0..4096")
    for arg in rest:
        key, eq, value = arg.partition("=")
        try:
            if not eq:
                gens = [g.strip() for g in arg.split(",") if g.strip()]
                unknown = [g for g in gens if g not in GENERATIONS]
                if unknown or not gens:
                    raise BadRequest(
                        f"sim driver: unknown generation(s) {', '.join(unknown) or arg!r}; "
                        f"known: {', '.join(GENERATIONS)}"
                    )
            elif key == "seed":
                seed = int(value)
            elif key == "faults":
                rate = float(value)
                if rate < 0:
                    raise ValueError
            else:
                raise BadRequest(f"sim driver: unknown option {key!r}; known: seed=N, faults=RATE")
        except ValueError:
            raise BadRequest(f"sim driver: bad value in {arg!r}") from None
    return count, gens, seed, rate


class SimSession:
    """A sim board opened by its worker process."""

    def __init__(self, driver: SimDriver, identity: BoardIdentity, gen: Generation) -> None:
        self.driver = driver
        self.identity = identity
        self.generation = gen
        self.serial = identity.serial

    @property
    def latency_factor(self) -> float:
        """How much longer than sim-g1 a kernel takes on this board (sim-g3 is 0.35)."""
        return self.generation.latency_factor

    def active_faults(self) -> set[str]:
        return self.driver.active_faults(self.serial)

    def env(self) -> dict[str, str]:
        return {
            "FLEETYARD_DEVICE": self.identity.device,
            "FLEETYARD_BOARD_SERIAL": self.serial,
            # Read now, not at open: a flash may have changed it since (results record it).
            "FLEETYARD_BOARD_FIRMWARE": self.driver._identity(self.serial).firmware,
            "FLEETYARD_BOARD_GENERATION": self.identity.generation,
            "FLEETYARD_DRIVER": f"sim (fleetyard {__version__})",
            "FLEETYARD_SIM_GENERATION": self.generation.name,
            "FLEETYARD_SIM_LATENCY_FACTOR": str(self.generation.latency_factor),
            # Lets a workload's own process see e.g. silent_corruption and perturb its outputs.
            FAULTS_ENV: ",".join(sorted(self.active_faults())),
        }

    def check(self) -> None:
        probe = _probe_state(self.driver._state(self.serial))
        if not probe.ok:
            raise BoardFault(probe.reason or "board fault")

    def perturb(self, values: _T) -> _T:
        """``values`` as this board computes them: wrong if silent corruption is active."""
        if FaultKind.SILENT_CORRUPTION.value in self.active_faults():
            return corrupt(values)
        return values

    def close(self) -> None:
        pass
