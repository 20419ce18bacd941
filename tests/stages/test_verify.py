"""verify_set: the GPUs and export records the run hands it, and the onnx level it does not judge twice."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.builders import TensorRTRTX
from pipeline.config import load_config
from pipeline.errors import PipelineError

pytestmark = pytest.mark.slow
pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT for RTX not installed (pip install '.[rtx]')")
TAG = f"trtrtx-{TensorRTRTX.version()}-sm86"


@pytest.fixture(scope="module")
def built(tmp_path_factory, exported) -> Path:
    """The demo set built once for sm86 from the export's records (copy before changing)."""
    from pipeline.stages.build import build_all
    from pipeline.stages.export import cached_record
    ws = tmp_path_factory.mktemp("verify") / "ws"
    shutil.copytree(exported, ws)
    cfg = load_config(ws / "models.yaml")
    _, errors = build_all(cfg, [cached_record(cfg, s) for s in cfg.models], TensorRTRTX(["8.6"]), [])
    assert not errors, [e.render() for e in errors]
    return ws


@pytest.fixture
def ws(built, tmp_path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(built, dest)
    return dest


def test_the_gpus_given_are_used_and_a_gated_onnx_level_is_not_judged_again(ws, monkeypatch):
    from pipeline import hardware
    from pipeline.stages import verify
    from pipeline.stages.export import cached_record

    def no_detect(*a, **k):
        raise AssertionError("verify_set detected GPUs although it was given them")
    monkeypatch.setattr(hardware, "detect_gpus", no_detect)
    judged = []
    real = verify.verify_onnx_level
    monkeypatch.setattr(verify, "verify_onnx_level", lambda spec, *a, **k: judged.append(spec.name) or real(spec, *a, **k))
    cfg = load_config(ws / "models.yaml")
    records = {s.name: cached_record(cfg, s) for s in cfg.models}
    manifest, errors = verify.verify_set(cfg, ws / "engines" / TAG, gpus=[], records=records, gated={"human"})
    assert not errors, [e.render() for e in errors]
    assert sorted(judged) == ["hairnet", "pose"]
    assert "no GPU on this machine" in manifest.engines["human"].engine_level.note
    assert manifest.engines["human"].onnx_level["status"] == "passed"   # the build's verdict, kept


def test_a_record_whose_onnx_differs_from_the_engines_is_refused_without_hashing(ws, monkeypatch):
    from pipeline.stages import verify
    from pipeline.stages.export import cached_record
    cfg = load_config(ws / "models.yaml")
    rec = cached_record(cfg, cfg.models[0])
    rec.data["sha256"] = {**rec.sha256, "fp16": "0" * 64}   # as if the export had changed since the build
    _, errors = verify.verify_set(cfg, ws / "engines" / TAG, names=["human"], gpus=[], records={"human": rec})
    assert len(errors) == 1 and isinstance(errors[0], PipelineError)
    assert "the ONNX export changed since this engine was built" in str(errors[0])
    assert "engines build" in errors[0].fix


def test_without_gpus_it_detects_them_as_engines_verify_does(ws, monkeypatch):
    from pipeline import hardware
    from pipeline.stages import verify
    calls = []
    monkeypatch.setattr(hardware, "detect_gpus", lambda *a, **k: calls.append(a) or [])
    cfg = load_config(ws / "models.yaml")
    _, errors = verify.verify_set(cfg, ws / "engines" / TAG, names=["human"])
    assert not errors and calls == [()]
