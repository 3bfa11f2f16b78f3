"""Errors of the runtimes, in the one error tree (:mod:`fleetyard.errors`).

    FleetyardError
    ├── BadRequest
    │   ├── ArtifactError          bad_artifact         corrupt, unsupported or unreadable artifact
    │   │   └── UnknownFormat      unknown_format       neither ONNX nor IREE .vmfb (nor anything else known)
    │   ├── FunctionChoice         bad_function         IREE: no callable function, several, or an unknown one
    │   ├── InputMismatch          input_mismatch       missing/unknown input, wrong dtype or shape
    │   ├── RuntimeUnavailable     runtime_unavailable  the runtime's package is not installed (names the extra)
    │   └── DeviceUnavailable      device_unavailable   the board cannot run it: provider/driver missing, a module
    │       └── CpuFallbackRefused cpu_fallback         compiled for another target, nodes that would fall back to CPU
    └── ExecutionFailed            execution_failed     the runtime raised while running (message kept)

Every message names the problem and the fix; ``detail`` carries the same facts for machines
(e.g. ``{"expected": [...], "given": [...]}``).
"""

from __future__ import annotations

from fleetyard.errors import BadRequest, FleetyardError

__all__ = [
    "ArtifactError",
    "CpuFallbackRefused",
    "DeviceUnavailable",
    "ExecutionFailed",
    "FunctionChoice",
    "InputMismatch",
    "RuntimeUnavailable",
    "UnknownFormat",
]


class ArtifactError(BadRequest):
    code = "bad_artifact"


class UnknownFormat(ArtifactError):
    code = "unknown_format"


class FunctionChoice(BadRequest):
    code = "bad_function"


class InputMismatch(BadRequest):
    code = "input_mismatch"


class RuntimeUnavailable(BadRequest):
    code = "runtime_unavailable"


class DeviceUnavailable(BadRequest):
    code = "device_unavailable"


class CpuFallbackRefused(DeviceUnavailable):
    code = "cpu_fallback"


class ExecutionFailed(FleetyardError):
    code = "execution_failed"
