"""Benchmarks in trtexec's vocabulary: warm-up, then a fixed number of iterations (or
seconds); throughput, p50/p90/p95/p99 latency, GPU compute time (CUDA events) where the
runtime runs on a GPU, peak device memory, GPU utilisation (NVML), and a warning when the
coefficient of variation is over 2.5 % (trtexec's stability rule, as its summary words it).

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

UNSTABLE_CV = 2.5  # percent


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


def measure(fn: Callable[[], object], *, batch: int, warmup: int = 20, iterations: int = 200,
            seconds: float | None = None, max_seconds: float = 10.0, cuda: bool = False,
            gpu_events: bool = True, stream=None) -> dict:
    """Time ``fn`` (one inference of ``batch`` images): ``iterations`` calls (or ``seconds``
    of calls), cut short after ``max_seconds`` once 10 calls are in, so slow CPU rows stay
    bounded. With ``cuda``, each call is synchronised and also timed with CUDA events."""
    torch = None
    if cuda:
        import torch
        torch.cuda.reset_peak_memory_stats()
    warm_end = time.perf_counter() + max_seconds / 2
    for i in range(warmup):
        fn()
        if i >= 2 and time.perf_counter() > warm_end:
            break
    if cuda:
        torch.cuda.synchronize()
    lat, gpu = [], []
    deadline = time.perf_counter() + seconds if seconds else None
    with _NvmlSampler() if cuda else _Null() as util:
        start = time.perf_counter()
        cap = start + max_seconds
        while ((len(lat) < iterations) if deadline is None else (time.perf_counter() < deadline)) and not (
                len(lat) >= 10 and time.perf_counter() > cap):
            t0 = time.perf_counter()
            if cuda:
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record(stream)
                fn()
                e1.record(stream)
                torch.cuda.synchronize()
                gpu.append(e0.elapsed_time(e1))
            else:
                fn()
            lat.append((time.perf_counter() - t0) * 1000.0)
        total = time.perf_counter() - start
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    mean = statistics.fmean(lat)
    cv = statistics.pstdev(lat) / mean * 100 if mean else 0.0
    out = {"iterations": len(lat), "batch": batch, "throughput_qps": len(lat) / total,
           "images_per_s": len(lat) * batch / total, "latency_ms": {
               "mean": mean, "min": min(lat), "max": max(lat), "p50": q[49], "p90": q[89],
               "p95": q[94], "p99": q[98]},
           "cv_percent": cv, "unstable": cv > UNSTABLE_CV}
    if cuda and gpu_events:  # end-to-end rows leave it out: their events would span CPU work
        out["gpu_compute_ms"] = {"mean": statistics.fmean(gpu), "p50": statistics.median(gpu)}
    if cuda:
        out["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20  # torch's allocator
        out["gpu_util_percent"] = util.mean()
    return out


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def mean(self):
        return None


def end_to_end(infer: Callable[[np.ndarray], np.ndarray], images: list[Path], imgsz: int, batch: int,
               nc: int, nkpt: int) -> Callable[[], object]:
    """A closure doing what a user's request does: read + letterbox ``batch`` images,
    infer, decode + NMS. ``infer`` maps a float32 NCHW batch to output0 (numpy)."""
    from .detections import decode
    from .images import preprocess
    paths = [images[i % len(images)] for i in range(batch)]

    def step():
        x = np.stack([preprocess(p, imgsz) for p in paths])
        return decode(infer(x), nc, nkpt)
    return step


def table(rows: list[dict]) -> str:
    """Markdown table of benchmark rows ({model, runtime, view, batch, **measure()})."""
    head = ("| model | runtime | view | batch | img/s | p50 ms | p90 ms | p95 ms | p99 ms | GPU ms | "
            "peak MiB | GPU util % | CV % |")
    lines = [head, "| --- " * 13 + "|"]
    for r in rows:
        lat = r["latency_ms"]
        gpu = r.get("gpu_compute_ms", {}).get("p50")
        util = r.get("gpu_util_percent")
        peak = r.get("peak_device_mib")
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['view']} | {r['batch']} | {r['images_per_s']:.0f} | "
            f"{lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | "
            f"{'-' if gpu is None else f'{gpu:.2f}'} | {'-' if peak is None else f'{peak:.0f}'} | "
            f"{'-' if util is None else f'{util:.0f}'} | {r['cv_percent']:.1f}{' UNSTABLE' if r['unstable'] else ''} |")
    return "\n".join(lines) + "\n"
