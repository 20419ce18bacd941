"""Pipeline benchmark: first export and TensorRT for RTX build of the three demo models,
then the fully cached rerun, each as a user runs it (`python -m pipeline ...`).

Targets (issue #2, #3): first export under 30 s, cached export under 1 s, cached build
under 1 s, wall time including interpreter start-up, on the 2-core CI machine.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(cfg: Path, *args: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(cfg), "--json", *args],
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"`engines {' '.join(args)}` failed:\n{res.stderr[-2000:]}")
    return wall, json.loads(res.stdout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=5, help="cached reruns to take the median of")
    ap.add_argument("--target", default="sm86,sm89,sm120")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        cfg = work / "models.yaml"
        cfg.write_text((REPO / "models" / "models.yaml").read_text().replace("imgsz: 640", f"imgsz: {args.imgsz}"))
        _run(cfg, "demo-models")
        rows = []
        wall, doc = _run(cfg, "export")
        per = {r["model"]: r["seconds"] for r in doc["exports"]}
        rows.append(("first export (3 models)", wall, "< 30 s", ", ".join(f"{k} {v:.1f}s" for k, v in per.items())))
        cached = [_run(cfg, "export")[0] for _ in range(args.repeats)]
        rows.append(("cached export (median)", statistics.median(cached), "< 1 s", f"n={len(cached)}"))
        wall, doc = _run(cfg, "build", "--backend", "tensorrt-rtx", "--target", args.target)
        manifest = json.loads((Path(doc["build"]["set"]) / "manifest.json").read_text())
        per = {n: e["build_seconds"] for n, e in manifest["engines"].items()}
        rows.append(("first build + onnx-level gate", wall, "-", ", ".join(f"{k} {v:.2f}s" for k, v in per.items())))
        cached = [_run(cfg, "build", "--backend", "tensorrt-rtx", "--target", args.target)[0]
                  for _ in range(args.repeats)]
        rows.append(("cached build (median)", statistics.median(cached), "< 1 s", f"n={len(cached)}"))
        cached = [_run(cfg, "run", "--backend", "tensorrt-rtx", "--target", args.target)[0]
                  for _ in range(args.repeats)]
        rows.append(("cached `engines run` (median)", statistics.median(cached), "< 1 s", f"n={len(cached)}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nPipeline benchmark (imgsz {args.imgsz}, TensorRT for RTX targets {args.target}, wall incl. start-up)")
    print(f"{'step':<32} {'seconds':>8}  {'target':<7} detail")
    for name, sec, target, detail in rows:
        print(f"{name:<32} {sec:8.2f}  {target:<7} {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
