"""Precision benchmark: INT8 calibration and build times, peak memory, and mAP per precision.

On the demo detector (seeded random weights: the mAP figures compare precisions with each
other on labels the FP32 model made itself, they say nothing of a trained model), imgsz
640, TensorRT for RTX for sm89, run as users run it:
- calibration of the INT8 twin (ONNX Runtime, MinMax, N images) in a fresh process: wall
  time and peak RSS (target: under 15 s and 2 GiB for one 640 model on 2 cores, issue 15);
- the INT8 engine build with the onnx-level gate, and the FP16 one for comparison;
- mAP50-95 / mAP50 with Ultralytics' validator (ONNX Runtime, CPU) of the FP32 reference,
  the FP16 twin, the INT8 twin and a twin with every op quantized.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CALIBRATE = """
import json, resource, sys, time
from pipeline.config import load_config
from pipeline.stages import quantize
from pipeline.stages.export import cached_record
cfg = load_config(sys.argv[1]); spec = cfg.models[0]
t0 = time.perf_counter()
rec = quantize.ensure_twin(cfg, spec, cached_record(cfg, spec), force=True, exclude_head=sys.argv[2] == "good")
print(json.dumps({"seconds": time.perf_counter() - t0, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "images": rec["calibration_images"], "excluded": len(rec["excluded_nodes"])}))
"""


def _engines(cfg: Path, *args: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(cfg), "--json", *args],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"`engines {' '.join(args)}` failed:\n{res.stderr[-2000:]}")
    return time.perf_counter() - t0, json.loads(res.stdout)


def _calibration_images(folder: Path, n: int) -> None:
    import cv2
    import numpy as np

    from pipeline.checks.images import bundled_images
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        img = cv2.imread(str(bundled_images()[i % 2]))
        h, w = img.shape[:2]
        y, x = int(rng.integers(0, h // 4)), int(rng.integers(0, w // 4))
        crop = img[y: y + h * 3 // 4, x: x + w * 3 // 4]
        crop = np.clip(crop * rng.uniform(0.7, 1.3), 0, 255).astype("uint8")
        cv2.imwrite(str(folder / f"c{i:03d}.jpg"), crop[:, ::-1] if i % 2 else crop)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--images", type=int, default=64, help="calibration images to make and use")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from pipeline.checks import accuracy
    from pipeline.config import Accuracy, load_config
    from pipeline.stages.export import cached_record, onnx_file
    from pipeline.stages.verify import model_names
    from tests.labelled import labelled_set  # labels from the FP32 model's own detections, as the tests make
    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    rows, maps = [], []
    try:
        cfg_path = work / "models.yaml"
        cfg_path.write_text(f"defaults: {{imgsz: {args.imgsz}, opset: 12, precision: int8, batch: 1}}\nmodels:\n"
                            "  - {name: human, source: yolo/yolov8n.pt, task: detect, calibration: {images: calib}}\n")
        _calibration_images(work / "calib", args.images)
        _engines(cfg_path, "demo-models")
        _engines(cfg_path, "export", "--precision", "fp16")
        cfg = load_config(cfg_path)
        spec = cfg.models[0]
        for kind in ("good", "every-op"):
            out = subprocess.run([sys.executable, "-c", CALIBRATE, str(cfg_path), kind], capture_output=True, text=True,
                                 cwd=REPO)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            fig = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((f"INT8 calibration ({kind})", fig["seconds"], f"{fig['rss_mib']:.0f} MiB",
                         "< 15 s, < 2048 MiB" if kind == "good" else "-",
                         f"{fig['images']} images, {fig['excluded']} nodes kept in float"))
            if kind == "every-op":
                shutil.copy(onnx_file(cfg, spec, "int8"), work / "every-op.int8.onnx")
        _engines(cfg_path, "export")   # the good twin again (cached record of the good key)
        for precision in ("fp16", "int8"):
            wall, doc = _engines(cfg_path, "build", "--backend", "tensorrt-rtx", "--target", "sm89",
                                 "--precision", precision, "--force")
            m = json.loads((Path(doc["build"]["set"]) / "manifest.json").read_text())["engines"]["human"]
            rows.append((f"{precision.upper()} build + gate", wall, "-", "-",
                         f"engine {m['build_seconds']:.2f}s, {m['engine_bytes'] / 2**20:.1f} MiB"))
        rec = cached_record(cfg, spec)
        data = labelled_set(work, onnx_file(cfg, spec, "fp32"), args.imgsz, n=8)
        names, kpt = model_names(rec)
        with tempfile.TemporaryDirectory() as tmp:
            yaml_file, _ = accuracy.prepare(Accuracy(data), "human", "detect", names, kpt, Path(tmp))
            for label, f in (("fp32 (reference)", onnx_file(cfg, spec, "fp32")), ("fp16", onnx_file(cfg, spec, "fp16")),
                             ("int8", onnx_file(cfg, spec, "int8")), ("int8, every op", work / "every-op.int8.onnx")):
                r = accuracy.measure(f, "detect", yaml_file, args.imgsz, Path(tmp))
                maps.append((label, r["map50_95"], r["map50"], r["seconds"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nPrecision benchmark (demo detector, imgsz {args.imgsz}, TensorRT for RTX sm89, 2-core machine)")
    print(f"{'step':<30} {'seconds':>8} {'peak RSS':>9}  {'target':<19} detail")
    for name, sec, rss, target, detail in rows:
        print(f"{name:<30} {sec:8.2f} {rss:>9}  {target:<19} {detail}")
    ref = maps[0][1]
    print(f"\n{'ONNX (Ultralytics val, CPU)':<30} {'mAP50-95':>9} {'drop':>6} {'mAP50':>7} {'val s':>6}")
    for label, m, m50, sec in maps:
        print(f"{label:<30} {m:9.2f} {ref - m:6.2f} {m50:7.2f} {sec:6.1f}")
    print("(random demo weights: INT8 agreement and mAP are far below a trained model's; docs/precision.md)")
    print(f"this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
