"""`engines frames` as users type it: exit codes, --json, and a paragraph on a bad path."""
from __future__ import annotations

import json

from tests.conftest import run_cli
from tests.test_video_frames import write_video


def test_frames_command_writes_frames_and_reports_them_in_json(tmp_path):
    video = write_video(tmp_path / "line1.avi", frames=12)
    res = run_cli("--json", "frames", str(video), "--out", str(tmp_path / "calib"), "--every", "3")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["frames"] == 4 and doc["per_video"] == {str(video): 4}
    assert sorted(p.name for p in (tmp_path / "calib").iterdir()) == [f"line1_{i:06d}.jpg" for i in (0, 3, 6, 9)]
    res = run_cli("frames", str(video), "--out", str(tmp_path / "calib2"))
    assert res.returncode == 0 and "1 frames in" in res.stdout


def test_frames_command_refuses_a_missing_video_with_a_paragraph(tmp_path):
    res = run_cli("frames", str(tmp_path / "cam.mp4"), "--out", str(tmp_path / "calib"))
    assert res.returncode == 1 and "video not found" in res.stderr and "Next step:" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "calib").exists()
    res = run_cli("frames", "--out", str(tmp_path / "calib"))
    assert res.returncode == 2   # no video: click's usage error


def test_frames_every_zero_is_a_usage_error(tmp_path):
    video = write_video(tmp_path / "line1.avi", frames=3)
    res = run_cli("frames", str(video), "--out", str(tmp_path / "calib"), "--every", "0")
    assert res.returncode == 2 and "--every" in res.stderr and not (tmp_path / "calib").exists()
