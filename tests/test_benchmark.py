"""Benchmark harness: figures in trtexec's vocabulary, measured for real on this CPU."""
from __future__ import annotations

import json
import shutil
import time

import pytest

from pipeline.benchmark import UNSTABLE_CV, measure, table
from pipeline.stages.bench import speedup_summary
from tests.conftest import run_cli


def test_measure_reports_percentiles_and_throughput():
    fig = measure(lambda: time.sleep(0.005), batch=4, warmup=2, iterations=30)
    lat = fig["latency_ms"]
    assert fig["iterations"] == 30 and fig["batch"] == 4
    assert 5.0 <= lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert fig["images_per_s"] == pytest.approx(fig["throughput_qps"] * 4)
    assert fig["throughput_qps"] < 1000 / 5.0  # cannot beat the 5 ms sleep
    assert "gpu_compute_ms" not in fig  # CPU run: no CUDA events


def test_measure_flags_unstable_runs():
    steady = measure(lambda: time.sleep(0.004), batch=1, warmup=1, iterations=20)
    toggle = iter([0.001, 0.02] * 20)
    jumpy = measure(lambda: time.sleep(next(toggle)), batch=1, warmup=0, iterations=20)
    assert jumpy["cv_percent"] > UNSTABLE_CV and jumpy["unstable"]
    assert steady["cv_percent"] < jumpy["cv_percent"]


def test_measure_caps_slow_rows():
    t0 = time.perf_counter()
    fig = measure(lambda: time.sleep(0.05), batch=1, warmup=1, iterations=10_000, max_seconds=0.5)
    assert 10 <= fig["iterations"] < 100 and time.perf_counter() - t0 < 3


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
