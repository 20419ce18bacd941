"""The export's file names (one owner) and its typed record."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.stages.records import RECORD_SUFFIX, ExportRecord, OnnxFiles, Tensor
from tests.conftest import REPO, write_config

SUFFIXES = (".fp16.onnx", ".int8.onnx", ".int8.json", RECORD_SUFFIX, ".accuracy.json")


def test_every_file_name_under_models_onnx_comes_from_one_family(tmp_path):
    cfg = load_config(write_config(tmp_path))
    files = OnnxFiles.of(cfg, cfg.models[0])
    onnx = tmp_path / "onnx" / "yolo"
    assert (files.fp32, files.fp16, files.int8) == (onnx / "yolov8n.onnx", onnx / "yolov8n.fp16.onnx",
                                                    onnx / "yolov8n.int8.onnx")
    assert (files.record, files.int8_record, files.accuracy) == (
        onnx / "yolov8n.export.json", onnx / "yolov8n.int8.json", onnx / "yolov8n.accuracy.json")
    assert set(files.every()) == {files.fp32, files.fp16, files.int8, files.record, files.int8_record,
                                  files.accuracy}
    assert [files.onnx(k) for k in ("fp32", "fp16", "int8")] == [files.fp32, files.fp16, files.int8]
    # the family is found again from either end
    assert OnnxFiles.of_record(files.record) == files == OnnxFiles.of_fp32(files.fp32)


def test_a_dotted_source_name_keeps_its_dots():
    files = OnnxFiles(Path("/m/onnx/best.v2"))
    assert files.fp32.name == "best.v2.onnx" and files.fp16.name == "best.v2.fp16.onnx"
    assert OnnxFiles.of_fp32(files.fp32) == files


def test_names_that_are_not_of_the_family_are_refused():
    with pytest.raises(ValueError, match="not an export record"):
        OnnxFiles.of_record(Path("/m/onnx/yolov8n.onnx"))
    with pytest.raises(ValueError, match="no ONNX of kind 'int4'"):
        OnnxFiles(Path("/m/onnx/yolov8n")).onnx("int4")


def test_no_module_but_records_spells_an_onnx_file_name():
    """A path-making literal ending in one of the family's suffixes lives in stages/records.py only
    (docstrings and messages that mention a name in passing are prose, not paths)."""
    found = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        if path.name == "records.py" and path.parent.name == "stages":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and node.value.endswith(SUFFIXES):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not found, found


RECORD = {"model": "old-name", "source": "yolo/yolov8n.pt", "task": "detect", "cache_key": "k",
          "sha256": {"source": "s", "fp32": "a", "fp16": "b"}, "demo": True, "trusted": False,
          "io": {"inputs": [{"name": "images", "shape": [1, 3, 320, 320], "dtype": "float32"}],
                 "outputs": [{"name": "output0", "shape": ["batch", 84, 2100], "dtype": "float32"}]},
          "metadata": {"task": "detect", "names": "{0: 'person'}"},
          "files": {"fp32": "onnx/yolo/yolov8n.onnx"}}


def test_a_record_is_parsed_once_into_typed_fields_and_reads_back_as_written(tmp_path):
    cfg = load_config(write_config(tmp_path))
    spec = cfg.models[0]
    rec = ExportRecord.parse(spec, OnnxFiles.of(cfg, spec), RECORD)
    assert rec.inputs == (Tensor("images", (1, 3, 320, 320), "float32"),)
    assert rec.outputs[0].shape == ("batch", 84, 2100)
    assert (rec.model, rec.cache_key, rec.demo, rec.trusted, rec.status) == ("human", "k", True, False, "cached")
    assert rec.onnx_sha256("fp16") == "b" and rec.onnx_sha256("int8") is None
    # the document view: the model is the spec's name (a renamed model keeps its export), plus the status
    doc = rec.to_json()
    assert doc["model"] == "human" and doc["status"] == "cached" and doc["io"] == RECORD["io"]
    assert rec["io"]["outputs"][0]["name"] == "output0" and rec.get("missing") is None and "int8" not in rec
    rec.int8 = {"sha256": "q", "file": "onnx/yolo/yolov8n.int8.onnx"}
    assert rec.onnx_sha256("int8") == "q" and rec["files"]["int8"] == "onnx/yolo/yolov8n.int8.onnx"


def test_the_cached_record_carries_the_onnx_tensors(workspace):
    import onnx

    from pipeline.stages.export import cached_record
    cfg = load_config(workspace / "models.yaml")
    for spec in cfg.models:
        rec = cached_record(cfg, spec)
        assert isinstance(rec, ExportRecord) and rec.spec is spec
        graph = onnx.load(str(rec.files.fp32), load_external_data=False).graph
        assert [t.name for t in rec.inputs] == [v.name for v in graph.input]
        assert [t.name for t in rec.outputs] == [v.name for v in graph.output]
        assert rec.inputs[0].shape == (1, 3, 320, 320) and rec.inputs[0].dtype == "float32"
        assert rec.metadata["task"] == spec.task
