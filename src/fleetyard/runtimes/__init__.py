"""Runtimes: load a compiler artifact, run it, inspect it.

    info = runtimes.inspect("model.onnx")                       # no device needed
    settings = runtimes.DeviceSettings.from_env(ctx.env)        # the board a workload runs on
    model = runtimes.default_cache().get(path, settings, sha256=blob_sha)
    outputs = model.run({"x": x})                               # {name: ndarray} -> {name: ndarray}
    model.record()                                              # runtime, version, providers, nodes

The format is detected from the content (ONNX protobuf, IREE .vmfb FlatBuffer, torch ZIP
archives); ONNX runs through ONNX Runtime (:mod:`.onnx_runtime`), .vmfb through
iree-base-runtime (:mod:`.iree_runtime`), TorchScript (.pt) and ExportedProgram (.pt2) through
torch (:mod:`.torch_runtime`, the optional ``fleetyard[torch]`` extra, imported only when a
torch artifact is used). Errors are in :mod:`.errors`.
"""

from fleetyard.runtimes.artifacts import inspect, load, runtime_for
from fleetyard.runtimes.base import (
    ArtifactFormat,
    ArtifactInfo,
    DeviceSettings,
    LoadedModel,
    Runtime,
    RuntimeRecord,
    Signature,
    TensorSpec,
)
from fleetyard.runtimes.cache import CacheKey, SessionCache, default_cache
from fleetyard.runtimes.errors import (
    ArtifactError,
    CpuFallbackRefused,
    DeviceUnavailable,
    ExecutionFailed,
    FunctionChoice,
    InputMismatch,
    RuntimeUnavailable,
    UnknownFormat,
)
from fleetyard.runtimes.formats import detect_format, file_sha256
from fleetyard.runtimes.inputs import check_inputs

__all__ = [
    "ArtifactError",
    "ArtifactFormat",
    "ArtifactInfo",
    "CacheKey",
    "CpuFallbackRefused",
    "DeviceSettings",
    "DeviceUnavailable",
    "ExecutionFailed",
    "FunctionChoice",
    "InputMismatch",
    "LoadedModel",
    "Runtime",
    "RuntimeRecord",
    "RuntimeUnavailable",
    "SessionCache",
    "Signature",
    "TensorSpec",
    "UnknownFormat",
    "check_inputs",
    "default_cache",
    "detect_format",
    "file_sha256",
    "inspect",
    "load",
    "runtime_for",
]
