"""PyTorch: the checkpoint itself, run the way Ultralytics' exporter traces it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.backends.base import Runner, TensorSpec


def load_yolo(path: Path):
    """Load an Ultralytics checkpoint; raises whatever Ultralytics raises."""
    from ultralytics import YOLO
    return YOLO(str(path))


class TorchRunner(Runner):
    """Runs ``model.model`` in FP32 eval mode, set up as Ultralytics' exporter sets it up: fused, the
    heads in export mode (so they return what the ONNX outputs hold, in its order), and the
    NMS-free branch on only for ``nms=False``. Outputs are named as the export names them:
    ``output0``, then ``output1`` (segment prototypes)."""
    name = "torch"

    def __init__(self, checkpoint: Path, imgsz: int, batch: int = 1, device: str = "cpu",
                 half: bool = False, nms: bool | None = None):
        self.checkpoint = checkpoint
        self.imgsz = imgsz
        self.batch = batch
        self.device = device
        self.half = half
        self.nms = nms
        self.model = None

    def activate(self) -> None:
        import torch
        yolo = load_yolo(self.checkpoint)
        model = yolo.model
        if hasattr(model, "end2end"):
            model.end2end = self.nms is False
        model = model.float().fuse(verbose=False) if hasattr(model, "fuse") else model
        _export_mode(model, self.imgsz)
        model = model.eval().to(self.device)
        if self.half:
            model = model.half()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self._torch = torch

    def close(self) -> None:
        if self.model is not None:
            self.model = None
            if str(self.device).startswith("cuda"):
                self._torch.cuda.empty_cache()  # give the weights' blocks back to the device

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec("images", (self.batch, 3, self.imgsz, self.imgsz), "float32")]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(feed["images"])).to(self.device)
        if self.half:
            x = x.half()
        with torch.inference_mode():
            y = self.model(x)
        outs = list(y) if isinstance(y, (list, tuple)) else [y]
        return {f"output{i}": o.float().cpu().numpy() for i, o in enumerate(outs)}


MAX_DET = 300   # Ultralytics' default max_det, which the exporter clamps to the anchors/queries there are


def _export_mode(model, imgsz: int) -> None:
    """The head settings Ultralytics' exporter applies before tracing (ultralytics/engine/exporter.py)."""
    from ultralytics.nn.modules.head import Classify, Detect, RTDETRDecoder
    for m in model.modules():
        if isinstance(m, Classify):
            m.export, m.format = True, "onnx"
        elif isinstance(m, (Detect, RTDETRDecoder)):
            m.dynamic, m.export, m.format = False, True, "onnx"
            available = (m.num_queries if isinstance(m, RTDETRDecoder)
                         else sum((imgsz // int(s)) ** 2 for s in model.stride.tolist()))
            m.max_det = min(MAX_DET, available)
