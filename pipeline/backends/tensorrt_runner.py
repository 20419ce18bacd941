"""TensorRT engine: a loader (read the .engine, deserialize) apart from the runner (check
I/O against the ONNX, bind device buffers by tensor name, ``execute_async_v3`` on a stream
of its own).

Device memory, the stream and event timing come from cuda-python where it is installed,
so verifying an engine never imports torch; torch is the fallback (see ``cuda_mem``).
``close()`` destroys the execution context, then the engine, then the runtime (TensorRT
wants each gone before the object that created it), then frees the buffers and stream.

Works with the full TensorRT and, on a supported RTX GPU, TensorRT for RTX (same API).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.backends.base import Runner, TensorSpec
from pipeline.backends.cuda_mem import open_device
from pipeline.engine_file import read_engine
from pipeline.errors import PipelineError

_NP = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
       "INT8": "int8", "UINT8": "uint8", "BF16": "bfloat16"}


class EngineFromFile:
    """Loader: our ``.engine`` (metadata header + plan) or a raw plan, deserialized.
    Returns ``(runtime, engine)``; the runtime must outlive the engine."""

    def __init__(self, path: Path, trt_module, model: str = "?"):
        self.path = Path(path)
        self.trt = trt_module
        self.model = model

    def __call__(self):
        trt = self.trt
        meta, plan = read_engine(self.path)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if (meta.get("engine_pipeline") or {}).get("version_compatible"):
            # a version-compatible plan carries TensorRT's lean runtime, which TensorRT runs
            # only when told the plan is trusted; ours is checked against the manifest's sha256
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise PipelineError("TensorRT could not deserialize the engine (built by another "
                                "TensorRT version or for another GPU?)", model=self.model, file=self.path,
                                fix="rebuild the set on this host: make engines-docker")
        return runtime, engine


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, engine: Path | EngineFromFile, trt_module=None, model: str = "?",
                 memory: str | None = None):
        """``engine``: a path (with ``trt_module``) or a loader. ``memory``: "cuda-python" or
        "torch" to force the device-memory provider (default: cuda-python if installed)."""
        self.loader = engine if isinstance(engine, EngineFromFile) else EngineFromFile(engine, trt_module, model)
        self.trt = self.loader.trt
        self.model = self.loader.model
        self.engine_path = self.loader.path
        self.memory = memory
        self.device = self.runtime = self.engine = self.context = None

    def activate(self) -> None:
        self.device = open_device(self.memory, self.model, self.engine_path)
        self.runtime, self.engine = self.loader()
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise PipelineError("TensorRT could not create an execution context (out of device memory?)",
                                model=self.model, file=self.engine_path,
                                fix="free GPU memory (`nvidia-smi` shows who holds it) and retry")
        # activation memory TensorRT allocates for the context itself (no allocator of ours
        # sees it); the _v2 property also counts weight-streaming scratch where it exists
        size = getattr(self.engine, "device_memory_size_v2", None)
        self.context_device_mib = (size if size is not None else self.engine.device_memory_size) / 2**20
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def close(self) -> None:
        # drop the references in dependency order: context, engine, runtime; then memory
        self.context = None
        self.engine = None
        self.runtime = None
        device, self.device = self.device, None
        if device is not None:
            device.close()

    @property
    def memory_provider(self) -> str | None:
        return self.device.name if self.device is not None else None

    def device_mib(self) -> float:
        """Device memory this runner holds: the context's activations plus its I/O buffers."""
        return self.context_device_mib + (self.device.nbytes / 2**20 if self.device is not None else 0.0)

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

    def _bind(self, feed: dict[str, np.ndarray]) -> list[str]:
        """Copy the inputs to the device, size the outputs; returns the output names."""
        ctx, dev = self.context, self.device
        for name, arr in feed.items():
            self._set_shape(name, arr.shape)
            ctx.set_tensor_address(name, dev.put(name, np.ascontiguousarray(arr)))
        outs = []
        for s in self.outputs():
            ctx.set_tensor_address(s.name, dev.empty(s.name, tuple(ctx.get_tensor_shape(s.name)), s.dtype))
            outs.append(s.name)
        return outs

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.device.handle):
            raise PipelineError("execute_async_v3 failed", model=self.model, file=self.engine_path,
                                fix="check the TensorRT log above")

    def prepare(self, x: np.ndarray):
        """Bind device buffers once; returns a closure that only enqueues the engine on its
        stream (the benchmark's engine view: no host<->device copies). Pair it with
        ``timer()``, whose stop() waits for the stream."""
        self._bind({"images": x})
        self.device.synchronize()
        return self._enqueue

    def timer(self):
        """CUDA-event timer on this runner's stream (GPU compute time of what it enqueues)."""
        return self.device.timer()

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._bind(feed)
        self._enqueue()
        self.device.synchronize()
        res = {}
        for name in outs:
            a = self.device.fetch(name)
            res[name] = a.astype(np.float32) if a.dtype.kind == "f" else a
        return res
