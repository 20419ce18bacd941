"""Task-aware comparison: decode both outputs the same way, NMS, match boxes.

Tensor tolerances alone mislead for FP16 (a nearly tied DFL bin moves one box edge by
tens of pixels while every detection stays put), so the verdict rests on detections:
match rate by class and IoU, the score deltas and IoU of matches, and for pose the
keypoint error in pixels. Numpy only, so it runs wherever the reference runs.
"""
from __future__ import annotations

import ast
import sys

import numpy as np

CONF = 0.25      # Ultralytics' default predict confidence
IOU_NMS = 0.7    # Ultralytics' default NMS IoU
IOU_MATCH = 0.5  # a reference box is found if a same-class box overlaps it this much
MAX_DET = 300


def _xywh2xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    out[:, 0] = b[:, 0] - b[:, 2] / 2
    out[:, 1] = b[:, 1] - b[:, 3] / 2
    out[:, 2] = b[:, 0] + b[:, 2] / 2
    out[:, 3] = b[:, 1] + b[:, 3] / 2
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.clip(br - tl, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def _torchvision_nms():
    """torchvision's NMS kernel, only when torch is already loaded (the benchmarks):
    importing torch costs seconds, more than the numpy loop on a verification gate."""
    if "torch" not in sys.modules:
        return None, None
    try:
        import torch
        from torchvision.ops import nms as tv_nms
        return torch, tv_nms
    except ImportError:
        return None, None


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS: torchvision's kernel where torch is loaded (what Ultralytics runs;
    thousands of candidate boxes from untrained weights make the numpy loop slow), else numpy."""
    torch, tv_nms = _torchvision_nms()
    if tv_nms is not None:
        keep = tv_nms(torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
                      torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)), iou)
        return keep[:MAX_DET].numpy().astype(int)
    return nms_numpy(boxes, scores, iou)


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    order = scores.argsort()[::-1]
    keep = []
    while order.size and len(keep) < MAX_DET:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        ious = iou_matrix(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou]
    return np.array(keep, dtype=int)


def decode(output0: np.ndarray, nc: int, nkpt: int = 0) -> list[dict]:
    """(B, 4+nc+nkpt*3, N) -> per image {boxes xyxy, scores, classes, kpts (n, nkpt, 3)}."""
    results = []
    for pred in np.asarray(output0, dtype=np.float32):
        p = pred.T  # (N, 4+nc+...)
        cls_scores = p[:, 4:4 + nc]
        cls = cls_scores.argmax(1)
        score = cls_scores[np.arange(len(p)), cls]
        keep = score > CONF
        p, cls, score = p[keep], cls[keep], score[keep]
        boxes = _xywh2xyxy(p[:, :4])
        # class-aware NMS, as Ultralytics does by offsetting boxes per class
        idx = nms(boxes + cls[:, None] * 7680.0, score, IOU_NMS) if len(p) else np.array([], int)
        kpts = p[idx, 4 + nc:].reshape(len(idx), nkpt, 3) if nkpt else None
        results.append({"boxes": boxes[idx], "scores": score[idx], "classes": cls[idx], "kpts": kpts})
    return results


def match(ref: dict, out: dict) -> dict:
    """Greedy same-class matching at IOU_MATCH, highest reference score first."""
    n_ref, n_out = len(ref["scores"]), len(out["scores"])
    if n_ref == 0 and n_out == 0:
        return {"ref": 0, "out": 0, "matched": 0, "score_deltas": [], "ious": [], "kpt_err": []}
    ious = iou_matrix(ref["boxes"], out["boxes"]) if n_ref and n_out else np.zeros((n_ref, n_out))
    if n_ref and n_out:  # a zero-area box has IoU 0 even with itself; an identical box is the same detection
        ious = np.where(np.all(ref["boxes"][:, None, :] == out["boxes"][None, :, :], axis=-1), 1.0, ious)
    ious = np.where(ref["classes"][:, None] == out["classes"][None, :], ious, 0.0)
    used = set()
    m = {"ref": n_ref, "out": n_out, "matched": 0, "score_deltas": [], "ious": [], "kpt_err": []}
    for i in np.argsort(-ref["scores"]):
        j = next((j for j in np.argsort(-ious[i]) if j not in used and ious[i, j] >= IOU_MATCH), None)
        if j is None:
            continue
        used.add(j)
        m["matched"] += 1
        m["score_deltas"].append(abs(float(ref["scores"][i] - out["scores"][j])))
        m["ious"].append(float(ious[i, j]))
        if ref["kpts"] is not None:
            d = np.linalg.norm(ref["kpts"][i, :, :2] - out["kpts"][j, :, :2], axis=-1)
            m["kpt_err"].append(float(d.mean()))
    return m


def summarize(groups: list[list[dict]], nkpt: int, thr: dict) -> dict:
    """Figures and verdict over every image's ``match()`` result (groups: one list a batch)."""
    ms = [m for g in groups for m in g]
    n_ref, n_out = sum(m["ref"] for m in ms), sum(m["out"] for m in ms)
    matched = sum(m["matched"] for m in ms)
    denom = max(n_ref, n_out)
    deltas = [d for m in ms for d in m["score_deltas"]]
    ious = [x for m in ms for x in m["ious"]]
    kerr = [x for m in ms for x in m["kpt_err"]]
    fig = {"ref_detections": n_ref, "detections": n_out, "matched": matched,
           "match_rate": matched / denom if denom else 1.0,
           "max_score_delta": max(deltas, default=0.0),
           "mean_score_delta": float(np.mean(deltas)) if deltas else 0.0,
           "mean_iou": float(np.mean(ious)) if ious else 1.0}
    if nkpt:
        fig["mean_kpt_px"] = float(np.mean(kerr)) if kerr else 0.0
    reasons = []
    if fig["match_rate"] < thr["min_match_rate"]:
        reasons.append(f"match rate {fig['match_rate']:.3f} < {thr['min_match_rate']} "
                       f"({matched} of {denom} detections)")
    if fig["mean_score_delta"] > thr["max_mean_score_delta"]:
        reasons.append(f"mean score delta {fig['mean_score_delta']:.4f} > {thr['max_mean_score_delta']}")
    if fig["mean_iou"] < thr["min_iou"]:
        reasons.append(f"mean IoU of matches {fig['mean_iou']:.4f} < {thr['min_iou']}")
    if nkpt and fig["mean_kpt_px"] > thr["max_kpt_px"]:
        reasons.append(f"mean keypoint error {fig['mean_kpt_px']:.2f}px > {thr['max_kpt_px']}px")
    fig["passed"] = not reasons
    fig["reasons"] = reasons
    return fig


def task_shape(record: dict) -> tuple[int, int]:
    """(number of classes, number of keypoints) from the export record's metadata."""
    meta = record.get("metadata", {})
    names = meta.get("names", "{}")
    names = ast.literal_eval(names) if isinstance(names, str) else names
    kpt = meta.get("kpt_shape")
    kpt = ast.literal_eval(kpt) if isinstance(kpt, str) else kpt
    return len(names), (kpt[0] if kpt else 0)
