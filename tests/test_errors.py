"""errors: the one paragraph every failure is read as (what, model, file, details, next step)."""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError, PipelineError, UsageProblem


def test_the_paragraph_names_model_file_details_and_the_next_step_in_that_order():
    err = PipelineError("the engine failed verification", model="human", file=Path("onnx/yolo/yolov8n.onnx"),
                        details=["tensors: cosine 0.91 < 0.9995", "detections: match rate 0.42 < 0.9"],
                        fix="rebuild with `engines build --force`")
    assert str(err) == err.render() == (
        "model 'human': the engine failed verification (file: onnx/yolo/yolov8n.onnx).\n"
        "  - tensors: cosine 0.91 < 0.9995\n"
        "  - detections: match rate 0.42 < 0.9\n"
        "Next step: rebuild with `engines build --force`")


def test_a_bare_error_is_one_sentence_with_one_full_stop():
    assert str(PipelineError("no engine sets")) == "no engine sets."
    assert str(PipelineError("the disk is full.")) == "the disk is full."   # never two full stops


def test_json_carries_the_same_parts():
    err = PipelineError("bad key", model="pose", file="models.yaml", fix="remove it", details=["line 3"])
    assert err.to_json() == {"model": "pose", "file": "models.yaml", "error": "bad key", "details": ["line 3"],
                             "fix": "remove it"}
    assert PipelineError("x").to_json() == {"model": None, "file": None, "error": "x", "details": [], "fix": None}


def test_config_and_usage_problems_are_pipeline_errors_rendered_alike():
    for cls in (ConfigError, UsageProblem):
        err = cls("unknown key 'imgs'", model="human", fix="write imgsz")
        assert isinstance(err, PipelineError)
        assert str(err) == "model 'human': unknown key 'imgs'.\nNext step: write imgsz"
