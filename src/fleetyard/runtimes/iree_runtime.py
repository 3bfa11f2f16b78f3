"""IREE ``.vmfb`` modules through iree-base-runtime (``iree.runtime``).

Devices: cpu (and sim) boards run on the ``local-task`` HAL driver, cuda boards on ``cuda``
(``cuda://GPU-<uuid>`` when the board's UUID is known, else ``cuda://<index>``).

The function: a module exports its entry points plus ``__init`` (and other ``__``-prefixed
internals), and modules imported from torch also export a ``<name>$async`` twin of each entry
point (the coarse-fences ABI, which needs wait/signal fences). The callable functions are the
exports less those; a module compiled with ``--iree-execution-model=async-external`` exports only
fence-taking functions, which this runtime does not call (the error says to recompile). One
callable function is picked by itself; with several, the caller names one.

Signatures come from each function's reflection metadata, ``iree.abi.declaration`` (e.g.
``sync func @main(%input0: tensor<?x3xf32>) -> (%output0: tensor<?x3xf32>)``): inputs are named
``input0…`` and outputs ``output0…`` as there, dynamic dims are ``None`` (IREE has no symbol names).
Modules without it (those imported from torch) still have the VM calling convention (``0rr_r``:
two buffer arguments, one result), which gives the count of inputs and outputs but neither shape
nor dtype; such inputs are checked by name only, and IREE checks the rest when it runs.

Targets: the module's HAL device targets (``local``, ``cuda``, …) and executable formats
(``embedded-elf-x86_64``, ``cuda-nvptx-fb``, …) are found by scanning the module's bytes for
the strings the compiler embeds, so that a module compiled for another device or architecture
is refused at inspect/load with both named, rather than failing inside the runtime.

Threads: ``local-task``'s worker threads are a property of the process-wide HAL driver, fixed
when the first module is loaded: one worker per CPU of ``settings.cpu_ids`` (each pinned to its
CPU; flag ``--task_topology_cpu_ids``), else ``settings.threads`` workers
(``--task_topology_group_count``). A board's worker process loads every model with the same
settings, so this is the board's core count; a later load that asks for another count runs on the
first configuration, and its record says so.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import mmap
import platform
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from fleetyard.runtimes.base import (
    ArtifactFormat,
    ArtifactInfo,
    DeviceSettings,
    Dim,
    RuntimeRecord,
    Signature,
    TensorSpec,
)
from fleetyard.runtimes.errors import (
    ArtifactError,
    DeviceUnavailable,
    ExecutionFailed,
    FunctionChoice,
    RuntimeUnavailable,
)
from fleetyard.runtimes.formats import file_sha256
from fleetyard.runtimes.inputs import check_inputs

__all__ = ["IreeModel", "IreeRuntime", "parse_declaration"]

_ELEMENT_DTYPES = {
    "f16": "float16",
    "f32": "float32",
    "f64": "float64",
    "bf16": "bfloat16",
    "i1": "bool",
    "complex<f32>": "complex64",
    "complex<f64>": "complex128",
}
for _bits in (8, 16, 32, 64):
    _ELEMENT_DTYPES[f"i{_bits}"] = _ELEMENT_DTYPES[f"si{_bits}"] = f"int{_bits}"
    _ELEMENT_DTYPES[f"ui{_bits}"] = f"uint{_bits}"
# VM calling-convention codes of scalar arguments and results.
_CCONV_SCALARS = {"i": "int32", "I": "int64", "f": "float32", "F": "float64"}
# HAL device target -> the board kind that runs it.
_DEVICE_KINDS = {"local": "cpu", "cuda": "cuda"}
_ELF_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm_64", "arm64": "arm_64", "riscv64": "riscv_64"}

_DEVICE_TARGET_RE = re.compile(rb'#hal\.device\.target<"([\w-]+)"')
_EXECUTABLE_FORMAT_RE = re.compile(
    rb"\b((?:embedded|system)-elf-[a-z0-9_]+|[a-z]+-(?:nvptx|hsaco|spirv|msl|wgsl|bytecode)-fb)\b"
)
_CPU_RE = re.compile(rb'cpu = "([\w.+-]*)"')


def _import_iree() -> ModuleType:
    try:
        return importlib.import_module("iree.runtime")
    except ImportError as exc:
        raise RuntimeUnavailable(
            f"IREE .vmfb modules need the iree-base-runtime package ({exc}); install it with: "
            "pip install 'fleetyard[iree]'",
            detail={"extra": "iree", "package": "iree-base-runtime"},
        ) from None


def _version() -> str:
    try:
        return importlib.metadata.version("iree-base-runtime")
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(importlib.import_module("iree.runtime.version"), "VERSION", "unknown"))


# ---- process-wide state: one VM instance, one local-task configuration ---------------------------

_lock = threading.Lock()
_instance: Any = None
_local_task: tuple[Any, int | None, str] | None = None  # (device, threads, how it was configured)


def _vm_instance(rt: ModuleType) -> Any:
    global _instance
    with _lock:
        if _instance is None:
            _instance = rt.VmInstance()
        return _instance


def _device(rt: ModuleType, settings: DeviceSettings) -> tuple[Any, int | None, str | None]:
    """The HAL device for ``settings``, its worker thread count and a note when it differs."""
    global _local_task
    if settings.kind == "cuda":
        uri = f"cuda://GPU-{settings.uuid.removeprefix('GPU-')}" if settings.uuid else f"cuda://{settings.index}"
        try:
            return rt.get_device(uri), None, None
        except Exception as exc:
            raise DeviceUnavailable(
                f"IREE cannot open {uri} for {settings.describe()}: {exc}",
                detail={"device": uri, "available_drivers": _drivers(rt)},
            ) from None
    if settings.cpu_ids:
        flag, threads = f"--task_topology_cpu_ids={','.join(map(str, settings.cpu_ids))}", len(settings.cpu_ids)
    elif settings.threads:
        flag, threads = f"--task_topology_group_count={settings.threads}", settings.threads
    else:
        flag, threads = "", None
    with _lock:
        if _local_task is None:
            try:
                if flag:
                    rt.flags.parse_flags(flag)
                device = rt.get_device("local-task")
            except Exception as exc:
                raise DeviceUnavailable(f"IREE cannot open its local-task (CPU) device: {exc}") from None
            _local_task = (device, threads, flag or "IREE's default topology")
        device, configured, how = _local_task
    note = None
    if threads is not None and configured != threads:
        note = f"local-task was configured earlier in this process ({how}); asked for {threads} threads"
    return device, configured, note


def _drivers(rt: ModuleType) -> list[str]:
    try:
        return sorted(rt.query_available_drivers())
    except Exception:
        return []


# ---- signatures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Function:
    name: str
    signature: Signature
    scalars: tuple[bool, ...]  # per input: a scalar argument (pass a Python number), not a tensor
    callable: bool
    why_not: str | None = None


def _split_top(text: str) -> list[str]:
    """Split at commas outside <> and ()."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def _parse_type(text: str) -> tuple[tuple[Dim, ...] | None, str | None, bool]:
    """``tensor<?x3xf32>`` -> ((None, 3), "float32", False); ``f32`` -> ((), "float32", True)."""
    text = text.strip()
    if text.startswith("tensor<") and text.endswith(">"):
        inner = _split_top(text[len("tensor<") : -1])[0]  # drop an encoding after the comma
        m = re.fullmatch(r"((?:(?:\?|\d+)x)*)(.+)", inner)
        if m is None:
            return None, None, False
        element = m.group(2)
        dims: list[Dim] = [None if d == "?" else int(d) for d in m.group(1).split("x")[:-1]]
        return tuple(dims), _ELEMENT_DTYPES.get(element), False
    if text in _ELEMENT_DTYPES or text == "index":
        return (), _ELEMENT_DTYPES.get(text, "int64"), True
    return None, None, False  # !hal.buffer_view and other opaque types


def parse_declaration(text: str) -> tuple[Signature, tuple[bool, ...], bool] | None:
    """Parse an ``iree.abi.declaration``: (signature, which inputs are scalars, is async)."""
    m = re.match(r"\s*(sync|async)?\s*func\s+@[^(]*\((.*?)\)\s*(?:->\s*(.*))?$", text, re.S)
    if not m:
        return None
    is_async = m.group(1) == "async"
    results = (m.group(3) or "").strip()
    if results.startswith("(") and results.endswith(")"):
        results = results[1:-1]

    def specs(items: str, prefix: str) -> tuple[list[TensorSpec], list[bool]]:
        out, scalars = [], []
        for i, item in enumerate(_split_top(items)):
            name, colon, type_text = item.partition(":")
            if not colon:
                name, type_text = "", item
            name = name.strip().lstrip("%") or f"{prefix}{i}"
            shape, dtype, scalar = _parse_type(type_text)
            out.append(TensorSpec(name, shape, dtype))
            scalars.append(scalar)
        return out, scalars

    inputs, scalars = specs(m.group(2), "input")
    outputs, _ = specs(results, "output")
    return Signature(tuple(inputs), tuple(outputs)), tuple(scalars), is_async


def _parse_cconv(vm_function: Any) -> tuple[Signature, tuple[bool, ...]] | None:
    """Arity (and scalar types) from the VM calling convention in the function's repr."""
    m = re.search(r"\((\d)([^_)]*)_([^)]*)\)", repr(vm_function))
    if not m or any(c in m.group(2) + m.group(3) for c in "CD"):
        return None

    def specs(codes: str, prefix: str) -> list[tuple[TensorSpec, bool]]:
        codes = codes.replace("v", "")
        return [
            (TensorSpec(f"{prefix}{i}", () if c in _CCONV_SCALARS else None, _CCONV_SCALARS.get(c)), c != "r")
            for i, c in enumerate(codes)
        ]

    ins, outs = specs(m.group(2), "input"), specs(m.group(3), "output")
    return Signature(tuple(s for s, _ in ins), tuple(s for s, _ in outs)), tuple(sc for _, sc in ins)


def _functions(vm_module: Any) -> dict[str, _Function]:
    names = list(vm_module.function_names)
    out: dict[str, _Function] = {}
    for name in names:
        fn = vm_module.lookup_function(name)
        reflection = dict(fn.reflection or {})
        parsed = parse_declaration(reflection["iree.abi.declaration"]) if "iree.abi.declaration" in reflection else None
        is_async = reflection.get("iree.abi.model") == "coarse-fences"
        if parsed is not None:
            signature, scalars, decl_async = parsed
            is_async = is_async or decl_async
        else:
            conv = _parse_cconv(fn)
            signature, scalars = conv if conv is not None else (Signature((), ()), ())
        why_not = None
        if name.startswith("__"):
            why_not = "an internal function of the module"
        elif name.endswith("$async") and name.removesuffix("$async") in names:
            why_not = f"the fence-taking twin of {name.removesuffix('$async')!r}"
        elif is_async or name.endswith("$async"):
            why_not = "takes wait/signal fences (async ABI); recompile without --iree-execution-model=async-external"
        out[name] = _Function(name, signature, scalars, why_not is None, why_not)
    return out


def _pick(functions: dict[str, _Function], requested: str | None, label: str) -> _Function:
    usable = [f.name for f in functions.values() if f.callable]
    if requested is not None:
        fn = functions.get(requested)
        if fn is not None and fn.callable:
            return fn
        why = f"{requested!r} is {fn.why_not}" if fn is not None else f"{label} has no function {requested!r}"
        raise FunctionChoice(
            f"{why}; callable functions: {', '.join(usable) or 'none'}",
            detail={"requested": requested, "functions": usable},
        )
    if len(usable) == 1:
        return functions[usable[0]]
    if not usable:
        skipped = "; ".join(f"{f.name}: {f.why_not}" for f in functions.values())
        raise FunctionChoice(f"{label} exports no function that can be called ({skipped})", detail={"functions": []})
    raise FunctionChoice(
        f"{label} exports several functions: {', '.join(usable)}; name the one to run (function=…)",
        detail={"functions": usable},
    )


# ---- targets -----------------------------------------------------------------------------------


def _scan_targets(path: Path) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """(HAL device targets, executable formats, cpu) named in the module's bytes."""
    with open(path, "rb") as f:
        try:
            data: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            return (), (), None
        try:
            devices = dict.fromkeys(m.decode() for m in _DEVICE_TARGET_RE.findall(data))
            formats = dict.fromkeys(m.decode() for m in _EXECUTABLE_FORMAT_RE.findall(data))
            cpu = _CPU_RE.search(data)
            return tuple(devices), tuple(formats), cpu.group(1).decode() if cpu and cpu.group(1) else None
        finally:
            data.close()


def module_device_kinds(info: Mapping[str, Any]) -> set[str]:
    """The device kinds ("cpu", "cuda") an IREE module's HAL targets run on, from its inspected
    info (``ArtifactInfo.to_dict()``); empty when unknown or not an IREE module."""
    devices = [d for d in (info.get("metadata") or {}).get("devices", "").split(",") if d]
    return {k for d in devices if (k := _DEVICE_KINDS.get(d)) is not None}


def _check_target(info: ArtifactInfo, settings: DeviceSettings) -> None:
    devices = [d for d in info.metadata.get("devices", "").split(",") if d]
    if not devices:
        return  # nothing found by the scan: the runtime will say
    kinds = module_device_kinds(info.to_dict())
    if settings.kind not in kinds:
        driver, flag = (
            ("local-task", "local --iree-hal-local-target-device-backends=llvm-cpu")
            if settings.kind == "cpu"
            else (settings.kind, settings.kind)
        )
        raise DeviceUnavailable(
            f"module {info.sha256[:12]} was compiled for {', '.join(devices)} devices but this board runs "
            f"{settings.describe()} (IREE {driver}); recompile with --iree-hal-target-device={flag}",
            detail={"module_devices": devices, "board": settings.kind},
        )
    if settings.kind == "cpu":
        arch = _ELF_ARCH.get(platform.machine().lower(), platform.machine().lower())
        elf = [t for t in info.targets if "-elf-" in t]
        if elf and not any(t.endswith(arch) for t in elf):
            raise DeviceUnavailable(
                f"module {info.sha256[:12]} holds code for {', '.join(elf)}, but this board's CPU is {arch}; recompile "
                f"with --iree-llvmcpu-target-triple for {arch}",
                detail={"module_targets": list(elf), "board_arch": arch},
            )


# ---- inspect and load ----------------------------------------------------------------------------


def _load_vm_module(rt: ModuleType, instance: Any, path: Path) -> Any:
    if not path.is_file():
        raise ArtifactError(f"artifact {path} not found")
    try:
        return rt.VmModule.mmap(instance, str(path))
    except Exception as exc:
        raise ArtifactError(
            f"{path.name} is not a loadable IREE module for iree-base-runtime {_version()}: {exc}. Compile it with a "
            "matching iree-base-compiler, or check that the upload is complete",
            detail={"path": str(path), "runtime_version": _version()},
        ) from None


def _info(
    path: Path, vm_module: Any, functions: dict[str, _Function], fn: _Function | None, sha: str | None
) -> ArtifactInfo:
    devices, formats, cpu = _scan_targets(path)
    metadata = {"module": str(vm_module.name), "devices": ",".join(devices)}
    if cpu:
        metadata["cpu"] = cpu
    callable_ = tuple(f.name for f in functions.values() if f.callable)
    return ArtifactInfo(
        format=ArtifactFormat.IREE_VMFB,
        runtime=IreeRuntime.name,
        sha256=sha or file_sha256(path),
        size=path.stat().st_size,
        signature=fn.signature if fn is not None else Signature((), ()),
        function=fn.name if fn is not None else None,
        functions=callable_,
        signatures={n: functions[n].signature for n in callable_},
        targets=formats,
        metadata={k: v for k, v in metadata.items() if v},
    )


class IreeModel:
    """One IREE module loaded on one HAL device, with the function it runs."""

    def __init__(
        self,
        info: ArtifactInfo,
        settings: DeviceSettings,
        *,
        context: Any,
        invoker: Any,
        function: _Function,
        threads: int | None,
        notes: tuple[str, ...],
    ) -> None:
        self.info = info
        self.settings = settings
        self._context: Any = context
        self._invoker: Any = invoker
        self._function = function
        self._threads = threads
        self._notes = notes
        self._bool_outputs = tuple(t.dtype == "bool" for t in function.signature.outputs)
        self._names = function.signature.output_names

    @property
    def signature(self) -> Signature:
        return self._function.signature

    @property
    def function(self) -> str:
        return self._function.name

    def run(self, inputs: Mapping[str, Any], *, check: bool = True) -> dict[str, np.ndarray]:
        invoker = self._invoker
        if invoker is None:
            raise ExecutionFailed(f"model {self.info.sha256[:12]} was released; load it again")
        sig = self._function.signature
        arrays = check_inputs(sig, inputs) if check else {t.name: inputs[t.name] for t in sig.inputs}
        args: list[Any] = []
        for spec, scalar in zip(sig.inputs, self._function.scalars, strict=True):
            a = arrays[spec.name]
            if scalar:
                args.append(np.asarray(a).item())
                continue
            a = np.ascontiguousarray(a)
            args.append(a.view(np.int8) if a.dtype == np.bool_ else a)  # IREE stores i1 as i8
        try:
            result = invoker(*args)
        except Exception as exc:
            raise ExecutionFailed(f"IREE failed running {self._function.name!r}: {exc}") from None
        values = () if result is None else result if isinstance(result, tuple) else (result,)
        out: dict[str, np.ndarray] = {}
        for i, v in enumerate(values):
            arr = v.to_host() if hasattr(v, "to_host") else np.asarray(v)
            if i < len(self._bool_outputs) and self._bool_outputs[i] and arr.dtype != np.bool_:
                arr = arr.astype(np.bool_)
            out[self._names[i] if i < len(self._names) else f"output{i}"] = arr
        return out

    def record(self) -> RuntimeRecord:
        driver = "cuda" if self.settings.kind == "cuda" else "local-task"
        return RuntimeRecord(
            runtime=IreeRuntime.name,
            runtime_version=_version(),
            device=self.settings.describe(),
            providers=(driver,),
            nodes_by_provider={},
            threads=self._threads,
            function=self._function.name,
            notes=self._notes,
        )

    def release(self) -> None:
        self._invoker = None
        self._context = None


class IreeRuntime:
    """The IREE runtime (iree-base-runtime)."""

    name: ClassVar[str] = "iree"
    formats: ClassVar[frozenset[ArtifactFormat]] = frozenset({ArtifactFormat.IREE_VMFB})

    def version(self) -> str:
        _import_iree()
        return _version()

    def inspect(self, path: Path, *, sha256: str | None = None, function: str | None = None) -> ArtifactInfo:
        rt = _import_iree()
        path = Path(path)
        vm_module = _load_vm_module(rt, _vm_instance(rt), path)
        functions = _functions(vm_module)
        fn: _Function | None
        try:
            fn = _pick(functions, function, path.name)
        except FunctionChoice:
            if function is not None:
                raise
            fn = None  # several (or no) functions: inspect lists them; load needs a choice
        return _info(path, vm_module, functions, fn, sha256)

    def load(
        self,
        path: Path,
        settings: DeviceSettings,
        *,
        sha256: str | None = None,
        function: str | None = None,
    ) -> IreeModel:
        rt = _import_iree()
        path = Path(path)
        device, threads, note = _device(rt, settings)
        config = rt.Config(device=device)
        vm_module = _load_vm_module(rt, config.vm_instance, path)
        functions = _functions(vm_module)
        fn = _pick(functions, function, path.name)
        info = _info(path, vm_module, functions, fn, sha256)
        _check_target(info, settings)
        try:
            context = rt.SystemContext(vm_modules=[vm_module], config=config)
        except Exception as exc:
            raise DeviceUnavailable(
                f"IREE cannot run {path.name} on {settings.describe()}: {exc}",
                detail={"module_devices": info.metadata.get("devices", ""), "board": settings.kind},
            ) from None
        invoker = context.modules[vm_module.name][fn.name]
        return IreeModel(
            info,
            settings,
            context=context,
            invoker=invoker,
            function=fn,
            threads=threads,
            notes=(note,) if note else (),
        )
