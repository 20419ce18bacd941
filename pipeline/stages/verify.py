"""Verification: every engine proven against the FP32 ONNX reference on ONNX Runtime.

Two levels per engine: ``onnx`` (the ONNX it was built from, e.g. the FP16 twin,
against the FP32 reference: always possible, the build gate everywhere) and ``engine``
(the engine itself on a GPU; ``pending`` where it cannot run on this machine).
"""
from __future__ import annotations

import ast
import datetime as _dt
from pathlib import Path

from ..backends.base import Runner
from ..backends.onnxruntime import OnnxRuntimeRunner
from ..compare import compare_outputs, merge_stats
from ..config import ModelSpec
from ..detections import decode, match, summarize
from ..images import batches, reference_images


def task_shape(record: dict) -> tuple[int, int]:
    """(number of classes, number of keypoints) from the export record's metadata."""
    meta = record.get("metadata", {})
    names = meta.get("names", "{}")
    names = ast.literal_eval(names) if isinstance(names, str) else names
    kpt = meta.get("kpt_shape")
    kpt = ast.literal_eval(kpt) if isinstance(kpt, str) else kpt
    return len(names), (kpt[0] if kpt else 0)


def compare_runners(spec: ModelSpec, record: dict, reference: Runner, candidate: Runner,
                    precision: str, batch: int) -> dict:
    """Run both runners on the reference images; tensor figures plus detection figures."""
    thr = spec.thresholds(precision)
    nc, nkpt = task_shape(record)
    feeds = batches(reference_images(spec.verify_images), spec.imgsz, batch)
    tensor_runs, det_groups = [], []
    for x in feeds:
        ref = reference.infer({"images": x})
        out = candidate.infer({"images": x})
        tensor_runs.append(compare_outputs(ref, out, thr))
        det_groups.append([match(r, o) for r, o in zip(decode(ref["output0"], nc, nkpt),
                                                        decode(out["output0"], nc, nkpt))])
    tensors = merge_stats(tensor_runs)
    dets = summarize(det_groups, nkpt, thr)
    # FP16 is judged on detections plus cosine/mean error; see config.DEFAULT_VERIFY.
    reasons = [f"tensors: {r}" for r in tensors["reasons"]] + [f"detections: {r}" for r in dets["reasons"]]
    return {"status": "passed" if not reasons else "failed", "precision": precision,
            "tensors": tensors["outputs"], "detections": {k: v for k, v in dets.items()
                                                          if k not in ("passed", "reasons")},
            "reasons": reasons, "thresholds": thr, "images": len(feeds) * batch,
            "at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}


def verify_onnx_level(spec: ModelSpec, record: dict, reference_onnx: Path, built_from: Path,
                      precision: str) -> dict:
    batch = spec.batch.opt
    with OnnxRuntimeRunner(reference_onnx) as ref, OnnxRuntimeRunner(built_from) as cand:
        return compare_runners(spec, record, ref, cand, precision, batch)
