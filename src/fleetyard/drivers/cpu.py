"""The ``cpu`` driver: this host's CPU cores as real boards.

Spec: ``cpu`` (one board of every core this process may run on, ``os.sched_getaffinity(0)``) or
``cpu:N`` (those cores split into N boards of equal size, in order; cores left over by the
division belong to no board). Linux only.

Identity, stable for a host and a core set:

- serial ``CPU-<8 hex>``: sha256 of the host's machine-id (``/etc/machine-id``; the hostname when
  there is none) and the board's core list;
- generation ``cpu-<arch>-<model>``: the architecture and a short form of the CPU model name from
  ``/proc/cpuinfo`` (``cpu-x86_64-intel-xeon-platinum-8480plus``, ``cpu-x86_64-amd-epyc``); on
  ARM, implementer and part numbers (``cpu-aarch64-arm-41-d0c``);
- firmware: the CPU microcode revision (``microcode 0x2b000590``), else the kernel release
  (``linux 6.8.0-45-generic``);
- device ``cpu:<first>-<last>`` for a contiguous range, else ``cpu:0,2,4``.

Telemetry: ``utilization_pct`` of the board's cores (busy time over the interval since the last
reading, from ``/proc/stat`` by CPU number: psutil's per-CPU lists are indexed by position, which
shifts when a CPU is offline), ``freq_mhz`` (mean over the board's cores, from sysfs or
``/proc/cpuinfo``), ``temperature_c`` (psutil's sensors: the board's cores' ``Core N`` readings,
else the package's; absent when the host has no sensors, as in most VMs), ``memory_used_mb`` and
``memory_total_mb`` (the host's: the boards of a host share its memory).

A session pins the worker process (every thread) to the board's cores and tells runtimes to use
one intra-op thread per core (``FLEETYARD_INTRA_OP_THREADS``, ``OMP_NUM_THREADS`` and friends for
child processes, :meth:`CpuSession.device_settings` in process). Closing the session restores
the previous affinity.

A cpu board cannot be reset or flashed: the driver implements neither Resettable nor Flashable,
so remediation goes straight to the steps that do not need them (a health check, quarantine).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from fleetyard.drivers.base import BoardFault, BoardIdentity, DriverSpec, Probe
from fleetyard.errors import BadRequest
from fleetyard.runtimes.base import DeviceSettings, format_cpu_list, parse_cpu_list

__all__ = ["CpuDriver", "CpuSession", "cpu_generation"]

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_MODEL_NOISE = re.compile(r"\((?:r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\bwith radeon.*$|\b\d+-core\b", re.IGNORECASE)
_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd", "HygonGenuine": "hygon", "CentaurHauls": "centaur"}


# ---- host facts ----------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _cpuinfo() -> dict[int, dict[str, str]]:
    """``/proc/cpuinfo`` as {processor number: {field: value}}."""
    text = _read("/proc/cpuinfo") or ""
    out: dict[int, dict[str, str]] = {}
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, colon, value = line.partition(":")
            if colon:
                fields[key.strip()] = value.strip()
        if fields.get("processor", "").isdigit():
            out[int(fields["processor"])] = fields
    return out


def _machine_id() -> str:
    for path in _MACHINE_ID_FILES:
        text = (_read(path) or "").strip()
        if text:
            return text
    return socket.gethostname()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("+", "plus")).strip("-")


def cpu_generation(cpuinfo: dict[int, dict[str, str]] | None = None, machine: str | None = None) -> str:
    """``cpu-<arch>-<model>``: readable, and the same for every host with this CPU model."""
    info = cpuinfo if cpuinfo is not None else _cpuinfo()
    arch = re.sub(r"[^a-z0-9_]+", "-", (machine or platform.machine() or "unknown").lower())
    first = info[min(info)] if info else {}
    model = first.get("model name", "")
    if model:
        short = _slug(_MODEL_NOISE.sub(" ", model))
        vendor = _VENDORS.get(first.get("vendor_id", ""), "")
        if vendor and not short.startswith(vendor):
            short = f"{vendor}-{short}"
    elif "CPU implementer" in first:  # ARM: no model name, numbers that identify the core design
        impl = first["CPU implementer"].removeprefix("0x")
        part = first.get("CPU part", "0").removeprefix("0x")
        short = f"arm-{impl}-{part}"
    else:
        short = _slug(platform.processor() or "") or "unknown"
    return f"cpu-{arch}-{short[:48].strip('-')}"


def _firmware(cpuinfo: dict[int, dict[str, str]], cores: tuple[int, ...]) -> str:
    codes = {cpuinfo.get(c, {}).get("microcode") for c in cores} - {None}
    if codes:
        return "microcode " + ",".join(sorted(c for c in codes if c))
    return f"linux {platform.release()}"


def _model(cpuinfo: dict[int, dict[str, str]]) -> str | None:
    """The CPU model name (a board's hardware revision, for the inventory); None when unknown."""
    first = cpuinfo[min(cpuinfo)] if cpuinfo else {}
    return (first.get("model name") or platform.processor() or "").strip()[:100] or None


def _online_cpus() -> set[int] | None:
    text = _read("/sys/devices/system/cpu/online")
    return set(parse_cpu_list(text.strip())) if text else None


def _cpu_times() -> dict[int, tuple[float, float]]:
    """{cpu: (busy ticks, total ticks)} from /proc/stat (online CPUs only)."""
    out: dict[int, tuple[float, float]] = {}
    for line in (_read("/proc/stat") or "").splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *values = line.split()
        try:
            ticks = [float(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        except ValueError:
            continue
        total = sum(ticks)
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0.0)
        out[int(name[3:])] = (total - idle, total)
    return out


def _freq_mhz(cores: tuple[int, ...], cpuinfo: dict[int, dict[str, str]]) -> float | None:
    values = []
    for c in cores:
        khz = _read(f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq")
        if khz and khz.strip().isdigit():
            values.append(int(khz) / 1000.0)
            continue
        mhz = cpuinfo.get(c, {}).get("cpu MHz")
        if mhz:
            try:
                values.append(float(mhz))
            except ValueError:
                pass
    return sum(values) / len(values) if values else None


def _core_ids(cores: tuple[int, ...]) -> set[int]:
    out = set()
    for c in cores:
        text = _read(f"/sys/devices/system/cpu/cpu{c}/topology/core_id")
        if text and text.strip().isdigit():
            out.add(int(text))
    return out


def _temperature_c(cores: tuple[int, ...]) -> float | None:
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        return None
    readings = [
        r for key in ("coretemp", "k10temp", "zenpower", "cpu_thermal", "cpu-thermal") for r in sensors.get(key, [])
    ]
    if not readings:
        return None
    # coretemp labels per-core sensors "Core <core_id>" (the physical core, not the CPU number).
    wanted = {f"Core {i}" for i in _core_ids(cores)}
    mine = [r.current for r in readings if r.label in wanted]
    values = mine or [r.current for r in readings]
    return max(values) if values else None


# ---- the driver --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Board:
    identity: BoardIdentity
    cores: tuple[int, ...]


class CpuDriver:
    """This host's cores as boards; implements BoardDriver only (no reset, no flash)."""

    name = "cpu"

    def __init__(self, spec: DriverSpec | str, *, host: str, state_dir: Path | None = None) -> None:
        parsed = spec if isinstance(spec, DriverSpec) else DriverSpec.parse(spec)
        self.spec = parsed
        self.host = host
        cores = tuple(sorted(os.sched_getaffinity(0)))
        count = _parse_count(parsed.args, len(cores))
        size = len(cores) // count
        cpuinfo = _cpuinfo()
        generation = cpu_generation(cpuinfo)
        machine_id = _machine_id()
        self._cpuinfo = cpuinfo
        self._boards: dict[str, _Board] = {}
        for slot in range(count):
            mine = cores[slot * size : (slot + 1) * size]
            cpu_list = format_cpu_list(mine)
            digest = hashlib.sha256(f"{machine_id}/{cpu_list}".encode()).hexdigest()[:8].upper()
            identity = BoardIdentity(
                serial=f"CPU-{digest}",
                generation=generation,
                slot=slot,
                firmware=_firmware(cpuinfo, mine),
                device=f"cpu:{cpu_list}",
                labels={
                    "generation": generation,
                    "cores": str(len(mine)),
                    "kernel": platform.release(),
                    "model": next(iter(cpuinfo.values()), {}).get("model name", platform.processor()),
                },
                hardware_revision=_model(cpuinfo),
            )
            self._boards[identity.serial] = _Board(identity, mine)
        self._lock = threading.Lock()
        # Per board: the first reading covers the time since the driver started.
        start = _cpu_times()
        self._last_times = {serial: start for serial in self._boards}

    def _board(self, serial: str) -> _Board:
        try:
            return self._boards[serial]
        except KeyError:
            raise BadRequest(f"no cpu board {serial!r} on host {self.host!r}") from None

    def cores(self, serial: str) -> tuple[int, ...]:
        return self._board(serial).cores

    # -- BoardDriver

    def boards(self) -> list[BoardIdentity]:
        """Every board of the spec, including any whose cores went offline."""
        return [b.identity for b in self._boards.values()]

    def discover(self) -> list[BoardIdentity]:
        return [b.identity for b in self._boards.values() if _missing(b.cores) is None]

    def probe(self, serial: str) -> Probe:
        missing = _missing(self._board(serial).cores)
        if missing is not None:
            return Probe(False, missing)
        return Probe(True)

    def telemetry(self, serial: str) -> dict[str, float]:
        board = self._board(serial)
        now = _cpu_times()
        with self._lock:
            last, self._last_times[serial] = self._last_times[serial], now
        busy = total = 0.0
        for c in board.cores:
            if c in now and c in last:
                busy += now[c][0] - last[c][0]
                total += now[c][1] - last[c][1]
        out: dict[str, float] = {}
        if total > 0:
            out["utilization_pct"] = round(min(100.0, max(0.0, 100.0 * busy / total)), 2)
        elif all(c in now for c in board.cores):
            out["utilization_pct"] = 0.0  # no tick passed since the last reading
        mem = psutil.virtual_memory()
        out["memory_used_mb"] = round((mem.total - mem.available) / 2**20, 1)
        out["memory_total_mb"] = round(mem.total / 2**20, 1)
        freq = _freq_mhz(board.cores, self._cpuinfo)
        if freq is not None:
            out["freq_mhz"] = round(freq, 1)
        temp = _temperature_c(board.cores)
        if temp is not None:
            out["temperature_c"] = round(temp, 1)
        return out

    def open_session(self, serial: str) -> CpuSession:
        board = self._board(serial)
        missing = _missing(board.cores)
        if missing is not None:
            raise BoardFault(missing)
        return CpuSession(board.identity, board.cores)


def _missing(cores: tuple[int, ...]) -> str | None:
    """Why a board's cores cannot run work now (offline, or taken from this process), or None."""
    online = _online_cpus()
    if online is not None and not set(cores) <= online:
        return f"cores {format_cpu_list(sorted(set(cores) - online))} are offline"
    allowed = os.sched_getaffinity(0)
    if not set(cores) <= allowed:
        return f"cores {format_cpu_list(sorted(set(cores) - allowed))} are no longer in this process's CPU set"
    return None


def _parse_count(args: tuple[str, ...], cores: int) -> int:
    if not args or args == ("",):
        return 1
    if len(args) > 1:
        raise BadRequest(f"cpu driver: unexpected options {':'.join(args[1:])!r}; use 'cpu' or 'cpu:N'")
    try:
        count = int(args[0])
    except ValueError:
        raise BadRequest(f"cpu driver: board count must be an integer, got {args[0]!r}; use 'cpu' or 'cpu:N'") from None
    if count < 1:
        raise BadRequest(f"cpu driver: board count must be at least 1, got {count}")
    if count > cores:
        raise BadRequest(
            f"cpu driver: cannot split {cores} cores into {count} boards; this process may use {cores} cores "
            f"({format_cpu_list(sorted(os.sched_getaffinity(0)))}), so use cpu:1 … cpu:{cores}"
        )
    return count


class CpuSession:
    """A cpu board opened by its worker process: the process now runs on the board's cores only."""

    def __init__(self, identity: BoardIdentity, cores: tuple[int, ...]) -> None:
        self.identity = identity
        self.serial = identity.serial
        self.cores = cores
        self._previous = os.sched_getaffinity(0)
        _pin_process(set(cores))
        self._closed = False
        self.opened_at = time.time()

    @property
    def threads(self) -> int:
        return len(self.cores)

    def device_settings(self) -> DeviceSettings:
        """What runtimes in this process should use (the same as ``DeviceSettings.from_env(env())``)."""
        return DeviceSettings(kind="cpu", threads=self.threads, cpu_ids=self.cores)

    def env(self) -> dict[str, str]:
        n = str(self.threads)
        return {
            "FLEETYARD_DEVICE": self.identity.device,
            "FLEETYARD_BOARD_SERIAL": self.serial,
            "FLEETYARD_BOARD_FIRMWARE": self.identity.firmware,
            "FLEETYARD_BOARD_GENERATION": self.identity.generation,
            "FLEETYARD_DRIVER": f"cpu (Linux {platform.release()})",
            DeviceSettings.ENV_THREADS: n,
            **dict.fromkeys(_THREAD_ENV, n),
        }

    def check(self) -> None:
        missing = _missing(self.cores)
        if missing is not None:
            raise BoardFault(missing)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            _pin_process(self._previous)
        except OSError:
            pass  # cores went away meanwhile; the process is ending anyway


def _pin_process(cores: set[int]) -> None:
    """Set the CPU affinity of every thread of this process (sched_setaffinity(0) sets the
    calling thread's only; threads started later inherit their creator's)."""
    os.sched_setaffinity(0, cores)
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cores)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that just ended
