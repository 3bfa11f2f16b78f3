"""Graph surgery on ONNX models, in memory: the tools layer-wise localisation and reduce share.

- :func:`load_model` reads a model (a ``ModelProto``, a path or bytes) into a private copy, and
  refuses what is not ONNX with an :class:`~fleetyard.runtimes.errors.ArtifactError`.
- :func:`topological_nodes` lists the main graph's nodes in topological order (the ONNX spec
  requires the stored order to be one; it is checked, and sorted when it is not).
- :func:`expose_all` makes every node output a graph output, so that a runtime returns every
  intermediate tensor (and cannot fuse away a node whose output is a graph output).
- :func:`subgraph` keeps a subset of nodes; tensors they consume but do not make become graph
  inputs (fed by the caller, e.g. with a reference run's intermediate values); the initializers
  they use come along. :func:`extract` does the same between named input and output tensors,
  like ``onnx.utils.extract_model`` without files.

Only the main graph is cut: a node with subgraphs (If, Loop, Scan) is kept or dropped whole, and
the outer-scope tensors its subgraphs read count as its inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from fleetyard.runtimes.errors import ArtifactError

__all__ = [
    "expose_all",
    "extract",
    "load_model",
    "node_inputs",
    "node_label",
    "subgraph",
    "tensor_types",
    "topological_nodes",
]


def load_model(model: onnx.ModelProto | Path | str | bytes) -> onnx.ModelProto:
    """A private copy of ``model``; ArtifactError naming the problem when it is not ONNX."""
    if isinstance(model, onnx.ModelProto):
        out = onnx.ModelProto()
        out.CopyFrom(model)
    elif isinstance(model, bytes):
        out = _parse(model, "the given bytes")
    elif isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise ArtifactError(f"ONNX model {path} not found", detail={"path": str(path)})
        out = _parse(path.read_bytes(), str(path))
    else:
        raise ArtifactError(
            f"expected an ONNX ModelProto, a path or bytes, got {type(model).__name__}",
            detail={"given": type(model).__name__},
        )
    if not out.graph.node:
        raise ArtifactError("the ONNX model has no nodes (empty graph or not an ONNX model)")
    return out


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, or worse on garbage
        raise ArtifactError(f"{where} is not an ONNX model: {exc}", detail={"path": where}) from None
    return model


def node_label(node: onnx.NodeProto, index: int) -> str:
    """The node's name, or ``OpType#index`` for an unnamed node (ONNX allows empty names)."""
    return node.name or f"{node.op_type}#{index}"


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Tensors a node reads: its inputs (empty optional ones dropped), then the outer-scope
    tensors its subgraphs read."""
    names = [n for n in node.input if n]
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            names.extend(n for n in _outer_names(g) if n not in names)
    return names


def _outer_names(graph: onnx.GraphProto) -> list[str]:
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    out: list[str] = []
    for node in graph.node:
        for name in node_inputs(node):
            if name not in defined and name not in out:
                out.append(name)
        defined.update(node.output)
    return out


def topological_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The main graph's nodes in topological order (stable: the stored order where it is one).

    ArtifactError when a node reads a tensor nothing makes, or the graph has a cycle.
    """
    graph = model.graph
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    nodes = list(graph.node)
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for out in node.output:
            if out:
                producer[out] = i
    needs: list[set[int]] = []
    for i, node in enumerate(nodes):
        deps: set[int] = set()
        for name in node_inputs(node):
            if name in producer:
                deps.add(producer[name])
            elif name not in available:
                raise ArtifactError(
                    f"node {node_label(node, i)} reads tensor {name!r}, which no node, input or initializer makes",
                    detail={"node": node_label(node, i), "tensor": name},
                )
        needs.append(deps)
    order: list[int] = []
    done: set[int] = set()
    pending = list(range(len(nodes)))
    while pending:
        # One pass over what is left, in stored order: a sorted graph takes exactly one pass.
        progressed = False
        for i in pending:
            if needs[i] <= done:
                order.append(i)
                done.add(i)
                progressed = True
        if not progressed:
            stuck = [node_label(nodes[i], i) for i in pending[:5]]
            raise ArtifactError(f"the ONNX graph has a cycle through {', '.join(stuck)}", detail={"nodes": stuck})
        pending = [i for i in pending if i not in done]
    return [nodes[i] for i in order]


def tensor_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Every tensor's type as shape inference sees it (inputs, outputs, intermediates)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model inference cannot follow (custom ops): use what is stored
        inferred = model
    g = inferred.graph
    out: dict[str, onnx.TypeProto] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.WhichOneof("value") is not None:
            out[vi.name] = vi.type
    for init in g.initializer:
        out.setdefault(init.name, helper.make_tensor_type_proto(init.data_type, list(init.dims)))
    return out


def _has_elem_type(t: onnx.TypeProto | None) -> bool:
    return t is not None and t.WhichOneof("value") == "tensor_type" and t.tensor_type.elem_type != 0


def expose_all(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str], list[str]]:
    """A copy whose graph outputs are the original outputs, then every node output in order.

    Returns ``(model, exposed, notes)``: the names of all outputs now returned (topological
    order), and notes about tensors whose type shape inference could not tell (they are added
    untyped; ONNX Runtime fills the type in).
    """
    out = load_model(model)
    types = tensor_types(out)
    nodes = topological_nodes(out)
    present = {o.name for o in out.graph.output}
    exposed = [o.name for o in out.graph.output]
    untyped: list[str] = []
    for node in nodes:
        for name in node.output:
            if not name or name in present:
                continue
            present.add(name)
            exposed.append(name)
            t = types.get(name)
            vi = onnx.ValueInfoProto()
            vi.name = name
            if _has_elem_type(t):
                assert t is not None
                vi.type.CopyFrom(t)
            else:
                untyped.append(name)
            out.graph.output.append(vi)
    notes = []
    if untyped:
        notes.append(
            f"shape inference did not type {len(untyped)} tensor(s) ({', '.join(untyped[:5])}); exposed untyped"
        )
    copies = []
    for n in nodes:  # copies: the originals live in the list about to be cleared
        c = onnx.NodeProto()
        c.CopyFrom(n)
        copies.append(c)
    del out.graph.node[:]
    out.graph.node.extend(copies)  # stored in topological order, as the spec requires
    return out, exposed, notes


def _value_info(
    name: str, types: Mapping[str, onnx.TypeProto], values: Mapping[str, np.ndarray]
) -> onnx.ValueInfoProto:
    if name in values:
        arr = np.asarray(values[name])
        elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
        return helper.make_tensor_value_info(name, elem, list(arr.shape))
    vi = onnx.ValueInfoProto()
    vi.name = name
    t = types.get(name)
    if t is not None:
        vi.type.CopyFrom(t)
    return vi


def subgraph(
    model: onnx.ModelProto,
    nodes: Iterable[int],
    *,
    outputs: Sequence[str] | None = None,
    values: Mapping[str, np.ndarray] | None = None,
    types: Mapping[str, onnx.TypeProto] | None = None,
    name: str | None = None,
) -> onnx.ModelProto:
    """A model of the nodes at ``nodes`` (indices into :func:`topological_nodes`).

    Its inputs are the tensors those nodes read that none of them makes (initializers excepted,
    which come along). Its outputs are ``outputs`` if given, else every tensor the nodes make
    that is read outside them, is an original graph output, or is read by nobody. Types come from
    ``values`` (arrays, e.g. a reference run's, giving concrete shapes), else ``types``, else
    shape inference; original graph inputs and outputs keep their declared types.
    """
    ordered = topological_nodes(model)
    keep = sorted(set(nodes))
    if not keep:
        raise ValueError("a subgraph needs at least one node")
    if keep[0] < 0 or keep[-1] >= len(ordered):
        raise ValueError(f"node indices must be within 0..{len(ordered) - 1}")
    chosen = [ordered[i] for i in keep]
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    declared = {vi.name: vi for vi in [*g.input, *g.output]}
    values = values or {}
    types = types if types is not None else tensor_types(model)

    made: list[str] = [o for n in chosen for o in n.output if o]
    made_set = set(made)
    read: list[str] = []
    for n in chosen:
        read.extend(x for x in node_inputs(n) if x not in read)
    feeds = [x for x in read if x not in made_set and x not in inits]
    if outputs is None:
        keep_set = set(keep)
        read_outside = {x for i, n in enumerate(ordered) if i not in keep_set for x in node_inputs(n)}
        graph_outputs = {o.name for o in g.output}
        read_inside = set(read)
        outputs = [o for o in made if o in read_outside or o in graph_outputs or o not in read_inside]
    missing = [o for o in outputs if o not in made_set]
    if missing:
        raise ValueError(f"outputs {missing} are not made by the chosen nodes")

    def info(tensor: str) -> onnx.ValueInfoProto:
        if tensor in declared and tensor not in values:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(declared[tensor])
            return vi
        return _value_info(tensor, types, values)

    graph = helper.make_graph(
        chosen,
        name or f"{g.name or 'graph'}_sub",
        inputs=[info(x) for x in feeds],
        outputs=[info(o) for o in outputs],
        initializer=[inits[x] for x in read if x in inits],
    )
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    out.producer_name = model.producer_name
    out.functions.extend(model.functions)
    return out


def extract(
    model: onnx.ModelProto,
    input_names: Sequence[str],
    output_names: Sequence[str],
    *,
    values: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """The nodes between ``input_names`` and ``output_names`` (what the outputs need, walking back
    no further than the inputs), as a model with exactly those inputs and outputs."""
    ordered = topological_nodes(model)
    producer = {o: i for i, n in enumerate(ordered) for o in n.output if o}
    stop = set(input_names) | {t.name for t in model.graph.initializer}
    unknown = [o for o in output_names if o not in producer and o not in stop]
    if unknown:
        raise ValueError(f"no node makes {unknown}")
    keep: set[int] = set()
    todo = [o for o in output_names if o not in stop]
    while todo:
        name = todo.pop()
        i = producer.get(name)
        if i is None:
            if name not in stop:
                raise ValueError(f"tensor {name!r} is needed but neither made by a node nor given as an input")
            continue
        if i in keep:
            continue
        keep.add(i)
        todo.extend(x for x in node_inputs(ordered[i]) if x not in stop)
    sub = subgraph(model, keep, outputs=list(output_names), values=values)
    fed = [vi.name for vi in sub.graph.input]
    extra = [x for x in fed if x not in input_names]
    if extra:
        raise ValueError(f"the outputs also need {extra}, which are not among the inputs")
    # The declared input order, not the order nodes read them in.
    by_name: dict[str, Any] = {vi.name: vi for vi in sub.graph.input}
    ordered_inputs = [by_name[x] for x in input_names if x in by_name]
    del sub.graph.input[:]
    sub.graph.input.extend(ordered_inputs)
    return sub
