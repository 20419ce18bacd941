"""models.yaml validation: every bad entry is an error naming the model and the fix."""
from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from tests.conftest import REPO, run_cli, write_config


def test_repo_models_yaml_matches_design(tmp_path):
    cfg = load_config(REPO / "models" / "models.yaml")
    assert [(m.name, m.source, m.task) for m in cfg.models] == [
        ("human", "yolo/yolov8n.pt", "detect"),
        ("hairnet", "hairnet_detection/hairnet_detection.pt", "detect"),
        ("pose", "yolo/yolov8n-pose.pt", "pose")]
    assert [(p.name, p.source) for p in cfg.passthrough] == [("handwash", "handwash_xgb.joblib")]
    m = cfg.models[0]
    assert (m.imgsz, m.opset, m.precision, m.batch.dynamic, m.workspace) == (640, 12, "fp16", False, None)
    assert m.stem == "yolo/yolov8n"


def test_per_model_overrides_and_dynamic_batch(tmp_path):
    cfg = load_config(write_config(tmp_path, """
defaults: {imgsz: 640, batch: 1}
models:
  - {name: a, source: a.pt, task: detect, imgsz: 320, batch: {min: 1, opt: 4, max: 8}, workspace: 2,
     verify: {min_match_rate: 0.5}}
"""))
    m = cfg.models[0]
    assert m.imgsz == 320 and m.batch.dynamic and (m.batch.min, m.batch.opt, m.batch.max) == (1, 4, 8)
    assert m.workspace == 2
    assert m.thresholds("fp16")["min_match_rate"] == 0.5
    assert m.thresholds("fp32")["min_cosine"] == 0.99999


def test_flat_and_per_precision_thresholds_combine(tmp_path):
    cfg = load_config(write_config(tmp_path, """
models:
  - {name: a, source: a.pt, task: detect, verify: {min_match_rate: 0.5, fp16: {min_iou: 0.7}}}
"""))
    m = cfg.models[0]
    assert (m.thresholds("fp16")["min_match_rate"], m.thresholds("fp16")["min_iou"]) == (0.5, 0.7)
    assert (m.thresholds("fp32")["min_match_rate"], m.thresholds("fp32")["min_iou"]) == (0.5, 0.98)


BAD = [
    ("models:\n  - {name: a, source: a.pt, task: detect, colour: red}\n", "a", "unknown key(s) colour"),
    ("models:\n  - {name: a, task: detect}\n", "a", "missing required field 'source'"),
    ("models:\n  - {name: a, source: a.pt, task: classify}\n", "a", "task 'classify' is not supported"),
    ("models:\n  - {name: a, source: a.pt, task: detect, imgsz: 500}\n", "a", "not a positive multiple of 32"),
    ("models:\n  - {name: a, source: a.pt, task: detect, imgsz: -32}\n", "a", "not a positive multiple of 32"),
    ("models:\n  - {name: a, source: a.pt, task: detect, opset: 11}\n", "a", "opset 11 is below 12"),
    ("models:\n  - {name: a, source: a.pt, task: detect}\n  - {name: a, source: b.pt, task: detect}\n",
     "a", "duplicate model name"),
    ("models:\n  - {name: a, source: ../outside.pt, task: detect}\n", "a", "outside the config's folder"),
    ("models:\n  - {name: a, source: /etc/passwd, task: detect}\n", "a", "outside the config's folder"),
    ("models:\n  - {name: a, source: a.pt, task: detect, batch: {min: 4, opt: 2, max: 8}}\n", "a",
     "min <= opt <= max"),
    ("models:\n  - {name: a, source: a.pt, task: detect, precision: int4}\n", "a", "precision 'int4'"),
    ("models:\n  - {name: a, source: a.pt, task: detect, workspace: 0}\n", "a", "workspace 0"),
    ("models:\n  - {name: a, source: a.pt, task: detect}\npassthrough:\n  - {name: a, source: x.joblib}\n",
     "a", "duplicate model name"),
    ("defaults: {imgsz: 640, speed: fast}\nmodels:\n  - {name: a, source: a.pt, task: detect}\n",
     "defaults", "unknown key(s) speed"),
    ("models: []\n", None, "non-empty list"),
    ("models:\n  - {name: a, source: a.pt, task: detect, verify: {fp16: {min_match_rat: 0.5}}}\n", "a",
     "unknown verify.fp16 threshold(s) min_match_rat"),
    ("models:\n  - {name: a, source: a.pt, task: detect, verify: {fp16: 0.5}}\n", "a",
     "verify.fp16 must be a mapping"),
    ("models:\n  - {name: a, source: a.pt, task: detect, verify: {min_iou: high}}\n", "a",
     "threshold(s) min_iou must be numbers"),
    ("models: [\n", None, "not valid YAML"),
]


@pytest.mark.parametrize("text,model,needle", BAD)
def test_bad_config_names_model_and_fix(tmp_path, text, model, needle):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = info.value.render()
    assert needle in msg
    assert str(path) in msg and "Next step:" in msg
    if model:
        assert f"model '{model}'" in msg


def test_cli_exits_2_on_bad_config(tmp_path):
    path = write_config(tmp_path, "models:\n  - {name: a, source: a.pt, task: segment}\n")
    res = run_cli("--config", str(path), "export")
    assert res.returncode == 2
    assert "task 'segment' is not supported" in res.stderr and "Next step" in res.stderr


def test_missing_config_file(tmp_path):
    res = run_cli("--config", str(tmp_path / "nope.yaml"), "list")
    # list reads only the engines folder beside the config; export needs the file itself
    res = run_cli("--config", str(tmp_path / "nope.yaml"), "export")
    assert res.returncode == 2 and "config file not found" in res.stderr


def test_every_command_has_help():
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("export", "build", "run", "list", "demo-models", "resolve", "docker", "clean"):
        assert cmd in res.stdout
        sub = run_cli(cmd, "--help")
        assert sub.returncode == 0 and "Usage:" in sub.stdout, cmd


def test_compose_style_env_reaches_the_real_run_command(tmp_path):
    """docker-compose.build.yml passes ENGINES_RUN_<OPTION>; the real CLI must read them."""
    import os
    path = write_config(tmp_path, "models:\n  - {name: a, source: a.pt, task: detect}\n")
    env = {**os.environ, "ENGINES_RUN_MODELS": "nope", "ENGINES_CONFIG": str(path)}
    res = run_cli("run", env=env)
    assert res.returncode == 2 and "unknown model(s) nope" in res.stderr
    env = {**os.environ, "ENGINES_RUN_PRECISION": "int8", "ENGINES_CONFIG": str(path)}
    res = run_cli("run", env=env)
    assert res.returncode == 2 and "int8" in res.stderr
