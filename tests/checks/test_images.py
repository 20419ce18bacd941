"""Reference images are letterboxed exactly as Ultralytics' own inference does."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.checks.images import batches, bundled_images, letterbox


@pytest.mark.parametrize("imgsz", [320, 640])
def test_letterbox_matches_ultralytics(imgsz):
    from ultralytics.data.augment import LetterBox
    for path in bundled_images():
        img = cv2.imread(str(path))
        ours = letterbox(img, imgsz)
        theirs = LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=32)(image=img)
        assert ours.shape == theirs.shape == (imgsz, imgsz, 3)
        assert np.array_equal(ours, theirs), path.name


def test_batches_pad_by_repeating_and_scale_to_unit_range():
    b = batches(bundled_images(), 320, 3)
    assert len(b) == 1 and b[0].shape == (3, 3, 320, 320) and b[0].dtype == np.float32
    assert np.array_equal(b[0][2], b[0][0])  # the third slot repeats the first image
    assert 0.0 <= b[0].min() and b[0].max() <= 1.0
