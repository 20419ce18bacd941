"""Reference images, letterboxed exactly as Ultralytics does for inference."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def bundled_images() -> list[Path]:
    """``bus.jpg`` and ``zidane.jpg`` shipped inside the ultralytics package."""
    from importlib.util import find_spec
    spec = find_spec("ultralytics")
    assets = Path(spec.origin).parent / "assets"
    return [assets / "bus.jpg", assets / "zidane.jpg"]


def reference_images(extra_folder: Path | None = None) -> list[Path]:
    imgs = bundled_images()
    if extra_folder is not None and extra_folder.is_dir():
        imgs += sorted(p for p in extra_folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return imgs


def letterbox(img: np.ndarray, imgsz: int, color: int = 114) -> np.ndarray:
    """Resize keeping aspect ratio and pad to ``imgsz`` square, centred (Ultralytics'
    ``LetterBox(auto=False, center=True)``: INTER_LINEAR resize, grey 114 padding)."""
    import cv2
    h, w = img.shape[:2]
    r = min(imgsz / h, imgsz / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (imgsz - new_w) / 2, (imgsz - new_h) / 2
    if (w, h) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT,
                              value=(color, color, color))


class UnreadableImage(PipelineError, ValueError):
    """An image file that does not decode (corrupt, truncated, or not an image)."""


def preprocess(path: Path, imgsz: int) -> np.ndarray:
    """Image file -> float32 CHW RGB in [0, 1], letterboxed."""
    import cv2
    img = cv2.imread(str(path))
    if img is None:
        raise UnreadableImage("a reference image cannot be read (corrupt, truncated, or not an image despite its "
                              "name)", file=path,
                              fix=f"replace or remove {Path(path).name} in the verify_images folder named in "
                                  "models.yaml, then run again; nothing was published")
    lb = letterbox(img, imgsz)
    return np.ascontiguousarray(lb[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def batches(paths: list[Path], imgsz: int, batch: int) -> list[np.ndarray]:
    """Group images into full batches of ``batch`` (the last one padded by repeating)."""
    arrays = [preprocess(p, imgsz) for p in paths]
    out = []
    for i in range(0, len(arrays), batch):
        chunk = arrays[i:i + batch]
        while len(chunk) < batch:
            chunk.append(arrays[len(chunk) % len(arrays)])
        out.append(np.stack(chunk))
    return out
