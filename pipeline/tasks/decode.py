"""Decoders: a model's raw outputs -> per image detections, one per output layout.

Layouts (ultralytics 8.4, measured on every bundled family):
- raw one-to-many (``nms`` unset): ``output0`` (B, 4+nc+E, N), boxes xywh in pixels, class
  scores after sigmoid, then E task channels (32 mask coefficients, K*3 keypoints, 1 angle);
  segment adds ``output1``, the prototypes (B, 32, H/4, W/4);
- NMS-free (``end2end``: YOLO26/YOLOv10 with ``nms: false``, and RT-DETR): ``output0``
  (B, 300, 6+E) = x1 y1 x2 y2 score class, then E; OBB keeps xywh there, RT-DETR writes
  cx cy w h normalised to 0..1;
- classify: ``output0`` (B, nc) probabilities.
Every decoder returns, per image, a dict with ``boxes``, ``scores``, ``classes`` and the task's
own keys (``kpts``, ``masks``, rotated ``boxes`` as xywhr), or ``probs`` for classify.
"""
from __future__ import annotations

from pipeline.tasks.geometry import nms, np, rotated_nms, xywh2xyxy

CONF = 0.25      # Ultralytics' default predict confidence
IOU_NMS = 0.7    # Ultralytics' default NMS IoU
CLASS_OFFSET = 7680.0   # class-aware NMS by offsetting boxes per class, as Ultralytics does
MASK_CHANNELS = 32


def _rows(head, out0: np.ndarray) -> tuple[np.ndarray, bool]:
    """(B, N, C) candidate rows and whether they are NMS-free rows (already one per object)."""
    out0 = np.asarray(out0, dtype=np.float32)
    if head.end2end or head.rtdetr:
        return out0, True
    return out0.transpose(0, 2, 1), False


def _split_raw(head, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw rows -> (boxes xywh, score, class, task channels), thresholded at CONF."""
    cls_scores = p[:, 4:4 + head.nc]
    cls = cls_scores.argmax(1)
    score = cls_scores[np.arange(len(p)), cls]
    keep = score > CONF
    return p[keep, :4], score[keep], cls[keep], p[keep, 4 + head.nc:]


def _split_end2end(head, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    keep = p[:, 4] > CONF
    p = p[keep]
    boxes = p[:, :4]
    if head.rtdetr:   # cx cy w h in 0..1
        boxes = xywh2xyxy(boxes * head.imgsz)
    return boxes, p[:, 4], p[:, 5].astype(int), p[:, 6:]


def decode_boxes(head, outputs: dict) -> list[dict]:
    """Detect, pose and segment (axis-aligned boxes) in any layout."""
    rows, end2end = _rows(head, outputs["output0"])
    protos = outputs.get("output1")
    results = []
    for b, p in enumerate(rows):
        if end2end:
            boxes, score, cls, extra = _split_end2end(head, p)
            idx = np.arange(len(score))
        else:
            xywh, score, cls, extra = _split_raw(head, p)
            boxes = xywh2xyxy(xywh)
            idx = nms(boxes + cls[:, None] * CLASS_OFFSET, score, IOU_NMS) if len(score) else np.array([], int)
        det = {"boxes": boxes[idx], "scores": score[idx], "classes": cls[idx], "kpts": None, "masks": None}
        extra = extra[idx]
        if head.kpt_shape:
            k, dim = head.kpt_shape
            kp = extra[:, :k * dim].reshape(len(idx), k, dim)
            det["kpts"] = kp
        if protos is not None:
            det["masks"] = masks_of(protos[b], extra[:, :MASK_CHANNELS], det["boxes"], head.imgsz)
        results.append(det)
    return results


def masks_of(protos: np.ndarray, coefs: np.ndarray, boxes: np.ndarray, imgsz: int) -> np.ndarray:
    """Binary masks at prototype resolution, cropped to each box, as Ultralytics' process_mask."""
    c, h, w = protos.shape
    logits = coefs.astype(np.float32) @ protos.reshape(c, -1).astype(np.float32)
    masks = logits.reshape(-1, h, w) > 0.0   # sigmoid > 0.5
    scale = np.array([w / imgsz, h / imgsz, w / imgsz, h / imgsz])
    xs, ys = np.arange(w)[None, None, :], np.arange(h)[None, :, None]
    bx = boxes * scale
    inside = ((xs >= bx[:, 0, None, None]) & (xs < bx[:, 2, None, None])
              & (ys >= bx[:, 1, None, None]) & (ys < bx[:, 3, None, None]))
    return masks & inside


def decode_rotated(head, outputs: dict) -> list[dict]:
    """OBB: rotated boxes (xywhr), rotated NMS by ProbIoU on the raw layout."""
    rows, end2end = _rows(head, outputs["output0"])
    results = []
    for p in rows:
        if end2end:
            keep = p[:, 4] > CONF
            p = p[keep]
            boxes = np.concatenate([p[:, :4], p[:, 6:7]], 1)
            score, cls = p[:, 4], p[:, 5].astype(int)
            idx = np.arange(len(score))
        else:
            xywh, score, cls, extra = _split_raw(head, p)
            boxes = np.concatenate([xywh, extra[:, :1]], 1)
            shifted = boxes.copy()
            shifted[:, :2] += cls[:, None] * CLASS_OFFSET
            idx = rotated_nms(shifted, score, IOU_NMS) if len(score) else np.array([], int)
        results.append({"boxes": boxes[idx], "scores": score[idx], "classes": cls[idx], "kpts": None,
                        "masks": None, "rotated": True})
    return results


def decode_probs(head, outputs: dict) -> list[dict]:
    """Classify: one probability vector per image."""
    return [{"probs": p} for p in np.asarray(outputs["output0"], dtype=np.float32)]
