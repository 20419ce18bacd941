"""ONNX Runtime (CPU): the FP32 reference every engine is compared with."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.backends.base import Runner, TensorSpec

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(bool)": "bool"}


class SessionFromOnnx:
    """Loader: an ONNX Runtime CPU session for a model file (or its bytes)."""

    def __init__(self, model: Path | bytes, threads: int | None = None):
        self.model = model
        self.threads = threads

    def __call__(self):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        src = str(self.model) if isinstance(self.model, Path) else self.model
        return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model: Path | bytes | SessionFromOnnx, threads: int | None = None):
        self.loader = model if isinstance(model, SessionFromOnnx) else SessionFromOnnx(model, threads)
        self.session = None

    def activate(self) -> None:
        self.session = self.loader()

    def close(self) -> None:
        # ONNX Runtime frees the session's arenas when the last reference goes
        self.session = None

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(i.name, tuple(i.shape), _ORT_TYPES.get(i.type, i.type))
                for i in self.session.get_inputs()]

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(o.name, tuple(o.shape), _ORT_TYPES.get(o.type, o.type))
                for o in self.session.get_outputs()]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed)))
