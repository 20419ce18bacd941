"""A small labelled set for the accuracy gate, made from a model's own confident detections
(used by tests/test_precision.py and benchmarks/bench_precision.py; no dataset is committed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def labelled_set(ws: Path, onnx_file: Path, imgsz: int, n: int = 6) -> Path:
    """Images at imgsz on the long side (no resize later: Ultralytics' val and our letterbox
    agree), labelled with the FP32 ONNX's own confident detections; PNG, so nothing is lost."""
    import ast

    import cv2
    import onnxruntime as ort
    import yaml

    from pipeline.checks.images import bundled_images, letterbox
    from pipeline.tasks import Head, decode
    root = ws / "labelled"
    (root / "images/val").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    meta = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    names = ast.literal_eval(meta["names"])
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for i in range(n):
        img = cv2.imread(str(bundled_images()[i % 2]))
        if i >= 2:
            h, w = img.shape[:2]
            img = np.ascontiguousarray(img[h // (2 + i): h - h // (2 + i), :][:, ::-1])
        h, w = img.shape[:2]
        s = imgsz / max(h, w)
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
        x = np.ascontiguousarray(letterbox(img, imgsz)[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)[None] / 255
        d = decode.decode_boxes(Head("detect", len(names), imgsz=imgsz), {"output0": sess.run(None, {"images": x})[0]})[0]
        padx, pady = (imgsz - w) / 2, (imgsz - h) / 2
        rows = []
        for j in np.argsort(-d["scores"])[:15]:
            if d["scores"][j] < 0.5:
                continue
            x1, y1, x2, y2 = d["boxes"][j] - [padx, pady, padx, pady]
            x1, x2, y1, y2 = np.clip(x1, 0, w), np.clip(x2, 0, w), np.clip(y1, 0, h), np.clip(y2, 0, h)
            if x2 - x1 > 2 and y2 - y1 > 2:
                rows.append(f"{int(d['classes'][j])} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                            f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
        cv2.imwrite(str(root / f"images/val/im{i}.png"), img)
        (root / f"labels/val/im{i}.txt").write_text("\n".join(rows) + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "val": "images/val",
                                                    "names": {int(k): v for k, v in names.items()}}))
    return root / "data.yaml"
