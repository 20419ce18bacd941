"""Comparisons: reference detections against a candidate's, per task.

Detections are matched greedily by class and IoU (rotated IoU for OBB), highest reference
score first; the figures are the match rate, the IoU and score delta of matches, and the
task's own: keypoint error in pixels (pose), mask IoU of matched detections (segment).
Classification is judged by top-1 agreement and the delta of the top-1 probability.
"""
from __future__ import annotations

import numpy as np

from pipeline.tasks.geometry import iou_matrix, rotated_iou_matrix

IOU_MATCH = 0.5  # a reference box is found if a same-class box overlaps it this much


def _pair_ious(ref: dict, out: dict) -> np.ndarray:
    if ref.get("rotated"):
        ious = rotated_iou_matrix(ref["boxes"], out["boxes"])
    else:
        ious = iou_matrix(ref["boxes"], out["boxes"])
    # a zero-area box has IoU 0 even with itself; an identical box is the same detection
    same = np.all(ref["boxes"][:, None, :] == out["boxes"][None, :, :], axis=-1)
    return np.where(same, 1.0, ious)


def match(ref: dict, out: dict) -> dict:
    """One image: which reference detections the candidate kept, and how closely."""
    n_ref, n_out = len(ref["scores"]), len(out["scores"])
    m = {"ref": n_ref, "out": n_out, "matched": 0, "score_deltas": [], "ious": [], "kpt_err": [], "mask_iou": []}
    if not n_ref or not n_out:
        return m
    ious = np.where(ref["classes"][:, None] == out["classes"][None, :], _pair_ious(ref, out), 0.0)
    used = set()
    for i in np.argsort(-ref["scores"]):
        j = next((j for j in np.argsort(-ious[i]) if j not in used and ious[i, j] >= IOU_MATCH), None)
        if j is None:
            continue
        used.add(j)
        m["matched"] += 1
        m["score_deltas"].append(abs(float(ref["scores"][i] - out["scores"][j])))
        m["ious"].append(float(ious[i, j]))
        if ref.get("kpts") is not None:
            d = np.linalg.norm(ref["kpts"][i, :, :2] - out["kpts"][j, :, :2], axis=-1)
            m["kpt_err"].append(float(d.mean()))
        if ref.get("masks") is not None:
            a, b = ref["masks"][i], out["masks"][j]
            union = np.logical_or(a, b).sum()
            m["mask_iou"].append(float(np.logical_and(a, b).sum() / union) if union else 1.0)
    return m


def _mean(values: list, empty: float) -> float:
    return float(np.mean(values)) if values else empty


def summarize(matches: list[dict], thr: dict, keypoints: bool = False, masks: bool = False) -> dict:
    """Figures and verdict over every image's ``match()`` result."""
    n_ref, n_out = sum(m["ref"] for m in matches), sum(m["out"] for m in matches)
    matched = sum(m["matched"] for m in matches)
    denom = max(n_ref, n_out)
    pool = lambda key: [x for m in matches for x in m[key]]
    deltas = pool("score_deltas")
    fig = {"ref_detections": n_ref, "detections": n_out, "matched": matched,
           "match_rate": matched / denom if denom else 1.0,
           "max_score_delta": max(deltas, default=0.0), "mean_score_delta": _mean(deltas, 0.0),
           "mean_iou": _mean(pool("ious"), 1.0)}
    reasons = []
    if fig["match_rate"] < thr["min_match_rate"]:
        reasons.append(f"match rate {fig['match_rate']:.3f} < {thr['min_match_rate']} "
                       f"({matched} of {denom} detections)")
    if fig["mean_score_delta"] > thr["max_mean_score_delta"]:
        reasons.append(f"mean score delta {fig['mean_score_delta']:.4f} > {thr['max_mean_score_delta']}")
    if fig["mean_iou"] < thr["min_iou"]:
        reasons.append(f"mean IoU of matches {fig['mean_iou']:.4f} < {thr['min_iou']}")
    if keypoints:
        fig["mean_kpt_px"] = _mean(pool("kpt_err"), 0.0)
        if fig["mean_kpt_px"] > thr["max_kpt_px"]:
            reasons.append(f"mean keypoint error {fig['mean_kpt_px']:.2f}px > {thr['max_kpt_px']}px")
    if masks:
        fig["mean_mask_iou"] = _mean(pool("mask_iou"), 1.0)
        if fig["mean_mask_iou"] < thr["min_mask_iou"]:
            reasons.append(f"mean mask IoU of matches {fig['mean_mask_iou']:.4f} < {thr['min_mask_iou']}")
    fig["passed"], fig["reasons"] = not reasons, reasons
    return fig


def compare_detections(refs: list[dict], outs: list[dict], thr: dict) -> dict:
    keypoints = any(r.get("kpts") is not None for r in refs)
    masks = any(r.get("masks") is not None for r in refs)
    return summarize([match(r, o) for r, o in zip(refs, outs)], thr, keypoints=keypoints, masks=masks)


def compare_probs(refs: list[dict], outs: list[dict], thr: dict) -> dict:
    """Top-1 agreement over images, the top-5 overlap, and the delta of the reference's top-1 probability."""
    agree, overlap, deltas = [], [], []
    for r, o in zip(refs, outs):
        top_r, top_o = np.argsort(-r["probs"])[:5], np.argsort(-o["probs"])[:5]
        agree.append(float(top_r[0] == top_o[0]))
        overlap.append(len(set(top_r) & set(top_o)) / 5)
        deltas.append(abs(float(r["probs"][top_r[0]] - o["probs"][top_r[0]])))
    fig = {"images": len(refs), "top1_agreement": _mean(agree, 1.0), "top5_overlap": _mean(overlap, 1.0),
           "max_prob_delta": max(deltas, default=0.0)}
    reasons = []
    if fig["top1_agreement"] < thr["min_top1_agreement"]:
        reasons.append(f"top-1 agreement {fig['top1_agreement']:.3f} < {thr['min_top1_agreement']} "
                       f"({int(sum(agree))} of {len(agree)} images)")
    if fig["max_prob_delta"] > thr["max_prob_delta"]:
        reasons.append(f"top-1 probability delta {fig['max_prob_delta']:.4f} > {thr['max_prob_delta']}")
    fig["passed"], fig["reasons"] = not reasons, reasons
    return fig
