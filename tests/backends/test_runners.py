"""Runners: loaders apart from runners, close() on every path, and the torch-free CUDA
side (cuda-python) of the TensorRT runner.

The ONNX Runtime tests run real sessions on tiny onnx.helper models. The cuda-python
buffer test needs a CUDA device (marked gpu; skips with the reason elsewhere); the
error-path tests run everywhere cuda-python is installed."""
from __future__ import annotations

import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest

from pipeline.backends import cuda_mem
from pipeline.backends.onnxruntime import OnnxRuntimeRunner, SessionFromOnnx
from pipeline.errors import PipelineError
from tests.conftest import fresh_python, write_config

IMGSZ = 32


def tiny_yolo_like(path: Path, rows: int = 6) -> Path:
    """images (B,3,32,32) -> output0 (B, rows, 3072/rows): a reshape, so a detector-shaped
    output (4 box rows + 2 class rows when rows=6) comes out of a real ONNX Runtime session."""
    import onnx
    from onnx import TensorProto, helper
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [-1, rows, 3 * IMGSZ * IMGSZ // rows])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["images", "shape"], ["output0"])], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, IMGSZ, IMGSZ])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", rows, 3 * IMGSZ * IMGSZ // rows])],
        initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.fixture
def tiny(tmp_path):
    from pipeline.config import load_config
    cfg = load_config(write_config(tmp_path, f"""\
defaults: {{imgsz: {IMGSZ}, opset: 13, precision: fp32, batch: 1}}
models:
  - {{name: tiny, source: tiny.pt, task: detect}}
"""))
    record = {"metadata": {"names": "{0: 'hairnet', 1: 'no_hairnet'}"}}
    return cfg.models[0], record, tiny_yolo_like(tmp_path / "ref.onnx"), tiny_yolo_like(tmp_path / "bad.onnx", 3)


class SpyRunner(OnnxRuntimeRunner):
    """A real ONNX Runtime runner that remembers every instance and its close() calls."""
    made: list = []

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.closes = 0
        self.was_active = False
        SpyRunner.made.append(self)

    def activate(self):
        super().activate()
        self.was_active = self.session is not None

    def close(self):
        self.closes += 1
        super().close()


@pytest.fixture
def spy(monkeypatch):
    import pipeline.stages.verify as verify
    SpyRunner.made = []
    monkeypatch.setattr(verify, "OnnxRuntimeRunner", SpyRunner)
    return SpyRunner


def test_onnx_level_closes_both_runners_when_it_passes(tiny, spy):
    from pipeline.stages.verify import verify_onnx_level
    spec, record, ref, _ = tiny
    res = verify_onnx_level(spec, record, ref, ref, "fp32")
    assert res["status"] == "passed", res["reasons"]
    assert res["detections"]["ref_detections"] > 0 and res["detections"]["match_rate"] == 1.0
    assert len(spy.made) == 2 and all(r.was_active and r.closes == 1 and r.session is None for r in spy.made)


def test_onnx_level_closes_both_runners_on_an_exception_mid_verification(tiny, spy):
    """The candidate's output0 has another shape: the comparison raises after both
    sessions ran; both are still released."""
    from pipeline.stages.verify import verify_onnx_level
    spec, record, ref, bad = tiny
    with pytest.raises(ValueError, match="shape mismatch"):
        verify_onnx_level(spec, record, ref, bad, "fp32")
    assert len(spy.made) == 2 and all(r.was_active and r.closes == 1 and r.session is None for r in spy.made)


def test_failed_activation_is_closed_and_the_first_runner_too(tmp_path, tiny):
    _, _, ref, _ = tiny
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    first, second = SpyRunner(ref), SpyRunner(broken)
    with pytest.raises(Exception, match="(?i)protobuf|parse|load"):
        with first, second:
            pytest.fail("the body must not run")
    assert first.was_active and first.closes == 1 and first.session is None
    assert not second.was_active and second.closes == 1


def test_loader_is_apart_from_the_runner(tiny):
    _, _, ref, _ = tiny
    loader = SessionFromOnnx(ref, threads=1)
    with OnnxRuntimeRunner(loader) as r:
        assert r.loader is loader and [s.name for s in r.inputs()] == ["images"]
        out = r.infer({"images": np.ones((2, 3, IMGSZ, IMGSZ), np.float32)})["output0"]
        assert out.shape == (2, 6, 512)
    assert r.session is None
    r.close()  # idempotent


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


def test_identical_outputs_match_completely_even_with_zero_area_boxes():
    """Found by the tiny model above: a zero-width box (a black pixel read as w=0) has IoU 0
    with itself, so identical outputs reported a match rate below 1."""
    from pipeline.tasks.compare import match
    det = {"boxes": np.array([[5.0, 5.0, 5.0, 9.0], [1.0, 1.0, 4.0, 4.0]], np.float32),
           "scores": np.array([0.9, 0.8], np.float32), "classes": np.array([0, 1]), "kpts": None}
    m = match(det, det)
    assert m["matched"] == 2 and m["ious"] == [1.0, 1.0]
    other = dict(det, boxes=det["boxes"] + np.array([0.0, 0.0, 0.0, 1.0], np.float32))  # not identical
    assert match(det, other)["matched"] == 1


def test_tensor_stats_refuses_a_reshaped_output():
    """Same element count, other shape: was compared element by element after ravel()."""
    from pipeline.checks.tensors import tensor_stats
    ref = np.arange(12, dtype=np.float32).reshape(1, 6, 2)
    with pytest.raises(ValueError, match=r"shape mismatch: reference \(1, 6, 2\) vs \(1, 3, 4\)"):
        tensor_stats(ref, ref.reshape(1, 3, 4))
    assert tensor_stats(ref, ref)["max_abs"] == 0.0
