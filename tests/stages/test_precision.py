"""INT8 by explicit quantization and the accuracy gate, with the real quantizer (ONNX Runtime),
real TensorRT for RTX INT8 builds and the real Ultralytics validator on labelled images the
tests make (labels: the FP32 model's own confident detections)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from pipeline import api
from pipeline.builders import TensorRTRTX
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.stages import quantize
from pipeline.stages.export import cached_record, onnx_file, onnx_paths
from tests.conftest import run_cli
from tests.labelled import labelled_set

pytestmark = pytest.mark.slow
pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT for RTX not installed (pip install '.[rtx]')")
TAG = f"trtrtx-{TensorRTRTX.version()}-sm89"


def _config(ws: Path, extra: str = "", models: str = "human") -> Path:
    """The exported demo workspace's models.yaml, cut to ``models`` with ``extra`` keys on each."""
    lines = {"human": "  - {name: human, source: yolo/yolov8n.pt, task: detect%s}",
             "pose": "  - {name: pose, source: yolo/yolov8n-pose.pt, task: pose%s}"}
    text = "defaults: {imgsz: 320, opset: 12, precision: int8, batch: 1}\nmodels:\n" + "\n".join(
        lines[m] % extra for m in models.split(",")) + "\n"
    (ws / "models.yaml").write_text(text)
    return ws / "models.yaml"


def _calibration_folder(folder: Path, n: int = 8) -> Path:
    """Frames like the bundled pictures: crops and flips of bus.jpg and zidane.jpg."""
    import cv2

    from pipeline.checks.images import bundled_images
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = cv2.imread(str(bundled_images()[i % 2]))
        h, w = img.shape[:2]
        k = 1 + i // 2
        img = img[h * k // 20: h - h * k // 20, w * k // 20: w - w * k // 20]
        cv2.imwrite(str(folder / f"f{i:02d}.jpg"), img[:, ::-1] if i % 3 else img)
    return folder


@pytest.fixture(scope="module")
def int8_ws(tmp_path_factory, exported) -> Path:
    """The exported demo workspace, human and pose at precision int8, calibrated once."""
    ws = tmp_path_factory.mktemp("int8") / "ws"
    shutil.copytree(exported, ws)
    _calibration_folder(ws / "calib")
    cfg = load_config(_config(ws, ", calibration: {images: calib}", "human,pose"))
    for spec in cfg.models:
        quantize.ensure_twin(cfg, spec, cached_record(cfg, spec))
    return ws


def _twin(ws: Path, name: str):
    cfg = load_config(ws / "models.yaml")
    spec = next(s for s in cfg.models if s.name == name)
    return cfg, spec, cached_record(cfg, spec)


# ---------------------------------------------------------------------------- the twin
def test_the_int8_twin_quantizes_the_convolutions_and_keeps_the_head_outputs_and_dfl_in_float(int8_ws):
    for name, head in (("human", ("cv2", "cv3")), ("pose", ("cv2", "cv3", "cv4"))):
        cfg, spec, _ = _twin(int8_ws, name)
        rec = json.loads(quantize.int8_paths(cfg, spec)["record"].read_text())
        twin = onnx.load(str(onnx_file(cfg, spec, "int8")))
        ops = [n.op_type for n in twin.graph.node]
        assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
        excluded = set(rec["excluded_nodes"])
        for branch in head:   # every output convolution of every scale stays float
            assert {f"/model.22/{branch}.{i}/{branch}.{i}.2/Conv" for i in range(3)} <= excluded
        assert any("/dfl/" in n for n in excluded) and rec["opset"] == 13
        assert next(o.version for o in twin.opset_import if o.domain in ("", "ai.onnx")) == 13
        # a kept convolution reads its weight as a float initializer, not through a DequantizeLinear
        dq_outputs = {o for n in twin.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        by_name = {n.name: n for n in twin.graph.node}
        for conv in (n for n in excluded if n.endswith("/Conv") and n in by_name):
            assert by_name[conv].input[1] not in dq_outputs, conv
        # biases are never quantized (TensorRT refuses an int32 bias DequantizeLinear)
        inits = {i.name: i for i in twin.graph.initializer}
        assert not [i for i in inits.values() if i.data_type == onnx.TensorProto.INT32 and "bias" in i.name.lower()]
        # the Ultralytics metadata the engine header is made from survives
        assert {"names", "stride", "task", "imgsz"} <= {p.key for p in twin.metadata_props}
        assert rec["quantizer"].startswith("onnxruntime") and rec["method"] == "max"
        assert rec["calibration_images"] == 8 and len(rec["calibration_digest"]) == 64


def test_calibration_is_cached_and_each_of_its_inputs_recalibrates(int8_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    cfg, spec, rec = _twin(ws, "human")
    assert quantize.ensure_twin(cfg, spec, rec)["status"] == "cached"
    _config(ws, ", calibration: {images: calib}, verify: {min_iou: 0.5}", "human,pose")  # not an input
    cfg, spec, rec = _twin(ws, "human")
    assert quantize.ensure_twin(cfg, spec, rec)["status"] == "cached"
    _config(ws, ", calibration: {images: calib, count: 6}", "human,pose")
    cfg, spec, rec = _twin(ws, "human")
    assert quantize.ensure_twin(cfg, spec, rec)["status"] == "calibrated"
    assert quantize.ensure_twin(cfg, spec, rec)["status"] == "cached"
    img = sorted((ws / "calib").glob("*.jpg"))[0]
    img.write_bytes(img.read_bytes() + b"\0")   # one calibration image changed
    assert quantize.ensure_twin(cfg, spec, rec)["status"] == "calibrated"
    _config(ws, ", calibration: {images: calib, count: 6, method: entropy}", "human,pose")
    cfg, spec, rec = _twin(ws, "human")
    images, _ = quantize.calibration_images(spec, lambda m: None)
    digest = quantize.images_digest(images)
    key = quantize.twin_key(rec, spec, digest, len(images))
    assert key != quantize.twin_key(rec, load_config(_config(ws, ", calibration: {images: calib, count: 6}",
                                                             "human,pose")).models[0], digest, len(images))
    changed = {**rec, "sha256": {**rec["sha256"], "fp32": "0" * 64}}   # another FP32 ONNX
    assert quantize.twin_key(changed, spec, digest, len(images)) != key


# ---------------------------------------------------------------------------- build and gate
def test_an_int8_engine_is_built_with_tensorrt_rtx_and_published_with_its_provenance(int8_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    _config(ws, ", calibration: {images: calib}")
    r = run_cli("--config", str(ws / "models.yaml"), "--json", "build", "--backend", "tensorrt-rtx",
                "--target", "sm89")
    assert r.returncode == 0, r.stderr
    set_dir = ws / "engines" / TAG   # the tag does not change with the precision
    m = json.loads((set_dir / "manifest.json").read_text())
    e = m["engines"]["human"]
    assert e["status"] == "ok" and e["options"]["precision"] == "int8" and e["options"]["strongly_typed"]
    assert e["options"]["onnx"] == "int8" and e["built_from"].endswith("yolov8n.int8.onnx")
    prov = e["int8"]
    assert prov["quantizer"].startswith("onnxruntime") and prov["calibration_images"] == 8
    assert prov["opset"] == 13 and any("/dfl/" in n for n in prov["excluded_nodes"])
    from ultralytics.nn.backends.base import BaseBackend  # the real client's header reader
    _, meta = BaseBackend.engine_header(set_dir / "yolo/yolov8n.engine")
    assert meta["engine_pipeline"]["precision"] == "int8" and meta["task"] == "detect"
    assert "int8" in (set_dir / "report.md").read_text()
    # TensorRT for RTX ignores a timing cache: none is kept for its builds
    assert not list((ws / "engines").rglob("*.timing"))


def test_a_twin_with_every_op_quantized_fails_the_gate_and_is_not_published(int8_ws, tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    cfg = load_config(_config(ws, ", calibration: {images: calib}"))
    real = quantize.ensure_twin
    monkeypatch.setattr(quantize, "ensure_twin",
                        lambda *a, **k: real(*a, **{**k, "exclude_head": False}))   # the broken twin
    be, gpus = api.choose_backend("tensorrt-rtx", ["8.9"])
    summary, errors = api.build(cfg, ["human"], be, gpus)
    assert len(errors) == 1 and errors[0].model == "human"
    text = errors[0].render()
    assert "INT8 engine failed verification and was not published" in text
    assert "match rate 0.000" in text and "calibration" in text and "precision: fp16" in text
    assert not (ws / "engines" / TAG / "yolo/yolov8n.engine").exists()


def test_int8_refusals_name_the_version_and_the_gpu(int8_ws):
    from pipeline.hardware import has_int8
    from pipeline.stages.build import int8_refusal, pre_build_checks

    class OldTensorRT:
        name, targets, gpu = "tensorrt", ["8.9"], None

        @staticmethod
        def version():
            return "10.8.0.43"
    assert "INT8 needs TensorRT 10.12 or newer" in int8_refusal(OldTensorRT)
    assert int8_refusal(TensorRTRTX(["8.9"])) is None
    assert has_int8("6.1") and not has_int8("6.0") and not has_int8("5.3")
    cfg, spec, _ = _twin(int8_ws, "human")

    class Maxwell(OldTensorRT):
        name, targets = "tensorrt-rtx", ["5.2"]
    with pytest.raises(PipelineError, match="compute capability 5.2 has no INT8"):
        pre_build_checks(spec, Maxwell, None, [], onnx_file(cfg, spec, "int8"), int8_ws)
    with pytest.raises(PipelineError, match="TensorRT 10.12") as err:
        pre_build_checks(spec, OldTensorRT, None, [], onnx_file(cfg, spec, "int8"), int8_ws)
    assert "precision: fp16" in err.value.fix


# ---------------------------------------------------------------------------- bad calibration input
@pytest.mark.parametrize(("make", "want"), [
    (lambda d: None, "the calibration folder does not exist"),
    (lambda d: d.mkdir(), "holds no images"),
    (lambda d: (d.mkdir(), (d / "notes.txt").write_text("x")), "holds no images"),
    (lambda d: (d.mkdir(), (d / "a.jpg").write_bytes(b"not a jpeg")), "cannot be read"),
])
def test_a_bad_calibration_folder_is_one_paragraph_and_nothing_is_written(int8_ws, tmp_path, make, want):
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    cfg, spec, rec = _twin(ws, "human")
    twin = onnx_file(cfg, spec, "int8")
    before = twin.read_bytes()
    make(ws / "bad")
    cfg = load_config(_config(ws, ", calibration: {images: bad}"))
    spec = cfg.models[0]
    with pytest.raises(PipelineError, match=want) as err:
        quantize.ensure_twin(cfg, spec, rec)
    assert err.value.model == "human" and err.value.fix and "bad" in str(err.value.file)
    assert twin.read_bytes() == before   # the twin already built is untouched


def test_few_or_no_calibration_images_warn(int8_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    cfg, spec, rec = _twin(ws, "human")
    said: list[str] = []
    quantize.calibration_images(spec, said.append)   # 8 images: fewer than a useful minimum
    assert any("only 8 calibration image(s)" in s for s in said)
    cfg = load_config(_config(ws))   # no calibration: the reference images, with a warning
    said.clear()
    quantize.calibration_images(cfg.models[0], said.append)
    assert any("a handful of images is not a calibration set" in s for s in said)


def test_a_missing_quantizer_is_a_paragraph(int8_ws, tmp_path, monkeypatch):
    import sys
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    cfg, spec, rec = _twin(ws, "human")
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization.calibrate", None)   # as if not installed
    with pytest.raises(PipelineError, match="quantizer is not installed") as err:
        quantize.ensure_twin(cfg, spec, rec, force=True)
    assert "precision: fp16" in err.value.fix


# ---------------------------------------------------------------------------- the accuracy gate
@pytest.fixture(scope="module")
def labelled(int8_ws, tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("labelled")
    cfg, spec, _ = _twin(int8_ws, "human")
    return labelled_set(ws, onnx_paths(cfg, spec)["fp32"], 320)


def test_the_accuracy_gate_passes_fp16_and_refuses_a_broken_int8_twin_by_how_much(int8_ws, labelled, tmp_path,
                                                                                 monkeypatch):
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    acc = f", accuracy: {{data: {labelled}, max_drop: {{fp16: 2.0, int8: 3.0}}}}"
    cfg = load_config(_config(ws, acc + ", calibration: {images: calib}"))
    be, gpus = api.choose_backend("tensorrt-rtx", ["8.9"])
    summary, errors = api.build(cfg, ["human"], be, gpus, precision="fp16")
    assert not errors, [e.render() for e in errors]
    m = json.loads((ws / "engines" / TAG / "manifest.json").read_text())
    a = m["engines"]["human"]["onnx_level"]["accuracy"] if "onnx_level" in m["engines"]["human"] else \
        m["engines"]["human"]["verification"]["onnx"]["accuracy"]
    assert a["reference"]["map50_95"] > 10   # the FP32 model finds its own labels
    assert a["drop_map50_95"] <= 2.0 and a["max_drop"] == 2.0   # FP16 may even score a little higher
    assert "## Accuracy" in (ws / "engines" / TAG / "report.md").read_text()
    real = quantize.ensure_twin
    monkeypatch.setattr(quantize, "ensure_twin", lambda *a, **k: real(*a, **{**k, "exclude_head": False}))
    summary, errors = api.build(cfg, ["human"], be, gpus)   # precision int8 from models.yaml, the broken twin
    assert len(errors) == 1
    text = errors[0].render()
    assert "accuracy: box mAP50-95 dropped" in text and "more than max_drop int8: 3" in text
    assert "calibration" in errors[0].fix
    m2 = json.loads((ws / "engines" / TAG / "manifest.json").read_text())
    assert m2["engines"]["human"]["options"]["precision"] == "fp16"   # the FP16 engine stays published


@pytest.mark.parametrize(("edit", "want"), [
    (lambda d: (d / "data.yaml").write_text("val: [unclosed\n"), "not valid YAML"),
    (lambda d: (d / "data.yaml").write_text("path: .\nnames: {0: a}\ntrain: images/val\n"), "no `val:` split"),
    (lambda d: (d / "data.yaml").write_text(
        (d / "data.yaml").read_text().replace("images/val", "images/nowhere")), "are not there"),
    (lambda d: (d / "data.yaml").write_text("path: .\nval: images/val\nnames: [a, b]\n"), "has 2 classes, the model"),
    (lambda d: (d / "data.yaml").write_text((d / "data.yaml").read_text().replace("0: '0'", "0: zero")),
     "class names are not the model's"),
    (lambda d: (d / "labels/val/im0.txt").write_text("99 0.5 0.5 0.1 0.1\n"), "names class 99"),
    (lambda d: (d / "labels/val/im0.txt").write_text("0 250 120 30 40\n"), "outside 0..1"),
    (lambda d: [f.write_text("") for f in (d / "labels/val").glob("*.txt")], "has a label"),
])
def test_a_bad_labelled_set_is_one_paragraph_before_anything_is_measured(int8_ws, labelled, tmp_path, edit, want):
    from pipeline.checks import accuracy
    from pipeline.config import Accuracy
    from pipeline.stages.verify import model_names
    data = tmp_path / "labelled"
    shutil.copytree(labelled.parent, data)
    edit(data)
    _, spec, rec = _twin(int8_ws, "human")
    names, kpt = model_names(rec)
    with pytest.raises(PipelineError, match=want) as err:
        accuracy.prepare(Accuracy(data / "data.yaml"), "human", "detect", names, kpt, tmp_path)
    assert err.value.model == "human" and err.value.fix and err.value.file


def test_a_data_yaml_download_entry_is_never_passed_on(int8_ws, labelled, tmp_path):
    import yaml

    from pipeline.checks import accuracy
    from pipeline.config import Accuracy
    from pipeline.stages.verify import model_names
    data = tmp_path / "labelled"
    shutil.copytree(labelled.parent, data)
    y = yaml.safe_load((data / "data.yaml").read_text())
    y["download"] = "import os; os.system('touch /tmp/pwned-by-data-yaml')"
    (data / "data.yaml").write_text(yaml.safe_dump(y))
    _, spec, rec = _twin(int8_ws, "human")
    names, kpt = model_names(rec)
    out, _ = accuracy.prepare(Accuracy(data / "data.yaml"), "human", "detect", names, kpt, tmp_path)
    norm = yaml.safe_load(out.read_text())
    assert "download" not in norm and Path(norm["path"]).is_absolute()


def test_verify_judges_an_int8_engine_as_int8_even_when_models_yaml_says_fp16(int8_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    _config(ws, ", calibration: {images: calib}")
    (ws / "models.yaml").write_text((ws / "models.yaml").read_text().replace("precision: int8", "precision: fp16"))
    args = ("--config", str(ws / "models.yaml"))
    r = run_cli(*args, "build", "--backend", "tensorrt-rtx", "--target", "sm89", "--precision", "int8")
    assert r.returncode == 0, r.stderr
    r = run_cli(*args, "--json", "verify")
    assert r.returncode == 0, r.stderr
    m = json.loads((ws / "engines" / TAG / "manifest.json").read_text())["engines"]["human"]
    from pipeline.config import DEFAULT_VERIFY
    assert m["verification"]["onnx"]["thresholds"] == DEFAULT_VERIFY["int8"] and m["status"] == "ok"


def test_the_calibrator_folds_its_ranges_without_emptying_its_last_buffer():
    """ONNX Runtime 1.32 refuses to finish when the last fold leaves no data ("No data is
    collected"): with 256 images and a fold every 16 it did."""
    from pipeline.stages.quantize import _fold_every
    for n in (1, 2, 15, 16, 32, 64, 240, 256, 512, 720):
        m = _fold_every(n)
        assert 1 <= m <= 16 and (m == 1 or n % m != 0), (n, m)


# ---------------------------------------------------------------------------- review findings
def test_nothing_in_the_users_dataset_is_unpickled_or_written(int8_ws, labelled, tmp_path):
    """Ultralytics loads its label cache with pickle: one planted in the user's folder never runs."""
    from pipeline.checks import accuracy
    from pipeline.config import Accuracy
    from pipeline.stages.verify import model_names
    data = tmp_path / "labelled"
    shutil.copytree(labelled.parent, data)
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))
    with open(data / "labels" / "val.cache", "wb") as f:
        np.save(f, np.array({"payload": Payload()}, dtype=object), allow_pickle=True)
    before = sorted(p.name for p in data.rglob("*"))
    _, spec, rec = _twin(int8_ws, "human")
    names, kpt = model_names(rec)
    work = tmp_path / "work"
    work.mkdir()
    y, digest = accuracy.prepare(Accuracy(data / "data.yaml"), "human", "detect", names, kpt, work)
    cfg, spec, _ = _twin(int8_ws, "human")
    figures = accuracy.measure(onnx_file(cfg, spec, "fp32"), "detect", y, 320, work, model="human")
    assert figures["map50_95"] > 10 and not marker.exists()
    assert sorted(p.name for p in data.rglob("*")) == before   # no cache written into the user's data


def test_symlinked_images_find_their_labels(int8_ws, labelled, tmp_path):
    """A DVC-style layout: images are links into a store; labels sit beside the links."""
    from pipeline.checks import accuracy
    from pipeline.config import Accuracy
    from pipeline.stages.verify import model_names
    data = tmp_path / "labelled"
    shutil.copytree(labelled.parent, data)
    store = tmp_path / "store"
    store.mkdir()
    for img in (data / "images" / "val").iterdir():
        target = store / f"blob-{img.name}"
        img.rename(target)
        img.symlink_to(target)
    _, spec, rec = _twin(int8_ws, "human")
    names, kpt = model_names(rec)
    y, _ = accuracy.prepare(Accuracy(data / "data.yaml"), "human", "detect", names, kpt, tmp_path / "w1")
    cfg, spec, _ = _twin(int8_ws, "human")
    assert accuracy.measure(onnx_file(cfg, spec, "fp32"), "detect", y, 320, tmp_path / "w1")["map50_95"] > 10


def test_images_the_validator_drops_are_a_paragraph_not_a_traceback(int8_ws, tmp_path):
    import cv2
    import yaml

    from pipeline.checks import accuracy
    from pipeline.config import Accuracy
    from pipeline.stages.verify import model_names
    d = tmp_path / "tiny"
    (d / "images/val").mkdir(parents=True)
    (d / "labels/val").mkdir(parents=True)
    for i in range(3):   # 8x8 pictures: Ultralytics refuses images under 10 px
        cv2.imwrite(str(d / f"images/val/t{i}.png"), np.full((8, 8, 3), 128, np.uint8))
        (d / f"labels/val/t{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    _, spec, rec = _twin(int8_ws, "human")
    names, kpt = model_names(rec)
    (d / "data.yaml").write_text(yaml.safe_dump({"path": ".", "val": "images/val", "names": names}))
    y, _ = accuracy.prepare(Accuracy(d / "data.yaml"), "human", "detect", names, kpt, tmp_path / "w")
    cfg, spec, _ = _twin(int8_ws, "human")
    with pytest.raises(PipelineError) as err:
        accuracy.measure(onnx_file(cfg, spec, "fp32"), "detect", y, 320, tmp_path / "w", model="human",
                         data_file=d / "data.yaml")
    assert err.value.model == "human" and str(err.value.file).endswith("data.yaml") and err.value.fix


def test_the_accuracy_gate_re_judges_without_rebuilding_and_ignores_how_config_is_spelt(int8_ws, labelled,
                                                                                      tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    acc = f", accuracy: {{data: {labelled}, max_drop: {{fp16: 2.0}}}}"
    _config(ws, acc)
    (ws / "models.yaml").write_text((ws / "models.yaml").read_text().replace("precision: int8", "precision: fp16"))
    build = ("build", "--backend", "tensorrt-rtx", "--target", "sm89")
    r = run_cli("--config", str(ws / "models.yaml"), "--json", *build)
    assert r.returncode == 0, r.stderr
    assert "human: accuracy gate: box mAP50-95 of the FP32 reference and the fp16 candidate on" in r.stderr
    assert re.search(r"human: accuracy gate passed: box mAP50-95 [\d.]+ \(FP32 reference\) -> [\d.]+ \(fp16\), "
                     r"drop -?[\d.]+ points, limit 2 \(accuracy: max_drop: fp16\)", r.stderr), r.stderr
    verdict = json.loads(r.stdout)["build"]["accuracy"]["human"]
    assert verdict["passed"] and verdict["limit"] == 2.0 and verdict["limit_key"] == "accuracy.max_drop.fp16"
    assert verdict["reference"] > 10 and verdict["drop"] == round(verdict["reference"] - verdict["candidate"], 3)
    engine = ws / "engines" / TAG / "yolo" / "yolov8n.engine"
    inode = engine.stat().st_ino
    r = run_cli("--config", "models.yaml", *build, cwd=ws)   # the same config, spelt relative
    assert r.returncode == 0 and "up to date" in r.stdout + r.stderr, r.stdout + r.stderr
    (ws / "models.yaml").write_text((ws / "models.yaml").read_text().replace("fp16: 2.0", "fp16: 1.5"))
    r = run_cli("--config", str(ws / "models.yaml"), *build)
    assert r.returncode == 0 and "re-verifying" in r.stdout + r.stderr, r.stdout + r.stderr
    assert engine.stat().st_ino == inode   # judged again, never rebuilt
    m = json.loads((ws / "engines" / TAG / "manifest.json").read_text())["engines"]["human"]
    assert m["verification"]["onnx"]["accuracy"]["max_drop"] == 1.5


def test_int8_is_refused_before_anything_is_calibrated(int8_ws, tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    cfg = load_config(_config(ws, ", calibration: {images: calib}"))
    calls = []
    monkeypatch.setattr(quantize, "ensure_twin", lambda *a, **k: calls.append(a))
    from pipeline.builders import TensorRT
    from pipeline.hardware import detect_gpus
    from tests.deploy.test_resolve import FACTS
    gpu = detect_gpus(FACTS / "h100-80gb-hbm3.csv")[0]
    old = TensorRT(gpu)
    monkeypatch.setattr(TensorRT, "version", classmethod(lambda cls: "10.8.0.43"))
    summary, errors = api.build(cfg, ["human"], old, [gpu])
    assert errors and "INT8 needs TensorRT 10.12 or newer" in errors[0].what and not calls


def test_clean_removes_the_int8_twin_and_accuracy_figures(int8_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    cfg = load_config(ws / "models.yaml")
    (ws / "onnx" / "yolo" / "yolov8n.accuracy.json").write_text("{}")
    plan = api.plan_clean(cfg)
    names = {p.name for p in plan.remove}
    assert {"yolov8n.int8.onnx", "yolov8n.int8.json", "yolov8n.accuracy.json"} <= names


def test_a_calibration_error_is_reported_once_by_run(int8_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(int8_ws, ws)
    _config(ws, ", calibration: {images: nowhere}")
    r = run_cli("--config", str(ws / "models.yaml"), "run", "--backend", "tensorrt-rtx", "--target", "sm89")
    assert r.returncode == 1 and r.stderr.count("the calibration folder does not exist") == 1, r.stderr


# ---------------------------------------------------------------------------- every task's metric
# name -> (task, source, demo family): the exported human and pose, and demo segment, obb and
# classify models written from the task table's YOLOv8 architectures
TASK_MODELS = {"human": ("detect", "yolo/yolov8n.pt", None), "pose": ("pose", "yolo/yolov8n-pose.pt", None),
               "seg": ("segment", "tasks/seg.pt", "yolov8"), "obb": ("obb", "tasks/obb.pt", "yolov8"),
               "cls": ("classify", "tasks/cls.pt", "yolov8")}


def _tasks_config(ws: Path, extra: dict[str, str]) -> Path:
    lines = [f"  - {{name: {n}, source: {src}, task: {t}{f', demo_arch: {fam}' if fam else ''}{extra.get(n, '')}}}"
             for n, (t, src, fam) in TASK_MODELS.items()]
    (ws / "models.yaml").write_text("defaults: {imgsz: 320, opset: 12, precision: int8, batch: 1}\nmodels:\n"
                                    + "\n".join(lines) + "\n")
    return ws / "models.yaml"


@pytest.fixture(scope="module")
def grey_ws(tmp_path_factory, exported) -> Path:
    """Every task at 320: exported, labelled from its own FP32 outputs (tests/labelled.py), gated by
    accuracy: on that set, and twinned at INT8 calibrated on flat grey frames only (scales that
    clip every real picture's activations: the twin a gate must refuse)."""
    import cv2

    from pipeline.stages.demo import demo_models
    from pipeline.stages.export import export_all
    ws = tmp_path_factory.mktemp("tasks") / "ws"
    shutil.copytree(exported, ws)
    (ws / "grey").mkdir()
    for i, v in enumerate((96, 114, 128, 144)):
        cv2.imwrite(str(ws / "grey" / f"g{i}.png"), np.full((320, 320, 3), v, np.uint8))
    cfg = load_config(_tasks_config(ws, {}))
    demo_models(cfg, log=lambda m: None)
    _, errors = export_all(cfg, cfg.models)
    assert not errors, [e.render() for e in errors]
    extra = {}
    for spec in cfg.models:
        data = labelled_set(ws / "sets" / spec.name, onnx_paths(cfg, spec)["fp32"], 320)
        extra[spec.name] = f", calibration: {{images: grey}}, accuracy: {{data: {data}, max_drop: {{int8: 3.0}}}}"
    cfg = load_config(_tasks_config(ws, extra))
    for spec in cfg.models:
        quantize.ensure_twin(cfg, spec, cached_record(cfg, spec))
    return ws


@pytest.mark.parametrize("name", list(TASK_MODELS))
def test_each_tasks_gate_reports_its_metric_and_refuses_a_twin_calibrated_on_grey_frames(grey_ws, name):
    """The gate with the task's own metric (box, mask, keypoint, rotated-box mAP50-95, top-1) on labels
    made from the FP32 model's own confident outputs: they measure agreement with FP32, not accuracy,
    so the FP32 reference scores high by construction and a twin's drop is its disagreement."""
    from pipeline import tasks
    from pipeline.stages.quantize import int8_paths
    from pipeline.stages.verify import add_accuracy
    cfg, spec, rec = _twin(grey_ws, name)
    task = tasks.TASKS[spec.task]
    fp32 = onnx_paths(cfg, spec)["fp32"]
    ref_level = {"status": "passed", "reasons": []}
    add_accuracy(ref_level, spec, rec, fp32, fp32, "fp32")
    ref = ref_level["accuracy"]["reference"]
    assert ref_level["status"] == "passed" and ref_level["accuracy"]["metric"] == task.metric
    assert ref["metric_label"] == task.metric_label
    assert ref[task.metric] > (99 if spec.task == "classify" else 30), ref   # the model agrees with its own labels
    if spec.task == "classify":
        assert ref["top5"] >= ref["top1"]   # top-5 is reported beside the gated top-1
    else:
        assert ref["map50_95"] > 0 and 0 < ref["precision"] <= 1
    level = {"status": "passed", "reasons": []}
    add_accuracy(level, spec, rec, fp32, int8_paths(cfg, spec)["onnx"], "int8")
    cand = level["accuracy"]["candidate"]
    print(f"{name}: {task.metric_label} FP32 {ref[task.metric]:.2f}, grey-calibrated INT8 {cand[task.metric]:.2f}")
    assert level["status"] == "failed", (ref, cand)
    assert level["reasons"] == [f"accuracy: {task.metric_label} dropped {level['accuracy']['drop_map50_95']:.2f} "
                                f"points ({ref[task.metric]:.2f} -> {cand[task.metric]:.2f}), more than max_drop "
                                "int8: 3"]
