"""tasks.decode: every output layout decoded on hand-made outputs whose detections are known
(raw one-to-many with class-aware NMS, NMS-free rows, RT-DETR's normalised boxes, keypoints,
rotated boxes, class probabilities)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.tasks import Head
from pipeline.tasks.decode import CONF, decode_boxes, decode_probs, decode_rotated


def raw(rows: list[list[float]]) -> np.ndarray:
    """One image's candidate rows (N, C) as the raw layout (1, C, N)."""
    return np.asarray(rows, np.float32).T[None]


def test_raw_rows_keep_confident_boxes_as_xyxy_and_nms_only_within_a_class():
    head = Head("detect", nc=2)
    out0 = raw([[50, 50, 20, 20, 0.9, 0.1],     # class 0
                [51, 50, 20, 20, 0.8, 0.1],     # the same object, less sure: suppressed
                [51, 50, 20, 20, 0.1, 0.7],     # same place, class 1: kept (NMS per class)
                [200, 200, 10, 10, CONF, 0.0]])  # at the threshold: dropped (score > CONF only)
    det, = decode_boxes(head, {"output0": out0})
    assert det["classes"].tolist() == [0, 1] and det["scores"] == pytest.approx([0.9, 0.7])
    assert det["boxes"][0].tolist() == [40, 40, 60, 60] and det["kpts"] is None and det["masks"] is None


def test_keypoints_follow_their_box():
    head = Head("pose", nc=1, kpt_shape=(2, 3))
    out0 = raw([[50, 50, 20, 20, 0.9, 45, 46, 0.9, 55, 56, 0.8],
                [300, 300, 20, 20, 0.1, 1, 1, 1, 1, 1, 1]])
    det, = decode_boxes(head, {"output0": out0})
    assert det["kpts"].shape == (1, 2, 3)
    np.testing.assert_allclose(det["kpts"][0], [[45, 46, 0.9], [55, 56, 0.8]], rtol=1e-6)


def test_nms_free_rows_are_taken_as_they_are_and_rtdetr_boxes_are_scaled_from_0_to_1():
    rows = np.asarray([[[10, 10, 30, 30, 0.9, 1], [10, 10, 30, 30, 0.8, 1], [0, 0, 1, 1, 0.1, 0]]], np.float32)
    det, = decode_boxes(Head("detect", nc=2, end2end=True), {"output0": rows})
    assert det["classes"].tolist() == [1, 1] and len(det["boxes"]) == 2     # no NMS on NMS-free rows
    detr = np.asarray([[[0.5, 0.5, 0.25, 0.5, 0.9, 0]]], np.float32)        # cx cy w h in 0..1
    det, = decode_boxes(Head("detect", nc=1, rtdetr=True, imgsz=640), {"output0": detr})
    assert det["boxes"][0].tolist() == [240, 160, 400, 480]


def test_rotated_boxes_keep_their_angle():
    head = Head("obb", nc=1)
    out0 = raw([[100, 100, 40, 20, 0.9, math.pi / 6], [400, 100, 40, 20, 0.2, 0.0]])
    det, = decode_rotated(head, {"output0": out0})
    assert det["rotated"] and det["boxes"].tolist() == [pytest.approx([100, 100, 40, 20, math.pi / 6])]


def test_class_probabilities_one_vector_per_image():
    probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], np.float32)
    out = decode_probs(Head("classify", nc=3), {"output0": probs})
    assert [int(o["probs"].argmax()) for o in out] == [1, 0]
