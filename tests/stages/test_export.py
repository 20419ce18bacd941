"""Export stage on real Ultralytics exports of the seeded demo models."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.fsutil import sha256_file
from pipeline.stages import export as export_stage
from tests.conftest import fresh_python, run_cli, write_config

pytestmark = pytest.mark.slow


def test_export_writes_checked_simplified_onnx_with_metadata(exported):
    cfg = load_config(exported / "models.yaml")
    for spec in cfg.models:
        paths = export_stage.onnx_paths(cfg, spec)
        rec = json.loads(paths["record"].read_text())
        fp32, fp16 = onnx.load(str(paths["fp32"])), onnx.load(str(paths["fp16"]))
        onnx.checker.check_model(fp32, full_check=True)
        assert rec["opset"] == 12 and [o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx")] == [12]
        assert rec["simplify"]["applied"] and rec["simplify"]["nodes_after"] < rec["simplify"]["nodes_before"]
        props = {p.key: p.value for p in fp32.metadata_props}
        assert props["task"] == spec.task and props["imgsz"] == "[320, 320]" and props["stride"] == "32"
        assert ("kpt_shape" in props) == (spec.task == "pose")
        assert rec["io"]["inputs"] == [{"name": "images", "shape": [1, 3, 320, 320], "dtype": "float32"}]
        # FP16 twin: FP16 weights, FP32 inputs and outputs kept
        dtypes = {onnx.helper.tensor_dtype_to_np_dtype(i.data_type).name for i in fp16.graph.initializer}
        assert "float16" in dtypes
        assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert fp16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        # parity measured on both real bundled images, within thresholds
        par = rec["parity"]
        assert par["passed"] and par["images"] == ["bus.jpg", "zidane.jpg"]
        assert par["fp32"]["outputs"]["output0"]["max_abs"] < 0.1
        assert par["fp16"]["outputs"]["output0"]["cosine"] > 0.999
        assert rec["demo"] is True
        assert rec["sha256"]["fp32"] == sha256_file(paths["fp32"])
    names = json.loads(export_stage.onnx_paths(cfg, cfg.models[1])["record"].read_text())["metadata"]["names"]
    assert "hairnet" in names and "no_hairnet" in names


def test_second_export_does_no_work_and_imports_no_torch(workspace):
    code = ("import sys, json; from pipeline.config import load_config; "
            "from pipeline.stages.export import export_all; "
            f"cfg = load_config({str(workspace / 'models.yaml')!r}); r, e = export_all(cfg, cfg.models); "
            "print(json.dumps([x['status'] for x in r])); "
            "print('torch' in sys.modules, 'ultralytics' in sys.modules)")
    assert fresh_python(code) == ['["cached", "cached", "cached"]', "False False"]


def test_changed_option_invalidates_cache(workspace):
    text = (workspace / "models.yaml").read_text().replace("opset: 12", "opset: 13")
    cfg = load_config(write_config(workspace, text))
    assert export_stage.cached_record(cfg, cfg.models[0]) is None


def _bad_export(workspace, mutate, model="human"):
    cfg = load_config(workspace / "models.yaml")
    spec = next(m for m in cfg.models if m.name == model)
    before = {k: sha256_file(p) for k, p in export_stage.onnx_paths(cfg, spec).items()}
    mutate(spec.source_path)
    with pytest.raises(PipelineError) as info:
        export_stage.export_model(cfg, spec, force=True)
    after = {k: sha256_file(p) for k, p in export_stage.onnx_paths(cfg, spec).items()}
    assert before == after, "earlier outputs must be untouched"
    out_dir = export_stage.onnx_paths(cfg, spec)["fp32"].parent
    assert not list(out_dir.glob(".*")), "no temp file or .export-* folder left behind"
    msg = info.value.render()
    assert "model 'human'" in msg and "Next step:" in msg
    return msg


def test_missing_checkpoint(workspace):
    msg = _bad_export(workspace, lambda p: p.unlink())
    assert "checkpoint not found" in msg and "engines demo-models" in msg


def test_empty_checkpoint(workspace):
    msg = _bad_export(workspace, lambda p: p.write_bytes(b""))
    assert "empty file" in msg


def test_truncated_checkpoint(workspace):
    msg = _bad_export(workspace, lambda p: p.write_bytes(p.read_bytes()[:50_000]))
    assert "not a readable PyTorch file" in msg


def test_torch_file_that_is_not_ultralytics(workspace):
    import torch
    msg = _bad_export(workspace, lambda p: torch.save({"weights": torch.zeros(3)}, p))
    assert "not an Ultralytics YOLO model" in msg


@pytest.mark.parametrize("arch,task", [("yolov8n-cls.yaml", "classify"), ("yolov8n-seg.yaml", "segment")])
def test_wrong_task_checkpoint(workspace, arch, task):
    from ultralytics import YOLO

    def write(p):
        YOLO(arch).save(str(p))
    msg = _bad_export(workspace, write)
    assert f"is a '{task}' model but models.yaml declares task 'detect'" in msg


def test_unwritable_output_folder(workspace):
    cfg = load_config(workspace / "models.yaml")
    shutil.rmtree(cfg.onnx_dir)
    cfg.onnx_dir.write_text("a file where the folder should be")  # root ignores chmod
    res = run_cli("--config", str(workspace / "models.yaml"), "export", "--model", "human")
    assert res.returncode == 1
    assert "model 'human': output folder is not writable" in res.stderr


def test_keep_going_exports_the_others(workspace):
    cfg = load_config(workspace / "models.yaml")
    cfg.models[0].source_path.write_bytes(b"")
    for spec in cfg.models[1:]:
        export_stage.onnx_paths(cfg, spec)["record"].unlink()  # force real work for the others
    res = run_cli("--config", str(workspace / "models.yaml"), "--json", "export", "--keep-going")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert [r["model"] for r in doc["exports"]] == ["hairnet", "pose"]
    assert [e["model"] for e in doc["errors"]] == ["human"]
    res = run_cli("--config", str(workspace / "models.yaml"), "--json", "export")
    assert [r["model"] for r in json.loads(res.stdout)["exports"]] == [], "stops at the first failure"


def test_parity_fails_on_a_broken_export(workspace, monkeypatch):
    """Scale one convolution's weights in the ONNX: parity must refuse it, nothing written."""
    real_simplify = export_stage._simplify

    def damaging(proto, record, test_shape=None):
        proto = real_simplify(proto, record, test_shape)
        conv = next(n for n in proto.graph.node if n.op_type == "Conv")
        init = next(i for i in proto.graph.initializer if i.name == conv.input[1])
        w = onnx.numpy_helper.to_array(init) * 3.0
        init.CopyFrom(onnx.numpy_helper.from_array(w.astype(np.float32), init.name))
        return proto
    monkeypatch.setattr(export_stage, "_simplify", damaging)
    msg = _bad_export(workspace, lambda p: None)
    assert "export parity check failed" in msg and "fp32 ONNX: output0" in msg


def test_verify_images_folder_joins_the_parity_images(tmp_path, demo_checkpoints):
    from pipeline.checks.images import bundled_images
    ws = tmp_path / "vi"
    shutil.copytree(demo_checkpoints, ws)
    (ws / "frames").mkdir()
    shutil.copy(bundled_images()[0], ws / "frames" / "kitchen_cam1.jpg")
    (ws / "frames" / "notes.txt").write_text("not an image")
    text = (ws / "models.yaml").read_text().replace("batch: 1}", "batch: 1, verify_images: frames}")
    cfg = load_config(write_config(ws, text))
    rec = export_stage.export_model(cfg, cfg.models[0])
    assert rec["parity"]["images"] == ["bus.jpg", "zidane.jpg", "kitchen_cam1.jpg"]
    assert rec["parity"]["passed"]


def test_unexpected_failure_names_model_and_file(workspace, monkeypatch):
    def broken(proto):
        raise ValueError("converter exploded")
    monkeypatch.setattr(export_stage, "to_fp16", broken)
    cfg = load_config(workspace / "models.yaml")
    records, errors = export_stage.export_all(cfg, cfg.models[:1], force=True)
    assert records == [] and len(errors) == 1
    msg = errors[0].render()
    assert "model 'human': export failed: ValueError: converter exploded" in msg and "yolov8n.pt" in msg


def test_demo_architecture_follows_the_task(tmp_path):
    from pipeline.stages.demo import demo_models
    cfg = load_config(write_config(tmp_path, "models:\n  - {name: pose, source: p.pt, task: detect}\n"))
    demo_models(cfg, log=lambda m: None)
    from ultralytics import YOLO
    assert YOLO(str(tmp_path / "p.pt")).task == "detect"


def test_unknown_model_name_is_a_usage_error(workspace):
    for cmd in ("export", "build"):
        res = run_cli("--config", str(workspace / "models.yaml"), cmd, "--model", "nope")
        assert res.returncode == 2 and "unknown model(s) nope" in res.stderr, cmd


def test_passthrough_is_checked_and_hashed_without_xgboost(workspace):
    import importlib.util
    res = run_cli("--config", str(workspace / "models.yaml"), "--json", "export")
    doc = json.loads(res.stdout)
    assert res.returncode == 0
    assert doc["passthrough"] == [{"model": "handwash", "file": "handwash_xgb.joblib",
                                   "sha256": sha256_file(workspace / "handwash_xgb.joblib")}]
    assert importlib.util.find_spec("xgboost") is None  # the pipeline never needs it
    (workspace / "handwash_xgb.joblib").unlink()
    res = run_cli("--config", str(workspace / "models.yaml"), "export")
    assert res.returncode == 1 and "model 'handwash': passthrough model is missing or empty" in res.stderr
