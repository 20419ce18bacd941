"""PyTorch baselines on a GPU (issue #4): FP32, FP16 and FP16 replayed through a CUDA
graph, batch 1 and 8, for TorchScript traces of the demo models (so the GPU host needs
only torch). Eager PyTorch at batch 1 is launch-bound; the CUDA graph is the honest
competitor for a TensorRT engine.

  python -m benchmarks.bench_torch_gpu --trace DIR      # here: write the traces (needs ultralytics)
  python benchmarks/bench_torch_gpu.py --run DIR        # GPU host: print the table
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

MODELS = {"human": "yolo/yolov8n.pt", "hairnet": "hairnet_detection/hairnet_detection.pt",
          "pose": "yolo/yolov8n-pose.pt"}


def trace(models_dir: Path, out: Path, imgsz: int) -> None:
    import torch
    from ultralytics import YOLO
    out.mkdir(parents=True, exist_ok=True)
    for name, rel in MODELS.items():
        m = YOLO(str(models_dir / rel)).model.float().fuse(verbose=False).eval()
        x = torch.zeros(1, 3, imgsz, imgsz)
        m(x)  # caches the anchors for this imgsz, so the trace holds them as constants
        # (no CPU arange inside the graph: CUDA graph capture forbids host copies)
        class First(torch.nn.Module):  # eval mode returns (y, features); keep y
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, t):
                return self.inner(t)[0]
        ts = torch.jit.trace(First(m), x, check_trace=False)
        ts.save(str(out / f"{name}.ts"))


def _time(fn, iters: int, warmup: int) -> list[float]:
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    lat = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        lat.append((time.perf_counter() - t0) * 1000)
    return lat


def run(folder: Path, imgsz: int, iters: int, warmup: int) -> None:
    import torch
    torch.backends.cudnn.benchmark = True
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, imgsz {imgsz}, "
          f"{iters} iterations after {warmup} warm-up")
    print(f"{'model':<8} {'mode':<14} {'batch':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'img/s':>8} {'CV %':>6}")
    for name in MODELS:
        base = torch.jit.load(str(folder / f"{name}.ts"), map_location="cuda").eval()
        for batch in (1, 8):
            for mode in ("fp32", "fp16", "fp16+cudagraph"):
                m = base.half() if mode != "fp32" else base.float()
                x = torch.rand(batch, 3, imgsz, imgsz, device="cuda",
                               dtype=torch.float16 if mode != "fp32" else torch.float32)
                with torch.inference_mode():
                    if mode == "fp16+cudagraph":
                        s = torch.cuda.Stream()
                        s.wait_stream(torch.cuda.current_stream())
                        with torch.cuda.stream(s):
                            for _ in range(3):
                                m(x)
                        torch.cuda.current_stream().wait_stream(s)
                        g = torch.cuda.CUDAGraph()
                        with torch.cuda.graph(g):
                            m(x)
                        fn = g.replay
                    else:
                        fn = lambda: m(x)  # noqa: E731
                    lat = _time(fn, iters, warmup)
                q = statistics.quantiles(lat, n=100)
                cv = statistics.pstdev(lat) / statistics.mean(lat) * 100
                print(f"{name:<8} {mode:<14} {batch:>5} {q[49]:8.3f} {q[89]:8.3f} {q[98]:8.3f} "
                      f"{batch * 1000 / statistics.median(lat):8.0f} {cv:6.1f}{'  UNSTABLE' if cv > 2.5 else ''}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", type=Path, help="write TorchScript traces of models/ here")
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--run", type=Path, help="benchmark the traces in this folder on the GPU")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    a = ap.parse_args()
    if a.trace:
        trace(a.models, a.trace, a.imgsz)
    if a.run:
        run(a.run, a.imgsz, a.iters, a.warmup)
