"""Raw model outputs for one image -> phone detections in original-image pixels."""

import numpy as np

from app.inference.labels import PHONE_LABEL
from app.inference.types import Box, Detection, DetectOptions

# Candidates kept before NMS: bounds NMS cost when a model (or a synthetic one) is noisy.
MAX_NMS_CANDIDATES = 1000


def select_detections(
    scores: np.ndarray,
    boxes: np.ndarray,
    *,
    phone_class_ids: list[int],
    scale: float,
    original_size_px: tuple[int, int],
    options: DetectOptions,
) -> list[Detection]:
    """Threshold, class-aware NMS and cap the phone classes of one image's outputs.

    `scores` is [N, C] (already sigmoid), `boxes` is [N, 4] x1,y1,x2,y2 in input pixels;
    `scale` maps original to input pixels. Returns detections sorted by score, highest first,
    with boxes mapped back and clipped to the original image.
    """
    if not phone_class_ids:
        return []
    class_ids = np.asarray(phone_class_ids, dtype=np.int64)
    phone_scores = scores[:, class_ids]  # [N, P]
    anchor_idx, column = np.nonzero(phone_scores >= options.score_threshold)
    if anchor_idx.size == 0:
        return []
    cand_scores = phone_scores[anchor_idx, column].astype(np.float32)
    cand_boxes = boxes[anchor_idx].astype(np.float32)
    cand_classes = class_ids[column]
    if cand_scores.size > MAX_NMS_CANDIDATES:
        top = np.argpartition(-cand_scores, MAX_NMS_CANDIDATES)[:MAX_NMS_CANDIDATES]
        cand_scores, cand_boxes, cand_classes = cand_scores[top], cand_boxes[top], cand_classes[top]

    keep = class_aware_nms(cand_boxes, cand_scores, cand_classes, options.iou_threshold)
    keep = keep[: options.max_detections]

    width, height = original_size_px
    mapped = cand_boxes[keep] / scale
    mapped[:, [0, 2]] = np.clip(mapped[:, [0, 2]], 0, width)
    mapped[:, [1, 3]] = np.clip(mapped[:, [1, 3]], 0, height)
    return [
        Detection(
            label=PHONE_LABEL,
            class_id=int(cls),
            score=round(float(score), 4),
            box=Box(*(round(float(v), 1) for v in box)),
        )
        for box, score, cls in zip(mapped, cand_scores[keep], cand_classes[keep], strict=True)
    ]


def class_aware_nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Greedy NMS within each class; returns kept indices ordered by score, highest first.

    A box is suppressed when its IoU with a higher-scoring kept box of the same class is
    above `iou_threshold`. Equal scores keep their input order (stable sort).
    """
    if boxes.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    # Shifting each class into its own coordinate range makes one pass class-aware.
    span = float(np.abs(boxes).max()) + 1.0
    shifted = boxes + (classes.astype(np.float32) * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (shifted[:, i] for i in range(4))
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        inter_w = np.maximum(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0)
        inter_h = np.maximum(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0)
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
