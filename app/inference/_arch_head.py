"""DAMO-YOLO ZeroHead as exported with `export_with_post=True, nms=False`.

Per level (strides 8, 16, 32) the head is just two 3x3 convs on the neck map (stacked_convs=0,
last_kernel_size=3): `gfl_cls` -> sigmoid scores, and `gfl_reg` -> 4 * (reg_max + 1) logits,
a softmax over the reg_max + 1 bins of each side and the integral against [0 .. reg_max]
(the distribution focal loss decoding). Distances (l, t, r, b) are scaled by the level's
stride and applied to the level's prior points, which in the official code are the grid
corners (col * stride, row * stride), not cell centres.

One synthetic-only addition keeps the scores detector-like for any input: the class logits
of a level are divided by their per-image maximum magnitude (plus a floor) before the prior
is added (see `_bounded_logits`). A random network has no notion of objects, and how far its
raw logits spread depends on the picture (noise, flat shapes, a black frame); normalised,
only the few strongest (anchor, class) pairs of a level can pass a 0.35 threshold, whatever
the picture. The extra elementwise ops cost well under 0.1 % of the network's time.
"""

from __future__ import annotations

import math

import numpy as np

from app.inference._onnx_graph import GraphBuilder, Tensor

STRIDES = (8, 16, 32)
# Detector-like class prior: logits sit at -log((1 - p) / p), so most scores are near p.
PRIOR_PROB = 0.01
# Logit = prior + CLS_GAIN * z / (max |z| + CLS_FLOOR), z in units of the calibrated std.
# A pair passes a 0.35 threshold (logit -0.62, prior -4.60) only when z exceeds 0.8 of
# (max |z| + CLS_FLOOR): a handful of pairs per image on noise or a scene of flat shapes
# (measured 0-30 over the four variants and two seeds), none when the level is nearly flat
# (max |z| under CLS_FLOOR, e.g. a black frame). Scores never exceed sigmoid(prior + gain).
CLS_GAIN = 5.0
CLS_FLOOR = 1.5
# Std of the box-bin logits: a soft distribution, so boxes are a few strides wide.
REG_LOGIT_STD = 1.0


def _shape(g: GraphBuilder, *dims: int) -> str:
    return g.constant("shape", np.array(dims, dtype=np.int64))


def _scalar(g: GraphBuilder, value: float) -> str:
    return g.constant("scalar", np.array(value, dtype=np.float32))


def _bounded_logits(g: GraphBuilder, z: str, prior: float) -> str:
    """prior + CLS_GAIN * z / (max over the level of |z|, per image, + CLS_FLOOR)."""
    peak = g.op("ReduceMax", [g.op("Abs", [z])], axes=[1, 2, 3], keepdims=1)
    normed = g.op("Div", [z, g.op("Add", [peak, _scalar(g, CLS_FLOOR)])])
    return g.op("Add", [g.op("Mul", [normed, _scalar(g, CLS_GAIN)]), _scalar(g, prior)])


def build_head(
    g: GraphBuilder,
    feats: list[Tensor],
    *,
    num_classes: int,
    reg_max: int,
    input_size_px: int,
) -> tuple[str, str]:
    """Append the head and decoding; return the names of the `scores` and `boxes` outputs."""
    bins = reg_max + 1
    prior = -math.log((1.0 - PRIOR_PROB) / PRIOR_PROB)
    scores, dists, points, scales = [], [], [], []
    for feat, stride in zip(feats, STRIDES, strict=True):
        side = input_size_px // stride
        cells = side * side
        # zero_sum: the outputs follow local structure, not the per-image level of a feature.
        cls = g.conv(feat, num_classes, 3, act="identity", bias=0.0, zero_sum=True)
        reg = g.conv(feat, 4 * bins, 3, act="identity", out_std=REG_LOGIT_STD, zero_sum=True)
        # scores: [b, C, H, W] -> sigmoid -> [b, C, HW] -> [b, HW, C]
        prob = g.op("Sigmoid", [_bounded_logits(g, cls.name, prior)])
        flat = g.op("Reshape", [prob, _shape(g, -1, num_classes, cells)])
        scores.append(g.op("Transpose", [flat], perm=[0, 2, 1]))
        # box logits: [b, 4 * bins, H, W] -> [b, 4, bins, HW] -> [b, HW, 4, bins], softmax
        # over the bins (last axis after the transpose: the same maths as the official
        # softmax on the bin axis, in the layout onnxruntime's kernel handles fastest)
        grouped = g.op("Reshape", [reg.name, _shape(g, -1, 4, bins, cells)])
        dists.append(g.op("Softmax", [g.op("Transpose", [grouped], perm=[0, 3, 1, 2])], axis=-1))
        cols, rows = np.meshgrid(np.arange(side), np.arange(side))
        xy = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32) * stride
        points.append(np.concatenate([xy, xy], axis=1))
        signs = np.array([-1.0, -1.0, 1.0, 1.0], dtype=np.float32)
        scales.append(np.tile(signs * stride, (cells, 1)))

    all_scores = g.op("Concat", scores, axis=1, output="scores")
    project = np.arange(bins, dtype=np.float32).reshape(bins, 1)
    integral = g.op("MatMul", [g.op("Concat", dists, axis=1), g.constant("project", project)])
    total = sum((input_size_px // s) ** 2 for s in STRIDES)
    dist = g.op("Reshape", [integral, _shape(g, -1, total, 4)])
    # boxes = point + d * stride * (-1, -1, +1, +1): x1 = px - l, y1 = py - t, x2 = px + r, ...
    signed = g.op("Mul", [dist, g.constant("box_scale", np.concatenate(scales))])
    boxes = g.op("Add", [signed, g.constant("points", np.concatenate(points))], output="boxes")
    return all_scores, boxes
