"""The ``cuda`` driver: NVIDIA GPUs through NVML (``nvidia-ml-py``, module ``pynvml``).

Spec: ``cuda`` (every GPU NVML sees) or ``cuda:0,2`` (those NVML indices); ``:reset=on`` allows
:meth:`CudaDriver.reset` (off by default: a GPU reset kills every process on the GPU, and on a
shared machine it is never ours to do).

It fails closed: without nvidia-ml-py, or without a working NVIDIA driver (NVML cannot
initialise), building the driver raises :class:`~fleetyard.errors.BadRequest` saying which and
what to install; it never reports zero boards as if the host simply had none.

Identity: serial is the board serial NVML reports (the one printed on the board), or the GPU UUID
where the board has none (consumer cards); generation ``cuda-<product>`` from the name
(``NVIDIA H100 80GB HBM3`` -> ``cuda-h100-80gb-hbm3``); firmware ``vbios <version>``; device
``cuda:<NVML index>``; labels: uuid, pci bus id, compute capability, driver version, memory.

Telemetry (each key only where the GPU answers): temperature_c, power_w, utilization_pct,
memory_used_mb, memory_total_mb, sm_clock_mhz, ecc_corrected / ecc_uncorrected (volatile, since
the last driver load), ecc_corrected_total / ecc_uncorrected_total (aggregate, lifetime),
row_remap_corrected / row_remap_uncorrected / row_remap_pending / row_remap_failure, and
xid_errors / last_xid (critical XID events seen since the driver started, read from an NVML event
set without blocking).

A session restricts the worker process to its GPU (``CUDA_VISIBLE_DEVICES=<uuid>``, set before
anything in the process initialises CUDA) and names it in the environment
(``FLEETYARD_DEVICE=cuda:<index>``, ``FLEETYARD_GPU_UUID``), from which
:meth:`fleetyard.runtimes.DeviceSettings.from_env` builds the runtimes' settings.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fleetyard.drivers.base import BoardFault, BoardIdentity, DriverSpec, Probe
from fleetyard.errors import BadRequest
from fleetyard.runtimes.base import DeviceSettings

__all__ = ["CudaDriver", "CudaSession", "cuda_generation"]

RESET_TIMEOUT_S = 60.0


def _nvml() -> ModuleType:
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        raise BadRequest(
            "cuda driver: nvidia-ml-py is not installed; install it with: pip install 'fleetyard[cuda]'",
            detail={"extra": "cuda", "package": "nvidia-ml-py"},
        ) from None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, _NoPermission, …
        raise BadRequest(
            f"cuda driver: NVML cannot start ({_text(exc) or type(exc).__name__}); is the NVIDIA driver installed "
            "and loaded on this host (does nvidia-smi work)?",
            detail={"error": type(exc).__name__},
        ) from None
    return nvml


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def cuda_generation(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``cuda-h100-80gb-hbm3``; ``Tesla T4`` -> ``cuda-tesla-t4``."""
    short = re.sub(r"^nvidia\s+", "", name.strip(), flags=re.IGNORECASE)
    return "cuda-" + (re.sub(r"[^a-z0-9]+", "-", short.lower()).strip("-") or "unknown")


@dataclass(frozen=True)
class _Board:
    identity: BoardIdentity
    index: int
    uuid: str


class CudaDriver:
    """NVIDIA GPUs on this host; implements BoardDriver and Resettable (refusing unless allowed)."""

    name = "cuda"

    def __init__(self, spec: DriverSpec | str, *, host: str, state_dir: Path | None = None) -> None:
        parsed = spec if isinstance(spec, DriverSpec) else DriverSpec.parse(spec)
        self.spec = parsed
        self.host = host
        indices, self.allow_reset = _parse_args(parsed.args)
        self._nvml = nvml = _nvml()
        count = int(nvml.nvmlDeviceGetCount())
        wanted = list(range(count)) if indices is None else indices
        unknown = [i for i in wanted if not 0 <= i < count]
        if unknown:
            raise BadRequest(f"cuda driver: no GPU {unknown[0]}; NVML sees {count} GPUs (0..{count - 1})")
        try:
            self.driver_version = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception:
            self.driver_version = "unknown"
        self._boards: dict[str, _Board] = {}
        for index in wanted:
            board = self._read_board(index)
            self._boards[board.identity.serial] = board
        self._lock = threading.Lock()
        self._xids: dict[str, list[int]] = {serial: [] for serial in self._boards}
        self._events = self._event_set()

    # -- helpers

    def _read_board(self, index: int) -> _Board:
        nvml = self._nvml
        h = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = _text(nvml.nvmlDeviceGetUUID(h))
        name = _text(nvml.nvmlDeviceGetName(h))
        serial = self._try(nvml.nvmlDeviceGetSerial, h)
        serial = _text(serial).strip() if serial else ""
        if not serial or serial.strip("0") == "":
            serial = uuid
        vbios = self._try(nvml.nvmlDeviceGetVbiosVersion, h)
        labels = {"uuid": uuid, "name": name, "driver": self.driver_version}
        pci = self._try(nvml.nvmlDeviceGetPciInfo, h)
        if pci is not None:
            labels["pci_bus_id"] = _text(pci.busId)
        cc = self._try(nvml.nvmlDeviceGetCudaComputeCapability, h)
        if cc is not None:
            labels["compute_capability"] = f"{cc[0]}.{cc[1]}"
        mem = self._try(nvml.nvmlDeviceGetMemoryInfo, h)
        if mem is not None:
            labels["memory_mb"] = str(int(mem.total) // 2**20)
        generation = cuda_generation(name)
        part = self._try(nvml.nvmlDeviceGetBoardPartNumber, h)  # cheap; absent on some boards
        identity = BoardIdentity(
            serial=serial,
            generation=generation,
            slot=index,
            firmware=f"vbios {_text(vbios)}" if vbios else f"driver {self.driver_version}",
            device=f"cuda:{index}",
            labels={"generation": generation, **labels},
            hardware_revision=(_text(part).strip()[:100] or None) if part else None,
        )
        return _Board(identity, index, uuid)

    def _try(self, fn: Any, *args: Any) -> Any:
        """NVML's answer, or None where the GPU does not support the query."""
        try:
            return fn(*args)
        except self._nvml.NVMLError as exc:
            if _is_lost(self._nvml, exc):
                raise BoardFault(f"GPU lost: {exc}") from None
            return None

    def _board(self, serial: str) -> _Board:
        try:
            return self._boards[serial]
        except KeyError:
            raise BadRequest(f"no cuda board {serial!r} on host {self.host!r}") from None

    def _handle(self, board: _Board) -> Any:
        try:
            return self._nvml.nvmlDeviceGetHandleByUUID(board.uuid)
        except self._nvml.NVMLError as exc:
            raise BoardFault(f"GPU {board.uuid} not reachable: {exc}") from None

    def _event_set(self) -> Any:
        nvml = self._nvml
        try:
            events = nvml.nvmlEventSetCreate()
        except Exception:
            return None
        kind = getattr(nvml, "nvmlEventTypeXidCriticalError", 0)
        for board in self._boards.values():
            try:
                nvml.nvmlDeviceRegisterEvents(nvml.nvmlDeviceGetHandleByUUID(board.uuid), kind, events)
            except Exception:
                continue  # not supported on this GPU: no XID counts for it
        return events

    def _drain_xids(self) -> None:
        if self._events is None:
            return
        nvml = self._nvml
        by_uuid = {b.uuid: s for s, b in self._boards.items()}
        while True:
            try:
                data = nvml.nvmlEventSetWait_v2(self._events, 0)
            except Exception:
                return  # NVML_ERROR_TIMEOUT: nothing pending
            try:
                serial = by_uuid.get(_text(nvml.nvmlDeviceGetUUID(data.device)))
            except Exception:
                serial = None
            if serial is not None:
                with self._lock:
                    self._xids[serial].append(int(data.eventData))

    # -- BoardDriver

    def boards(self) -> list[BoardIdentity]:
        return [b.identity for b in self._boards.values()]

    def discover(self) -> list[BoardIdentity]:
        """The GPUs that answer now (a GPU that fell off the bus is missing)."""
        out = []
        for board in self._boards.values():
            try:
                self._nvml.nvmlDeviceGetTemperature(self._handle(board), self._nvml.NVML_TEMPERATURE_GPU)
            except (BoardFault, self._nvml.NVMLError):
                continue
            out.append(board.identity)
        return out

    def telemetry(self, serial: str) -> dict[str, float]:
        board = self._board(serial)
        nvml = self._nvml
        h = self._handle(board)
        out: dict[str, float] = {}

        def put(key: str, value: Any, scale: float = 1.0) -> None:
            if value is not None:
                out[key] = round(float(value) * scale, 2)

        put("temperature_c", self._try(nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU))
        put("power_w", self._try(nvml.nvmlDeviceGetPowerUsage, h), 1e-3)
        util = self._try(nvml.nvmlDeviceGetUtilizationRates, h)
        put("utilization_pct", util.gpu if util is not None else None)
        mem = self._try(nvml.nvmlDeviceGetMemoryInfo, h)
        if mem is not None:
            put("memory_used_mb", mem.used, 1 / 2**20)
            put("memory_total_mb", mem.total, 1 / 2**20)
        put("sm_clock_mhz", self._try(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM))
        for key, counter in (("", nvml.NVML_VOLATILE_ECC), ("_total", nvml.NVML_AGGREGATE_ECC)):
            for kind, err in (
                ("corrected", nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
                ("uncorrected", nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
            ):
                put(f"ecc_{kind}{key}", self._try(nvml.nvmlDeviceGetTotalEccErrors, h, err, counter))
        remap = self._try(nvml.nvmlDeviceGetRemappedRows, h)
        if remap is not None:
            corrected, uncorrected, pending, failure = remap
            out.update(
                row_remap_corrected=float(corrected),
                row_remap_uncorrected=float(uncorrected),
                row_remap_pending=float(bool(pending)),
                row_remap_failure=float(bool(failure)),
            )
        self._drain_xids()
        with self._lock:
            xids = list(self._xids[serial])
        if self._events is not None:
            out["xid_errors"] = float(len(xids))
            if xids:
                out["last_xid"] = float(xids[-1])
        return out

    def probe(self, serial: str) -> Probe:
        board = self._board(serial)
        nvml = self._nvml
        try:
            h = self._handle(board)
            nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)
            remap = self._try(nvml.nvmlDeviceGetRemappedRows, h)
        except (BoardFault, nvml.NVMLError) as exc:
            return Probe(False, f"GPU not responding: {exc}")
        if remap is not None and remap[3]:
            return Probe(False, "row remapping failed: the GPU needs service")
        if remap is not None and remap[2]:
            return Probe(False, "row remapping pending: the GPU needs a reset")
        return Probe(True)

    def open_session(self, serial: str) -> CudaSession:
        board = self._board(serial)
        self._handle(board)  # raises BoardFault when the GPU is gone
        return CudaSession(self, board)

    # -- Resettable

    def reset(self, serial: str, level: str = "soft") -> None:
        """``nvidia-smi --gpu-reset`` of one GPU; refused unless the spec says ``reset=on``."""
        board = self._board(serial)
        if level not in ("soft", "hard"):
            raise BadRequest(f"unknown reset level {level!r}; use 'soft' or 'hard'")
        if not self.allow_reset:
            raise BadRequest(
                f"cuda driver: reset of {serial} refused: resets are off for this host (a GPU reset ends every process "
                "using the GPU); start the agent with driver spec 'cuda:reset=on' to allow them",
                detail={"serial": serial},
            )
        smi = shutil.which("nvidia-smi")
        if smi is None:
            raise BoardFault("cannot reset: nvidia-smi not found")
        result = subprocess.run(
            [smi, "--gpu-reset", "-i", board.uuid], capture_output=True, text=True, timeout=RESET_TIMEOUT_S
        )
        if result.returncode != 0:
            raise BoardFault(f"GPU reset failed: {(result.stdout + result.stderr).strip()}")


def _is_lost(nvml: ModuleType, exc: Exception) -> bool:
    lost = getattr(nvml, "NVMLError_GpuIsLost", None)
    return lost is not None and isinstance(exc, lost)


def _parse_args(args: tuple[str, ...]) -> tuple[list[int] | None, bool]:
    indices: list[int] | None = None
    allow_reset = False
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq:
            if key != "reset" or value not in ("on", "off"):
                raise BadRequest(f"cuda driver: unknown option {arg!r}; known: reset=on|off")
            allow_reset = value == "on"
        elif arg:
            try:
                indices = [int(p) for p in arg.split(",") if p.strip()]
            except ValueError:
                raise BadRequest(f"cuda driver: GPU list must be NVML indices like 0,2, got {arg!r}") from None
    return indices, allow_reset


class CudaSession:
    """A GPU opened by its worker process."""

    def __init__(self, driver: CudaDriver, board: _Board) -> None:
        self.driver = driver
        self.identity = board.identity
        self.serial = board.identity.serial
        self.index = board.index
        self.uuid = board.uuid
        # Before anything in this process initialises CUDA: it then sees this GPU only.
        os.environ["CUDA_VISIBLE_DEVICES"] = self.uuid

    def device_settings(self) -> DeviceSettings:
        return DeviceSettings.from_env(self.env())

    def env(self) -> dict[str, str]:
        return {
            "FLEETYARD_DEVICE": self.identity.device,
            "FLEETYARD_BOARD_SERIAL": self.serial,
            "FLEETYARD_BOARD_FIRMWARE": self.identity.firmware,
            "FLEETYARD_BOARD_GENERATION": self.identity.generation,
            "FLEETYARD_DRIVER": f"cuda (NVIDIA driver {self.driver.driver_version})",
            DeviceSettings.ENV_GPU_UUID: self.uuid,
            "CUDA_VISIBLE_DEVICES": self.uuid,
        }

    def check(self) -> None:
        probe = self.driver.probe(self.serial)
        if not probe.ok and "not responding" in (probe.reason or ""):
            raise BoardFault(probe.reason or "GPU fault")

    def close(self) -> None:
        pass
