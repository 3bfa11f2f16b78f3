"""Small models built at test time: ONNX graphs with onnx.helper, IREE modules compiled from MLIR.

Nothing is downloaded and nothing binary is committed. Weights are seeded, so every build of a
model is the same bytes (and the same sha256).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # old enough for every onnxruntime >= 1.17


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fleetyard-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def mlp_weights(seed: int = 0, n_in: int = 4, n_out: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    return w, b


def mlp(batch: int | str = 2, seed: int = 0) -> onnx.ModelProto:
    """``y = relu(x @ W + b)``: x float32[batch, 4] -> y float32[batch, 3] (``batch`` may be a symbol)."""
    w, b = mlp_weights(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="matmul"),
        helper.make_node("Add", ["xw", "b"], ["xwb"], name="add"),
        helper.make_node("Relu", ["xwb"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    return _model(graph)


def mlp_reference(x: np.ndarray, seed: int = 0) -> np.ndarray:
    w, b = mlp_weights(seed)
    return np.maximum(x @ w + b, 0.0)


def two_inputs() -> onnx.ModelProto:
    """a float32[3], k int64[3] -> sum = a + float(k), prod = a * float(k)."""
    nodes = [
        helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Add", ["a", "kf"], ["sum"], name="add"),
        helper.make_node("Mul", ["a", "kf"], ["prod"], name="mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        inputs=[
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [3]),
        ],
        outputs=[
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, [3]),
        ],
    )
    return _model(graph)


def paired_batch() -> onnx.ModelProto:
    """p float32[n, 2], q float32[n, 2] -> r = p - q: one symbol ``n`` shared by two inputs."""
    graph = helper.make_graph(
        [helper.make_node("Sub", ["p", "q"], ["r"], name="sub")],
        "paired",
        inputs=[
            helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("q", TensorProto.FLOAT, ["n", 2]),
        ],
        outputs=[helper.make_tensor_value_info("r", TensorProto.FLOAT, ["n", 2])],
    )
    return _model(graph)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


# ---- IREE ------------------------------------------------------------------------------------

ADD_MLIR = """
func.func @main(%a: tensor<4xf32>, %b: tensor<4xf32>) -> tensor<4xf32> {
  %0 = arith.addf %a, %b : tensor<4xf32>
  return %0 : tensor<4xf32>
}
"""

TWO_FUNCTIONS_MLIR = """
func.func @add(%a: tensor<4xf32>, %b: tensor<4xf32>) -> tensor<4xf32> {
  %0 = arith.addf %a, %b : tensor<4xf32>
  return %0 : tensor<4xf32>
}
func.func @square(%a: tensor<?x3xf32>) -> (tensor<?x3xf32>, tensor<?x3xf32>) {
  %0 = arith.mulf %a, %a : tensor<?x3xf32>
  return %0, %a : tensor<?x3xf32>, tensor<?x3xf32>
}
"""

# Imported from torch (input type "torch"): exports main and its fence-taking twin main$async.
TORCH_ADD_MLIR = """
func.func @main(%arg0: !torch.vtensor<[4],f32>, %arg1: !torch.vtensor<[4],f32>) -> !torch.vtensor<[4],f32> {
  %int1 = torch.constant.int 1
  %0 = torch.aten.add.Tensor %arg0, %arg1, %int1
      : !torch.vtensor<[4],f32>, !torch.vtensor<[4],f32>, !torch.int -> !torch.vtensor<[4],f32>
  return %0 : !torch.vtensor<[4],f32>
}
"""


def compile_mlir(
    source: str,
    path: Path,
    *,
    target: str = "llvm-cpu",
    input_type: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> Path:
    """Compile MLIR text to a .vmfb at ``path`` with iree-base-compiler."""
    import iree.compiler as ic

    args = list(extra_args)
    if target == "llvm-cpu":
        args.append("--iree-llvmcpu-target-cpu=generic")  # portable, and no warning about it
    kwargs = {"input_type": input_type} if input_type else {}
    data = ic.compile_str(source, target_backends=[target], extra_args=args, **kwargs)
    path.write_bytes(data)
    return path
