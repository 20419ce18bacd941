"""The TensorRT runner: context, engine, runtime and device memory released in that order on
every path (a fake tensorrt and device), no torch on the engine path where cuda-python is
installed, and cuda-python against torch on a real engine (marked gpu: the full TensorRT and a
GPU)."""
from __future__ import annotations

import shutil
import weakref

import numpy as np
import pytest

from pipeline.backends import cuda_mem
from pipeline.errors import PipelineError
from tests.conftest import fresh_python

# ---- the TensorRT runner's lifecycle, orchestration only (fake tensorrt + fake device) ----

class _Rec:
    """Records the order in which the fake TensorRT objects are garbage collected."""

    def __init__(self):
        self.gone: list[str] = []

    def track(self, obj, name):
        weakref.finalize(obj, self.gone.append, name)
        return obj


def _fake_trt(rec: _Rec, context_ok: bool = True):
    class Context:
        pass

    class Engine:
        num_io_tensors = 0
        device_memory_size = 2**20

        def create_execution_context(self):
            return rec.track(Context(), "context") if context_ok else None

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, plan):
            assert plan == b"PLAN"
            return rec.track(Engine(), "engine")

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class trt:
        pass
    trt.Logger, trt.Runtime = Logger, lambda logger: rec.track(Runtime(logger), "runtime")
    return trt


class _FakeDevice:
    name, nbytes = "fake", 0

    def __init__(self, rec):
        self.rec = rec

    def close(self):
        self.rec.gone.append("device")


@pytest.mark.parametrize("context_ok", [True, False])
def test_tensorrt_runner_closes_context_engine_runtime_then_memory(tmp_path, monkeypatch, context_ok):
    import pipeline.backends.tensorrt_runner as tr
    rec = _Rec()
    monkeypatch.setattr(tr, "open_device", lambda *a: _FakeDevice(rec))
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"PLAN")
    runner = tr.TensorRTRunner(plan, _fake_trt(rec, context_ok), "tiny")
    if context_ok:
        with runner:
            assert runner.context_device_mib == 1.0 and rec.gone == []
    else:
        with pytest.raises(PipelineError, match="execution context"):
            with runner:
                pass
    expected = ["context", "engine", "runtime", "device"] if context_ok else ["engine", "runtime", "device"]
    assert rec.gone == expected
    assert runner.device is None and runner.engine is None


# ---- torch-free engine path ----

def test_engine_verify_path_does_not_import_torch(tmp_path):
    """With cuda-python installed, importing the verify stage and opening a TensorRT
    runner (here up to its first refusal: no GPU, or no engine file) pulls in no torch."""
    if cuda_mem.cuda_runtime() is None:
        pytest.skip("cuda-python (cuda-bindings) is not installed")
    missing = tmp_path / "missing.engine"
    lines = fresh_python(f"""
import sys
from pathlib import Path
import pipeline.cli, pipeline.stages.verify
from pipeline.backends.tensorrt_runner import TensorRTRunner
from pipeline.errors import PipelineError
r = TensorRTRunner(Path({str(missing)!r}), None, "human")
try:
    with r:
        pass
except (PipelineError, OSError) as e:
    print("refused:", type(e).__name__, str(e).splitlines()[0])
print("device after:", r.device)
print("torch loaded:", "torch" in sys.modules)
""")
    assert lines[-1] == "torch loaded: False", lines
    assert lines[-2] == "device after: None"
    assert lines[0].startswith("refused:")


def _real_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return trt if hasattr(trt, "Builder") else None


@pytest.mark.gpu
@pytest.mark.skipif(_real_tensorrt() is None or not shutil.which("nvidia-smi") or cuda_mem.device_count() == 0,
                    reason="needs the full TensorRT, cuda-python and a GPU (run in the builder container)")
def test_tensorrt_runner_cuda_python_and_torch_agree(workspace):
    """The same engine through both device-memory providers: identical outputs, and the
    cuda-python one frees everything on close."""
    from pipeline.backends.tensorrt_runner import TensorRTRunner
    from pipeline.checks.images import batches, reference_images
    from tests.conftest import build_full_trt_human
    backend, engine = build_full_trt_human(workspace)
    x = batches(reference_images(), 320, 1)[0]
    outs = {}
    for memory in ("cuda-python", "torch"):
        with TensorRTRunner(engine, backend.module(), "human", memory=memory) as r:
            assert r.memory_provider == memory
            outs[memory] = r.infer({"images": x})["output0"]
            run, timer = r.prepare(x), r.timer()
            timer.start()
            run()
            assert timer.stop() > 0.0
        assert r.device is None and r.context is None
    assert outs["cuda-python"].shape == (1, 84, 2100)
    np.testing.assert_array_equal(outs["cuda-python"], outs["torch"])
