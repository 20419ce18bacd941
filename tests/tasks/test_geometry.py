"""tasks.geometry: the box geometry every decoder and comparison uses, on boxes whose answer is
known by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.tasks import geometry as g


def test_xywh_becomes_corners():
    assert g.xywh2xyxy(np.array([[5.0, 5.0, 2.0, 4.0]])).tolist() == [[4.0, 3.0, 6.0, 7.0]]


def test_iou_of_same_half_overlapping_and_apart_boxes():
    a = np.array([[0.0, 0.0, 2.0, 2.0]])
    b = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    assert g.iou_matrix(a, b)[0] == pytest.approx([1.0, 2 / 6, 0.0])


def test_rotated_iou_is_exact():
    square = np.array([0.0, 0.0, 2.0, 2.0, 0.0])
    assert g.rotated_iou(square, square) == pytest.approx(1.0)
    # a 2x4 box turned a quarter is the 4x2 box
    assert g.rotated_iou(np.array([0.0, 0.0, 2.0, 4.0, math.pi / 2]),
                         np.array([0.0, 0.0, 4.0, 2.0, 0.0])) == pytest.approx(1.0, abs=1e-9)
    # a square and itself turned 45 degrees meet in a regular octagon of area 2 s^2 (sqrt 2 - 1)
    octagon = 2 * 4 * (math.sqrt(2) - 1)
    turned = np.array([0.0, 0.0, 2.0, 2.0, math.pi / 4])
    assert g.rotated_iou(square, turned) == pytest.approx(octagon / (8 - octagon), rel=1e-9)
    assert g.rotated_iou(square, np.array([10.0, 0.0, 2.0, 2.0, 0.3])) == 0.0


def test_rotated_iou_matrix_skips_pairs_too_far_apart_to_meet():
    a = np.array([[0.0, 0.0, 2.0, 2.0, 0.0]])
    b = np.array([[0.5, 0.0, 2.0, 2.0, 0.0], [100.0, 100.0, 2.0, 2.0, 0.0]])
    out = g.rotated_iou_matrix(a, b)
    assert out.shape == (1, 2) and out[0, 0] == pytest.approx(1.5 / 2.5) and out[0, 1] == 0.0
    assert g.rotated_iou_matrix(a, np.zeros((0, 5))).shape == (1, 0)


def test_probiou_is_one_for_the_same_box_and_near_zero_far_away():
    a = np.array([[0.0, 0.0, 4.0, 2.0, 0.2]])
    b = np.array([[0.0, 0.0, 4.0, 2.0, 0.2], [50.0, 50.0, 4.0, 2.0, 0.2]])
    out = g.probiou_matrix(a, b)[0]
    assert out[0] == pytest.approx(1.0, abs=1e-3) and out[1] < 1e-3


def test_nms_keeps_the_best_of_an_overlapping_pair_and_the_box_apart():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    scores = np.array([0.6, 0.9, 0.3])
    assert g.nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert g.nms(boxes, scores, 0.95).tolist() == [1, 0, 2]    # IoU 0.82: both kept


def test_rotated_nms_and_the_cap_on_detections():
    boxes = np.array([[0.0, 0.0, 4.0, 2.0, 0.0], [0.1, 0.0, 4.0, 2.0, 0.0], [30.0, 0.0, 4.0, 2.0, 0.0]])
    assert g.rotated_nms(boxes, np.array([0.5, 0.8, 0.7]), 0.5).tolist() == [1, 2]
    apart = np.arange(400, dtype=float)
    assert len(g.greedy_nms(apart, 0.5, lambda i, rest: np.zeros(len(rest)))) == g.MAX_DET
