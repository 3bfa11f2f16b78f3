"""`fleetyard run ARTIFACT`: telling an artifact from a command, and its options."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from tests.unit.models import mlp, save

from fleetyard.cli.run_artifact import is_artifact_ref, parse_dims, parse_ranges


def test_an_artifact_is_one_model_file_or_a_sha256(tmp_path: Path) -> None:
    model = save(mlp(), tmp_path / "m.onnx")
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    assert is_artifact_ref([str(model)])
    assert is_artifact_ref(["ab" * 32])
    assert not is_artifact_ref([str(script)])  # a file, but not a model: a command
    assert not is_artifact_ref(["true"])
    assert not is_artifact_ref([str(model), "--flag"])


def test_dims_and_ranges() -> None:
    assert parse_dims(["N=8", "T=2"]) == {"N": 8, "T": 2}
    assert parse_ranges(["x=-1:1", "ids=0:100"]) == {"x": (-1.0, 1.0), "ids": (0.0, 100.0)}
    for bad in (["N"], ["N=x"], ["=3"]):
        with pytest.raises(typer.BadParameter):
            parse_dims(bad)
    for bad in (["x=1"], ["x=a:b"], ["=0:1"]):
        with pytest.raises(typer.BadParameter):
            parse_ranges(bad)
