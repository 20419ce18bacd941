"""checks.timing, the benchmark loop: figures in trtexec's vocabulary, measured for real on this CPU."""
from __future__ import annotations

import time

import pytest

from pipeline.backends import cuda_mem
from pipeline.checks.timing import UNSTABLE_CV, cv_percent, measure, table, timing_stats


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
    assert jumpy["cv_percent"] > UNSTABLE_CV and jumpy["unstable"] and jumpy["stability_basis"] == "host_latency"
    assert steady["cv_percent"] < jumpy["cv_percent"]


def _with_cv(percent: float, mean: float = 10.0, n: int = 200) -> list[float]:
    """Timings alternating mean -/+ d: population std d, so CV = d / mean exactly."""
    d = mean * percent / 100
    return [mean - d, mean + d] * (n // 2)


def test_stability_threshold_is_trtexecs_one_percent_on_gpu_compute_time():
    assert UNSTABLE_CV == 1.0
    assert cv_percent(_with_cv(0.9)) == pytest.approx(0.9)
    steady_gpu, jumpy_gpu = _with_cv(0.9, mean=2.0), _with_cv(1.1, mean=2.0)
    jumpy_host, steady_host = _with_cv(5.0), _with_cv(0.5)
    ok = timing_stats(jumpy_host, steady_gpu)  # host jitter does not make a GPU row unstable
    assert ok["stability_basis"] == "gpu_compute" and not ok["unstable"]
    assert ok["cv_percent"] == pytest.approx(0.9) and ok["host_cv_percent"] == pytest.approx(5.0)
    bad = timing_stats(steady_host, jumpy_gpu)
    assert bad["unstable"] and bad["cv_percent"] == pytest.approx(1.1)
    assert bad["gpu_compute_ms"]["p50"] == pytest.approx(2.0, rel=0.02) and bad["latency_ms"]["p50"] > 9
    assert "stability_note" not in ok


def test_rows_without_gpu_time_are_judged_on_host_latency_and_say_so():
    below, above = timing_stats(_with_cv(0.9)), timing_stats(_with_cv(1.1))
    assert below["stability_basis"] == above["stability_basis"] == "host_latency"
    assert not below["unstable"] and above["unstable"] and "host latency" in above["stability_note"]
    assert "gpu_compute_ms" not in above


def test_table_puts_host_latency_beside_gpu_compute_time():
    def row(runtime, stats):
        return {"model": "human", "runtime": runtime, "view": "engine", "batch": 1, "images_per_s": 100.0,
                **stats}
    text = table([row("tensorrt engine", timing_stats(_with_cv(0.5, mean=3.0), _with_cv(1.1, mean=2.0))),
                  row("onnxruntime cpu fp32", timing_stats(_with_cv(0.9, mean=25.0)))])
    head, _, gpu_row, cpu_row = text.splitlines()
    cells = [c.strip() for c in gpu_row.split("|")[1:-1]]
    names = [c.strip() for c in head.split("|")[1:-1]]
    got = dict(zip(names, cells))
    assert got["host p50 ms"] == "3.00" and got["GPU compute p50 ms"] == "2.00"
    assert got["host CV %"] == "0.5" and got["GPU CV %"] == "1.1"
    assert got["stability (CV > 1 %)"] == "UNSTABLE (GPU compute)"
    assert cpu_row.endswith("| - | - | - | - | - | stable (host latency) |")


@pytest.mark.gpu
@pytest.mark.skipif(cuda_mem.device_count() == 0, reason="needs a CUDA device usable through cuda-python")
def test_measure_times_gpu_work_with_cuda_events_on_its_stream():
    import numpy as np
    host = np.ones((32, 2**20 // 4), np.float32)  # 32 MiB host->device per call
    with cuda_mem.CudaStream() as stream, cuda_mem.DeviceBuffers() as bufs, cuda_mem.EventTimer(stream) as timer:
        buf = bufs.get("x", host.shape, host.dtype)
        fig = measure(lambda: buf.upload(host, stream), batch=1, warmup=3, iterations=30, timer=timer)
    gpu, lat = fig["gpu_compute_ms"], fig["latency_ms"]
    assert fig["stability_basis"] == "gpu_compute" and fig["iterations"] == 30
    assert 0 < gpu["p50"] <= lat["p50"] + 0.05  # the events sit inside the host's timing
    assert fig["cv_percent"] == pytest.approx(gpu["cv_percent"]) and "peak_device_mib" not in fig


def test_measure_caps_slow_rows():
    t0 = time.perf_counter()
    fig = measure(lambda: time.sleep(0.05), batch=1, warmup=1, iterations=10_000, max_seconds=0.5)
    assert 10 <= fig["iterations"] < 100 and time.perf_counter() - t0 < 3
