"""Small ONNX graphs with the DAMO-YOLO output contract whose outputs are known functions
of the input, so the whole pipeline can be checked box for box without real weights.

`red_box_model`: anchor 0 is the bounding box of pixels whose red channel is above half
(in input pixels), scored 0.9 in the phone class when any such pixel exists; anchor 1 is a
fixed decoy box scored 0.8 in another class, which a phone detector must ignore.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RED_SCORE = 0.9
DECOY_SCORE = 0.8
DECOY_BOX = (10.0, 10.0, 50.0, 50.0)
_BIG = 1.0e6


def red_box_model(
    *,
    input_size_px: tuple[int, int] = (640, 640),
    num_classes: int = 80,
    phone_class: int = 67,
    decoy_class: int | None = 0,
    dynamic_batch: bool = True,
    metadata: dict[str, str] | None = None,
    heavy_convs: int = 0,
) -> onnx.ModelProto:
    """Build the red-box graph; `decoy_class=None` leaves the decoy anchor all-zero.

    `heavy_convs` adds that many 32-channel 3x3 convolutions whose result is multiplied by
    zero into the scores: same outputs, real model-like cost (for load and drain tests).
    """
    height, width = input_size_px
    batch: str | int = "batch" if dynamic_batch else 1
    phone_onehot = np.zeros((1, num_classes), np.float32)
    phone_onehot[0, phone_class] = RED_SCORE
    decoy_onehot = np.zeros((1, num_classes), np.float32)
    if decoy_class is not None:
        decoy_onehot[0, decoy_class] = DECOY_SCORE
    inits = [
        numpy_helper.from_array(np.arange(width, dtype=np.float32), "xs"),
        numpy_helper.from_array(np.arange(height, dtype=np.float32), "ys"),
        numpy_helper.from_array(np.array(_BIG, np.float32), "big"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "minus_one"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(127.5, np.float32), "red_level"),
        numpy_helper.from_array(np.array([0], np.int64), "c0"),
        numpy_helper.from_array(np.array([1], np.int64), "c1"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([DECOY_BOX], np.float32), "decoy_box"),
        numpy_helper.from_array(phone_onehot, "phone_onehot"),
        numpy_helper.from_array(decoy_onehot, "decoy_onehot"),
    ]
    n = helper.make_node
    nodes = [
        n("Slice", ["images", "c0", "c1", "axis1"], ["red"]),
        n("Greater", ["red", "red_level"], ["mask"]),
        n("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        n("ReduceMax", ["maskf"], ["cols"], axes=[1, 2], keepdims=0),  # [B, W]
        n("ReduceMax", ["maskf"], ["rows"], axes=[1, 3], keepdims=0),  # [B, H]
        n("Greater", ["cols", "half"], ["col_on"]),
        n("Greater", ["rows", "half"], ["row_on"]),
        n("Add", ["xs", "one"], ["xs_end"]),
        n("Add", ["ys", "one"], ["ys_end"]),
        n("Where", ["col_on", "xs", "big"], ["x1_all"]),
        n("Where", ["col_on", "xs_end", "minus_one"], ["x2_all"]),
        n("Where", ["row_on", "ys", "big"], ["y1_all"]),
        n("Where", ["row_on", "ys_end", "minus_one"], ["y2_all"]),
        n("ReduceMin", ["x1_all"], ["x1"], axes=[1], keepdims=1),
        n("ReduceMax", ["x2_all"], ["x2"], axes=[1], keepdims=1),
        n("ReduceMin", ["y1_all"], ["y1"], axes=[1], keepdims=1),
        n("ReduceMax", ["y2_all"], ["y2"], axes=[1], keepdims=1),
        n("ReduceMax", ["cols"], ["found"], axes=[1], keepdims=1),  # [B, 1]: 1 if any red
        n("Concat", ["x1", "y1", "x2", "y2"], ["box0"], axis=1),  # [B, 4]
        n("Mul", ["found", "zero"], ["zeros_b1"]),
        n("Add", ["zeros_b1", "decoy_box"], ["box1"]),  # [B, 4]
        n("Unsqueeze", ["box0", "axis1"], ["box0_3d"]),
        n("Unsqueeze", ["box1", "axis1"], ["box1_3d"]),
        n("Concat", ["box0_3d", "box1_3d"], ["boxes"], axis=1),
        n("Mul", ["found", "phone_onehot"], ["score0"]),  # [B, C]
        n("Add", ["zeros_b1", "decoy_onehot"], ["score1"]),
        n("Unsqueeze", ["score0", "axis1"], ["score0_3d"]),
        n("Unsqueeze", ["score1", "axis1"], ["score1_3d"]),
        n("Concat", ["score0_3d", "score1_3d"], ["scores_clean"], axis=1),
    ]
    nodes += _heavy_branch(heavy_convs, inits)
    graph = helper.make_graph(
        nodes,
        "red_box",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, height, width])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 2, num_classes]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, 2, 4]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model


def _heavy_branch(count: int, inits: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Convs on the image, reduced to a scalar and added times zero to the scores."""
    n = helper.make_node
    if count == 0:
        return [n("Identity", ["scores_clean"], ["scores"])]
    rng = np.random.default_rng(0)
    nodes, current, channels = [], "images", 3
    for i in range(count):
        weight = (rng.standard_normal((32, channels, 3, 3)) * 0.01).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"heavy_w{i}"))
        nodes.append(n("Conv", [current, f"heavy_w{i}"], [f"heavy{i}"], pads=[1, 1, 1, 1]))
        current, channels = f"heavy{i}", 32
    nodes += [
        n("ReduceMean", [current], ["heavy_mean"], axes=[1, 2, 3], keepdims=1),  # [B,1,1,1]
        n("Mul", ["heavy_mean", "zero"], ["heavy_zero"]),
        n("Squeeze", ["heavy_zero", "heavy_axes"], ["heavy_b"]),  # [B]
        n("Unsqueeze", ["heavy_b", "heavy_unsq"], ["heavy_b11"]),  # [B,1,1]
        n("Add", ["scores_clean", "heavy_b11"], ["scores"]),
    ]
    inits.append(numpy_helper.from_array(np.array([1, 2, 3], np.int64), "heavy_axes"))
    inits.append(numpy_helper.from_array(np.array([1, 2], np.int64), "heavy_unsq"))
    return nodes


def end2end_like_model() -> onnx.ModelProto:
    """A graph shaped like an --end2end export (NMS inside, four outputs): must be refused."""
    n = helper.make_node
    nodes = [
        n("ReduceMax", ["images"], ["num_dets"], axes=[1, 2, 3], keepdims=0),
        n("ReduceMax", ["images"], ["det_boxes"], axes=[1], keepdims=0),
        n("ReduceMax", ["images"], ["det_scores"], axes=[1, 2], keepdims=0),
        n("ReduceMin", ["images"], ["det_classes"], axes=[1, 2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "end2end",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [
            helper.make_tensor_value_info("num_dets", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [1, 64, 64]),
            helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [1, 64]),
            helper.make_tensor_value_info("det_classes", TensorProto.FLOAT, [1, 64]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write `model` to `path` and return the path."""
    onnx.save(model, str(path))
    return path
