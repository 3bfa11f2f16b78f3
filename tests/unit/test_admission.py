"""Checks at submit for artifact jobs, against a registry stub: what they look up, and when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import models
import pytest

from fleetyard import runtimes
from fleetyard.runtimes import DeviceUnavailable
from fleetyard.workloads.admission import admit_artifact_job


class Stub:
    def __init__(self, info: dict[str, Any], devices: dict[str, str]) -> None:
        self.info, self.devices, self.fleet_reads = info, devices, 0

    def artifact_info(self, sha256: str) -> dict[str, Any] | None:
        return self.info

    def blob_path(self, sha256: str) -> Path | None:
        return None

    def board_devices(self) -> dict[str, str]:
        self.fleet_reads += 1
        return self.devices


def test_the_fleet_is_looked_at_only_for_iree_modules(tmp_path: Path) -> None:
    onnx = runtimes.inspect(models.save(models.mlp(), tmp_path / "m.onnx")).to_dict()
    stub = Stub(onnx, {"b0": "sim:0"})
    admit_artifact_job(stub, artifact=onnx["sha256"])
    assert stub.fleet_reads == 0  # an ONNX job's submit costs no scan of the fleet
    cuda = runtimes.inspect(models.compile_mlir(models.ADD_MLIR, tmp_path / "c.vmfb", target="cuda")).to_dict()
    stub = Stub(cuda, {"b0": "sim:0", "b1": "cpu:0-1"})
    with pytest.raises(DeviceUnavailable, match=r"compiled for cuda devices"):
        admit_artifact_job(stub, artifact=cuda["sha256"])
    assert stub.fleet_reads == 1
    admit_artifact_job(Stub(cuda, {"g0": "cuda:0"}), artifact=cuda["sha256"])  # a GPU board may run it
