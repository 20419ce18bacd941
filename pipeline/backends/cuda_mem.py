"""Device memory, streams and event timing without torch: NVIDIA's ``cuda-python``
(``cuda.bindings.runtime``, the CUDA runtime API). The TensorRT runner prefers these and
falls back to torch only where cuda-python is not installed, so the deploy gate
(`engines verify`) runs an engine without importing torch.

Every runtime call returns ``(cudaError_t, *values)``; :func:`check` turns an error into a
PipelineError naming the call and the CUDA error. Objects free what they own in
``close()`` (idempotent) and work as context managers.
"""
from __future__ import annotations

import numpy as np

from pipeline.errors import PipelineError

_FIX = "check `nvidia-smi`; the driver must support CUDA 13 (cuda-bindings 13.x)"


def cuda_runtime():
    """``cuda.bindings.runtime``, or None where cuda-python is not installed."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        return None
    return runtime


def _rt():
    rt = cuda_runtime()
    if rt is None:
        raise PipelineError("cuda-python is not installed", fix="pip install 'cuda-bindings>=13.0.3,<14'")
    return rt


def check(result, call: str, model: str | None = None, file=None):
    """Unwrap a cuda-python result tuple; raise PipelineError on an error code."""
    rt = _rt()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, name = rt.cudaGetErrorName(err)
        _, text = rt.cudaGetErrorString(err)
        name = name.decode() if isinstance(name, bytes) else name
        text = text.decode() if isinstance(text, bytes) else text
        raise PipelineError(f"CUDA call {call} failed: {name} ({text})", model=model, file=file, fix=_FIX)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_count() -> int:
    """CUDA devices this process can use (0 without cuda-python, a driver or a GPU)."""
    rt = cuda_runtime()
    if rt is None:
        return 0
    err, n = rt.cudaGetDeviceCount()
    return n if err == rt.cudaError_t.cudaSuccess else 0


class CudaStream:
    """A CUDA stream of its own (TensorRT's ``execute_async_v3`` takes ``handle``)."""

    def __init__(self):
        self._rt = _rt()
        self.stream = check(self._rt.cudaStreamCreate(), "cudaStreamCreate")

    @property
    def handle(self) -> int:
        return int(self.stream)

    def synchronize(self) -> None:
        check(self._rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.stream is not None:
            s, self.stream = self.stream, None
            check(self._rt.cudaStreamDestroy(s), "cudaStreamDestroy")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EventTimer:
    """GPU time between two events recorded on a stream (what trtexec calls GPU Compute Time)."""

    def __init__(self, stream: CudaStream):
        self._rt = _rt()
        self.stream = stream
        self.begin = check(self._rt.cudaEventCreate(), "cudaEventCreate")
        self.end = check(self._rt.cudaEventCreate(), "cudaEventCreate")

    def start(self) -> None:
        check(self._rt.cudaEventRecord(self.begin, self.stream.stream), "cudaEventRecord")

    def stop(self) -> float:
        """Record the end event, wait for it, return the milliseconds since ``start()``."""
        check(self._rt.cudaEventRecord(self.end, self.stream.stream), "cudaEventRecord")
        check(self._rt.cudaEventSynchronize(self.end), "cudaEventSynchronize")
        return float(check(self._rt.cudaEventElapsedTime(self.begin, self.end), "cudaEventElapsedTime"))

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        for attr in ("begin", "end"):
            ev = getattr(self, attr, None)
            if ev is not None:
                setattr(self, attr, None)
                check(self._rt.cudaEventDestroy(ev), "cudaEventDestroy")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DeviceBuffer:
    """One device allocation holding an array of ``shape`` and ``dtype``."""

    def __init__(self, shape, dtype, name: str = "?"):
        self._rt = _rt()
        self.name = name
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = max(int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize, 1)
        self.ptr = int(check(self._rt.cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes} bytes for {name})"))

    def upload(self, arr: np.ndarray, stream: CudaStream) -> None:
        """Host -> device, asynchronous on ``stream`` (the array must outlive the copy:
        callers synchronize the stream before dropping it)."""
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if arr.nbytes > self.nbytes:
            raise ValueError(f"{self.name}: {arr.nbytes} bytes do not fit in a buffer of {self.nbytes}")
        check(self._rt.cudaMemcpyAsync(self.ptr, arr.ctypes.data, arr.nbytes,
                                       self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.stream),
              f"cudaMemcpyAsync(host->device, {self.name})")

    def download(self, stream: CudaStream, shape=None) -> np.ndarray:
        """Device -> host into a new array (of ``shape``, default the buffer's), synchronised."""
        out = np.empty(tuple(shape) if shape is not None else self.shape, dtype=self.dtype)
        if out.nbytes > self.nbytes:
            raise ValueError(f"{self.name}: {out.nbytes} bytes asked from a buffer of {self.nbytes}")
        check(self._rt.cudaMemcpyAsync(out.ctypes.data, self.ptr, out.nbytes,
                                       self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.stream),
              f"cudaMemcpyAsync(device->host, {self.name})")
        stream.synchronize()
        return out

    def free(self) -> None:
        if self.ptr:
            p, self.ptr = self.ptr, 0
            check(self._rt.cudaFree(p), f"cudaFree({self.name})")


class DeviceBuffers:
    """Named device buffers, reused while they are big enough, all freed by ``close()``."""

    def __init__(self):
        self.buffers: dict[str, DeviceBuffer] = {}

    def get(self, name: str, shape, dtype) -> DeviceBuffer:
        need = max(int(np.prod(tuple(shape), dtype=np.int64)) * np.dtype(dtype).itemsize, 1)
        buf = self.buffers.get(name)
        if buf is None or buf.nbytes < need or buf.dtype != np.dtype(dtype):
            if buf is not None:
                buf.free()
            buf = self.buffers[name] = DeviceBuffer(shape, dtype, name)
        buf.shape = tuple(int(d) for d in shape)
        return buf

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers.values())

    def close(self) -> None:
        errors = []
        while self.buffers:
            _, buf = self.buffers.popitem()
            try:
                buf.free()
            except PipelineError as e:  # free the rest, then report the first failure
                errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TorchEventTimer:
    """The torch twin of :class:`EventTimer` (CUDA events on a torch stream; the current
    stream when ``stream`` is None), with torch's allocator peak for the rows it times."""

    def __init__(self, stream=None):
        import torch
        self.torch = torch
        self.stream = stream
        self.begin = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self.begin.record(self.stream)

    def stop(self) -> float:
        self.end.record(self.stream)
        self.end.synchronize()
        return float(self.begin.elapsed_time(self.end))

    def synchronize(self) -> None:
        self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        self.torch.cuda.reset_peak_memory_stats()

    def peak_mib(self) -> float:
        return self.torch.cuda.max_memory_allocated() / 2**20

    def close(self) -> None:
        pass


class CudaPythonDevice:
    """A runner's device side through cuda-python: one stream, named buffers, event timing."""

    name = "cuda-python"

    def __init__(self):
        self.stream = CudaStream()
        self.buffers = DeviceBuffers()
        self._timer: EventTimer | None = None

    @property
    def handle(self) -> int:
        return self.stream.handle

    def put(self, name: str, arr: np.ndarray) -> int:
        buf = self.buffers.get(name, arr.shape, arr.dtype)
        buf.upload(arr, self.stream)
        return buf.ptr

    def empty(self, name: str, shape, dtype: str) -> int:
        if dtype == "bfloat16":  # numpy has no bfloat16 to download into
            raise PipelineError(f"tensor {name} is bfloat16, which the cuda-python path cannot read back",
                                fix="export with FP32 outputs (the pipeline's default), or install torch "
                                    "and pass memory='torch'")
        return self.buffers.get(name, shape, dtype).ptr

    def fetch(self, name: str) -> np.ndarray:
        buf = self.buffers.buffers[name]
        return buf.download(self.stream, buf.shape)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def timer(self) -> EventTimer:
        if self._timer is None:
            self._timer = EventTimer(self.stream)
        return self._timer

    @property
    def nbytes(self) -> int:
        return self.buffers.nbytes

    def close(self) -> None:
        if self.stream.stream is not None:
            self.stream.synchronize()  # no copy or kernel may still use a buffer being freed
        try:
            if self._timer is not None:
                self._timer.close()
            self.buffers.close()
        finally:
            self.stream.close()


class TorchDevice:
    """The same device side through torch, for machines without cuda-python."""

    name = "torch"

    def __init__(self):
        import torch
        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.tensors: dict = {}

    @property
    def handle(self) -> int:
        return self.stream.cuda_stream

    def put(self, name: str, arr: np.ndarray) -> int:
        t = self.torch.from_numpy(np.ascontiguousarray(arr)).cuda()
        self.tensors[name] = t
        return t.data_ptr()

    def empty(self, name: str, shape, dtype: str) -> int:
        t = self.torch.empty(tuple(shape), dtype=getattr(self.torch, dtype), device="cuda")
        self.tensors[name] = t
        return t.data_ptr()

    def fetch(self, name: str) -> np.ndarray:
        self.stream.synchronize()
        t = self.tensors[name]
        return (t.float() if t.dtype == self.torch.bfloat16 else t).cpu().numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def timer(self) -> TorchEventTimer:
        return TorchEventTimer(self.stream)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def close(self) -> None:
        self.stream.synchronize()
        self.tensors.clear()


def open_device(prefer: str | None = None, model: str | None = None, file=None):
    """The device side for a runner: cuda-python where it imports (torch stays unloaded),
    else torch. ``prefer`` ("cuda-python" or "torch") forces one. Refuses with a
    PipelineError where no CUDA device is usable."""
    kind = prefer or ("cuda-python" if cuda_runtime() is not None else "torch")
    no_gpu = PipelineError("no CUDA device to run the engine on", model=model, file=file,
                           fix="run `engines verify` on a GPU the set targets (`nvidia-smi` must list it)")
    if kind == "cuda-python":
        if device_count() == 0:
            raise no_gpu
        return CudaPythonDevice()
    if kind != "torch":
        raise ValueError(f"unknown device memory provider {kind!r} (cuda-python or torch)")
    import torch
    if not torch.cuda.is_available():
        raise no_gpu
    return TorchDevice()
