"""TensorRT engine runner: deserialize, check I/O against the ONNX, bind by tensor name,
``execute_async_v3`` on a CUDA stream. Device buffers come from torch (CUDA).

Works with the full TensorRT and, on a supported RTX GPU, TensorRT for RTX (same API).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine_file import read_engine
from ..errors import PipelineError
from .base import Runner, TensorSpec

_NP = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
       "INT8": "int8", "UINT8": "uint8", "BF16": "bfloat16"}


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, engine: Path, trt_module, model: str = "?"):
        self.engine_path = engine
        self.trt = trt_module
        self.model = model

    def activate(self) -> None:
        import torch
        trt = self.trt
        if not torch.cuda.is_available():
            raise PipelineError("no CUDA device to run the engine on", model=self.model,
                                file=self.engine_path, fix="run `engines verify` on the target GPU")
        _, plan = read_engine(self.engine_path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise PipelineError("TensorRT could not deserialize the engine (built by another "
                                "TensorRT version or for another GPU?)", model=self.model,
                                file=self.engine_path,
                                fix="rebuild the set on this host: make engines-docker")
        self.context = self.engine.create_execution_context()
        # activation memory TensorRT allocates for the context itself (torch's peak does not
        # see it); the _v2 property also counts weight-streaming scratch where it exists
        size = getattr(self.engine, "device_memory_size_v2", None)
        self.context_device_mib = (size if size is not None else self.engine.device_memory_size) / 2**20
        self.stream = torch.cuda.Stream()
        self.torch = torch
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def _spec(self, name: str) -> TensorSpec:
        e = self.engine
        return TensorSpec(name, tuple(e.get_tensor_shape(name)),
                          _NP.get(e.get_tensor_dtype(name).name, e.get_tensor_dtype(name).name))

    def _is_input(self, name: str) -> bool:
        return self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT

    def inputs(self) -> list[TensorSpec]:
        return [self._spec(n) for n in self.names if self._is_input(n)]

    def outputs(self) -> list[TensorSpec]:
        return [self._spec(n) for n in self.names if not self._is_input(n)]

    def check_io(self, onnx_io: dict) -> list[str]:
        """Differences between the engine's I/O and the ONNX record (names, dtypes, ranks)."""
        problems = []
        mine = {s.name: s for s in self.inputs() + self.outputs()}
        for t in onnx_io["inputs"] + onnx_io["outputs"]:
            s = mine.get(t["name"])
            if s is None:
                problems.append(f"tensor {t['name']} missing from the engine")
                continue
            if s.dtype != t["dtype"]:
                problems.append(f"{t['name']}: dtype {s.dtype} in the engine, {t['dtype']} in the ONNX")
            if len(s.shape) != len(t["shape"]):
                problems.append(f"{t['name']}: rank {len(s.shape)} vs {len(t['shape'])}")
        return problems

    def _set_shape(self, name: str, shape) -> None:
        if not self.context.set_input_shape(name, tuple(shape)):
            raise PipelineError(f"the engine does not accept input {name} of shape {tuple(shape)}",
                                model=self.model, file=self.engine_path,
                                fix="use a batch inside the engine's profile (batch: in models.yaml)")

    def accepts_batch(self, batch: int) -> bool:
        """Whether ``batch`` lies inside the engine's optimization profile 0."""
        lo, _, hi = self.engine.get_tensor_profile_shape("images", 0)
        return lo[0] <= batch <= hi[0]

    @property
    def label(self) -> str:
        return f"{self.name} engine"

    def prepare(self, x: np.ndarray):
        """Bind device buffers once; returns a closure that runs the engine alone
        (the benchmark's engine view: no host<->device copies)."""
        torch, ctx = self.torch, self.context
        self._set_shape("images", x.shape)
        self._bench_in = torch.from_numpy(np.ascontiguousarray(x)).cuda()
        ctx.set_tensor_address("images", self._bench_in.data_ptr())
        self._bench_out = {}
        for s in self.outputs():
            t = torch.empty(tuple(ctx.get_tensor_shape(s.name)), dtype=getattr(torch, s.dtype), device="cuda")
            ctx.set_tensor_address(s.name, t.data_ptr())
            self._bench_out[s.name] = t
        handle = self.stream.cuda_stream

        def run():
            ctx.execute_async_v3(handle)
            self.stream.synchronize()
        return run

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, ctx = self.torch, self.context
        keep = []
        for name, arr in feed.items():
            self._set_shape(name, arr.shape)
            t = torch.from_numpy(np.ascontiguousarray(arr)).cuda()
            keep.append(t)
            ctx.set_tensor_address(name, t.data_ptr())
        outs = {}
        for s in self.outputs():
            shape = tuple(ctx.get_tensor_shape(s.name))
            t = torch.empty(shape, dtype=getattr(torch, s.dtype), device="cuda")
            ctx.set_tensor_address(s.name, t.data_ptr())
            outs[s.name] = t
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise PipelineError("execute_async_v3 failed", model=self.model, file=self.engine_path,
                                fix="check the TensorRT log above")
        self.stream.synchronize()
        return {k: v.float().cpu().numpy() for k, v in outs.items()}
