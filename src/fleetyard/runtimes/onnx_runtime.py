"""ONNX models through ONNX Runtime, with the execution provider the board implies.

- cpu boards (and sim boards): ``CPUExecutionProvider`` with the board's intra-op thread count.
- cuda boards: ``CUDAExecutionProvider`` on the board's GPU, failing closed: if the provider is
  not in this onnxruntime build the load is refused (never a silent CPU run); the session config
  ``session.disable_cpu_ep_fallback = 1`` makes ONNX Runtime refuse a graph whose nodes would
  fall back to the CPU; and after the load the session's providers are checked again, because a
  provider whose libraries fail to load is dropped with only a log warning.
  ``DeviceSettings.allow_cpu_fallback`` opts out, and the record then shows which nodes ran where.

Which nodes each provider runs: ONNX Runtime >= 1.24 reports the assignment at load
(``session.record_ep_graph_assignment_info = 1`` and ``get_provider_graph_assignment_info()``),
so it costs nothing per run. With an older onnxruntime the first run is profiled instead and the
trace's ``Node`` events give ``args.provider`` per node; profiling then stops. Either way the
nodes are those of the optimised graph (fused nodes appear under their fused names).

:func:`inspect_onnx` reads the model with the ``onnx`` package (external data not loaded), so
inspecting needs no session and no device.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
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
    CpuFallbackRefused,
    DeviceUnavailable,
    ExecutionFailed,
    InputMismatch,
    RuntimeUnavailable,
)
from fleetyard.runtimes.formats import file_sha256
from fleetyard.runtimes.inputs import check_inputs

__all__ = ["OnnxModel", "OnnxRuntime", "inspect_onnx", "nodes_from_profile", "onnx_type_to_dtype"]

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"
DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"

# ONNX element type names (TensorProto names lowercased, ORT's "tensor(...)") -> numpy dtype names.
_DTYPE_NAMES = {"float": "float32", "double": "float64", "string": "str"}


def onnx_type_to_dtype(name: str) -> str | None:
    """``"tensor(float)"`` or ``"FLOAT"`` -> ``"float32"``; None for sequences, maps and unknowns."""
    inner = name.strip()
    if inner.startswith("tensor(") and inner.endswith(")"):
        inner = inner[len("tensor(") : -1]
    elif "(" in inner or not inner or inner.upper() == "UNDEFINED":
        return None
    inner = inner.lower()
    return _DTYPE_NAMES.get(inner, inner)


def _import_ort() -> ModuleType:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise RuntimeUnavailable(
            f"ONNX models need the onnxruntime package ({exc}); install it with: pip install 'onnxruntime>=1.17' "
            "(a dependency of fleetyard: reinstall fleetyard)"
        ) from None


def _import_onnx() -> ModuleType:
    try:
        return importlib.import_module("onnx")
    except ImportError as exc:
        raise RuntimeUnavailable(
            f"inspecting ONNX models needs the onnx package ({exc}); install it with: pip install 'onnx>=1.15'"
        ) from None


# ---- inspect (no session) -----------------------------------------------------------------------


def _value_info_spec(vi: Any) -> TensorSpec:
    t = vi.type
    if t.WhichOneof("value") != "tensor_type":
        return TensorSpec(vi.name, None, None)
    tt = t.tensor_type
    onnx = _import_onnx()
    dtype = onnx_type_to_dtype(onnx.TensorProto.DataType.Name(tt.elem_type)) if tt.elem_type else None
    shape: tuple[Dim, ...] | None = None
    if tt.HasField("shape"):
        dims: list[Dim] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(str(d.dim_param))
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorSpec(vi.name, shape, dtype)


def inspect_onnx(path: Path, *, sha256: str | None = None) -> ArtifactInfo:
    """Inputs (graph inputs that are not initializers), outputs, opsets and producer of a model."""
    onnx = _import_onnx()
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends: the message is what matters
        raise ArtifactError(
            f"{path.name} is not a valid ONNX model: {exc}. Re-export it (torch.onnx.export, tf2onnx) or check "
            "that the upload is complete",
            detail={"path": str(path)},
        ) from None
    if not model.HasField("graph") or not model.graph.output:
        raise ArtifactError(
            f"{path.name} is not a valid ONNX model: it has no graph outputs", detail={"path": str(path)}
        )
    graph = model.graph
    initializers = {i.name for i in graph.initializer} | {i.values.name for i in graph.sparse_initializer}
    signature = Signature(
        inputs=tuple(_value_info_spec(vi) for vi in graph.input if vi.name not in initializers),
        outputs=tuple(_value_info_spec(vi) for vi in graph.output),
    )
    opsets = ",".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in model.opset_import)
    metadata = {
        "ir_version": str(model.ir_version),
        "opsets": opsets,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "graph": graph.name,
        "nodes": str(len(graph.node)),
    }
    return ArtifactInfo(
        format=ArtifactFormat.ONNX,
        runtime=OnnxRuntime.name,
        sha256=sha256 or file_sha256(path),
        size=path.stat().st_size,
        signature=signature,
        metadata={k: v for k, v in metadata.items() if v},
    )


# ---- the loaded session -------------------------------------------------------------------------


def _node_arg_spec(arg: Any) -> TensorSpec:
    shape = arg.shape
    dims: tuple[Dim, ...] | None = None
    if shape is not None:
        dims = tuple(d if isinstance(d, int | str) else None for d in shape)
    return TensorSpec(arg.name, dims, onnx_type_to_dtype(arg.type))


def nodes_from_profile(profile: Path | str) -> dict[str, tuple[str, ...]]:
    """Provider -> node names, from an ONNX Runtime profiling trace (Chrome trace JSON).

    Each node run appears as events of category ``Node`` named ``<node>_kernel_time`` (and
    ``_fence_before``/``_fence_after``) whose ``args.provider`` is the execution provider.
    """
    with open(profile) as f:
        events = json.load(f)
    out: dict[str, dict[str, None]] = {}  # dicts keep first-seen (execution) order
    for ev in events:
        if ev.get("cat") != "Node":
            continue
        args = ev.get("args") or {}
        provider = args.get("provider")
        name = str(ev.get("name", ""))
        if not provider or not name.endswith("_kernel_time"):
            continue
        out.setdefault(provider, {})[name.removesuffix("_kernel_time")] = None
    return {p: tuple(nodes) for p, nodes in out.items()}


class OnnxModel:
    """One ONNX Runtime session on one device."""

    def __init__(
        self,
        info: ArtifactInfo,
        settings: DeviceSettings,
        session: Any,
        *,
        version: str,
        nodes: dict[str, tuple[str, ...]] | None,
        profiling: bool,
        notes: tuple[str, ...] = (),
    ) -> None:
        self.info = info
        self.settings = settings
        self._session: Any = session
        self._version = version
        self._nodes = nodes
        self._profiling = profiling
        self._notes = notes
        self._lock = threading.Lock()
        self._signature = info.signature
        self._output_names = [t.name for t in self._signature.outputs]
        self._providers = tuple(session.get_providers())
        # What a run calls: the session's own ``run``; before it, while the first run is to be
        # profiled (onnxruntime < 1.24), a wrapper that then finishes the profile; after
        # release(), a function that refuses. Rebound on those events, so that neither run()
        # nor a runner() looks at profiling or release on every call.
        self._run: Callable[[list[str], dict[str, Any]], list[Any]] = self._run_profiled if profiling else session.run

    @property
    def signature(self) -> Signature:
        return self._signature

    @property
    def session(self) -> Any:
        """The onnxruntime.InferenceSession (for what this interface does not cover)."""
        if self._session is None:
            raise ExecutionFailed(f"model {self.info.sha256[:12]} was released; load it again")
        return self._session

    def run(self, inputs: Mapping[str, Any], *, check: bool = True) -> dict[str, np.ndarray]:
        feeds = check_inputs(self._signature, inputs) if check else inputs
        if type(feeds) is not dict:
            feeds = dict(feeds)  # onnxruntime takes a dict; one given is passed as it is, not copied
        try:
            outputs = self._run(self._output_names, feeds)
        except ExecutionFailed:
            raise
        except Exception as exc:
            raise ExecutionFailed(f"onnxruntime failed running {self.info.sha256[:12]}: {exc}") from None
        return dict(zip(self._output_names, outputs, strict=True))

    def runner(self, example: Any = None) -> Callable[[np.ndarray], np.ndarray]:
        """``x -> run({the input: x})[the first output]`` for a model of one input, bound once.

        The per-step path of a closed loop: the names are bound here, so each call builds one
        feed dict and asks ONNX Runtime for the first output only; no per-call validation, no
        copy of the feeds, no output dict. ``example`` (an array as the calls will pass it) is
        checked against the signature here, once (:class:`InputMismatch` naming what does not
        fit); the caller keeps every call's array to that dtype and shape. A released model's
        runner raises :class:`ExecutionFailed`, as :meth:`run` does.
        """
        inputs = self._signature.inputs
        if len(inputs) != 1:
            raise InputMismatch(
                f"model {self.info.sha256[:12]} takes {len(inputs)} inputs; runner() is for a model of one input: "
                "use run()",
                detail={"inputs": [t.name for t in inputs]},
            )
        _ = self.session  # a released model is refused now, not at the first call
        name, first = inputs[0].name, self._output_names[:1]
        if example is not None:
            check_inputs(self._signature, {name: example})
        model, sha = self, self.info.sha256[:12]

        def run_first(x: np.ndarray) -> np.ndarray:
            try:
                return model._run(first, {name: x})[0]  # type: ignore[no-any-return]
            except ExecutionFailed:
                raise
            except Exception as exc:
                raise ExecutionFailed(f"onnxruntime failed running {sha}: {exc}") from None

        return run_first

    def _run_profiled(self, names: list[str], feeds: dict[str, Any]) -> list[Any]:
        # The first run with an onnxruntime that cannot report the node assignment at load.
        outputs: list[Any] = self.session.run(names, feeds)
        self._finish_profile()
        return outputs

    def _released(self, names: list[str], feeds: dict[str, Any]) -> list[Any]:
        raise ExecutionFailed(f"model {self.info.sha256[:12]} was released; load it again")

    def _finish_profile(self) -> None:
        with self._lock:
            if not self._profiling or self._session is None:
                return
            self._profiling = False
            self._run = self._session.run
            trace = self._session.end_profiling()
            try:
                self._nodes = nodes_from_profile(trace)
            finally:
                if trace:
                    Path(trace).unlink(missing_ok=True)

    def record(self) -> RuntimeRecord:
        return RuntimeRecord(
            runtime=OnnxRuntime.name,
            runtime_version=self._version,
            device=self.settings.describe(),
            providers=self._providers,
            nodes_by_provider=dict(self._nodes or {}),
            nodes_complete=self._nodes is not None,
            threads=self.settings.threads,
            notes=self._notes,
        )

    def release(self) -> None:
        with self._lock:
            session, self._session = self._session, None
            self._run = self._released
            if session is not None and self._profiling:
                self._profiling = False
                trace = session.end_profiling()
                if trace:
                    Path(trace).unlink(missing_ok=True)


def _info_from_session(path: Path, session: Any, sha256: str | None) -> ArtifactInfo:
    # From the session, not a second parse of the file with the onnx package.
    meta = session.get_modelmeta()
    metadata = {"producer": str(meta.producer_name or ""), "graph": str(meta.graph_name or "")}
    return ArtifactInfo(
        format=ArtifactFormat.ONNX,
        runtime=OnnxRuntime.name,
        sha256=sha256 or file_sha256(path),
        size=path.stat().st_size,
        signature=Signature(
            inputs=tuple(_node_arg_spec(a) for a in session.get_inputs()),
            outputs=tuple(_node_arg_spec(a) for a in session.get_outputs()),
        ),
        metadata={k: v for k, v in metadata.items() if v},
    )


class OnnxRuntime:
    """The ONNX runtime (onnxruntime)."""

    name: ClassVar[str] = "onnxruntime"
    formats: ClassVar[frozenset[ArtifactFormat]] = frozenset({ArtifactFormat.ONNX})

    def version(self) -> str:
        return str(_import_ort().__version__)

    def available_providers(self) -> list[str]:
        return list(_import_ort().get_available_providers())

    def inspect(self, path: Path, *, sha256: str | None = None, function: str | None = None) -> ArtifactInfo:
        return inspect_onnx(path, sha256=sha256)

    def load(
        self,
        path: Path,
        settings: DeviceSettings,
        *,
        sha256: str | None = None,
        function: str | None = None,
    ) -> OnnxModel:
        ort = _import_ort()
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"artifact {path} not found")
        providers, wanted = self._providers(ort, settings)
        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only; what matters is recorded
        if settings.threads:
            so.intra_op_num_threads = settings.threads
            so.inter_op_num_threads = 1
        if wanted != CPU_EP and not settings.allow_cpu_fallback:
            so.add_session_config_entry(DISABLE_CPU_FALLBACK, "1")
        can_record = hasattr(ort.InferenceSession, "get_provider_graph_assignment_info")
        if can_record:
            so.add_session_config_entry(RECORD_ASSIGNMENT, "1")
        else:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"fleetyard-ort-{os.getpid()}")
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:
            raise self._load_error(path, settings, wanted, exc) from None
        used = tuple(session.get_providers())
        if wanted not in used:
            # A provider whose libraries failed to load is dropped with a warning, not an error.
            raise DeviceUnavailable(
                f"onnxruntime did not start {wanted} for {settings.describe()} (session providers: {', '.join(used)}); "
                "refusing to run on the CPU instead. Check the CUDA/cuDNN libraries onnxruntime-gpu needs",
                detail={"requested": wanted, "providers": list(used)},
            )
        nodes: dict[str, tuple[str, ...]] | None = None
        if can_record:
            nodes = {}
            for sub in session.get_provider_graph_assignment_info():
                names = tuple(n.name or f"{n.op_type}#{i}" for i, n in enumerate(sub.get_nodes()))
                nodes[sub.ep_name] = nodes.get(sub.ep_name, ()) + names
        notes: tuple[str, ...] = ()
        if wanted != CPU_EP and settings.allow_cpu_fallback:
            notes = ("CPU fallback allowed: nodes the GPU provider cannot run execute on the CPU",)
        info = _info_from_session(path, session, sha256)
        return OnnxModel(
            info, settings, session, version=str(ort.__version__), nodes=nodes, profiling=not can_record, notes=notes
        )

    def _providers(self, ort: ModuleType, settings: DeviceSettings) -> tuple[list[Any], str]:
        available = list(ort.get_available_providers())
        if settings.kind == "cpu":
            return [CPU_EP], CPU_EP
        if CUDA_EP not in available:
            raise DeviceUnavailable(
                f"this onnxruntime ({ort.__version__}) has no {CUDA_EP} for {settings.describe()} (available: "
                f"{', '.join(available)}); refusing to run on the CPU instead. Install onnxruntime-gpu, or compile "
                "the model with IREE for the cuda driver",
                detail={"requested": CUDA_EP, "available": available},
            )
        return [(CUDA_EP, {"device_id": settings.index}), CPU_EP], CUDA_EP

    def _load_error(self, path: Path, settings: DeviceSettings, wanted: str, exc: Exception) -> Exception:
        text = str(exc)
        if wanted != CPU_EP and "fallback" in text.lower():
            return CpuFallbackRefused(
                f"{path.name}: some nodes cannot run on {wanted} and would fall back to the CPU: {text}. Allow it "
                "explicitly (allow_cpu_fallback) or change the model",
                detail={"requested": wanted},
            )
        return ArtifactError(
            f"onnxruntime cannot load {path.name} on {settings.describe()}: {text}",
            detail={"path": str(path), "runtime": "onnxruntime"},
        )
