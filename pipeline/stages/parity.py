"""Export parity: the checkpoint in PyTorch against its ONNX twins on ONNX Runtime,
on real images (Ultralytics' bundled bus.jpg and zidane.jpg, plus verify_images)."""
from __future__ import annotations

from pathlib import Path

from pipeline.backends.onnxruntime import OnnxRuntimeRunner
from pipeline.backends.torch import TorchRunner
from pipeline.checks.images import batches, reference_images
from pipeline.checks.suite import ranked_outputs, run_checks
from pipeline.checks.tensors import compare_outputs, merge_stats
from pipeline.config import ModelSpec


def parity_batch_size(spec: ModelSpec) -> int:
    return spec.batch.opt if not spec.batch.dynamic else min(2, spec.batch.max)


def measure_parity(spec: ModelSpec, checkpoint: Path, onnx_models: dict[str, bytes | Path],
                   record: dict | None = None) -> dict:
    """Compare PyTorch FP32 with each ONNX (``fp32``, ``fp16``) under that precision's
    thresholds. Returns {"images": [...], "<kind>": merged stats, "passed", "reasons"}.
    A head whose rows are ranked (NMS-free, RT-DETR: ``record``'s metadata says) is judged by its
    task check as well, since its elementwise figures mean nothing."""
    ranked = bool(record and ranked_outputs(record))
    images = reference_images(spec.verify_images)
    feeds = batches(images, spec.imgsz, parity_batch_size(spec))
    if spec.nms is True:   # NMS embedded by the exporter's own wrapper: the FP32 ONNX is the reference here
        with OnnxRuntimeRunner(onnx_models["fp32"]) as ort_runner:
            refs = [ort_runner.infer({"images": x}) for x in feeds]
    else:
        with TorchRunner(checkpoint, spec.imgsz, batch=parity_batch_size(spec), nms=spec.nms) as torch_runner:
            refs = [torch_runner.infer({"images": x}) for x in feeds]
    result: dict = {"images": [p.name for p in images], "reasons": []}
    for kind, model in onnx_models.items():
        thr = spec.thresholds("fp16" if kind == "fp16" else "fp32")
        with OnnxRuntimeRunner(model) as ort_runner:
            outs = [ort_runner.infer({"images": x}) for x in feeds]
        if ranked:
            figures, reasons = run_checks(record, refs, outs, thr)
            merged = {"outputs": figures["tensors"], "detections": figures["detections"], "reasons": reasons}
        else:
            merged = merge_stats([compare_outputs(ref, out, thr) for ref, out in zip(refs, outs)])
        merged["thresholds"] = {k: thr[k] for k in ("atol", "rtol", "min_cosine", "max_mean_abs")}
        result[kind] = merged
        result["reasons"] += [f"{kind} ONNX: {r}" for r in merged["reasons"]]
    result["passed"] = not result["reasons"]
    return result
