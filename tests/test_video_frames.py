"""Calibration frames from recordings: a real video written by OpenCV, read back by the helper."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.video_frames import extract_frames


def write_video(path: Path, frames: int = 20, size=(64, 48)) -> Path:
    """An MJPG AVI whose frame i is a flat grey of level 10*i (so a frame's index can be read back)."""
    import cv2
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert w.isOpened()
    for i in range(frames):
        w.write(np.full((size[1], size[0], 3), 10 * i, np.uint8))
    w.release()
    return path


def test_every_nth_frame_is_written_as_a_jpeg(tmp_path):
    import cv2
    video = write_video(tmp_path / "cam1.avi")
    res = extract_frames([video], tmp_path / "calib", every=5)
    assert [p.name for p in res.written] == [f"cam1_{i:06d}.jpg" for i in (0, 5, 10, 15)]
    assert res.per_video == {str(video): 4}
    levels = [int(cv2.imread(str(p)).mean()) for p in res.written]
    assert all(abs(got - 10 * i) <= 3 for got, i in zip(levels, (0, 5, 10, 15))), levels
    assert not [p for p in (tmp_path / "calib").iterdir() if p.name.startswith(".")]   # no temp file left


def test_limit_counts_frames_over_all_videos_and_same_stems_do_not_collide(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    v1, v2 = write_video(tmp_path / "a" / "cam.avi"), write_video(tmp_path / "b" / "cam.avi")
    res = extract_frames([v1, v2], tmp_path / "out", every=4, limit=7)
    assert len(res.written) == 7 and len(set(res.written)) == 7
    assert res.per_video == {str(v1): 5, str(v2): 2}


def test_a_missing_or_unreadable_video_writes_nothing(tmp_path):
    good = write_video(tmp_path / "good.avi")
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    for bad, what in ((tmp_path / "gone.mp4", "video not found"), (not_video, "not a video OpenCV can read")):
        with pytest.raises(PipelineError, match=what) as e:
            extract_frames([good, bad], tmp_path / "out", every=5)
        assert str(bad) in str(e.value) and "ffmpeg" in e.value.fix
        assert not (tmp_path / "out").exists()   # checked before anything is written
    with pytest.raises(PipelineError, match="--every must be 1 or more"):
        extract_frames([good], tmp_path / "out", every=0)
