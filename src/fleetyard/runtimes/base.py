"""The runtime interface: what every artifact runtime (ONNX Runtime, IREE, torch) offers.

A :class:`Runtime` knows one artifact format. It can :meth:`~Runtime.inspect` an artifact (no
device needed: inputs and outputs with names, shapes and dtypes) and :meth:`~Runtime.load` it
onto a device, giving a :class:`LoadedModel` that runs ``{name: array}`` to ``{name: array}``
and is released when done. :class:`DeviceSettings` say where a model runs and with how many
threads; a board session gives them (see :meth:`DeviceSettings.from_env`).

Shapes keep symbolic dimensions: an ``int`` is fixed, a ``str`` is a named symbol (ONNX
``dim_param`` such as ``"batch"``; every input that names it must agree), ``None`` is unknown.
A shape of ``None`` means even the rank is unknown. Dtypes are numpy dtype names (``"float32"``,
``"int64"``, ``"bool"``), plus ``"bfloat16"`` and ``"str"`` (ONNX string tensors); ``None`` is
unknown.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from fleetyard.runtimes.errors import DeviceUnavailable

__all__ = [
    "ArtifactFormat",
    "ArtifactInfo",
    "Dim",
    "LoadedModel",
    "Runtime",
    "RuntimeRecord",
    "Signature",
    "TensorSpec",
]

Dim = int | str | None
DeviceKind = Literal["cpu", "cuda"]


class ArtifactFormat(enum.StrEnum):
    ONNX = "onnx"
    IREE_VMFB = "iree-vmfb"
    TORCHSCRIPT = "torchscript"  # torch.jit.save archive (.pt); runs through torch (optional extra)
    TORCH_EXPORT = "torch-export"  # ExportedProgram (.pt2, torch.export.save); runs through torch


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...] | None
    dtype: str | None

    def describe(self) -> str:
        """``x: float32[batch, 4]`` (``?`` for what is unknown)."""
        return f"{self.name}: {self.dtype or '?'}{format_shape(self.shape)}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": None if self.shape is None else list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        shape = d.get("shape")
        return cls(name=str(d["name"]), shape=None if shape is None else tuple(shape), dtype=d.get("dtype"))


def format_shape(shape: tuple[Dim, ...] | None) -> str:
    if shape is None:
        return "[?]"  # rank unknown
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs of a model (or of one IREE function), in call order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_dict(t) for t in d.get("inputs", ())),
            outputs=tuple(TensorSpec.from_dict(t) for t in d.get("outputs", ())),
        )


@dataclass(frozen=True)
class ArtifactInfo:
    """What :meth:`Runtime.inspect` learns about an artifact without running it."""

    format: ArtifactFormat
    runtime: str  # the runtime that runs it: "onnxruntime", "iree", "torch"
    sha256: str
    size: int
    signature: Signature
    # IREE: the function that runs by default (None when a choice is needed) and every callable one.
    function: str | None = None
    functions: tuple[str, ...] = ()
    signatures: dict[str, Signature] = field(default_factory=dict)  # IREE: each callable function's
    # IREE: executable formats inside the module (e.g. "embedded-elf-x86_64", "cuda-nvptx-fb").
    targets: tuple[str, ...] = ()
    # Format-specific facts: ONNX producer, opsets, IR version; IREE module name.
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format.value,
            "runtime": self.runtime,
            "sha256": self.sha256,
            "size": self.size,
            "signature": self.signature.to_dict(),
            "function": self.function,
            "functions": list(self.functions),
            "signatures": {k: v.to_dict() for k, v in self.signatures.items()},
            "targets": list(self.targets),
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class DeviceSettings:
    """Where and how a model runs; hashable, part of the session cache key.

    ``kind`` is what the runtime targets: ``cpu`` (cpu and sim boards, ONNX Runtime's
    CPUExecutionProvider, IREE ``local-task``) or ``cuda`` (CUDAExecutionProvider, IREE ``cuda``).
    ``threads`` is the intra-op thread count (None: the runtime's default); ``cpu_ids`` the cores
    the board owns (IREE pins its workers to them). ``allow_cpu_fallback`` lets ONNX Runtime put
    nodes the GPU provider cannot run on the CPU; off by default, so that a GPU job never runs on
    the CPU without saying so.
    """

    kind: DeviceKind = "cpu"
    index: int = 0
    uuid: str | None = None
    threads: int | None = None
    cpu_ids: tuple[int, ...] | None = None
    allow_cpu_fallback: bool = False

    # The environment a board session gives a workload (drivers' BoardSession.env()).
    ENV_DEVICE: ClassVar[str] = "FLEETYARD_DEVICE"
    ENV_THREADS: ClassVar[str] = "FLEETYARD_INTRA_OP_THREADS"
    ENV_GPU_UUID: ClassVar[str] = "FLEETYARD_GPU_UUID"

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeviceSettings:
        """Settings for the board a workload runs on, from its environment.

        ``FLEETYARD_DEVICE`` is ``cpu:0-3`` / ``cpu:0,2`` (a cpu board), ``sim:N`` (a simulated
        board: runs on this host's CPU), ``cuda:N`` (GPU N; ``FLEETYARD_GPU_UUID`` pins it by
        UUID, and ``CUDA_VISIBLE_DEVICES`` renumbers it); missing means this host's CPU.
        ``FLEETYARD_INTRA_OP_THREADS`` sets ``threads``.
        """
        env = os.environ if env is None else env
        device = env.get(cls.ENV_DEVICE, "").strip()
        threads_text = env.get(cls.ENV_THREADS, "").strip()
        threads = int(threads_text) if threads_text.isdigit() and int(threads_text) > 0 else None
        name, _, arg = device.partition(":")
        if name in ("", "sim", "local"):
            return cls(kind="cpu", threads=threads)
        if name == "cpu":
            ids = parse_cpu_list(arg) if arg else None
            return cls(kind="cpu", threads=threads or (len(ids) if ids else None), cpu_ids=ids)
        if name == "cuda":
            try:
                index = int(arg or 0)
            except ValueError:
                raise DeviceUnavailable(f"bad cuda device {device!r}; expected cuda:N") from None
            uuid = env.get(cls.ENV_GPU_UUID) or None
            # N is the GPU's host-wide (NVML) index; a process restricted by CUDA_VISIBLE_DEVICES
            # numbers its GPUs by position in that list.
            visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
            if uuid and uuid in visible:
                index = visible.index(uuid)
            elif str(index) in visible:
                index = visible.index(str(index))
            return cls(kind="cuda", index=index, uuid=uuid, threads=threads)
        raise DeviceUnavailable(
            f"no runtime runs on device {device!r}; runtimes know cpu:…, sim:… and cuda:N boards",
            detail={"device": device},
        )

    def describe(self) -> str:
        if self.kind == "cuda":
            return f"cuda:{self.index}" + (f" ({self.uuid})" if self.uuid else "")
        where = f"cpu:{format_cpu_list(self.cpu_ids)}" if self.cpu_ids else "cpu"
        return where + (f", {self.threads} threads" if self.threads else "")


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """``"0-3,8,10-11"`` -> ``(0, 1, 2, 3, 8, 10, 11)`` (the kernel's cpu list syntax)."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            out.update(range(int(lo), int(hi) + 1) if dash else (int(lo),))
        except ValueError:
            raise ValueError(f"bad cpu list {text!r}") from None
    return tuple(sorted(out))


def format_cpu_list(cpus: tuple[int, ...] | list[int] | None) -> str:
    """``(0, 1, 2, 3)`` -> ``"0-3"``; ``(0, 2, 4)`` -> ``"0,2,4"``; ``(5,)`` -> ``"5"``."""
    ids = sorted(set(cpus or ()))
    if not ids:
        return ""
    if len(ids) > 1 and ids[-1] - ids[0] == len(ids) - 1:
        return f"{ids[0]}-{ids[-1]}"
    return ",".join(map(str, ids))


@dataclass(frozen=True)
class RuntimeRecord:
    """What ran a model, for results and reproducibility.

    ``providers`` are the execution providers (ONNX Runtime) or HAL driver (IREE) the session
    holds; ``nodes_by_provider`` maps each provider to the graph nodes it runs (ONNX Runtime:
    after graph optimisation, so fused nodes show under their fused names). ``nodes_complete``
    is false until the node assignment is known (with ONNX Runtime older than 1.24 it is read
    from the profile of the first run).
    """

    runtime: str
    runtime_version: str
    device: str  # the settings as text: "cpu:0-3, 4 threads", "cuda:0"
    providers: tuple[str, ...]
    nodes_by_provider: dict[str, tuple[str, ...]] = field(default_factory=dict)
    nodes_complete: bool = True
    threads: int | None = None
    function: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def providers_used(self) -> tuple[str, ...]:
        """The providers that run at least one node (all of them when nodes are unknown)."""
        if not self.nodes_by_provider:
            return self.providers
        return tuple(p for p in self.providers if self.nodes_by_provider.get(p))

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "device": self.device,
            "providers": list(self.providers),
            "providers_used": list(self.providers_used),
            "nodes_by_provider": {k: list(v) for k, v in self.nodes_by_provider.items()},
            "nodes_complete": self.nodes_complete,
            "threads": self.threads,
            "function": self.function,
            "notes": list(self.notes),
        }


@runtime_checkable
class LoadedModel(Protocol):
    """An artifact loaded onto a device, ready to run; reusable across runs and jobs."""

    info: ArtifactInfo
    settings: DeviceSettings

    @property
    def signature(self) -> Signature:
        """The signature as the loaded runtime reports it (authoritative over inspect's)."""
        ...

    def run(self, inputs: Mapping[str, Any], *, check: bool = True) -> dict[str, np.ndarray]:
        """Run once. ``check`` validates names, dtypes and shapes first (InputMismatch); a
        caller that already checked the same inputs (a benchmark loop) may skip it."""
        ...

    def record(self) -> RuntimeRecord:
        """Which runtime, version, providers and nodes ran it."""
        ...

    def release(self) -> None:
        """Free the session and its device memory; later runs raise ExecutionFailed."""
        ...


class Runtime(Protocol):
    name: ClassVar[str]
    formats: ClassVar[frozenset[ArtifactFormat]]

    def version(self) -> str:
        """The installed runtime package's version; RuntimeUnavailable when it is missing."""
        ...

    def inspect(self, path: Path, *, sha256: str | None = None, function: str | None = None) -> ArtifactInfo: ...

    def load(
        self,
        path: Path,
        settings: DeviceSettings,
        *,
        sha256: str | None = None,
        function: str | None = None,
    ) -> LoadedModel: ...
