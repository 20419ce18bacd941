"""Calibration frames from camera recordings: every Nth frame of each video, as JPEG files.

INT8 calibration wants a few hundred images like the cameras' (docs/precision.md); the
recordings users already have are the best source. OpenCV (installed with Ultralytics) reads
the videos, so nothing is added to the install.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_path, check_writable


@dataclass
class FramesResult:
    out: Path
    written: list[Path] = field(default_factory=list)
    per_video: dict[str, int] = field(default_factory=dict)   # video path -> frames written

    def to_json(self) -> dict:
        return {"out": str(self.out), "frames": len(self.written), "per_video": self.per_video}


def extract_frames(videos: Iterable[Path], out: Path, every: int = 30, limit: int | None = None,
                   quality: int = 95, log: Callable[[str], None] = lambda m: None) -> FramesResult:
    """Write frame 0, N, 2N... of each video to ``out`` as ``<video stem>_<frame index>.jpg``
    (at most ``limit`` frames in all). Every video is opened and checked before anything is
    written, so a wrong path leaves ``out`` untouched; an existing file of the same name is
    replaced (the same video gives the same frames)."""
    import cv2
    videos = [Path(v) for v in videos]
    if not videos:
        raise PipelineError("no video given", fix="pass one or more recordings: engines frames cam1.mp4 --out DIR")
    if every < 1 or (limit is not None and limit < 1):
        raise PipelineError(f"--every must be 1 or more (got {every}) and --limit too (got {limit})",
                            fix="pass --every 30 to keep one frame a second of a 30 fps recording")
    captures = []
    try:
        for v in videos:   # all opened first: a typo in the third path writes nothing
            cap = cv2.VideoCapture(str(v)) if v.is_file() else None
            if cap is None or not cap.isOpened():
                raise PipelineError("not a video OpenCV can read" if v.is_file() else "video not found", file=v,
                                    fix="check the path; convert the recording to MP4 (H.264) or AVI (MJPG), e.g. "
                                        f"`ffmpeg -i {v} {v.with_suffix('.mp4').name}`, if OpenCV cannot decode it")
            captures.append((v, cap))
        out.mkdir(parents=True, exist_ok=True)
        why = check_writable(out)
        if why:
            raise PipelineError(f"output folder is not writable: {why}", file=out,
                                fix="pass --out with a folder you can write")
        res = FramesResult(out)
        for v, cap in captures:
            names = {p.name for p in res.written}
            stem = v.stem if f"{v.stem}_000000.jpg" not in names else f"{v.parent.name}_{v.stem}"
            index = kept = 0
            while limit is None or len(res.written) < limit:
                ok, frame = cap.read()
                if not ok:
                    break
                if index % every == 0:
                    dest = out / f"{stem}_{index:06d}.jpg"
                    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
                    if not ok:
                        raise PipelineError(f"could not encode frame {index} as JPEG", file=v,
                                            fix="convert the recording to MP4 (H.264) and run again")
                    with atomic_path(dest, suffix=".jpg") as tmp:
                        tmp.write_bytes(buf.tobytes())
                    res.written.append(dest)
                    kept += 1
                index += 1
            if index == 0:
                raise PipelineError("the video has no frame OpenCV can decode", file=v,
                                    fix="convert the recording to MP4 (H.264) and run again; frames written so far "
                                        f"stay in {out}")
            res.per_video[str(v)] = kept
            log(f"{v}: {kept} frames of {index} (every {every}) -> {out}")
    finally:
        for _, cap in captures:
            cap.release()
    return res
