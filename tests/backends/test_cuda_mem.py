"""cuda_mem: device memory, streams and events through cuda-python (errors as paragraphs, buffers
that round-trip and are freed), and the torch fallback where cuda-python is missing. The buffer
test needs a CUDA device (marked gpu; skips with the reason elsewhere); the error-path tests run
everywhere cuda-python is installed."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.backends import cuda_mem
from pipeline.errors import PipelineError
from tests.conftest import fresh_python


def test_without_cuda_python_the_runner_falls_back_to_torch():
    lines = fresh_python("""
import sys
sys.modules["cuda.bindings"] = None  # as if cuda-python were not installed
from pipeline.backends.cuda_mem import cuda_runtime, open_device
from pipeline.errors import PipelineError
print("cuda-python:", cuda_runtime())
try:
    dev = open_device()
    print("device:", dev.name)
    dev.close()
except PipelineError as e:
    print("refused:", e.what)
print("torch loaded:", "torch" in sys.modules)
""")
    assert lines[0] == "cuda-python: None"
    assert lines[1] in ("device: torch", "refused: no CUDA device to run the engine on")
    assert lines[2] == "torch loaded: True"


def test_cuda_errors_become_pipeline_errors():
    rt = cuda_mem.cuda_runtime()
    if rt is None:
        pytest.skip("cuda-python (cuda-bindings) is not installed")
    with pytest.raises(PipelineError, match="cudaMalloc failed: cudaErrorInvalidValue") as e:
        cuda_mem.check((rt.cudaError_t.cudaErrorInvalidValue, 0), "cudaMalloc")
    assert e.value.fix
    assert cuda_mem.check((rt.cudaError_t.cudaSuccess, 7), "x") == 7
    if cuda_mem.device_count() == 0:  # no usable GPU here: the first real call says why
        with pytest.raises(PipelineError, match="cudaStreamCreate failed"):
            cuda_mem.CudaStream()
        with pytest.raises(PipelineError, match="no CUDA device"):
            cuda_mem.open_device("cuda-python", model="human")


needs_cuda = pytest.mark.skipif(cuda_mem.device_count() == 0,
                                reason="needs a CUDA device usable through cuda-python (cuda-bindings 13, "
                                       "driver for CUDA 13); run on a GPU host")


@pytest.mark.gpu
@needs_cuda
def test_device_buffers_round_trip_event_timing_and_free():
    rt = cuda_mem.cuda_runtime()
    free0, _ = cuda_mem.check(rt.cudaMemGetInfo(), "cudaMemGetInfo")
    with cuda_mem.CudaStream() as stream, cuda_mem.DeviceBuffers() as bufs, cuda_mem.EventTimer(stream) as timer:
        for dtype in ("float32", "float16", "int64"):
            host = (np.arange(3 * 64 * 64) % 1000).astype(dtype).reshape(3, 64, 64)
            buf = bufs.get(f"x_{dtype}", host.shape, dtype)
            buf.upload(host, stream)
            back = buf.download(stream)
            assert back.dtype == host.dtype and np.array_equal(back, host)
        small = bufs.get("x_float32", (3, 8, 8), "float32")
        assert small.shape == (3, 8, 8) and bufs.buffers["x_float32"] is small  # reused, not reallocated
        big = (np.random.default_rng(0).random((64, 2**20 // 4)) * 100).astype(np.float32)  # 64 MiB
        buf = bufs.get("big", big.shape, big.dtype)
        timer.start()
        buf.upload(big, stream)
        ms = timer.stop()
        assert ms > 0.0 and np.array_equal(buf.download(stream), big)
        free1, _ = cuda_mem.check(rt.cudaMemGetInfo(), "cudaMemGetInfo")
        assert free0 - free1 >= 60 * 2**20  # the 64 MiB are really on the device
        assert bufs.nbytes >= big.nbytes
    assert bufs.buffers == {} and stream.stream is None and timer.begin is None
    free2, _ = cuda_mem.check(rt.cudaMemGetInfo(), "cudaMemGetInfo")
    assert free2 - free1 >= 60 * 2**20  # and freed by close()
    dev = cuda_mem.open_device()
    assert dev.name == "cuda-python"
    ptr = dev.put("images", np.ones((1, 3, 4, 4), np.float32))
    assert ptr and dev.fetch("images").sum() == 48
    dev.close()
