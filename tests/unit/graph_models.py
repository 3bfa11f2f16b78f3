"""Models with branches and convolutions for localisation and reduce, and a planted numerical bug.

Built with onnx.helper at test time, seeded weights (see models.py for the simpler ones).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tests.unit.models import _model


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(arr.astype(np.float32), name)


def branchy_mlp(seed: int = 0, batch: int = 2) -> onnx.ModelProto:
    """x[batch, 8] -> fc1 (MatMul, Add) -> relu1 -> [a_matmul -> a_tanh] + [b_scale (Mul)] -> merge
    (Add) -> head (MatMul) -> y[batch, 4]."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"], name="fc1"),
        helper.make_node("Add", ["h1", "b1"], ["h1b"], name="fc1_bias"),
        helper.make_node("Relu", ["h1b"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "Wa"], ["a1"], name="a_matmul"),
        helper.make_node("Tanh", ["a1"], ["a2"], name="a_tanh"),
        helper.make_node("Mul", ["r1", "s"], ["b1s"], name="b_scale"),
        helper.make_node("Add", ["a2", "b1s"], ["m"], name="merge"),
        helper.make_node("MatMul", ["m", "W3"], ["y"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "branchy_mlp",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        initializer=[
            _init("W1", rng.standard_normal((8, 16))),
            _init("b1", rng.standard_normal(16)),
            _init("Wa", rng.standard_normal((16, 16)) * 0.3),
            _init("s", rng.standard_normal(16)),
            _init("W3", rng.standard_normal((16, 4))),
        ],
    )
    return _model(graph)


def small_conv(seed: int = 0) -> onnx.ModelProto:
    """x[1, 3, 8, 8] -> conv -> relu -> gap (GlobalAveragePool) -> flatten -> fc (Gemm) -> y[1, 5]."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "Wc", "Bc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["cr"], name="relu"),
        helper.make_node("GlobalAveragePool", ["cr"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "Wf", "Bf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small_conv",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        initializer=[
            _init("Wc", rng.standard_normal((4, 3, 3, 3)) * 0.5),
            _init("Bc", rng.standard_normal(4)),
            _init("Wf", rng.standard_normal((5, 4))),
            _init("Bf", rng.standard_normal(5)),
        ],
    )
    return _model(graph)


def inputs_for(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def plant_bug(model: onnx.ModelProto, node_name: str, delta: float = 1e-2) -> onnx.ModelProto:
    """A copy of ``model`` where node ``node_name``'s first output is off by ``delta`` (an extra
    Add of a constant right after it). A model without that node comes back unchanged."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = list(out.graph.node)
    for i, node in enumerate(nodes):
        if node.name != node_name:
            continue
        real = node.output[0]
        node.output[0] = f"{real}__unplanted"
        const = f"{node_name}__planted_delta"
        out.graph.initializer.append(numpy_helper.from_array(np.array(delta, dtype=np.float32), const))
        bug = helper.make_node("Add", [node.output[0], const], [real], name=f"{node_name}__planted")
        out.graph.node.insert(i + 1, bug)
        break
    return out


def planted_runner(node_name: str, delta: float = 1e-2):  # -> Runner
    """A candidate runner: ONNX Runtime on the CPU, running the model with the bug planted."""
    from fleetyard.validation.localize import ort_runner

    run = ort_runner("disable")

    def candidate(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run(plant_bug(model, node_name, delta), inputs)

    return candidate
