"""Benchmarks in trtexec's vocabulary: warm-up, then a fixed number of iterations (or
seconds); throughput, p50/p90/p95/p99 host latency, GPU compute time (CUDA events on the
stream the work runs on) where the runtime runs on a GPU, peak device memory, GPU
utilisation (NVML), and trtexec's stability rule: UNSTABLE when the GPU compute time's
coefficient of variation exceeds 1 %. Rows without GPU compute time (CPU runtimes, the
end-to-end view) are judged on host latency instead, and say so.

Two views: ``engine`` (inputs already in the runtime's memory: the engine alone) and
``end2end`` (image decode, letterbox, inference, decode + NMS: what a user waits for).
"""
from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

# trtexec warns "GPU compute time is unstable, with coefficient of variance = x%" when the
# population standard deviation of the GPU compute times over their mean, in percent,
# exceeds kUNSTABLE_PERF_REPORTING_THRESHOLD = 1.0 (NVIDIA/TensorRT,
# samples/common/sampleReporting.cpp: findCoeffOfVariance and printEpilog).
UNSTABLE_CV = 1.0  # percent
HOST_NOTE = ("no GPU compute time for this row (CPU runtime or end-to-end view): stability judged on "
             "host latency, which also carries Python and preprocessing jitter")


class _NvmlSampler:
    """Samples GPU utilisation every 20 ms while a benchmark runs (NVML, if present)."""

    def __init__(self, index: int = 0):
        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml
            pynvml.nvmlInit()
            self._h = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
        except Exception:  # no driver, no pynvml: utilisation is simply not reported
            self._nvml = None

    def __enter__(self):
        if self._nvml:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._h).gpu)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        if self._nvml:
            self._t.join()

    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def cv_percent(ms: list[float]) -> float:
    """Coefficient of variation in percent, as trtexec computes it (population std / mean)."""
    if not ms:
        return 0.0
    mean = statistics.fmean(ms)
    return statistics.pstdev(ms) / mean * 100 if mean else float("inf")


def _distribution(ms: list[float]) -> dict:
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"mean": statistics.fmean(ms), "min": min(ms), "max": max(ms), "p50": q[49], "p90": q[89],
            "p95": q[94], "p99": q[98], "cv_percent": cv_percent(ms)}


def timing_stats(host_ms: list[float], gpu_ms: list[float] | None = None) -> dict:
    """Latency figures and the stability verdict for one row: judged on the GPU compute
    time's CV where ``gpu_ms`` (CUDA event times) exists, else on host latency's CV."""
    out: dict = {"latency_ms": _distribution(host_ms), "host_cv_percent": cv_percent(host_ms)}
    if gpu_ms:
        out["gpu_compute_ms"] = _distribution(gpu_ms)
        out.update(stability_basis="gpu_compute", cv_percent=out["gpu_compute_ms"]["cv_percent"])
    else:
        out.update(stability_basis="host_latency", cv_percent=out["host_cv_percent"], stability_note=HOST_NOTE)
    out["unstable"] = out["cv_percent"] > UNSTABLE_CV
    return out


def measure(fn: Callable[[], object], *, batch: int, warmup: int = 20, iterations: int = 200,
            seconds: float | None = None, max_seconds: float = 10.0, timer=None,
            gpu_events: bool = True) -> dict:
    """Time ``fn`` (one inference of ``batch`` images): ``iterations`` calls (or ``seconds``
    of calls), cut short after ``max_seconds`` once 10 calls are in, so slow CPU rows stay
    bounded.

    ``timer`` (GPU work): a CUDA-event timer on the stream ``fn`` enqueues on
    (``cuda_mem.EventTimer`` or ``TorchEventTimer``); each call is then bracketed by its
    events and waited for, so host latency covers the whole inference and the events give
    the GPU compute time. With ``gpu_events=False`` (end-to-end rows, whose events would
    span CPU work) the timer only synchronises."""
    if timer is not None and hasattr(timer, "reset_peak"):
        timer.reset_peak()
    warm_end = time.perf_counter() + max_seconds / 2
    for i in range(warmup):
        fn()
        if i >= 2 and time.perf_counter() > warm_end:
            break
    if timer is not None:
        timer.synchronize()
    lat, gpu = [], []
    deadline = time.perf_counter() + seconds if seconds else None
    with _NvmlSampler() if timer is not None else _Null() as util:
        start = time.perf_counter()
        cap = start + max_seconds
        while ((len(lat) < iterations) if deadline is None else (time.perf_counter() < deadline)) and not (
                len(lat) >= 10 and time.perf_counter() > cap):
            t0 = time.perf_counter()
            if timer is not None and gpu_events:
                timer.start()
                fn()
                gpu.append(timer.stop())
            else:
                fn()
                if timer is not None:
                    timer.synchronize()
            lat.append((time.perf_counter() - t0) * 1000.0)
        total = time.perf_counter() - start
    out = {"iterations": len(lat), "batch": batch, "throughput_qps": len(lat) / total,
           "images_per_s": len(lat) * batch / total, **timing_stats(lat, gpu)}
    if timer is not None:
        if hasattr(timer, "peak_mib"):
            out["peak_device_mib"] = timer.peak_mib()  # torch's allocator
        out["gpu_util_percent"] = util.mean()
    return out


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def mean(self):
        return None


def end_to_end(infer: Callable[[np.ndarray], object], images: list[Path], imgsz: int, batch: int,
               decode: Callable[[dict], list]) -> Callable[[], object]:
    """A closure doing what a user's request does: read + letterbox ``batch`` images,
    infer, decode (+ NMS on raw layouts). ``infer`` maps a float32 NCHW batch to its outputs
    ({name: array}, or output0 alone); ``decode`` is the model's task decoder."""
    from pipeline.checks.images import preprocess
    paths = [images[i % len(images)] for i in range(batch)]

    def step():
        x = np.stack([preprocess(p, imgsz) for p in paths])
        y = infer(x)
        return decode(y if isinstance(y, dict) else {"output0": y})
    return step


def table(rows: list[dict]) -> str:
    """Markdown table of benchmark rows ({model, runtime, view, batch, **measure()}): host
    latency, GPU compute time beside it, and the stability verdict with what it was judged on."""
    head = ("| model | runtime | view | batch | img/s | host p50 ms | host p90 ms | host p95 ms | host p99 ms | "
            "host CV % | GPU compute p50 ms | GPU compute p99 ms | GPU CV % | peak MiB | GPU util % | "
            f"stability (CV > {UNSTABLE_CV:g} %) |")
    lines = [head, "| --- " * 16 + "|"]
    dash = lambda v, f: "-" if v is None else format(v, f)
    for r in rows:
        lat, gpu = r["latency_ms"], r.get("gpu_compute_ms", {})
        host_cv = r.get("host_cv_percent", lat.get("cv_percent"))
        on_host = r.get("stability_basis", "host_latency") == "host_latency"
        verdict = ("UNSTABLE" if r["unstable"] else "stable") + (" (host latency)" if on_host else " (GPU compute)")
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['view']} | {r['batch']} | {r['images_per_s']:.0f} | "
            f"{lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | {dash(host_cv, '.1f')} | "
            f"{dash(gpu.get('p50'), '.2f')} | {dash(gpu.get('p99'), '.2f')} | {dash(gpu.get('cv_percent'), '.1f')} | "
            f"{dash(r.get('peak_device_mib'), '.0f')} | {dash(r.get('gpu_util_percent'), '.0f')} | {verdict} |")
    return "\n".join(lines) + "\n"
