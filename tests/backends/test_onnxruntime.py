"""The ONNX Runtime runner: a loader apart from the runner, and close() on every path of the onnx
verification level (a pass, an exception mid-verification, a failed activation), on real
sessions of tiny onnx.helper models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.backends.onnxruntime import OnnxRuntimeRunner, SessionFromOnnx
from tests.conftest import write_config

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
