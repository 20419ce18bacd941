"""stages.bench: the per-model benchmark of `engines verify --benchmark` (the speed-up summary, figures
recorded in the manifest and report.md), measured for real on this CPU."""
from __future__ import annotations

import json
import shutil

import pytest

from pipeline.checks.timing import table
from pipeline.stages.bench import speedup_summary
from tests.conftest import run_cli


def test_speedup_summary_uses_largest_batch_engine_view():
    def row(runtime, batch, fps, view="engine"):
        return {"model": "m", "runtime": runtime, "view": view, "batch": batch, "images_per_s": fps}
    s = speedup_summary([row("torch fp32", 1, 100), row("tensorrt engine", 1, 900),
                         row("torch fp16+cudagraph", 8, 400), row("tensorrt engine", 8, 1200),
                         row("tensorrt engine", 8, 5, view="end2end")])["m"]
    assert (s["batch"], s["torch_fps"], s["engine_fps"]) == (8, 400, 1200)
    assert s["speedup"] == pytest.approx(3.0)


@pytest.mark.slow
def test_verify_benchmark_records_figures_and_report(tmp_path, exported):
    """`engines verify --benchmark` on a real TensorRT for RTX set: baselines measured here
    (PyTorch FP32 on the CPU, ONNX Runtime), engine not runnable on this machine."""
    ws = tmp_path / "ws"
    shutil.copytree(exported, ws)
    res = run_cli("--config", str(ws / "models.yaml"), "build", "--backend", "tensorrt-rtx", "--target", "sm86",
                  "--model", "human")
    assert res.returncode == 0, res.stderr
    res = run_cli("--config", str(ws / "models.yaml"), "--json", "verify", "--model", "human", "--benchmark",
                  "--iterations", "3", "--warmup", "1")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert "## Speed" in doc["report"] and "| human | 1 |" in doc["report"] and "not run here" in doc["report"]
    tag = next(p.name for p in (ws / "engines").iterdir() if p.name.startswith("trtrtx"))
    bench = json.loads((ws / "engines" / tag / "manifest.json").read_text())["engines"]["human"]["benchmark"]
    runtimes = {(r["runtime"], r["view"]) for r in bench["rows"]}
    assert runtimes == {("torch fp32", "engine"), ("torch fp32", "end2end"),
                        ("onnxruntime cpu fp32", "engine"), ("onnxruntime cpu fp32", "end2end")}
    assert bench["engine_ran"] is False and bench["summary"]["torch_fps"] > 0
    assert all(r["iterations"] == 3 and r["latency_ms"]["p50"] > 0 for r in bench["rows"])
    assert table(bench["rows"]).count("\n") == len(bench["rows"]) + 2
