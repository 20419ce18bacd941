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
    """Runs ``model.model`` in FP32 eval mode, fused like the exporter fuses it.

    ``output0`` is the first element Ultralytics' heads return in eval mode; it is the
    tensor the ONNX export names ``output0``.
    """
    name = "torch"

    def __init__(self, checkpoint: Path, imgsz: int, batch: int = 1, device: str = "cpu",
                 half: bool = False):
        self.checkpoint = checkpoint
        self.imgsz = imgsz
        self.batch = batch
        self.device = device
        self.half = half
        self.model = None

    def activate(self) -> None:
        import torch
        yolo = load_yolo(self.checkpoint)
        model = yolo.model.float().fuse(verbose=False) if hasattr(yolo.model, "fuse") else yolo.model
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
        y = y[0] if isinstance(y, (list, tuple)) else y
        return {"output0": y.float().cpu().numpy()}
