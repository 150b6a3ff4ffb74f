"""An accelerator-like model for showing batching policies on a CPU-only machine.

On these CPUs a DAMO-YOLO frame already fills every core, so a batch of b costs b times a
frame and no batch window can pay. On a GPU a batch costs little more than one frame. This
graph reproduces that shape honestly on a CPU: most of its work runs once per batch (convs on
the batch's mean image), a little runs per frame. Its outputs (no detections) are meaningless;
only its cost curve matters. Built as variant "X" by `python -m bench --variants X`.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_SIZE_PX = 416
SHARED_CONVS = 4  # 32-channel 3x3 convs at 208x208, once per batch: the fixed cost
FRAME_CONVS = 1  # one 16-channel 3x3 conv at 104x104 per frame: the per-frame cost
NUM_CLASSES = 1


def build_fixed_cost_model(path: Path) -> None:
    """Write the graph to `path`: images [B, 3, 416, 416] -> scores [B, 1, 1], boxes [B, 1, 4]."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "batch_axis"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.zeros((1, 1, 4), np.float32), "no_box"),
    ]
    nodes = [
        # Once per batch: the mean image at half size through SHARED_CONVS convs.
        n("ReduceMean", ["images"], ["batch_mean"], keepdims=1, axes=[0]),
        n("AveragePool", ["batch_mean"], ["shared0"], kernel_shape=[2, 2], strides=[2, 2]),
        # Per frame: a quarter-size view through FRAME_CONVS small convs.
        n("AveragePool", ["images"], ["frame0"], kernel_shape=[4, 4], strides=[4, 4]),
    ]
    shared = _conv_chain("shared", SHARED_CONVS, 32, rng, nodes, inits)
    frame = _conv_chain("frame", FRAME_CONVS, 16, rng, nodes, inits)
    nodes += [
        n("ReduceMean", [shared], ["shared_scalar"], keepdims=1, axes=[1, 2, 3]),  # [1,1,1,1]
        n("ReduceMean", [frame], ["frame_scalar"], keepdims=1, axes=[2, 3]),  # [B,16,1,1]
        n("ReduceMean", ["frame_scalar"], ["frame_b"], keepdims=0, axes=[1, 2, 3]),  # [B]
        n("Unsqueeze", ["frame_b", "unsq"], ["frame_b11"]),  # [B,1,1]
        n("Squeeze", ["shared_scalar", "sq"], ["shared_11"]),  # [1,1] -> broadcast
        n("Add", ["frame_b11", "shared_11"], ["both"]),
        n("Mul", ["both", "zero"], ["scores"]),  # depends on both paths, always 0
        n("Add", ["scores", "no_box"], ["boxes"]),  # [B,1,4] zeros
    ]
    inits += [
        numpy_helper.from_array(np.array([1, 2], np.int64), "unsq"),
        numpy_helper.from_array(np.array([0, 1], np.int64), "sq"),
    ]
    size = INPUT_SIZE_PX
    graph = helper.make_graph(
        nodes,
        "fixed_cost_emulation",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1, NUM_CLASSES]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 1, 4]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {
        "names": "['cell phone']",
        "synthetic": "true",
        "variant": "X (fixed-cost emulation)",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _conv_chain(
    prefix: str,
    count: int,
    channels: int,
    rng: np.random.Generator,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
) -> str:
    """`count` 3x3 convs of `channels` outputs after the 3-channel `{prefix}0`; returns the
    last output's name."""
    current, inputs = f"{prefix}0", 3
    for i in range(count):
        weight = (rng.standard_normal((channels, inputs, 3, 3)) * 0.01).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"{prefix}_w{i}"))
        nodes.append(
            helper.make_node(
                "Conv", [current, f"{prefix}_w{i}"], [f"{prefix}{i + 1}"], pads=[1, 1, 1, 1]
            )
        )
        current, inputs = f"{prefix}{i + 1}", channels
    return current
