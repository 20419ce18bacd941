"""Per-model benchmark: the engine (where it can run here) against the baselines measured
in the same run: PyTorch FP32, FP16 and FP16 replayed through a CUDA graph (eager PyTorch at
batch 1 is launch-bound, so the graph is the honest competitor) and ONNX Runtime."""
from __future__ import annotations

from pathlib import Path

from pipeline.checks.images import batches, reference_images
from pipeline.checks.timing import end_to_end, measure
from pipeline.config import ModelSpec


def _torch_fns(decision, imgsz: int, batch: int, device: str):
    """(mode, engine-view fn, end-to-end infer) for each PyTorch mode on ``device``, loading
    the checkpoint ``decision`` (checkpoint.gate) let through: its private, hashed copy, in
    safe mode unless that digest is trusted."""
    import contextlib

    import torch

    from pipeline.backends.torch import TorchRunner
    from pipeline.checkpoint import load_error
    modes = ["fp32"] + (["fp16", "fp16+cudagraph"] if device == "cuda" else [])
    for mode in modes:
        # the with block closes each mode's model before the next one loads (also when the
        # consumer stops early: the generator's close() unwinds it)
        with contextlib.ExitStack() as stack:
            try:
                r = stack.enter_context(TorchRunner(decision.path, imgsz, batch=batch, device=device,
                                                    half=mode != "fp32"))
            except Exception as exc:  # noqa: BLE001  (torch/pickle/ultralytics raise many types)
                raise load_error(decision.name, decision.source, exc, decision.trusted) from exc
            m, dt = r.model, (torch.float16 if mode != "fp32" else torch.float32)
            x = torch.rand(batch, 3, imgsz, imgsz, device=device, dtype=dt)
            with torch.inference_mode():
                if mode == "fp16+cudagraph":
                    s = torch.cuda.Stream()
                    s.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(s):
                        for _ in range(3):
                            m(x)
                    torch.cuda.current_stream().wait_stream(s)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        static_out = m(x)
                    fn = graph.replay

                    def infer(a, x=x, graph=graph, out=static_out):
                        x.copy_(torch.from_numpy(a))
                        graph.replay()
                        y = out[0] if isinstance(out, (list, tuple)) else out
                        return y.float().cpu().numpy()
                else:
                    def fn(m=m, x=x):
                        with torch.inference_mode():
                            return m(x)

                    def infer(a, r=r):
                        return r.infer({"images": a})["output0"]
            yield f"torch {mode}", fn, infer


def benchmark_model(spec: ModelSpec, record: dict, checkpoint: Path, onnx_fp32: Path,
                    engine_runner=None, batches_: tuple[int, ...] = (1,), iterations: int = 200,
                    warmup: int = 20, device: str | None = None, views=("engine", "end2end"),
                    ort: bool = True, max_seconds: float = 10.0) -> list[dict]:
    """Rows of figures for every runtime x batch x view."""
    import torch

    from pipeline.checkpoint import gate
    from pipeline.errors import PipelineError
    from pipeline.tasks import decode_outputs
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    decode = lambda outputs: decode_outputs(record, outputs)
    images = reference_images(spec.verify_images)
    expected = (record.get("sha256") or {}).get("source")
    if not expected:   # trust is bound to a digest: a record without one vouches for no file
        raise PipelineError("the export record names no sha256 of the checkpoint, so the PyTorch baselines "
                            "cannot prove they load the exported file; nothing was loaded", model=spec.name,
                            file=checkpoint, fix="rerun `engines run` to export the model again")
    with gate(spec.name, checkpoint, expected_sha256=expected, trusted=bool(record.get("trusted"))) as decision:
        return _benchmark_rows(spec, decision, onnx_fp32, engine_runner, batches_, iterations, warmup, device,
                               views, ort, max_seconds, images, decode)


def _benchmark_rows(spec, decision, onnx_fp32, engine_runner, batches_, iterations, warmup, device, views, ort,
                    max_seconds, images, decode) -> list[dict]:
    from pipeline.backends.onnxruntime import OnnxRuntimeRunner
    rows = []

    def add(runtime, view, batch, fn, gpu: bool):
        # CUDA events go on the stream the work runs on: the engine's own stream (its
        # runner's timer), torch's current stream for the PyTorch rows
        is_engine = engine_runner is not None and runtime == engine_runner.label
        timer = None
        if is_engine:
            timer = engine_runner.timer()
        elif gpu:
            from pipeline.backends.cuda_mem import TorchEventTimer
            timer = TorchEventTimer()
        fig = measure(fn, batch=batch, warmup=warmup, iterations=iterations, timer=timer,
                      max_seconds=max_seconds, gpu_events=view == "engine")
        if is_engine:  # what the runner holds: context activations plus its I/O buffers
            fig["context_device_mib"] = engine_runner.context_device_mib
            fig["peak_device_mib"] = engine_runner.device_mib()
            fig["memory"] = engine_runner.memory_provider
        rows.append({"model": spec.name, "runtime": runtime, "view": view, **fig})

    for b in batches_:
        x = batches(images, spec.imgsz, b)[0]
        if engine_runner is not None and engine_runner.accepts_batch(b):
            fn = engine_runner.prepare(x)
            if "engine" in views:
                add(engine_runner.label, "engine", b, fn, True)
            if "end2end" in views:
                add(engine_runner.label, "end2end", b, end_to_end(
                    lambda a: engine_runner.infer({"images": a})["output0"], images, spec.imgsz, b, decode), True)
        for label, fn, infer in _torch_fns(decision, spec.imgsz, b, device):
            cuda = device == "cuda"
            if "engine" in views:
                add(label, "engine", b, fn, cuda)
            if "end2end" in views:
                add(label, "end2end", b, end_to_end(infer, images, spec.imgsz, b, decode), cuda)
        if ort:
            with OnnxRuntimeRunner(onnx_fp32) as r:
                fixed = r.inputs()[0].shape[0]
                if isinstance(fixed, int) and fixed != b:
                    continue  # a static-batch ONNX runs only its own batch
                if "engine" in views:
                    add("onnxruntime cpu fp32", "engine", b, lambda r=r, x=x: r.infer({"images": x}), False)
                if "end2end" in views:
                    add("onnxruntime cpu fp32", "end2end", b, end_to_end(
                        lambda a, r=r: r.infer({"images": a})["output0"], images, spec.imgsz, b, decode), False)
    return rows


def speedup_summary(rows: list[dict]) -> dict:
    """Per model: best PyTorch images/s vs the engine's (engine view, largest batch)."""
    out: dict = {}
    for r in rows:
        if r["view"] != "engine":
            continue
        m = out.setdefault(r["model"], {"torch_fps": 0.0, "engine_fps": None, "batch": r["batch"]})
        if r["batch"] < m["batch"]:
            continue
        if r["batch"] > m["batch"]:
            m.update(torch_fps=0.0, engine_fps=None, batch=r["batch"])
        if r["runtime"].startswith("torch"):
            m["torch_fps"] = max(m["torch_fps"], r["images_per_s"])
        elif r["runtime"].startswith("tensorrt"):
            m["engine_fps"] = r["images_per_s"]
    for m in out.values():
        m["speedup"] = (m["engine_fps"] / m["torch_fps"]) if m["engine_fps"] and m["torch_fps"] else None
    return out

