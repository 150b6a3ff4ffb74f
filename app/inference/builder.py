"""Synthetic DAMO-YOLO networks: the official architectures with seeded random weights.

`build_model` returns an ONNX graph with the exact layer structure of an official DAMO-YOLO
release in deploy form (RepConv branches merged into one 3x3 conv, BatchNorm folded into the
convs), so its size, FLOPs, latency and memory are true to life, while its weights are
deterministic random numbers (detections are meaningless). Architectures follow the official
configs `configs/damoyolo_tinynas*.py` and structure files of tinyvision/DAMO-YOLO.

ONNX contract (the same as an official export with post-processing and without NMS, plus a
dynamic batch axis):

* input `images`: float32 [batch, 3, S, S], RGB, raw 0..255 values (no mean/std);
* output `scores`: float32 [batch, N, C], sigmoid class scores;
* output `boxes`: float32 [batch, N, 4], x1, y1, x2, y2 in input pixels;

with N = sum over strides 8, 16, 32 of (S / stride)^2, opset 17, IR version 8, and metadata
props `synthetic`, `variant`, `seed`, `input_size`, `names` (JSON list) and `producer`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from app.inference._arch_backbone import BackboneSpec, Stage, build_backbone
from app.inference._arch_head import STRIDES, build_head
from app.inference._arch_neck import NeckSpec, build_neck
from app.inference._onnx_graph import GraphBuilder, Tensor
from app.inference.files import write_atomically
from app.inference.labels import default_class_names

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; loadable by older onnxruntimes
PRODUCER = "phone-detector"
INPUT_NAME = "images"
CALIBRATION_SEED = 20240601


@dataclass(frozen=True)
class VariantSpec:
    """One official DAMO-YOLO model: its published size/cost (80 classes) and architecture."""

    name: str
    official_name: str
    input_size_px: int
    published_params_m: float
    published_gflops: float
    backbone: BackboneSpec
    neck: NeckSpec
    reg_max: int


def _k1kx(cin: int, cout: int, btn: int, stride: int, num_blocks: int) -> Stage:
    """A SuperResConvK1KX stage (k=3) of a structure file."""
    return Stage(cin, cout, 3, stride, btn, num_blocks)


def _kxkx(cin: int, cout: int, btn: int, stride: int, num_blocks: int) -> Stage:
    """A SuperResConvKXKX stage (k=3) of a structure file."""
    return Stage(cin, cout, 3, stride, btn, num_blocks, kxkx=True)


VARIANTS: dict[str, VariantSpec] = {
    # configs/damoyolo_tinynasL20_N.py + nas_backbones/tinynas_L20_k1kx_nano.txt: TinyNAS_mob
    # (depthwise MobileV3 blocks), SiLU everywhere, depthwise neck, reg_max 7, as released in
    # v0.3.0 (commit 483922c). Its published 2.2 M params count squeeze-excite in the backbone
    # (use_se=True there) and in the neck blocks; without backbone SE (as f0a7c14 later set)
    # it would be 1.93 M. See MOB_EXP_RATIO for the later nano redesign.
    "N": VariantSpec(
        name="N",
        official_name="damoyolo_tinynasL20_N",
        input_size_px=416,
        published_params_m=2.2,
        published_gflops=3.0,
        backbone=BackboneSpec(
            kind="mob",
            stages=(
                Stage(3, 16, 3, 1),
                _k1kx(16, 40, 24, 2, 2),
                _k1kx(40, 80, 64, 2, 2),
                _k1kx(80, 112, 40, 2, 2),
                _k1kx(112, 112, 152, 1, 2),
                _k1kx(112, 160, 192, 2, 1),
            ),
            act="silu",
            out_indices=(2, 4, 5),
            use_se=True,
        ),
        neck=NeckSpec(0.5, 0.5, (80, 112, 160), (64, 128, 256), "silu", depthwise=True),
        reg_max=7,
    ),
    # configs/damoyolo_tinynasL20_T.py + tinynas_L20_k1kx.txt: TinyNAS_res, ReLU.
    "T": VariantSpec(
        name="T",
        official_name="damoyolo_tinynasL20_T",
        input_size_px=640,
        published_params_m=8.5,
        published_gflops=18.1,
        backbone=BackboneSpec(
            kind="res",
            stages=(
                Stage(3, 24, 3, 1),
                _k1kx(24, 64, 24, 2, 2),
                _k1kx(64, 96, 64, 2, 2),
                _k1kx(96, 192, 96, 2, 2),
                _k1kx(192, 192, 152, 1, 2),
                _k1kx(192, 384, 192, 2, 1),
            ),
            act="relu",
            out_indices=(2, 4, 5),
        ),
        neck=NeckSpec(1.0, 1.0, (96, 192, 384), (64, 128, 256), "relu"),
        reg_max=16,
    ),
    # configs/damoyolo_tinynasL25_S.py + tinynas_L25_k1kx.txt: TinyNAS_res, ReLU.
    "S": VariantSpec(
        name="S",
        official_name="damoyolo_tinynasL25_S",
        input_size_px=640,
        published_params_m=16.3,
        published_gflops=37.8,
        backbone=BackboneSpec(
            kind="res",
            stages=(
                Stage(3, 32, 3, 1),
                _k1kx(32, 128, 24, 2, 1),
                _k1kx(128, 128, 88, 2, 5),
                _k1kx(128, 256, 128, 2, 3),
                _k1kx(256, 256, 120, 1, 2),
                _k1kx(256, 512, 144, 2, 1),
            ),
            act="relu",
            out_indices=(2, 4, 5),
        ),
        neck=NeckSpec(1.0, 0.75, (128, 256, 512), (128, 256, 512), "relu"),
        reg_max=16,
    ),
    # configs/damoyolo_tinynasL35_M.py + tinynas_L35_kxkx.txt: TinyNAS_csp, SiLU.
    "M": VariantSpec(
        name="M",
        official_name="damoyolo_tinynasL35_M",
        input_size_px=640,
        published_params_m=28.2,
        published_gflops=61.8,
        backbone=BackboneSpec(
            kind="csp",
            stages=(
                Stage(3, 32, 3, 1),
                _kxkx(32, 128, 64, 2, 2),
                _kxkx(128, 128, 64, 2, 4),
                _kxkx(128, 256, 256, 2, 4),
                _kxkx(256, 256, 256, 1, 4),
                _kxkx(256, 512, 256, 2, 3),
            ),
            act="silu",
            out_indices=(2, 3, 4),
        ),
        neck=NeckSpec(1.5, 1.0, (128, 256, 512), (128, 256, 512), "silu"),
        reg_max=16,
    ),
}


def class_names(num_classes: int) -> list[str]:
    """COCO-80 names for 80 classes, ["phone"] for 1, otherwise "class_<i>"."""
    return default_class_names(num_classes)


def calibration_size(input_size_px: int) -> int:
    """Side of the calibration image: half the input, rounded to a multiple of stride 32.

    A quarter of the pixels keeps building fast; the per-channel statistics of noise barely
    depend on the image size, and the head's scores are normalised per image (_arch_head).
    """
    return max(64, round(input_size_px / 2 / 32) * 32)


def calibration_images(size: int) -> npt.NDArray[np.float32]:
    """The fixed [1, 3, size, size] batch the weights are fitted on: uniform 0..255 noise."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    return rng.uniform(0.0, 255.0, (1, 3, size, size)).astype(np.float32)


def build_model(variant: str, *, num_classes: int = 80, seed: int = 0) -> onnx.ModelProto:
    """Build the synthetic network for `variant` ("N", "T", "S" or "M").

    Deterministic: the same arguments give the same model (bit for bit with the same numpy
    build, as the weight scales come from floating-point statistics on a fixed calibration
    image). Raises ValueError for an unknown variant or `num_classes < 1`.
    """
    spec = VARIANTS.get(variant)
    if spec is None:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")

    size = spec.input_size_px
    g = GraphBuilder(seed)
    images = Tensor(INPUT_NAME, calibration_images(calibration_size(size)))
    feats = build_backbone(g, images, spec.backbone)
    feats = build_neck(g, feats, spec.neck)
    scores, boxes = build_head(
        g, feats, num_classes=num_classes, reg_max=spec.reg_max, input_size_px=size
    )

    anchors = sum((size // s) ** 2 for s in STRIDES)
    graph = helper.make_graph(
        g.nodes,
        f"damoyolo_{spec.name}_synthetic",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [
            helper.make_tensor_value_info(
                scores, TensorProto.FLOAT, ["batch", anchors, num_classes]
            ),
            helper.make_tensor_value_info(boxes, TensorProto.FLOAT, ["batch", anchors, 4]),
        ],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        doc_string=f"Synthetic {spec.official_name}: official architecture, random weights.",
    )
    model.ir_version = IR_VERSION
    metadata = {
        "synthetic": "true",
        "variant": spec.name,
        "official_name": spec.official_name,
        "seed": str(seed),
        "input_size": str(size),
        "names": json.dumps(class_names(num_classes)),
        "producer": PRODUCER,
    }
    helper.set_model_props(model, metadata)
    return model


def build_model_file(variant: str, out_path: Path, *, num_classes: int = 80, seed: int = 0) -> Path:
    """Build `variant` and write it to `out_path` atomically; return `out_path`.

    The file is written to a temporary file in the same directory and renamed over
    `out_path`, so readers never see a partial model. Same arguments give identical bytes.
    """
    model = build_model(variant, num_classes=num_classes, seed=seed)
    data = model.SerializeToString(deterministic=True)
    return write_atomically(Path(out_path), data)
