"""Small labelled sets for the accuracy gate, made from a model's own confident outputs
(used by tests/stages/test_precision.py and benchmarks/bench_precision.py; no dataset is committed).

Labels taken from the FP32 model's own outputs measure how far a candidate agrees with the FP32
model, not how accurate either is: the FP32 reference scores high on them by construction, and a
candidate's drop is its disagreement. One writer per label format of the task table
(``Task.labels``): boxes, boxes + keypoints, polygons from masks, rotated-box corners, and
class folders."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx

CONFIDENT = 0.25   # outputs below this score are not labels (Ultralytics predict's default conf)


def _meta(onnx_file: Path) -> dict:
    return {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}


def _frames(imgsz: int, n: int):
    """Square crops and flips of the bundled pictures at imgsz x imgsz: letterboxing (ours and the
    validator's, whose rectangular batches pad otherwise) and classification's resize-and-crop
    leave them as they are, so the validator sees the very input the labels came from."""
    import cv2

    from pipeline.checks.images import bundled_images
    for i in range(n):
        img = cv2.imread(str(bundled_images()[i % 2]))
        h, w = img.shape[:2]
        side = min(h, w) * (10 - i % 4) // 10
        y0, x0 = (h - side) * (i % 3) // 2, (w - side) * ((i // 2) % 3) // 2
        img = img[y0:y0 + side, x0:x0 + side]
        if i >= 2:
            img = np.ascontiguousarray(img[:, ::-1])
        h, w = img.shape[:2]
        s = imgsz / max(h, w)
        yield cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def _outputs(sess, img: np.ndarray, imgsz: int) -> dict:
    from pipeline.checks.images import letterbox
    x = np.ascontiguousarray(letterbox(img, imgsz)[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)[None] / 255
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"images": x})))


def _box_rows(d: dict, w: int, h: int, imgsz: int, kpts: bool = False) -> list[str]:
    padx, pady = (imgsz - w) / 2, (imgsz - h) / 2
    rows = []
    for j in np.argsort(-d["scores"])[:15]:
        if d["scores"][j] < CONFIDENT:
            continue
        x1, y1, x2, y2 = d["boxes"][j] - [padx, pady, padx, pady]
        x1, x2, y1, y2 = np.clip(x1, 0, w), np.clip(x2, 0, w), np.clip(y1, 0, h), np.clip(y2, 0, h)
        if x2 - x1 <= 2 or y2 - y1 <= 2:
            continue
        row = (f"{int(d['classes'][j])} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
               f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
        if kpts:   # x y visibility (2 visible, 0 not), normalised; an unseen point is written as 0 0 0
            for x, y, c in d["kpts"][j]:
                x, y = (x - padx) / w, (y - pady) / h
                seen = c > CONFIDENT and 0 <= x <= 1 and 0 <= y <= 1
                row += f" {x:.6f} {y:.6f} 2" if seen else " 0 0 0"
        rows.append(row)
    return rows


def _outline(mask: np.ndarray) -> np.ndarray | None:
    """One polygon whose fill is the mask: every outer contour, joined by bridges walked there and
    back (how Ultralytics' merge_multi_segment writes a multi-part COCO mask as one polygon); the
    demo weights' masks come in many pieces."""
    import cv2
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    parts = [c.reshape(-1, 2) for c in contours if len(c) >= 3 or len(contours) == 1]
    if not parts:
        return None
    entries, path = [], []
    for c in sorted(parts, key=lambda c: (c[:, 1].min(), c[:, 0].min())):
        k = 0 if not entries else int(np.argmin(((c - entries[-1]) ** 2).sum(1)))
        loop = np.concatenate([c[k:], c[:k + 1]])   # round the contour from its entry back to it
        path.append(loop)
        entries.append(c[k])
    path += [np.array(entries[-2::-1])] if len(entries) > 1 else []   # back along the bridges
    poly = np.concatenate(path).astype(np.float64)
    return poly if len(poly) >= 3 else None


def _polygon_rows(d: dict, w: int, h: int, imgsz: int) -> list[str]:
    """The outline of each confident detection's mask (at the input size) as one polygon."""
    import cv2
    padx, pady = (imgsz - w) / 2, (imgsz - h) / 2
    rows = []
    for j in np.argsort(-d["scores"])[:15]:
        if d["scores"][j] < CONFIDENT:
            continue
        m = cv2.resize(d["masks"][j].astype(np.uint8), (imgsz, imgsz), interpolation=cv2.INTER_NEAREST)
        c = _outline(m)
        if c is None:
            continue
        xs, ys = np.clip((c[:, 0] - padx) / w, 0, 1), np.clip((c[:, 1] - pady) / h, 0, 1)
        rows.append(f"{int(d['classes'][j])} " + " ".join(f"{x:.6f} {y:.6f}" for x, y in zip(xs, ys)))
    return rows


def _corner_rows(d: dict, w: int, h: int, imgsz: int) -> list[str]:
    """Each confident rotated box (xywhr, radians) as its 4 corners."""
    import cv2
    padx, pady = (imgsz - w) / 2, (imgsz - h) / 2
    rows = []
    for j in np.argsort(-d["scores"])[:15]:
        if d["scores"][j] < CONFIDENT:
            continue
        cx, cy, bw, bh, r = (float(v) for v in d["boxes"][j])
        if bw <= 2 or bh <= 2:
            continue
        corners = cv2.boxPoints(((cx, cy), (bw, bh), np.degrees(r)))
        xs, ys = np.clip((corners[:, 0] - padx) / w, 0, 1), np.clip((corners[:, 1] - pady) / h, 0, 1)
        rows.append(f"{int(d['classes'][j])} " + " ".join(f"{x:.6f} {y:.6f}" for x, y in zip(xs, ys)))
    return rows


WRITERS = {"box": lambda d, w, h, s: _box_rows(d, w, h, s), "keypoints": lambda d, w, h, s: _box_rows(d, w, h, s, True),
           "polygon": _polygon_rows, "rotated": _corner_rows}


def labelled_set(ws: Path, onnx_file: Path, imgsz: int, n: int = 6) -> Path:
    """Square images at imgsz (no resize later: Ultralytics' val and our letterbox agree),
    labelled in the task's format with the FP32 ONNX's own confident outputs; PNG, so
    nothing is lost. Returns the data.yaml, or for classify the dataset folder (val/<class>/)."""
    import cv2
    import onnxruntime as ort
    import yaml

    from pipeline.tasks import TASKS, Head, model_names
    meta = _meta(onnx_file)
    names, kpt = model_names(meta)
    task = TASKS[meta.get("task", "detect")]
    head = Head(task.name, len(names), kpt_shape=tuple(kpt) if kpt else None, imgsz=imgsz)
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    root = ws / "labelled"
    folders = task.labels == "folders"
    if not folders:
        (root / "images/val").mkdir(parents=True)
        (root / "labels/val").mkdir(parents=True)
    for i, img in enumerate(_frames(imgsz, n)):
        h, w = img.shape[:2]
        d = task.decode(head, _outputs(sess, img, imgsz))[0]
        if folders:   # the top-1 class names the folder
            (root / "val" / names[int(np.argmax(d["probs"]))]).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "val" / names[int(np.argmax(d["probs"]))] / f"im{i}.png"), img)
            continue
        cv2.imwrite(str(root / f"images/val/im{i}.png"), img)
        (root / f"labels/val/im{i}.txt").write_text("\n".join(WRITERS[task.labels](d, w, h, imgsz)) + "\n")
    if folders:
        return root
    data = {"path": ".", "val": "images/val", "names": {int(k): v for k, v in names.items()}}
    if kpt:
        data["kpt_shape"] = list(kpt)
        if meta.get("flip_idx"):
            data["flip_idx"] = list(ast.literal_eval(meta["flip_idx"]))
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"
