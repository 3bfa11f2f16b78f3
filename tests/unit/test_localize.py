"""Layer-wise localisation: a planted numerical bug is found at the node it was planted in."""

from __future__ import annotations

import json
import random

import graph_models as gm
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fleetyard.runtimes.errors import ArtifactError, InputMismatch
from fleetyard.validation.localize import allclose_check, localize, ort_runner
from fleetyard.validation.onnx_graph import expose_all, extract, subgraph, topological_nodes

MLP_NODES = ["fc1", "fc1_bias", "relu1", "a_matmul", "a_tanh", "b_scale", "merge", "head"]
CONV_NODES = ["conv", "relu", "gap", "flatten", "fc"]


@pytest.mark.parametrize(
    ("build", "bad"),
    [(gm.branchy_mlp, n) for n in MLP_NODES] + [(gm.small_conv, n) for n in CONV_NODES],
)
def test_planted_bug_is_the_first_divergent_node(build, bad):
    model = build()
    report = localize(model, gm.inputs_for(model), run_candidate=gm.planted_runner(bad))
    first = report.first_divergent
    assert first is not None and first.name == bad
    assert first.origin == "here"  # its inputs agree, its output does not
    assert all(t.passed is not False for t in first.inputs)
    assert first.outputs[0].max_abs == pytest.approx(1e-2, rel=1e-3)
    before = [n for n in report.nodes if n.index < first.index]
    assert all(n.passed for n in before)
    assert [n.name for n in report.nodes] == [n.name for n in topological_nodes(model)]
    assert bad in report.summary() and "inputs agree" in report.summary()
    json.dumps(report.to_dict())  # plain JSON for a report


def test_later_nodes_inherit_the_divergence():
    model = gm.branchy_mlp()
    report = localize(model, gm.inputs_for(model), run_candidate=gm.planted_runner("a_tanh"))
    rows = {n.name: n for n in report.nodes}
    assert rows["b_scale"].passed  # the other branch is untouched
    assert rows["merge"].origin == "inherited" and rows["head"].origin == "inherited"
    assert not report.outputs[0].passed


def test_nudged_initializer_is_found_at_its_node():
    model = gm.branchy_mlp()

    def nudged(m, inputs):
        m2 = onnx.ModelProto()
        m2.CopyFrom(m)
        for t in m2.graph.initializer:
            if t.name == "Wa":
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(1.01), "Wa"))
        return ort_runner()(m2, inputs)

    report = localize(model, gm.inputs_for(model), run_candidate=nudged)
    assert report.first_divergent is not None and report.first_divergent.name == "a_matmul"
    assert report.first_divergent.origin == "here"


@pytest.mark.parametrize("build", [gm.branchy_mlp, gm.small_conv])
def test_no_divergence_reports_none(build, tmp_path):
    model = build()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    # The default candidate is ONNX Runtime with full optimisation against an unoptimised reference.
    report = localize(path, gm.inputs_for(model))
    assert report.passed and report.first_divergent is None
    assert all(n.passed for n in report.nodes) and len(report.nodes) == len(model.graph.node)
    assert "agree" in report.summary()


def test_tolerance_is_the_callers():
    model = gm.branchy_mlp()
    x = gm.inputs_for(model)
    candidate = gm.planted_runner("relu1", delta=1e-3)
    assert not localize(model, x, run_candidate=candidate).passed
    assert localize(model, x, run_candidate=candidate, check=allclose_check(atol=0.1)).passed


def test_bad_model_and_bad_inputs_are_clear(tmp_path):
    with pytest.raises(ArtifactError, match="not an ONNX model"):
        localize(b"\x00garbage\xff" * 10, {})
    with pytest.raises(ArtifactError, match="not found"):
        localize(tmp_path / "missing.onnx", {})
    model = gm.branchy_mlp()
    with pytest.raises(InputMismatch, match=r"expected \['x'\], given \['z'\]") as err:
        localize(model, {"z": np.zeros((2, 8), np.float32)})
    assert err.value.detail == {"expected": ["x"], "given": ["z"]}


# ---- graph surgery ---------------------------------------------------------------------------


def test_topological_nodes_sorts_a_shuffled_graph_and_refuses_a_cycle():
    model = gm.branchy_mlp()
    nodes = list(model.graph.node)
    random.Random(3).shuffle(nodes)
    shuffled = onnx.ModelProto()
    shuffled.CopyFrom(model)
    del shuffled.graph.node[:]
    shuffled.graph.node.extend(nodes)
    order = [n.name for n in topological_nodes(shuffled)]
    position = {name: i for i, name in enumerate(order)}
    for n in model.graph.node:  # every producer comes before its consumers
        for other in model.graph.node:
            if set(n.output) & set(other.input):
                assert position[n.name] < position[other.name]
    report = localize(shuffled, gm.inputs_for(model), run_candidate=gm.planted_runner("merge"))
    assert report.first_divergent is not None and report.first_divergent.name == "merge"

    cyclic = onnx.ModelProto()
    cyclic.CopyFrom(model)
    cyclic.graph.node[0].input[0] = "y"  # fc1 now reads head's output
    with pytest.raises(ArtifactError, match="cycle"):
        topological_nodes(cyclic)


def test_expose_all_and_extract_run_like_the_full_model():
    model = gm.branchy_mlp()
    x = gm.inputs_for(model)
    exposed, names, notes = expose_all(model)
    assert names[0] == "y" and set(names) == {o for n in model.graph.node for o in n.output}
    assert notes == []
    full = ort_runner("disable")(exposed, x)
    middle = extract(model, ["r1"], ["m"])
    assert sorted(n.name for n in middle.graph.node) == ["a_matmul", "a_tanh", "b_scale", "merge"]
    assert {t.name for t in middle.graph.initializer} == {"Wa", "s"}
    onnx.checker.check_model(middle)
    got = ort_runner("disable")(middle, {"r1": full["r1"]})
    np.testing.assert_allclose(got["m"], full["m"], rtol=1e-6)
    # A subset from the middle reads its missing inputs from given values.
    sub = subgraph(model, [4, 6], values=full)  # a_tanh, merge
    assert [i.name for i in sub.graph.input] == ["a1", "b1s"] and [o.name for o in sub.graph.output] == ["m"]
    with pytest.raises(ValueError, match="neither made by a node nor given"):
        extract(model, ["a1"], ["m"])


def test_candidate_through_fleetyards_runtime():
    from fleetyard.runtimes.base import DeviceSettings
    from fleetyard.validation.localize import runtime_runner

    model = gm.small_conv()
    report = localize(model, gm.inputs_for(model), run_candidate=runtime_runner(DeviceSettings(kind="cpu")))
    assert report.passed and len(report.nodes) == 5
