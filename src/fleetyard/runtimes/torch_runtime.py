"""TorchScript (``.pt``) and ExportedProgram (``.pt2``) artifacts through torch (optional extra).

torch is imported only when a torch artifact is inspected or loaded; without it the error names
the fix (``pip install 'fleetyard[torch]'``). Archives are read with ``torch.jit.load`` (.pt) and
``torch.export.load`` (.pt2) only: never ``torch.load`` of arbitrary pickles.

Signatures:

- ExportedProgram: inputs are the graph signature's user inputs (named as in ``forward``), with
  shapes and dtypes from the placeholders' fake tensors. A dynamic dimension is its symbol's name
  (``"s17"``: the saved program keeps the symbol, not the ``torch.export.Dim`` name); a dimension
  that is an expression of symbols (``2*s17``) is ``None``. The symbols' ranges are in
  ``metadata["range_constraints"]``.
- TorchScript: inputs are the ``forward`` schema's tensor arguments (``self`` and arguments with
  defaults that are not tensors left out); the archive keeps no shapes or dtypes, so both are
  ``None`` and inputs are checked by name only (``metadata["shapes"]`` says so).

Outputs are named from the flattened output (torch's pytree order): a dict's leaves by their keys
(nested parts joined by ``.``, e.g. ``"logits"``, ``"aux.0"``), anything else ``output_0``,
``output_1``, … in order (a single tensor is ``output_0``). An ExportedProgram's output structure is
known without running it; TorchScript's comes from the ``forward`` return type when it is a tensor
or a tuple of tensors, otherwise from the first run. Non-tensor leaves that are ``None`` are
dropped; numbers become 0-d arrays.

Devices: cpu (and sim) boards run on the CPU, with ``torch.set_num_threads(settings.threads)``
when given (process-wide in torch, like IREE's local-task workers; a board's worker loads every
model with the same settings); cuda boards on ``cuda:<index>``, refused when torch has no CUDA or
no such device. ``cpu_ids`` are not pinned by this runtime.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from collections.abc import Mapping
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
    RuntimeUnavailable,
)
from fleetyard.runtimes.formats import detect_format, file_sha256
from fleetyard.runtimes.inputs import check_inputs

__all__ = ["TorchModel", "TorchRuntime", "output_names"]

TORCH_FORMATS = frozenset({ArtifactFormat.TORCHSCRIPT, ArtifactFormat.TORCH_EXPORT})
_UNKNOWN_SHAPES = "unknown: TorchScript keeps no input shapes or dtypes; inputs are checked by name only"


def _import_torch() -> ModuleType:
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise RuntimeUnavailable(
            f"TorchScript and ExportedProgram artifacts need the torch package ({exc}); install it with: "
            "pip install 'fleetyard[torch]'",
            detail={"extra": "torch", "package": "torch"},
        ) from None


def _dtype_name(dtype: Any) -> str | None:
    """``torch.float32`` -> ``"float32"`` (numpy names; torch's match them, plus bfloat16)."""
    if dtype is None:
        return None
    return str(dtype).removeprefix("torch.")


def _dim(size: Any) -> Dim:
    if isinstance(size, int):
        return size
    expr = getattr(getattr(size, "node", None), "expr", None)  # a SymInt (int() would give its hint)
    if expr is None:
        return None
    if getattr(expr, "is_Symbol", False):
        return str(expr)
    if getattr(expr, "is_Integer", False):
        return int(expr)
    return None  # an expression of symbols (2*s0): no one name to bind


def _spec_from_value(name: str, value: Any) -> TensorSpec:
    shape = getattr(value, "shape", None)
    dims = None if shape is None else tuple(_dim(s) for s in shape)
    return TensorSpec(name, dims, _dtype_name(getattr(value, "dtype", None)))


def output_names(structure: Any) -> list[str]:
    """Names of the leaves of an output structure (see the module docstring), in flattening order."""
    pytree = importlib.import_module("torch.utils._pytree")
    leaves_with_paths, _ = pytree.tree_flatten_with_path(structure)
    names: list[str] = []
    for i, (path, _leaf) in enumerate(leaves_with_paths):
        if path and isinstance(path[0], pytree.MappingKey):
            names.append(".".join(_key_part(k) for k in path))
        else:
            names.append(f"output_{i}")
    return names


def _key_part(key: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _bad_archive(path: Path, fmt: ArtifactFormat, exc: Exception) -> ArtifactError:
    how = "torch.jit.save" if fmt is ArtifactFormat.TORCHSCRIPT else "torch.export.save"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ArtifactError(
        f"{path.name} is not a loadable {fmt.value} archive ({type(exc).__name__}: {text}); re-save the model with "
        f"{how} or check that the upload is complete",
        detail={"path": str(path), "format": fmt.value, "runtime": "torch"},
    )


# ---- reading an archive ---------------------------------------------------------------------------


class _Program:
    """What a torch archive gives: the callable, the signature, how inputs are passed."""

    def __init__(
        self,
        fmt: ArtifactFormat,
        module: Any,
        signature: Signature,
        metadata: dict[str, str],
        *,
        in_spec: Any = None,
        outputs_known: bool = True,
    ) -> None:
        self.fmt = fmt
        self.module = module
        self.signature = signature
        self.metadata = metadata
        self.in_spec = in_spec  # ExportedProgram: the pytree of (args, kwargs)
        self.outputs_known = outputs_known


def _read_export(torch: ModuleType, path: Path) -> tuple[Any, Signature, dict[str, str], Any]:
    try:
        # A file object, not the path: torch.export.load takes a path only when it ends in .pt2, and
        # blobs are named by their sha256.
        with open(path, "rb") as f:
            ep = torch.export.load(f)
    except Exception as exc:
        raise _bad_archive(path, ArtifactFormat.TORCH_EXPORT, exc) from None
    sig = ep.graph_signature
    values = {n.name: n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"}
    user_kind = type(sig.input_specs[0].kind).USER_INPUT if sig.input_specs else None
    inputs: list[TensorSpec] = []
    for spec in sig.input_specs:
        if spec.kind != user_kind:
            continue
        name = getattr(spec.arg, "name", None)
        value = values.get(name) if name else None
        if name is None or not hasattr(value, "shape"):
            raise ArtifactError(
                f"{path.name} takes a non-tensor input ({spec.arg}); fleetyard runs programs whose inputs are "
                "tensors only: re-export with the constant baked in",
                detail={"path": str(path), "input": str(spec.arg)},
            )
        inputs.append(_spec_from_value(name, value))
    output_node = next(n for n in ep.graph.nodes if n.op == "output")
    flat_outputs = list(output_node.args[0])
    out_kind = type(sig.output_specs[0].kind).USER_OUTPUT if sig.output_specs else None
    user_values = [
        getattr(flat_outputs[i], "meta", {}).get("val") if i < len(flat_outputs) else None
        for i, spec in enumerate(sig.output_specs)
        if spec.kind == out_kind
    ]
    pytree = importlib.import_module("torch.utils._pytree")
    out_spec = ep.call_spec.out_spec
    names = output_names(pytree.tree_unflatten(list(range(out_spec.num_leaves)), out_spec))
    outputs = tuple(
        _spec_from_value(name, value) if hasattr(value, "shape") else TensorSpec(name, None, None)
        for name, value in zip(names, user_values, strict=False)
    )
    metadata = {
        "range_constraints": ", ".join(f"{k}: [{v.lower}, {v.upper}]" for k, v in ep.range_constraints.items()),
        "nodes": str(sum(1 for n in ep.graph.nodes if n.op == "call_function")),
        "torch": str(torch.__version__),
    }
    return ep, Signature(tuple(inputs), outputs), {k: v for k, v in metadata.items() if v}, ep.call_spec.in_spec


def _read_script(torch: ModuleType, path: Path, device: str) -> tuple[Any, Signature, dict[str, str], bool]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 deprecates TorchScript; it still runs
            module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise _bad_archive(path, ArtifactFormat.TORCHSCRIPT, exc) from None
    try:
        schema = module.forward.schema
    except Exception as exc:
        raise ArtifactError(
            f"{path.name}: the TorchScript module has no callable forward ({exc}); save a module with forward",
            detail={"path": str(path)},
        ) from None
    inputs: list[TensorSpec] = []
    for arg in list(schema.arguments)[1:]:  # [0] is self
        kind = str(arg.type)
        if kind == "Tensor":
            inputs.append(TensorSpec(arg.name, None, None))
        elif not arg.has_default_value():
            raise ArtifactError(
                f"{path.name}: forward takes {arg.name}: {kind}; fleetyard passes tensors only: script a wrapper "
                "whose forward takes tensors",
                detail={"path": str(path), "input": arg.name, "type": kind},
            )
    returns = [str(r.type) for r in schema.returns]
    outputs: tuple[TensorSpec, ...] = ()
    known = False
    if len(schema.returns) == 1:
        rtype = schema.returns[0].type
        kind = rtype.kind()
        if kind == "TensorType":
            outputs, known = (TensorSpec("output_0", None, None),), True
        elif kind == "TupleType" and all(e.kind() == "TensorType" for e in rtype.elements()):
            count = len(rtype.elements())
            outputs, known = tuple(TensorSpec(f"output_{i}", None, None) for i in range(count)), True
    metadata = {"shapes": _UNKNOWN_SHAPES, "returns": ", ".join(returns)}
    if not known:
        metadata["outputs"] = "named at the first run (the return type is not a tensor or a tuple of tensors)"
    return module, Signature(tuple(inputs), outputs), metadata, known


def _read(torch: ModuleType, path: Path, device: str = "cpu") -> _Program:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"artifact {path} not found")
    fmt = detect_format(path)
    if fmt is ArtifactFormat.TORCH_EXPORT:
        ep, signature, metadata, in_spec = _read_export(torch, path)
        return _Program(fmt, ep, signature, metadata, in_spec=in_spec)
    if fmt is ArtifactFormat.TORCHSCRIPT:
        module, signature, metadata, known = _read_script(torch, path, device)
        return _Program(fmt, module, signature, metadata, outputs_known=known)
    raise ArtifactError(f"{path.name} is a {fmt.value} artifact, not a torch one", detail={"format": fmt.value})


def _info(path: Path, program: _Program, sha256: str | None) -> ArtifactInfo:
    return ArtifactInfo(
        format=program.fmt,
        runtime=TorchRuntime.name,
        sha256=sha256 or file_sha256(path),
        size=path.stat().st_size,
        signature=program.signature,
        metadata=program.metadata,
    )


# ---- the loaded model ---------------------------------------------------------------------------


class TorchModel:
    """One torch module (scripted, or an ExportedProgram's ``.module()``) on one device."""

    def __init__(
        self,
        info: ArtifactInfo,
        settings: DeviceSettings,
        module: Any,
        *,
        torch: ModuleType,
        device: str,
        in_spec: Any,
        outputs_known: bool,
    ) -> None:
        self.info = info
        self.settings = settings
        self._module: Any = module
        self._torch = torch
        self._device = device
        self._in_spec = in_spec
        self._signature = info.signature
        self._outputs_known = outputs_known
        self._lock = threading.Lock()

    @property
    def signature(self) -> Signature:
        return self._signature

    @property
    def module(self) -> Any:
        """The torch callable (for what this interface does not cover)."""
        if self._module is None:
            raise ExecutionFailed(f"model {self.info.sha256[:12]} was released; load it again")
        return self._module

    def _tensor(self, value: Any) -> Any:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.array(arr, copy=True, order="C")  # torch.from_numpy needs writable, contiguous memory
        return self._torch.from_numpy(arr).to(self._device)

    def run(self, inputs: Mapping[str, Any], *, check: bool = True) -> dict[str, np.ndarray]:
        module = self.module
        feeds = check_inputs(self._signature, inputs) if check else dict(inputs)
        torch = self._torch
        try:
            tensors = [self._tensor(feeds[name]) for name in self._signature.input_names]
        except KeyError as exc:
            raise ExecutionFailed(f"missing input {exc} for {self.info.sha256[:12]}") from None
        except TypeError as exc:
            raise ExecutionFailed(f"torch cannot take an input of {self.info.sha256[:12]}: {exc}") from None
        try:
            with torch.no_grad():
                if self._in_spec is not None:
                    pytree = importlib.import_module("torch.utils._pytree")
                    args, kwargs = pytree.tree_unflatten(tensors, self._in_spec)
                    result = module(*args, **kwargs)
                else:  # TorchScript: by name, so that arguments left to their defaults stay so
                    result = module(**dict(zip(self._signature.input_names, tensors, strict=True)))
        except Exception as exc:
            raise ExecutionFailed(f"torch failed running {self.info.sha256[:12]}: {exc}") from None
        return self._outputs(result)

    def _outputs(self, result: Any) -> dict[str, np.ndarray]:
        pytree = importlib.import_module("torch.utils._pytree")
        leaves = [leaf for _, leaf in pytree.tree_flatten_with_path(result)[0]]
        names = output_names(result)
        out: dict[str, np.ndarray] = {}
        for name, leaf in zip(names, leaves, strict=True):
            if leaf is None:
                continue
            if isinstance(leaf, self._torch.Tensor):
                t = leaf.detach().cpu()
                if t.dtype == self._torch.bfloat16:
                    t = t.float()  # numpy has no bfloat16
                out[name] = t.numpy()
            elif isinstance(leaf, bool | int | float | complex):
                out[name] = np.asarray(leaf)
            else:
                raise ExecutionFailed(
                    f"{self.info.sha256[:12]} returned {type(leaf).__name__} as {name}; fleetyard reads tensors only"
                )
        if not self._outputs_known:
            with self._lock:
                if not self._outputs_known:
                    self._signature = Signature(self._signature.inputs, tuple(TensorSpec(n, None, None) for n in out))
                    self._outputs_known = True
        return out

    def record(self) -> RuntimeRecord:
        notes: tuple[str, ...] = ()
        if self.settings.cpu_ids:
            notes = ("torch does not pin its threads to the board's cpus",)
        return RuntimeRecord(
            runtime=TorchRuntime.name,
            runtime_version=str(self._torch.__version__),
            device=self.settings.describe(),
            providers=("cuda",) if self._device.startswith("cuda") else ("cpu",),
            threads=int(self._torch.get_num_threads()) if self._device == "cpu" else self.settings.threads,
            notes=notes,
        )

    def release(self) -> None:
        with self._lock:
            module, self._module = self._module, None
        if module is not None and self._device.startswith("cuda"):
            del module
            self._torch.cuda.empty_cache()


class TorchRuntime:
    """TorchScript and ExportedProgram archives (torch)."""

    name: ClassVar[str] = "torch"
    formats: ClassVar[frozenset[ArtifactFormat]] = TORCH_FORMATS

    def version(self) -> str:
        return str(_import_torch().__version__)

    def inspect(self, path: Path, *, sha256: str | None = None, function: str | None = None) -> ArtifactInfo:
        torch = _import_torch()
        path = Path(path)
        return _info(path, _read(torch, path), sha256)

    def load(
        self,
        path: Path,
        settings: DeviceSettings,
        *,
        sha256: str | None = None,
        function: str | None = None,
    ) -> TorchModel:
        torch = _import_torch()
        path = Path(path)
        device = self._device(torch, settings)
        if settings.kind == "cpu" and settings.threads:
            torch.set_num_threads(settings.threads)
        program = _read(torch, path, device)
        module = program.module
        if program.fmt is ArtifactFormat.TORCH_EXPORT:
            try:
                if device != "cpu":
                    passes = importlib.import_module("torch.export.passes")
                    module = passes.move_to_device_pass(module, device)
                module = module.module()
            except Exception as exc:
                raise ArtifactError(
                    f"torch cannot make a runnable module of {path.name} on {settings.describe()}: {exc}",
                    detail={"path": str(path), "runtime": "torch"},
                ) from None
        else:
            module.eval()
        return TorchModel(
            _info(path, program, sha256),
            settings,
            module,
            torch=torch,
            device=device,
            in_spec=program.in_spec,
            outputs_known=program.outputs_known,
        )

    def _device(self, torch: ModuleType, settings: DeviceSettings) -> str:
        if settings.kind == "cpu":
            return "cpu"
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"this torch ({torch.__version__}) cannot use CUDA for {settings.describe()} (a CPU-only build, or no "
                "driver); refusing to run on the CPU instead. Install a CUDA build of torch",
                detail={"requested": f"cuda:{settings.index}", "torch": str(torch.__version__)},
            )
        count = int(torch.cuda.device_count())
        if settings.index >= count:
            raise DeviceUnavailable(
                f"torch sees {count} CUDA device(s); there is no cuda:{settings.index} for {settings.describe()}",
                detail={"requested": f"cuda:{settings.index}", "devices": count},
            )
        return f"cuda:{settings.index}"
