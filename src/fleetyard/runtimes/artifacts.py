"""From an artifact file to the runtime that runs it: detect, inspect, load (uncached)."""

from __future__ import annotations

from pathlib import Path

from fleetyard.runtimes.base import ArtifactFormat, ArtifactInfo, DeviceSettings, LoadedModel, Runtime
from fleetyard.runtimes.errors import RuntimeUnavailable
from fleetyard.runtimes.formats import detect_format
from fleetyard.runtimes.iree_runtime import IreeRuntime
from fleetyard.runtimes.onnx_runtime import OnnxRuntime
from fleetyard.runtimes.torch_runtime import TorchRuntime

__all__ = ["inspect", "load", "runtime_for"]

_TORCH = TorchRuntime()
_RUNTIMES: dict[ArtifactFormat, Runtime] = {
    ArtifactFormat.ONNX: OnnxRuntime(),
    ArtifactFormat.IREE_VMFB: IreeRuntime(),
    # One TorchRuntime for both torch formats; torch itself is imported only when one is used.
    ArtifactFormat.TORCHSCRIPT: _TORCH,
    ArtifactFormat.TORCH_EXPORT: _TORCH,
}


def runtime_for(fmt: ArtifactFormat) -> Runtime:
    """The runtime of a format; :class:`RuntimeUnavailable` for a format without one."""
    runtime = _RUNTIMES.get(fmt)
    if runtime is None:
        raise RuntimeUnavailable(
            f"{fmt.value} artifacts have no runtime in fleetyard; export the model to ONNX (torch.onnx.export), "
            "compile it with IREE to a .vmfb, or save it as TorchScript (.pt) or an ExportedProgram (.pt2)",
            detail={"format": fmt.value},
        )
    return runtime


def inspect(path: Path | str, *, sha256: str | None = None, function: str | None = None) -> ArtifactInfo:
    """Format, sha256, inputs and outputs of an artifact, without a device.

    For an IREE module with several functions, ``function`` picks the one whose signature is
    reported; without it the info lists them all (``functions``, ``signatures``).
    """
    path = Path(path)
    return runtime_for(detect_format(path)).inspect(path, sha256=sha256, function=function)


def load(
    path: Path | str,
    settings: DeviceSettings | None = None,
    *,
    sha256: str | None = None,
    function: str | None = None,
) -> LoadedModel:
    """Load an artifact onto the device ``settings`` name (this host's CPU by default).

    Workloads should go through :class:`~fleetyard.runtimes.cache.SessionCache` instead, so
    that the next job of the same artifact finds it loaded.
    """
    path = Path(path)
    return runtime_for(detect_format(path)).load(path, settings or DeviceSettings(), sha256=sha256, function=function)
