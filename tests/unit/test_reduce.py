"""reduce: a planted numerical bug is cut down to the one node it was planted in."""

from __future__ import annotations

import json
import sys

import graph_models as gm
import numpy as np
import onnx
import pytest

from fleetyard.runtimes.errors import InputMismatch
from fleetyard.validation.localize import allclose_check
from fleetyard.validation.reduce import NothingToReduce, command_check, reduce, tolerance_check

MLP_NODES = ["fc1", "fc1_bias", "relu1", "a_matmul", "a_tanh", "b_scale", "merge", "head"]
CONV_NODES = ["conv", "relu", "gap", "flatten", "fc"]


@pytest.mark.parametrize(
    ("build", "bad"),
    [(gm.branchy_mlp, n) for n in MLP_NODES] + [(gm.small_conv, n) for n in CONV_NODES],
)
def test_planted_bug_reduces_to_its_node(build, bad):
    model = build()
    fails = tolerance_check(run_candidate=gm.planted_runner(bad))
    result = reduce(model, gm.inputs_for(model), check_fails=fails)
    assert result.smallest_failing_nodes == (bad,)
    assert [n.name for n in result.smallest_failing.graph.node] == [bad]
    onnx.checker.check_model(result.smallest_failing)
    assert fails(result.smallest_failing, result.smallest_failing_inputs)  # it does fail, standalone
    assert result.largest_passing is not None and bad not in result.largest_passing_nodes
    assert len(result.largest_passing_nodes) == result.total_nodes - 1
    assert not fails(result.largest_passing, result.largest_passing_inputs)
    assert any("alone" in n for n in result.notes)


def test_save_writes_both_models_and_a_summary(tmp_path):
    model = gm.branchy_mlp()
    result = reduce(model, gm.inputs_for(model), check_fails=tolerance_check(run_candidate=gm.planted_runner("a_tanh")))
    written = result.save(tmp_path / "out")
    assert (tmp_path / "out" / "smallest_failing.onnx").is_file()
    assert (tmp_path / "out" / "largest_passing.onnx").is_file()
    summary = json.loads(written["summary"].read_text())
    assert summary["smallest_failing"] == {"node_count": 1, "nodes": ["a_tanh"], "inputs": ["a1"]}
    assert summary["largest_passing"]["node_count"] == 7 and summary["total_nodes"] == 8
    small = onnx.load(str(written["smallest_failing"]))
    assert [n.op_type for n in small.graph.node] == ["Tanh"]
    with np.load(written["smallest_failing_inputs"]) as feeds:
        assert feeds["a1"].shape == (2, 16)


def test_a_second_bug_is_noted():
    model = gm.branchy_mlp()
    relu1_bug = gm.planted_runner("relu1")

    def candidate(m, inputs):  # two planted bugs: relu1 and head
        return relu1_bug(gm.plant_bug(m, "head"), inputs)

    result = reduce(model, gm.inputs_for(model), check_fails=tolerance_check(run_candidate=candidate))
    assert len(result.smallest_failing_nodes) == 1
    assert any("more than one failure" in n for n in result.notes)


def test_a_passing_model_has_nothing_to_reduce():
    model = gm.small_conv()
    with pytest.raises(NothingToReduce, match="passes the check"):
        reduce(model, gm.inputs_for(model), check_fails=tolerance_check(check=allclose_check()))


def test_bad_inputs_are_clear():
    with pytest.raises(InputMismatch, match="expected"):
        reduce(gm.small_conv(), {"y": np.zeros(3, np.float32)}, check_fails=lambda m, i: True)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_command_check_exit_codes():
    model = gm.small_conv()
    feeds = gm.inputs_for(model)
    assert command_check(_py("raise SystemExit(0)"))(model, feeds) is False
    assert command_check(_py("raise SystemExit(3)"))(model, feeds) is True
    # The model's path comes as the last argument and in the environment, with the inputs beside it.
    looks = (
        "import os, sys; import numpy as np; p = sys.argv[1];"
        "assert p == os.environ['FLEETYARD_REDUCE_MODEL'] and os.path.getsize(p) > 0;"
        "assert np.load(os.environ['FLEETYARD_REDUCE_INPUTS'])['x'].shape == (1, 3, 8, 8)"
    )
    assert command_check(_py(looks))(model, feeds) is False
    assert command_check(_py("import time; time.sleep(5)"), timeout=0.5)(model, feeds) is True


def test_reduce_with_a_command_finds_the_op_it_rejects():
    # A "compiler" that rejects any model containing a Tanh node: the culprit is a_tanh alone.
    rejects_tanh = "import sys; sys.exit(1 if b'Tanh' in open(sys.argv[1], 'rb').read() else 0)"
    model = gm.branchy_mlp()
    result = reduce(model, gm.inputs_for(model), check_fails=command_check(_py(rejects_tanh)))
    assert result.smallest_failing_nodes == ("a_tanh",)
    assert result.largest_passing is not None and "a_tanh" not in result.largest_passing_nodes
