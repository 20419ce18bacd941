"""tasks.compare: matching reference detections against a candidate's."""
from __future__ import annotations

import numpy as np


def test_identical_outputs_match_completely_even_with_zero_area_boxes():
    """Found by the tiny model of tests/backends/test_onnxruntime.py: a zero-width box (a black pixel read as w=0) has IoU 0
    with itself, so identical outputs reported a match rate below 1."""
    from pipeline.tasks.compare import match
    det = {"boxes": np.array([[5.0, 5.0, 5.0, 9.0], [1.0, 1.0, 4.0, 4.0]], np.float32),
           "scores": np.array([0.9, 0.8], np.float32), "classes": np.array([0, 1]), "kpts": None}
    m = match(det, det)
    assert m["matched"] == 2 and m["ious"] == [1.0, 1.0]
    other = dict(det, boxes=det["boxes"] + np.array([0.0, 0.0, 0.0, 1.0], np.float32))  # not identical
    assert match(det, other)["matched"] == 1
