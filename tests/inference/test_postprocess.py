"""NMS and detection selection against hand-computed cases."""

import numpy as np
import pytest

from app.inference.postprocess import class_aware_nms, select_detections
from app.inference.types import DetectOptions


def _nms(
    boxes: list[list[float]], scores: list[float], classes: list[int], iou: float
) -> list[int]:
    return class_aware_nms(
        np.array(boxes, np.float32), np.array(scores, np.float32), np.array(classes), iou
    ).tolist()


def test_overlapping_same_class_boxes_merge() -> None:
    # IoU of [0,0,10,10] and [1,0,11,10] = 90 / 110 = 0.818
    assert _nms([[0, 0, 10, 10], [1, 0, 11, 10]], [0.8, 0.9], [0, 0], 0.5) == [1]


def test_overlap_below_threshold_keeps_both() -> None:
    # IoU of [0,0,10,10] and [5,0,15,10] = 50 / 150 = 0.333
    assert _nms([[0, 0, 10, 10], [5, 0, 15, 10]], [0.8, 0.9], [0, 0], 0.5) == [1, 0]
    assert _nms([[0, 0, 10, 10], [5, 0, 15, 10]], [0.8, 0.9], [0, 0], 0.3) == [1]


def test_different_classes_do_not_suppress_each_other() -> None:
    assert _nms([[0, 0, 10, 10], [0, 0, 10, 10]], [0.8, 0.9], [0, 1], 0.5) == [1, 0]


def test_ties_keep_input_order() -> None:
    boxes = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]
    assert _nms(boxes, [0.5, 0.5, 0.5], [0, 0, 0], 0.5) == [0, 1, 2]
    # an exact duplicate with the same score: the first one wins
    assert _nms([[0, 0, 10, 10], [0, 0, 10, 10]], [0.7, 0.7], [0, 0], 0.5) == [0]


def test_chain_suppression_is_greedy() -> None:
    # A suppresses B (IoU 0.82); C overlaps B but not A, so C survives.
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [10.5, 0, 20.5, 10]]
    assert _nms(boxes, [0.9, 0.8, 0.7], [0, 0, 0], 0.5) == [0, 2]


def test_empty_input() -> None:
    assert _nms([], [], [], 0.5) == []


def test_select_maps_back_clips_and_caps() -> None:
    scores = np.zeros((4, 3), np.float32)
    scores[:, 2] = [0.9, 0.2, 0.6, 0.95]
    scores[0, 0] = 0.99  # another class: not a phone, ignored
    boxes = np.array(
        [[10, 10, 20, 20], [0, 0, 5, 5], [100, 100, 120, 130], [300, 300, 400, 400]], np.float32
    )

    found = select_detections(
        scores,
        boxes,
        phone_class_ids=[2],
        scale=0.5,
        original_size_px=(700, 500),
        options=DetectOptions(score_threshold=0.5, iou_threshold=0.5, max_detections=2),
    )

    assert [d.score for d in found] == pytest.approx([0.95, 0.9])
    assert [d.label for d in found] == ["phone", "phone"]
    assert [d.class_id for d in found] == [2, 2]
    top = found[0].box
    assert (top.x1, top.y1, top.x2, top.y2) == (600, 500, 700, 500)  # 800x800 clipped
    second = found[1].box
    assert (second.x1, second.y1, second.x2, second.y2) == (20, 20, 40, 40)


def test_no_phone_classes_means_no_detections() -> None:
    scores = np.ones((2, 2), np.float32)
    boxes = np.zeros((2, 4), np.float32)
    assert (
        select_detections(
            scores,
            boxes,
            phone_class_ids=[],
            scale=1.0,
            original_size_px=(10, 10),
            options=DetectOptions(),
        )
        == []
    )
