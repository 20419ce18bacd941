"""Tensor comparison: the figures every parity check and verification reports.

Per output: max/mean absolute error, max relative error, cosine similarity, and the
minimum absolute and relative tolerances that would have passed (as Polygraphy reports),
so a failure says by how much it missed.
"""
from __future__ import annotations

import numpy as np


def tensor_stats(ref: np.ndarray, out: np.ndarray) -> dict:
    if np.shape(ref) != np.shape(out):  # before ravel: (1,6,512) and (1,3,1024) must not compare
        raise ValueError(f"shape mismatch: reference {np.shape(ref)} vs {np.shape(out)}")
    ref64 = np.asarray(ref, dtype=np.float64).ravel()
    out64 = np.asarray(out, dtype=np.float64).ravel()
    diff = np.abs(ref64 - out64)
    if not np.all(np.isfinite(out64)):
        return {"max_abs": float("inf"), "mean_abs": float("inf"), "max_rel": float("inf"),
                "cosine": 0.0, "nonfinite": int(np.sum(~np.isfinite(out64))),
                "min_atol": float("inf"), "min_rtol": float("inf")}
    rel = diff / np.maximum(np.abs(ref64), 1e-6)
    denom = np.linalg.norm(ref64) * np.linalg.norm(out64)
    cosine = float(ref64 @ out64 / denom) if denom > 0 else float(np.array_equal(ref64, out64))
    return {"max_abs": float(diff.max(initial=0.0)), "mean_abs": float(diff.mean()) if diff.size else 0.0,
            "max_rel": float(rel.max(initial=0.0)), "cosine": cosine, "nonfinite": 0,
            # allclose-style |a-b| <= atol + rtol*|ref|: the smallest atol that passes with
            # rtol=0, and the smallest rtol that passes with atol=0 (the latter against
            # max(|ref|, 1e-6), so exact zeros in the reference do not divide by zero)
            "min_atol": float(diff.max(initial=0.0)), "min_rtol": float(rel.max(initial=0.0))}


def tensors_pass(stats: dict, thr: dict) -> list[str]:
    """Reasons ``stats`` fails ``thr``: non-finite values, min_cosine, max_mean_abs, and the
    elementwise atol/rtol check (numpy.allclose, computed by compare_outputs where atol is set)."""
    reasons = []
    if stats["nonfinite"]:
        reasons.append(f"{stats['nonfinite']} non-finite values")
    if thr.get("min_cosine") is not None and stats["cosine"] < thr["min_cosine"]:
        reasons.append(f"cosine {stats['cosine']:.6f} < {thr['min_cosine']}")
    if thr.get("max_mean_abs") is not None and stats["mean_abs"] > thr["max_mean_abs"]:
        reasons.append(f"mean abs error {stats['mean_abs']:.4g} > {thr['max_mean_abs']}")
    if not stats.get("allclose", True):
        reasons.append(f"max abs error {stats['max_abs']:.4g} exceeds atol {thr['atol']} + "
                       f"rtol {thr['rtol']} x |reference|")
    return reasons


def compare_outputs(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], thr: dict) -> dict:
    """Compare every reference output; returns {"outputs": {name: stats}, "passed", "reasons"}."""
    result: dict = {"outputs": {}, "reasons": []}
    for name, r in ref.items():
        if name not in out:
            result["reasons"].append(f"output {name} missing")
            continue
        s = tensor_stats(r, out[name])
        if thr.get("atol") is not None:  # elementwise check, as numpy.allclose
            s["allclose"] = bool(np.allclose(out[name].astype(np.float64), r.astype(np.float64),
                                             atol=thr["atol"], rtol=thr["rtol"] or 0.0))
        result["outputs"][name] = s
        result["reasons"] += [f"{name}: {why}" for why in tensors_pass(s, thr)]
    result["passed"] = not result["reasons"]
    return result


def merge_stats(runs: list[dict]) -> dict:
    """Worst case over several images/batches of compare_outputs results."""
    merged: dict = {"outputs": {}, "reasons": [], "passed": all(r["passed"] for r in runs)}
    for r in runs:
        merged["reasons"] += [x for x in r["reasons"] if x not in merged["reasons"]]
        for name, s in r["outputs"].items():
            m = merged["outputs"].setdefault(name, dict(s))
            for k in ("max_abs", "max_rel", "min_atol", "min_rtol", "nonfinite"):
                m[k] = max(m[k], s[k])
            m["cosine"] = min(m["cosine"], s["cosine"])
            m["mean_abs"] = max(m["mean_abs"], s["mean_abs"])
            if "allclose" in s:
                m["allclose"] = m.get("allclose", True) and s["allclose"]
    return merged
