"""config.pbtxt from what a set records, each shape checked by Triton's own schema
(tests/deploy/targets/tritonserver.py: model_config.proto from tritonclient)."""
from __future__ import annotations

import ast

import pytest

from pipeline.deploy.targets.triton_config import TritonModel, metadata_literal, quote, render
from pipeline.errors import PipelineError
from tests.deploy.targets.tritonserver import config_as_json, parse_config

IO = {"inputs": [{"name": "images", "shape": [1, 3, 640, 640], "dtype": "float32"}],
      "outputs": [{"name": "output0", "shape": [1, 84, 8400], "dtype": "float32"}], "layout": "one-to-many"}
DYNAMIC = {"inputs": [{"name": "images", "shape": ["batch", 3, 640, 640], "dtype": "float32"}],
           "outputs": [{"name": "output0", "shape": ["batch", 300, 6], "dtype": "float32"}], "layout": "end2end"}
META = {"task": "detect", "names": {"0": "person", "1": "hairnet \"blue\" – café"}, "imgsz": [640, 640],
        "stride": 32, "end2end": False, "args": {"nms": None}, "engine_pipeline": {"demo": True}}


def model(io=IO, batch=None, **kw) -> TritonModel:
    return TritonModel("human", io, batch or {"min": 1, "opt": 1, "max": 1}, dict(META),
                       cc_files={"8.9": "b.plan", "12.0": "c.plan", "8.6": "a.plan"}, **kw)


def test_a_fixed_batch_gives_max_batch_size_0_and_full_dims():
    cfg = parse_config(render(model()))
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("human", "tensorrt_plan", 0)
    assert list(cfg.input[0].dims) == [1, 3, 640, 640] and list(cfg.output[0].dims) == [1, 84, 8400]
    assert cfg.input[0].data_type == 11 and not cfg.HasField("dynamic_batching")   # TYPE_FP32
    assert list(cfg.cc_model_filenames.items()) and dict(cfg.cc_model_filenames) == {
        "8.6": "a.plan", "8.9": "b.plan", "12.0": "c.plan"}
    assert not cfg.default_model_filename


def test_a_dynamic_batch_profile_batches_dims_without_the_batch_and_dynamic_batching():
    cfg = parse_config(render(model(DYNAMIC, {"min": 1, "opt": 4, "max": 8})))
    assert cfg.max_batch_size == 8 and cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [3, 640, 640] and list(cfg.output[0].dims) == [300, 6]
    assert list(cfg.instance_group[0].profile) == ["0"] and cfg.instance_group[0].kind == 1   # KIND_GPU


def test_a_portable_set_is_the_default_plan():
    assert parse_config(render(model(default_file="p.plan"))).default_model_filename == "p.plan"


def test_metadata_survives_quoting_as_the_python_literal_ultralytics_evaluates():
    text = render(model())
    meta = ast.literal_eval(config_as_json(text)["parameters"]["metadata"]["string_value"])
    assert meta["names"] == {0: "person", 1: 'hairnet "blue" – café'} and meta["end2end"] is False
    assert "engine_pipeline" not in meta and meta["args"] == {"nms": None}
    assert ast.literal_eval(metadata_literal(META)) == meta


def test_quote_escapes_what_text_format_would_misread():
    from google.protobuf import text_format
    for s in ('a"b', "back\\slash", "new\nline", "é–😀"):
        cfg = parse_config(f"name: {quote(s)}")
        assert cfg.name == s and text_format   # round trip through Triton's schema


def test_a_fixed_first_dimension_with_a_dynamic_profile_is_refused():
    with pytest.raises(PipelineError, match="Triton cannot batch it"):
        render(model(IO, {"min": 1, "opt": 2, "max": 4}))


def test_a_dtype_triton_has_no_type_for_is_refused():
    io = {**IO, "outputs": [{"name": "o", "shape": [1], "dtype": "complex64"}]}
    with pytest.raises(PipelineError, match="dtype complex64, which Triton has no type for"):
        render(model(io))


def test_the_schema_check_can_fail():
    """Proof the helper checks anything: a field the schema lacks is rejected."""
    from google.protobuf import text_format
    with pytest.raises(text_format.ParseError):
        parse_config(render(model()).replace("max_batch_size", "max_batch"))
