"""The labelled set's checks (checks/accuracy.py) that need no model: issue 25.5, an error while
reading the set names the model, the data.yaml and the file it could not read; issue 25.2, the
validator's scratch folder lives beside the ONNX, named for its process, and goes on the way out."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.checks import accuracy
from pipeline.config import Accuracy
from pipeline.errors import PipelineError


def _dataset(root: Path) -> Path:
    (root / "images/val").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    (root / "images/val/im0.png").write_bytes(b"\x89PNG not decoded by the checks")
    (root / "labels/val/im0.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "data.yaml").write_text("path: .\nval: images/val\nnames: {0: person}\n")
    return root / "data.yaml"


def test_a_sound_set_passes_the_checks(tmp_path):
    data = _dataset(tmp_path / "set")
    assert len(accuracy.data_digest(Accuracy(data), "human", "detect", {0: "person"}, None)) == 64


@pytest.mark.skipif(not os.access("/proc/self/mem", os.R_OK), reason="/proc/self/mem is not readable here")
def test_a_file_that_fails_to_read_names_model_data_yaml_and_file(tmp_path):
    """A label that is a /proc file whose read fails (EIO), as a /proc folder whose processes come and go
    did in the issue: one paragraph, not `error: No such file or directory (/proc/7037)`."""
    data = _dataset(tmp_path / "set")
    label = tmp_path / "set/labels/val/im0.txt"
    label.unlink()
    label.symlink_to("/proc/self/mem")
    for call in (lambda: accuracy.data_digest(Accuracy(data), "human", "detect", {0: "person"}, None),
                 lambda: accuracy.prepare(Accuracy(data), "human", "detect", {0: "person"}, None, tmp_path / "w")):
        with pytest.raises(PipelineError) as err:
            call()
        text = err.value.render()
        assert err.value.model == "human" and err.value.file == str(data)
        assert "error while reading the labelled set" in text and str(label) in text
        assert "Next step:" in text and "Traceback" not in text


def test_a_path_that_vanishes_while_it_is_walked_is_named(tmp_path, monkeypatch):
    """The /proc race itself, made certain: the folder disappears between the check and the walk."""
    data = _dataset(tmp_path / "set")
    gone = tmp_path / "set/images/val"
    real = Path.rglob

    def vanishing(self, pattern):
        if self == gone:
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "proc/7037"))
        return real(self, pattern)

    monkeypatch.setattr(Path, "rglob", vanishing)
    with pytest.raises(PipelineError) as err:
        accuracy.data_digest(Accuracy(data), "human", "detect", {0: "person"}, None)
    assert err.value.model == "human" and err.value.file == str(data)
    assert str(tmp_path / "proc/7037") in err.value.render()


def test_the_validator_scratch_sits_beside_the_onnx_and_goes_on_the_way_out(tmp_path):
    from pipeline.fsutil import ACCURACY_SCRATCH, owner_state
    onnx = tmp_path / "onnx" / "yolo" / "yolov8n.onnx"
    onnx.parent.mkdir(parents=True)
    with accuracy.scratch(onnx) as work:
        assert work.parent == onnx.parent and work.name.startswith(ACCURACY_SCRATCH)
        assert owner_state(work.name) == "alive"
    assert not work.exists()


# ---------------------------------------------------------------------------- label formats per task
NAMES = {0: "person", 1: "car"}


def _yolo_set(root: Path, rows: str, extra: str = "") -> Path:
    _dataset(root)
    (root / "labels/val/im0.txt").write_text(rows)
    (root / "data.yaml").write_text(f"path: .\nval: images/val\nnames: {{0: person, 1: car}}\n{extra}")
    return root / "data.yaml"


@pytest.mark.parametrize(("task", "rows", "extra", "kpt"), [
    ("segment", "1 0.1 0.1 0.9 0.1 0.5 0.8\n0 0.2 0.2 0.3 0.2 0.3 0.3 0.2 0.3\n", "", None),
    ("obb", "1 0.1 0.1 0.4 0.1 0.4 0.3 0.1 0.3\n", "", None),
    ("pose", "0 0.5 0.5 0.2 0.4 0.5 0.4 2 0 0 0\n", "kpt_shape: [2, 3]\n", [2, 3]),
    ("detect", "0 0.5 0.5 0.1 0.1\n1 0.1 0.1 0.9 0.1 0.5 0.8\n", "", None),   # Ultralytics boxes polygon lines
])
def test_each_tasks_label_format_passes_the_checks(tmp_path, task, rows, extra, kpt):
    data = _yolo_set(tmp_path / "set", rows, extra)
    out, digest = accuracy.prepare(Accuracy(data), "m", task, NAMES, kpt, tmp_path / "w")
    assert (tmp_path / "w/labels/val/000000.txt").read_text() == rows and len(digest) == 64
    assert ("kpt_shape" in out.read_text()) is (task == "pose")


@pytest.mark.parametrize(("task", "rows", "want"), [
    ("segment", "0 0.5 0.5 0.1 0.1\n", "not `class x1 y1 x2 y2 x3 y3 ... (a polygon of at least 3 points)`"),
    ("segment", "0 0.1 0.1 0.9 0.1\n", "a polygon of at least 3 points"),
    ("segment", "0 0.1 0.1 0.9 0.1 0.5 1.8\n", "outside 0..1"),
    ("segment", "2 0.1 0.1 0.9 0.1 0.5 0.8\n", "names class 2; the model has classes 0..1"),
    ("obb", "0 0.5 0.5 0.1 0.1\n", "the 4 corners of the rotated box"),
    ("obb", "0 0.1 0.1 0.4 0.1 0.4 0.3 0.1 0.3 0.2 0.2\n", "has 11 values"),
    ("obb", "0 10 10 40 10 40 30 10 30\n", "outside 0..1"),
    ("pose", "0 0.5 0.5 0.2 0.4 0.5 0.4 2\n", "(11 values)"),
])
def test_a_label_line_of_the_wrong_format_for_the_task_is_one_paragraph(tmp_path, task, rows, want):
    data = _yolo_set(tmp_path / "set", rows, "kpt_shape: [2, 3]\n" if task == "pose" else "")
    with pytest.raises(PipelineError) as err:
        accuracy.data_digest(Accuracy(data), "m", task, NAMES, [2, 3] if task == "pose" else None)
    text = err.value.render()
    assert want in text and err.value.model == "m" and err.value.file == str(tmp_path / "set/labels/val/im0.txt")
    assert "label line 1" in text and "Next step:" in text


def _class_set(root: Path, folders: dict[str, int], split: str = "val") -> Path:
    for name, n in folders.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / split / name / f"{i}.jpg").write_bytes(b"\xff\xd8 not decoded by the checks")
    return root


def test_a_classification_folder_set_is_linked_for_ultralytics_by_class(tmp_path):
    """Ultralytics' layout, <split>/<class name>/*.jpg: the folder itself, or a data.yaml naming it; a
    class the set lacks is fine (Ultralytics aligns folders to the model's names by name)."""
    root = _class_set(tmp_path / "cls", {"car": 2})
    out, digest = accuracy.prepare(Accuracy(root), "c", "classify", NAMES, None, tmp_path / "w")
    assert sorted(p.name for p in (out / "val" / "car").iterdir()) == ["000000.jpg", "000001.jpg"]
    assert (out / "val/car/000000.jpg").resolve() == (root / "val/car/0.jpg").resolve()
    assert sorted(p.name for p in (out / "train").iterdir()) == ["car"]   # Ultralytics reads the classes there
    (tmp_path / "cls.yaml").write_text("path: cls\nnames: [person, car]\n")
    assert accuracy.data_digest(Accuracy(tmp_path / "cls.yaml"), "c", "classify", NAMES, None) == digest
    (root / "val/car/0.jpg").rename(root / "val/car/moved.jpg")   # same bytes, another class folder next
    _class_set(root, {"person": 0})
    (root / "val/car/moved.jpg").rename(root / "val/person/0.jpg")
    assert accuracy.data_digest(Accuracy(root), "c", "classify", NAMES, None) != digest


@pytest.mark.parametrize(("make", "want"), [
    (lambda r: _class_set(r, {"truck": 1, "car": 1}), "1 class folder(s) of"),
    (lambda r: (_class_set(r, {"car": 1}), (r / "val/loose.jpg").write_bytes(b"x")), "outside a class folder"),
    (lambda r: _class_set(r, {"car": 1}, split="train"), "split's folder"),
    (lambda r: _class_set(r, {"car": 0}), "no class folder of"),
    (lambda r: (_class_set(r, {"car": 1}), (r / "d.yaml").write_text("path: .\nnames: [a, b]\n")),
     "class names are not the model's"),
])
def test_a_bad_classification_set_is_one_paragraph(tmp_path, make, want):
    root = tmp_path / "cls"
    root.mkdir()
    make(root)
    data = root / "d.yaml" if (root / "d.yaml").exists() else root
    with pytest.raises(PipelineError) as err:
        accuracy.prepare(Accuracy(data), "c", "classify", NAMES, None, tmp_path / "w")
    assert want in err.value.render() and err.value.model == "c" and "Next step:" in err.value.render()
    assert not (tmp_path / "w").exists()   # nothing is laid out for a set that fails its checks


def test_a_folder_is_refused_as_the_labelled_set_of_a_detector(tmp_path):
    root = _class_set(tmp_path / "cls", {"car": 1})
    with pytest.raises(PipelineError, match="is a folder; a detect model's labelled set is named by its data.yaml"):
        accuracy.data_digest(Accuracy(root), "m", "detect", NAMES, None)


def test_the_gate_names_the_tasks_metric_and_reads_every_metric_ultralytics_reports():
    from types import SimpleNamespace as NS
    box = NS(map=0.5, map50=0.7, mp=0.8, mr=0.6)
    seg = accuracy.figures(NS(box=box, seg=NS(map=0.4, map50=0.6)))
    assert seg == {"map50_95": 50.0, "map50": 70.0, "precision": 0.8, "recall": 0.6, "mask_map50_95": 40.0,
                   "mask_map50": 60.0}
    assert accuracy.figures(NS(top1=0.75, top5=1.0)) == {"top1": 75.0, "top5": 100.0}
    ref = {"top1": 75.0, "top5": 100.0, "metric": "top1", "metric_label": "top-1 accuracy"}
    drop, reasons = accuracy.judge(ref, {**ref, "top1": 50.0}, "int8", 3.0)
    assert drop == 25.0 and reasons == ["accuracy: top-1 accuracy dropped 25.00 points (75.00 -> 50.00), more "
                                        "than max_drop int8: 3"]
    assert accuracy.detail(ref) == "top-5 100.00"
    old = {"map50_95": 40.0, "pose_map50_95": 30.0}   # figures of ACCURACY_VERSION 1, in older manifests
    assert accuracy.gated_metric(old) == "pose_map50_95" and accuracy.metric_label(old) == "keypoint mAP50-95"
