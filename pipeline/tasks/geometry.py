"""Box geometry shared by every task's decoder and comparison: numpy only.

Axis-aligned boxes are ``xyxy``; rotated boxes are ``xywhr`` (centre, size, angle in radians),
as Ultralytics' OBB head writes them.
"""
from __future__ import annotations

import importlib.util
import sys


def _lazy(name: str):
    """``name`` imported on first attribute use (the importlib documentation's LazyLoader recipe): config
    reads the task table on every command, and a cached `engines run` never decodes, so numpy's
    0.1 s import waits for the first decode. Already imported: the module itself."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


np = _lazy("numpy")   # the task modules take numpy from here (an `import numpy` would load it at once)

MAX_DET = 300


def xywh2xyxy(b: np.ndarray) -> np.ndarray:
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


def _covariance(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Gaussian of a rotated box (as in the ProbIoU paper, arXiv:2106.06072)."""
    a, bb = b[:, 2] ** 2 / 12, b[:, 3] ** 2 / 12
    cos, sin = np.cos(b[:, 4]), np.sin(b[:, 4])
    return a * cos ** 2 + bb * sin ** 2, a * sin ** 2 + bb * cos ** 2, (a - bb) * cos * sin


def probiou_matrix(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """ProbIoU of rotated boxes (Bhattacharyya overlap of their Gaussians): what Ultralytics' rotated
    NMS uses, vectorised; the comparison uses the exact polygon IoU (``rotated_iou``)."""
    x1, y1 = a[:, 0:1], a[:, 1:2]
    x2, y2 = b[None, :, 0], b[None, :, 1]
    a1, b1, c1 = (v[:, None] for v in _covariance(a))
    a2, b2, c2 = (v[None, :] for v in _covariance(b))
    t1 = ((a1 + a2) * (y1 - y2) ** 2 + (b1 + b2) * (x1 - x2) ** 2) / ((a1 + a2) * (b1 + b2) - (c1 + c2) ** 2 + eps) * 0.25
    t2 = ((c1 + c2) * (x2 - x1) * (y1 - y2)) / ((a1 + a2) * (b1 + b2) - (c1 + c2) ** 2 + eps) * 0.5
    t3 = np.log(((a1 + a2) * (b1 + b2) - (c1 + c2) ** 2)
                / (4 * np.sqrt(np.clip(a1 * b1 - c1 ** 2, 0, None) * np.clip(a2 * b2 - c2 ** 2, 0, None)) + eps)
                + eps) * 0.5
    bd = np.clip(t1 + t2 + t3, eps, 100.0)
    hd = np.sqrt(1.0 - np.exp(-bd) + eps)
    return 1 - hd


def corners(b: np.ndarray) -> np.ndarray:
    """(n, 5) xywhr -> (n, 4, 2) corner points, counter-clockwise."""
    cos, sin = np.cos(b[:, 4]), np.sin(b[:, 4])
    dx = np.stack([-b[:, 2], b[:, 2], b[:, 2], -b[:, 2]], 1) / 2
    dy = np.stack([-b[:, 3], -b[:, 3], b[:, 3], b[:, 3]], 1) / 2
    return np.stack([b[:, None, 0] + dx * cos[:, None] - dy * sin[:, None],
                     b[:, None, 1] + dx * sin[:, None] + dy * cos[:, None]], -1)


def _clip(poly: list, a: np.ndarray, b: np.ndarray) -> list:
    """Sutherland-Hodgman: the part of ``poly`` on the left of edge a->b."""
    side = lambda p: (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
    out = []
    for i, cur in enumerate(poly):
        prev = poly[i - 1]
        sc, sp = side(cur), side(prev)
        if sc >= 0:
            if sp < 0:
                out.append(prev + (cur - prev) * (sp / (sp - sc)))
            out.append(cur)
        elif sp >= 0:
            out.append(prev + (cur - prev) * (sp / (sp - sc)))
    return out


def _area(poly) -> float:
    if len(poly) < 3:
        return 0.0
    p = np.asarray(poly)
    return float(abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))) / 2)


def rotated_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Exact IoU of two rotated boxes (xywhr): the intersection polygon by clipping."""
    pa, pb = corners(a[None])[0], corners(b[None])[0]
    poly = list(pa)
    for i in range(4):
        poly = _clip(poly, pb[i], pb[(i + 1) % 4])
        if not poly:
            return 0.0
    inter = _area(poly)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else float(np.allclose(a, b))


def rotated_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact rotated IoU for every pair whose circumscribed circles meet (others are 0)."""
    out = np.zeros((len(a), len(b)))
    if not len(a) or not len(b):
        return out
    ra, rb = np.hypot(a[:, 2], a[:, 3]) / 2, np.hypot(b[:, 2], b[:, 3]) / 2
    dist = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    for i, j in zip(*np.nonzero(dist < ra[:, None] + rb[None, :])):
        out[i, j] = rotated_iou(a[i], b[j])
    return out


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
    """Greedy NMS of xyxy boxes: torchvision's kernel where torch is loaded (what Ultralytics
    runs), else numpy."""
    torch, tv_nms = _torchvision_nms()
    if tv_nms is not None:
        keep = tv_nms(torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
                      torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)), iou)
        return keep[:MAX_DET].numpy().astype(int)
    return greedy_nms(scores, iou, lambda i, rest: iou_matrix(boxes[i:i + 1], boxes[rest])[0])


def rotated_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS of xywhr boxes by ProbIoU, as Ultralytics' rotated NMS."""
    return greedy_nms(scores, iou, lambda i, rest: probiou_matrix(boxes[i:i + 1], boxes[rest])[0])


def greedy_nms(scores: np.ndarray, iou: float, overlap) -> np.ndarray:
    order = scores.argsort()[::-1]
    keep = []
    while order.size and len(keep) < MAX_DET:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        order = order[1:][overlap(i, order[1:]) <= iou]
    return np.array(keep, dtype=int)
