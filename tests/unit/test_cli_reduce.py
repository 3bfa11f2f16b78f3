"""`fleetyard reduce`: from a model and a failing check to the smallest failing subgraph on disk."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import onnx
from tests.unit.graph_models import branchy_mlp
from typer.testing import CliRunner

from fleetyard.cli.main import app

# A "compiler" that rejects any model holding a Tanh node.
REJECTS_TANH = (
    "import onnx, sys; m = onnx.load(sys.argv[1]); sys.exit(3 if any(n.op_type == 'Tanh' for n in m.graph.node) else 0)"
)


def test_reduce_with_a_check_command_writes_the_culprit(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(branchy_mlp(), str(model))
    check = f"{shlex.quote(sys.executable)} -c {shlex.quote(REJECTS_TANH)}"
    result = CliRunner().invoke(app, ["reduce", str(model), "--check", check, "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["smallest_failing"]["node_count"] == 1
    smallest = onnx.load(str(tmp_path / "out" / "smallest_failing.onnx"))
    assert [n.op_type for n in smallest.graph.node] == ["Tanh"]
    passing = onnx.load(str(tmp_path / "out" / "largest_passing.onnx"))
    assert "Tanh" not in {n.op_type for n in passing.graph.node}


def test_reduce_of_a_passing_model_says_there_is_nothing_to_reduce(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(branchy_mlp(), str(model))
    result = CliRunner().invoke(app, ["reduce", str(model), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
