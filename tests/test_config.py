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
    ("models:\n  - {name: a, source: a.pt, task: semantic}\n", "a", "task 'semantic' is not supported: semantic"),
    ("models:\n  - {name: a, source: a.pt, task: depth}\n", "a", "task 'depth' is not supported: depth"),
    ("models:\n  - {name: a, source: a.pt, task: segmnet}\n", "a", "task 'segmnet' is not supported"),
    ("models:\n  - {name: a, source: a.pt, task: classify, nms: false}\n", "a", "does not apply to a classify"),
    ("models:\n  - {name: a, source: a.pt, task: detect, nms: maybe}\n", "a", "nms 'maybe' is not true or false"),
    ("models:\n  - {name: a, source: a.pt, task: obb, demo_arch: yolov10}\n", "a", "demo_arch 'yolov10' has no obb"),
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
    path = write_config(tmp_path, "models:\n  - {name: a, source: a.pt, task: depth}\n")
    res = run_cli("--config", str(path), "export")
    assert res.returncode == 2
    assert "task 'depth' is not supported" in res.stderr and "Next step" in res.stderr


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
    env = {**os.environ, "ENGINES_RUN_PRECISION": "int4", "ENGINES_CONFIG": str(path)}
    res = run_cli("run", env=env)
    assert res.returncode == 2 and "int4" in res.stderr


# --- issue 9: input validation --------------------------------------------------------------

BAD_ISSUE9 = [
    ("models:\n  - {name: a, source: x.pt, task: detect}\n  - {name: b, source: ./x.pt, task: detect}\n",
     "b", "same source x.pt as model 'a'"),
    ("models:\n  - {name: a, source: x.pt, task: detect}\npassthrough:\n  - {name: h, source: x.pt}\n",
     "h", "same source x.pt as model 'a'"),
    ("models:\n  - {name: a, source: a.pt, task: detect}\npassthrough:\n  - {name: h, source: manifest.json}\n",
     "h", "would overwrite the engine set's own manifest.json"),
    ("models:\n  - {name: a, source: a.pt, task: detect}\npassthrough:\n  - {name: h, source: report.md}\n",
     "h", "would overwrite the engine set's own report.md"),
    ("models:\n  - {name: a, source: a.pt, task: detect, imgsz: 4128}\n", "a", "imgsz 4128 is above 4096"),
    ("models:\n  - {name: a, source: a.pt, task: detect, opset: 99}\n", "a", "opset 99 is above"),
    ("models:\n  - {name: a, source: a.pt, task: detect, sha256: abc}\n", "a", "sha256 'abc' is not"),
    ("models:\n  - {name: a, source: a.pt, task: detect}\npassthrough:\n  - {name: h, source: h.joblib, sha256: 12}\n",
     "h", "sha256 12 was read as a number"),
    (f"models:\n  - {{name: a, source: a.pt, task: detect, sha256: {'1' * 64}}}\n", "a", "quote the digest"),
    ("models:\n  - {name: a, source: a.pt, task: detect, trust: yes please}\n", "a", "trust 'yes please'"),
]


@pytest.mark.parametrize("text,model,needle", BAD_ISSUE9)
def test_issue9_bad_config_is_refused(tmp_path, text, model, needle):
    test_bad_config_names_model_and_fix(tmp_path, text, model, needle)


def test_opset_limit_names_the_installed_onnx(tmp_path):
    from importlib import metadata

    import onnx
    top = onnx.defs.onnx_opset_version()
    ok = load_config(write_config(tmp_path, f"models:\n  - {{name: a, source: a.pt, task: detect, opset: {top}}}\n"))
    assert ok.models[0].opset == top
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, f"models:\n  - {{name: a, source: a.pt, task: detect, opset: {top + 1}}}\n"))
    msg = info.value.render()
    assert f"onnx {metadata.version('onnx')}" in msg and f"at most {top}" in msg


def test_imgsz_4096_is_the_largest_accepted(tmp_path):
    cfg = load_config(write_config(tmp_path, "models:\n  - {name: a, source: a.pt, task: detect, imgsz: 4096}\n"))
    assert cfg.models[0].imgsz == 4096


def test_repeated_yaml_key_is_an_error_with_its_line(tmp_path):
    path = write_config(tmp_path, "defaults: {imgsz: 320}\nmodels:\n  - name: a\n    source: a.pt\n"
                                  "    task: detect\n    imgsz: 640\n    imgsz: 320\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = info.value.render()
    assert "key 'imgsz' appears twice" in msg and "line 7" in msg and "line 6" in msg and "Next step:" in msg
    path = write_config(tmp_path, "models:\n  - {name: a, source: a.pt, task: detect}\nmodels: []\n")
    with pytest.raises(ConfigError, match="key 'models' appears twice"):
        load_config(path)


def test_non_utf8_models_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_bytes("models:\n  - {name: caf\u00e9, source: a.pt, task: detect}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = info.value.render()
    assert "not UTF-8" in msg and "line 2" in msg and "Next step:" in msg
    res = run_cli("--config", str(path), "export")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "not UTF-8" in res.stderr


def test_sha256_and_trust_are_read(tmp_path):
    digest = "ab" * 32
    cfg = load_config(write_config(tmp_path, f"models:\n  - {{name: a, source: a.pt, task: detect, sha256: {digest},"
                                             f" trust: true}}\npassthrough:\n  - {{name: h, source: h.joblib,"
                                             f" sha256: '{digest.upper()}'}}\n"))
    assert cfg.models[0].sha256 == digest and cfg.models[0].trust is True
    assert cfg.passthrough[0].sha256 == digest
    cfg = load_config(write_config(tmp_path, "models:\n  - {name: a, source: a.pt, task: detect}\n"))
    assert cfg.models[0].sha256 is None and cfg.models[0].trust is False


@pytest.mark.parametrize("index", ['"zero"', "1.5", "true", "null"])
def test_gpu_facts_json_with_a_bad_index_is_an_error(tmp_path, index):
    from pipeline.errors import PipelineError
    from pipeline.hardware import read_facts_file
    path = tmp_path / "nvml.json"
    path.write_text('{"index": %s, "name": "NVIDIA H100", "cc": [9, 0]}' % index)
    with pytest.raises(PipelineError) as info:
        read_facts_file(path)
    msg = info.value.render()
    assert "GPU index" in msg and "not a whole number" in msg and str(path) in msg and "Next step:" in msg
    res = run_cli("--config", str(tmp_path / "models.yaml"), "resolve", "--gpu-facts", str(path),
                  "--runtime", "tensorrt==10.13.3.9", "--no-link")
    assert res.returncode != 0 and "Traceback" not in res.stderr and "not a whole number" in res.stderr


def test_demo_classes_are_read_and_checked(tmp_path):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError
    p = tmp_path / "models.yaml"
    p.write_text("models:\n  - {name: a, source: a.pt, task: detect, demo_classes: [x, y]}\n")
    assert load_config(p).models[0].demo_classes == ("x", "y")
    for bad, text in (("[]", "not a list of class names"), ("[x, x]", "names a class twice"),
                      ("x", "not a list of class names")):
        p.write_text(f"models:\n  - {{name: a, source: a.pt, task: detect, demo_classes: {bad}}}\n")
        with pytest.raises(ConfigError, match=text):
            load_config(p)


@pytest.mark.slow
def test_demo_weights_take_their_classes_from_models_yaml_not_the_name(tmp_path):
    """A model named anything gets the classes models.yaml gives it (pose included)."""
    import torch

    from pipeline.config import load_config
    from pipeline.stages.demo import demo_models
    p = tmp_path / "models.yaml"
    p.write_text("models:\n"
                 "  - {name: gloves, source: g.pt, task: detect, demo_classes: [glove, bare_hand, sleeve]}\n"
                 "  - {name: hairnet, source: h.pt, task: detect}\n"
                 "  - {name: body, source: b.pt, task: pose, demo_classes: [worker]}\n")
    demo_models(load_config(p), log=lambda m: None)
    names = {f: torch.load(tmp_path / f, weights_only=False)["model"].names for f in ("g.pt", "h.pt", "b.pt")}
    assert names["g.pt"] == {0: "glove", 1: "bare_hand", 2: "sleeve"}
    assert len(names["h.pt"]) == 80            # no demo_classes: the architecture's own COCO classes
    assert names["b.pt"] == {0: "worker"}


BAD_PRECISION = [
    ("models:\n  - {name: a, source: a.pt, task: detect, precision: int4}\n", "a", "precision 'int4' is not one of"),
    ("models:\n  - {name: a, source: a.pt, task: detect, calibration: {count: 3}}\n", "a", "calibration needs images"),
    ("models:\n  - {name: a, source: a.pt, task: detect, calibration: {images: c, count: 0}}\n", "a",
     "calibration count 0 is not a positive whole number"),
    ("models:\n  - {name: a, source: a.pt, task: detect, calibration: {images: c, method: percentile}}\n", "a",
     "calibration method 'percentile' is not one of max, entropy"),
    ("models:\n  - {name: a, source: a.pt, task: detect, calibration: {images: c, bins: 9}}\n", "a",
     "unknown calibration key(s) bins"),
    ("models:\n  - {name: a, source: a.pt, task: detect, accuracy: {split: val}}\n", "a", "accuracy needs data"),
    ("models:\n  - {name: a, source: a.pt, task: detect, accuracy: {data: d.yaml, split: holdout}}\n", "a",
     "accuracy split 'holdout' is not one of"),
    ("models:\n  - {name: a, source: a.pt, task: detect, accuracy: {data: d.yaml, max_drop: {int8: -1}}}\n", "a",
     "must map precisions"),
]


@pytest.mark.parametrize(("text", "model", "needle"), BAD_PRECISION)
def test_bad_precision_keys_are_refused(tmp_path, text, model, needle):
    test_bad_config_names_model_and_fix(tmp_path, text, model, needle)


def test_calibration_and_accuracy_defaults(tmp_path):
    from pipeline.config import CALIBRATION_COUNT, DEFAULT_MAX_DROP, load_config
    path = write_config(tmp_path, "defaults: {calibration: {images: calib}, accuracy: {data: d/data.yaml, "
                                  "max_drop: {int8: 2.5}}}\nmodels:\n  - {name: a, source: a.pt, task: detect}\n")
    spec = load_config(path).models[0]
    assert spec.calibration.images == tmp_path / "calib" and spec.calibration.count == CALIBRATION_COUNT
    assert spec.calibration.method == "max" and spec.accuracy.split == "val"
    assert spec.accuracy.max_drop == {**DEFAULT_MAX_DROP, "int8": 2.5}


@pytest.mark.parametrize(("entry", "hint"), [
    ("{name: a, source: a.pt, task: detect, worksapce: 4}", "worksapce -> workspace"),
    ("{name: a, sorce: a.pt, task: detect}", "sorce -> source"),
    ("{name: a, source: a.pt, task: detect, sha265: x}", "sha265 -> sha256"),
])
def test_a_mistyped_key_gets_the_nearest_allowed_one(tmp_path, entry, hint):
    """Issue 26.9: as a misspelt ENGINES_* variable does."""
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, f"models:\n  - {entry}\n"))
    assert f"did you mean {hint}?" in err.value.fix and "allowed keys are" in err.value.fix
    assert err.value.model == "a" or err.value.model.startswith("models[")


def test_trust_true_needs_the_sha256_pin_it_binds_to(tmp_path):
    """Issue 25.1: `trust: true` alone would trust whatever file is copied to the path later."""
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "models:\n  - {name: a, source: yolo/a.pt, task: detect, trust: true}\n"))
    assert "needs a sha256: pin" in err.value.what and "sha256sum" in err.value.fix
    assert str(tmp_path / "yolo/a.pt") in err.value.fix
