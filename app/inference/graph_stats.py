"""Parameter and FLOP counts of any ONNX model (ours or an official export).

FLOPs convention: the DAMO-YOLO README table. The official `get_model_info`
(damo/utils/model_utils.py) profiles the model with thop, whose counts are multiply-
accumulates (MACs), and multiplies them by 2 ("Gflops"). So here FLOPs = 2 x MACs, summed
over Conv / ConvTranspose (grouped and depthwise included), MatMul and Gemm nodes, at the
model's static input size with batch 1. Checked against the table: counting 1 MAC as 1 FLOP
gives about half the published numbers for every variant, 2 x MACs lands within 2.5 %. Bias
adds, activations, pooling, resizes and elementwise ops are not counted (thop counts none of
them for these layers except BatchNorm, which a deploy-form graph has folded away).

Parameters: the element count of every weight tensor feeding a learnable layer, i.e. the
initializers or Constant outputs used as inputs 1+ of Conv / ConvTranspose / Gemm / MatMul /
BatchNormalization (scale and bias only) / PRelu. Shape tensors, anchor grids, resize scales
and other derived constants are excluded; each tensor is counted once even if shared. (The
head's DFL projection [0 .. reg_max] enters a MatMul and so counts: 17 values.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
from onnx import helper, shape_inference

_WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "PRelu", "BatchNormalization"}
# Initializers larger than this are replaced by typed graph inputs for shape inference, so
# that inference never copies the weights (only their shapes matter).
_INLINE_LIMIT = 64


@dataclass(frozen=True)
class GraphStats:
    """`params`: weight elements; `flops`: 2 x MACs at batch 1; `opset`: default-domain opset."""

    params: int
    flops: int
    opset: int


def _tensor_sizes(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Dims of every initializer and Constant-node tensor in the graph."""
    dims = {init.name: list(init.dims) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    dims[node.output[0]] = list(attr.t.dims)
    return dims


def _shape_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A weight-free copy of `model` with batch 1, ready for shape inference."""
    graph = model.graph
    inputs = []
    initializer_names = {init.name for init in graph.initializer}
    for value in graph.input:
        value = onnx.ValueInfoProto.FromString(value.SerializeToString())
        dims = value.type.tensor_type.shape.dim
        if value.name not in initializer_names and len(dims) > 0 and not dims[0].dim_value:
            dims[0].dim_value = 1  # a symbolic (or unknown) batch axis counts as batch 1
        inputs.append(value)
    listed = {value.name for value in inputs}
    small = []
    for init in graph.initializer:
        if math.prod(init.dims) <= _INLINE_LIMIT:
            small.append(init)
        elif init.name not in listed:
            inputs.append(helper.make_tensor_value_info(init.name, init.data_type, init.dims))
    light = helper.make_graph(list(graph.node), graph.name, inputs, list(graph.output), small)
    out = helper.make_model(light, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shapes of every value shape inference can resolve, with batch 1."""
    inferred = shape_inference.infer_shapes(_shape_model(model), data_prop=True)
    shapes: dict[str, list[int]] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
            shapes[value.name] = dims
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _static(shapes: dict[str, list[int]], name: str, node: onnx.NodeProto) -> list[int]:
    shape = shapes.get(name)
    if shape is None or any(d < 0 for d in shape):
        raise ValueError(
            f"cannot count FLOPs of {node.op_type} node {node.name!r}: "
            f"shape of {name!r} is not static"
        )
    return shape


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    """Multiply-accumulates of one node (0 for ops that are not counted)."""
    if node.op_type == "Conv":
        weight = _static(shapes, node.input[1], node)  # [M, C/group, k...]
        out = _static(shapes, node.output[0], node)
        return math.prod(out) * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":
        weight = _static(shapes, node.input[1], node)  # [C, M/group, k...]
        x = _static(shapes, node.input[0], node)
        return math.prod(x) * math.prod(weight[1:])
    if node.op_type == "MatMul":
        a = _static(shapes, node.input[0], node)
        out = _static(shapes, node.output[0], node)
        return math.prod(out) * a[-1]
    if node.op_type == "Gemm":
        a = _static(shapes, node.input[0], node)
        out = _static(shapes, node.output[0], node)
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        return math.prod(out) * (a[0] if trans_a else a[-1])
    return 0


def graph_stats(model: onnx.ModelProto) -> GraphStats:
    """Count parameters and FLOPs (2 x MACs, batch 1) of `model`; see the module docstring.

    Raises ValueError when a counted node's shapes are not static (e.g. dynamic H, W).
    """
    graph = model.graph
    sizes = _tensor_sizes(graph)
    weight_names = {
        name
        for node in graph.node
        if node.op_type in _WEIGHTED_OPS
        for name in node.input[1 : 3 if node.op_type == "BatchNormalization" else None]
        if name in sizes
    }
    params = sum(math.prod(sizes[name]) for name in weight_names)

    counted = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
    shapes = _shapes(model) if any(n.op_type in counted for n in graph.node) else {}
    macs = sum(_node_macs(node, shapes) for node in graph.node)
    opset = next((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), 0)
    return GraphStats(params=params, flops=2 * macs, opset=opset)
