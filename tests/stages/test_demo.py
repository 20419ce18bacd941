"""The demo-weights rule (issue 26): demo weights stand in unasked only for the embedded
default's checkpoints; any other missing checkpoint is an error naming the nearest file."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import api
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.stages.demo import DEFAULT_SOURCES, is_embedded_default, missing_checkpoint, nearest_file
from tests.conftest import REPO, run_cli, write_config

FALL_YAML = """\
defaults: {imgsz: 320}
models:
  - {name: fall, source: fall/bst.pt, task: detect}
"""


def test_the_embedded_default_is_the_shipped_models_yaml():
    cfg = load_config(REPO / "models" / "models.yaml")
    assert {m.source: m.task for m in cfg.models} == DEFAULT_SOURCES
    assert all(is_embedded_default(p.source) for p in cfg.passthrough)
    assert is_embedded_default("./yolo/yolov8n.pt", "detect")
    assert not is_embedded_default("yolo/yolov8n.pt", "pose")      # another task is another model
    assert not is_embedded_default("fall/bst.pt", "detect") and not is_embedded_default("other.joblib")


def test_nearest_file_in_the_folder_then_under_the_models_folder(tmp_path):
    (tmp_path / "fall").mkdir()
    (tmp_path / "fall" / "best.pt").write_bytes(b"x")
    (tmp_path / "fall" / "notes.txt").write_text("x")
    (tmp_path / "onnx" / "fall").mkdir(parents=True)
    (tmp_path / "onnx" / "fall" / "best.pt").write_bytes(b"x")   # what the stages write never counts
    assert nearest_file(tmp_path / "fall" / "bst.pt", tmp_path) == tmp_path / "fall" / "best.pt"
    assert nearest_file(tmp_path / "fal" / "best.pt", tmp_path) == tmp_path / "fall" / "best.pt"
    assert nearest_file(tmp_path / "zzz" / "qqqqqqq.pt", tmp_path) is None


def test_missing_checkpoint_names_the_path_the_nearest_file_and_the_next_step(tmp_path):
    (tmp_path / "fall").mkdir()
    (tmp_path / "fall" / "best.pt").write_bytes(b"x")
    err = missing_checkpoint("fall", tmp_path / "fall" / "bst.pt", tmp_path / "models.yaml")
    text = str(err)
    assert "model 'fall': checkpoint not found" in text and str(tmp_path / "fall" / "bst.pt") in text
    assert f"nearest existing file: {tmp_path / 'fall' / 'best.pt'}" in text
    assert "did you mean fall/best.pt?" in err.fix and "--demo" in err.fix
    lone = missing_checkpoint("x", tmp_path / "nothing" / "here.pt", tmp_path / "models.yaml")
    assert "no file with a similar name" in str(lone)


def test_run_writes_no_demo_weights_at_a_typo_path_and_names_the_nearest_file(tmp_path):
    ws = tmp_path / "ws"
    write_config(ws, FALL_YAML)
    (ws / "fall").mkdir()
    (ws / "fall" / "best.pt").write_bytes(b"not read")
    res = run_cli("--config", str(ws / "models.yaml"), "run")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "model 'fall': checkpoint not found" in res.stderr and "did you mean fall/best.pt?" in res.stderr
    assert not (ws / "fall" / "bst.pt").exists() and not (ws / "engines").exists()
    assert "writing demo weights" not in res.stderr + res.stdout


def test_only_the_default_entries_get_demo_weights_unasked(tmp_path):
    ws = tmp_path / "ws"
    cfg = load_config(write_config(ws, FALL_YAML + "passthrough:\n  - {name: handwash, source: handwash_xgb.joblib}\n"))
    assert api._missing_demo_weights(cfg, everything=False)          # the default passthrough stand-in
    cfg = load_config(write_config(ws, FALL_YAML))
    assert not api._missing_demo_weights(cfg, everything=False)       # fall/bst.pt: an error, never demo weights
    assert api._missing_demo_weights(cfg, everything=True)            # unless --demo
    with pytest.raises(ValueError, match="demo must be"):
        api.run(cfg, demo="some")


def test_demo_and_no_demo_together_is_a_usage_error(tmp_path):
    ws = tmp_path / "ws"
    write_config(ws, FALL_YAML)
    res = run_cli("--config", str(ws / "models.yaml"), "run", "--demo", "--no-demo")
    assert res.returncode == 2 and "--demo and --no-demo contradict" in res.stderr


def test_a_missing_passthrough_names_the_nearest_file(tmp_path):
    from pipeline.stages.build import build_all
    ws = tmp_path / "ws"
    cfg = load_config(write_config(ws, FALL_YAML + "passthrough:\n  - {name: hw, source: handwash.joblib}\n"))
    (ws / "handwash_xgb.joblib").write_bytes(b"x")

    class Backend:   # build_all refuses before any backend call but configure and the tag
        name, targets, compatibility, gpu = "tensorrt-rtx", ["8.6"], None, None

        def configure(self, *a):
            pass

        @staticmethod
        def version():
            return "1.7.1.116"
    with pytest.raises(PipelineError) as e:
        build_all(cfg, cfg.models, Backend(), [])
    assert "passthrough model not found" in str(e.value) and "did you mean handwash_xgb.joblib?" in e.value.fix
    assert isinstance(Path(e.value.file), Path)
