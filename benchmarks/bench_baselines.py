"""Baselines on whatever device this machine has (issue #4): PyTorch FP32, FP16 and FP16
through a CUDA graph, and ONNX Runtime, engine-only and end-to-end, for the three demo
models; plus the TensorRT engines of a set where a TensorRT runtime and GPU are present
(`engines verify --benchmark` does that for a published set).

  python -m benchmarks.bench_baselines --batch 1,8 --iterations 300 [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="1,8", help="batch sizes, e.g. 1,8")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--max-seconds", type=float, default=10.0, help="cap per row (after 10 iterations)")
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime (CPU) rows")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    a = ap.parse_args(argv)
    import torch

    from pipeline.checks.timing import table
    from pipeline.config import load_config
    from pipeline.stages.bench import benchmark_model, speedup_summary
    from pipeline.stages.demo import demo_models
    from pipeline.stages.export import export_all, onnx_paths

    work = Path(tempfile.mkdtemp(prefix="bench-baselines-"))
    (work / "models.yaml").write_text(
        (REPO / "models" / "models.yaml").read_text().replace("imgsz: 640", f"imgsz: {a.imgsz}")
        # dynamic batch, so ONNX Runtime runs every batch size asked for
        .replace("batch: 1}", f"batch: {{min: 1, opt: 1, max: {max(int(b) for b in a.batch.split(','))}}}}}"))
    cfg = load_config(work / "models.yaml")
    demo_models(cfg, log=lambda m: None)
    records, errors = export_all(cfg, cfg.models)
    if errors:
        raise SystemExit(errors[0].render())
    rows = []
    for spec, rec in zip(cfg.models, records):
        rows += benchmark_model(spec, rec, spec.source_path, onnx_paths(cfg, spec)["fp32"],
                                batches_=tuple(int(b) for b in a.batch.split(",")),
                                iterations=a.iterations, warmup=a.warmup, ort=not a.no_ort,
                                max_seconds=a.max_seconds)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"\nBaselines on {dev}, torch {torch.__version__}, imgsz {a.imgsz}, "
          f"{a.iterations} iterations after {a.warmup} warm-up (demo weights)\n")
    print(table(rows))
    print(json.dumps(speedup_summary(rows), indent=1))
    if a.json:
        a.json.write_text(json.dumps({"device": dev, "torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
