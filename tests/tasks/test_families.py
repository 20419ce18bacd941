"""Every task and head type end to end on real Ultralytics exports: demo weights from the
bundled architecture, the real export (parity against PyTorch, FP16 twin), and the onnx
verification level at FP16 with the task's own comparison. One representative per task and
per head type (raw one-to-many, NMS-free, RT-DETR); each gate is also shown to fail."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_config

pytestmark = pytest.mark.slow

# name, task, demo family, extra models.yaml keys
CASES = {
    "seg": ("segment", "yolov8", ""),
    "obb": ("obb", "yolov8", ""),
    "cls": ("classify", "yolov8", ""),
    "pose26": ("pose", "yolo26", ", nms: false"),  # Pose26's keypoint head ends in a Conv block
    "det26": ("detect", "yolo26", ", nms: false"),  # the NMS-free head: (1, 300, 6) rows
    "rtdetr": ("detect", "rtdetr", ", verify: {fp16: {min_match_rate: 0.2, min_iou: 0.6, max_mean_score_delta: 0.2}}"),
}
# Random weights are a poor FP16 witness for RT-DETR's transformer decoder, measured here at 320: 4 of 16
# detections kept (0.25), while a trained YOLO26n keeps 15 of 15 (issue 22). Its FP16 thresholds are
# loosened in this models.yaml, the documented user knob, and it is held to the strict FP32 thresholds
# against PyTorch (parity) instead.
LOOSENED = {"rtdetr"}


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """One models.yaml with every case, demo weights written and exported once."""
    from pipeline.config import load_config
    from pipeline.stages.demo import demo_models
    from pipeline.stages.export import export_all
    root = tmp_path_factory.mktemp("families")
    lines = [f"  - {{name: {n}, source: {n}/{n}.pt, task: {t}, demo_arch: {f}{extra}}}"
             for n, (t, f, extra) in CASES.items()]
    cfg = load_config(write_config(root, "defaults: {imgsz: 320, opset: 12, precision: fp16, batch: 1}\nmodels:\n"
                                   + "\n".join(lines) + "\n"))
    demo_models(cfg, log=lambda m: None)
    logs: list[str] = []
    records, errors = export_all(cfg, cfg.models, keep_going=True, log=logs.append)
    assert not errors, [e.render() for e in errors]
    return cfg, {r["model"]: r for r in records}, logs


def _onnx_level(cfg, records, name, precision="fp16"):
    from pipeline.stages.export import onnx_paths
    from pipeline.stages.verify import verify_onnx_level
    spec = next(m for m in cfg.models if m.name == name)
    paths = onnx_paths(cfg, spec)
    return verify_onnx_level(spec, records[name], paths["fp32"], paths[precision], precision)


@pytest.mark.parametrize("name", list(CASES))
def test_every_task_and_head_exports_with_parity_and_passes_the_fp16_onnx_level(families, name):
    cfg, records, _ = families
    rec = records[name]
    assert rec["parity"]["passed"], rec["parity"]["reasons"]
    if name in LOOSENED:   # the FP32 ONNX against PyTorch through the task check, at the strict FP32 thresholds
        assert rec["parity"]["fp32"]["detections"]["match_rate"] >= 0.98, rec["parity"]["fp32"]
    level = _onnx_level(cfg, records, name)
    assert level["status"] == "passed", level["reasons"]
    figures = level["detections"]
    task = CASES[name][0]
    if task == "classify":
        assert figures["top1_agreement"] == 1.0 and figures["images"] >= 2
    else:
        assert figures["ref_detections"] > 0, "demo weights must detect something, or the check proves nothing"
        assert figures["match_rate"] >= (0.2 if name in LOOSENED else 0.9)
    if task == "segment":
        assert figures["mean_mask_iou"] >= 0.9
    if task == "pose":
        assert "mean_kpt_px" in figures


def test_the_output_layout_and_metadata_follow_the_head(families):
    cfg, records, logs = families
    io = {n: {o["name"]: o["shape"] for o in r["io"]["outputs"]} for n, r in records.items()}
    assert io["seg"]["output0"][1] == 4 + 80 + 32 and io["seg"]["output1"][1] == 32
    assert io["obb"]["output0"][1] == 4 + 80 + 1
    assert io["cls"]["output0"] == [1, 1000]
    assert io["det26"]["output0"] == [1, 300, 6] and records["det26"]["metadata"]["end2end"] == "True"
    assert io["pose26"]["output0"] == [1, 300, 6 + 17 * 3]
    assert records["rtdetr"]["metadata"]["head"] == "RTDETRDecoder"
    assert records["rtdetr"]["opset"] == 16 and records["rtdetr"]["opset_raised"]["configured"] == 12
    assert any("rtdetr: this model needs ONNX opset 16" in m for m in logs)


def _perturbed(cfg, records, name, change):
    """The onnx level with the candidate's outputs changed by ``change`` (a gate must be able to fail)."""
    from pipeline.backends.onnxruntime import OnnxRuntimeRunner
    from pipeline.stages.export import onnx_paths
    from pipeline.stages.verify import compare_runners
    spec = next(m for m in cfg.models if m.name == name)
    paths = onnx_paths(cfg, spec)

    class Changed(OnnxRuntimeRunner):
        def infer(self, feed):
            return change(super().infer(feed))
    with OnnxRuntimeRunner(paths["fp32"]) as ref, Changed(paths["fp32"]) as cand:
        return compare_runners(spec, records[name], ref, cand, "fp16", 1)


def test_the_mask_comparison_fails_when_the_prototypes_change(families):
    cfg, records, _ = families
    level = _perturbed(cfg, records, "seg", lambda o: {**o, "output1": -o["output1"]})
    assert level["status"] == "failed"
    assert any("mask IoU" in r for r in level["reasons"]), level["reasons"]
    assert level["detections"]["match_rate"] == 1.0   # boxes untouched: only the masks say it


def test_the_rotated_comparison_fails_when_the_angle_changes(families):
    cfg, records, _ = families

    def turn(o):
        out = o["output0"].copy()
        out[:, -1, :] += np.pi / 4   # every box turned by 45 degrees
        return {**o, "output0": out}
    level = _perturbed(cfg, records, "obb", turn)
    assert level["status"] == "failed" and level["detections"]["mean_iou"] < 0.9, level["detections"]


def test_the_classification_comparison_fails_when_the_top_class_changes(families):
    cfg, records, _ = families
    level = _perturbed(cfg, records, "cls", lambda o: {"output0": np.roll(o["output0"], 1, axis=1)})
    assert level["status"] == "failed"
    assert any("top-1 agreement 0.000" in r for r in level["reasons"]), level["reasons"]


def test_the_nms_free_comparison_fails_when_boxes_move(families):
    cfg, records, _ = families

    def move(o):
        out = o["output0"].copy()
        out[..., 0:4:2] += 40.0   # x1, x2 shifted by 40 px
        return {"output0": out}
    level = _perturbed(cfg, records, "det26", move)
    assert level["status"] == "failed" and level["detections"]["matched"] < level["detections"]["ref_detections"]


def test_int8_keeps_each_tasks_head_outputs_in_float(families):
    """The task table's patterns find the head's output convolutions of every head type."""
    import onnx

    from pipeline.stages.export import onnx_paths
    from pipeline.stages.quantize import head_exclusions
    cfg, _, _ = families
    kept = {}
    for spec in cfg.models:
        proto = onnx.load(str(onnx_paths(cfg, spec)["fp32"]))
        kept[spec.name] = head_exclusions(proto, True, spec.task)
    assert any("/proto/" in n for n in kept["seg"]) and any("cv4." in n for n in kept["seg"])
    assert any("cv4." in n for n in kept["obb"]) and any("/dfl/" in n for n in kept["obb"])
    assert any("cv4_kpts" in n for n in kept["pose26"]) and not any("/dfl/" in n for n in kept["pose26"])
    assert any("cv3." in n for n in kept["det26"])
    assert kept["cls"] == [] and kept["rtdetr"] == []   # classify and RT-DETR's decoder have no such convolutions


def test_the_engine_header_carries_what_ultralytics_reads_for_each_head(families, tmp_path):
    """Ultralytics' own header reader gets task, names, kpt_shape and end2end back from our .engine
    (the header is written from the ONNX metadata as stages.build writes it)."""
    import onnx
    from ultralytics.nn.backends.base import BaseBackend

    from pipeline.engine_file import engine_bytes, metadata_from_onnx
    from pipeline.stages.export import onnx_paths
    cfg, records, _ = families
    for spec in cfg.models:
        props = {p.key: p.value for p in onnx.load(str(onnx_paths(cfg, spec)["fp32"])).metadata_props}
        f = tmp_path / f"{spec.name}.engine"
        f.write_bytes(engine_bytes(b"plan-bytes", metadata_from_onnx(props)))
        meta = BaseBackend.read_metadata(str(f))
        assert meta["task"] == CASES[spec.name][0]
        assert len(meta["names"]) == (1000 if spec.task == "classify" else 80)
        assert meta["end2end"] is (spec.name in ("det26", "pose26"))
        assert meta.get("kpt_shape") == ([17, 3] if spec.task == "pose" else None)


def test_nms_in_the_graph_is_refused_on_tensorrt_for_rtx_with_a_next_step(tmp_path):
    """nms: true exports NMS inside the graph; TensorRT for RTX cannot build it: one paragraph, exit 1."""
    from pipeline.config import load_config
    from pipeline.stages.demo import demo_models
    from tests.conftest import run_cli
    cfg_path = write_config(tmp_path, "defaults: {imgsz: 320}\nmodels:\n"
                                      "  - {name: embedded, source: m/det.pt, task: detect, nms: true}\n")
    demo_models(load_config(cfg_path), log=lambda m: None)
    res = run_cli("--config", str(cfg_path), "run", "--backend", "tensorrt-rtx")
    assert res.returncode == 1, res.stderr[-2000:]
    assert "cannot build NMS" in res.stderr and "Next step: set nms: false" in res.stderr
    assert not list((tmp_path / "engines").glob("*/m/det.engine"))


def test_the_accuracy_gate_is_accepted_for_every_task_and_reads_its_label_format(tmp_path):
    """Every task's labels are read (checks.accuracy.LABELS, or class folders): accuracy: loads for each;
    the label checks themselves are in tests/checks/test_accuracy.py, the gate per task in
    tests/stages/test_precision.py."""
    from pipeline.checks.accuracy import FOLDERS, LABELS
    from pipeline.config import load_config
    from pipeline.tasks import TASKS
    lines = "".join(f"  - {{name: m{i}, source: m{i}.pt, task: {t}, accuracy: {{data: d.yaml}}}}\n"
                    for i, t in enumerate(TASKS))
    cfg = load_config(write_config(tmp_path, "models:\n" + lines))
    assert [m.task for m in cfg.models if m.accuracy is not None] == list(TASKS)
    assert all(t.labels in LABELS or t.labels == FOLDERS for t in TASKS.values())


@pytest.mark.parametrize("name", ["seg", "obb", "det26", "pose26"])
def test_the_int8_twin_keeps_each_heads_outputs_in_float_and_a_broken_twin_is_refused(families, name):
    """The Q/DQ twin with the task table's head outputs kept in float keeps detections; the twin with
    every op quantized (one INT8 scale across box pixels and scores) loses them all, and the default
    INT8 thresholds refuse it. Random weights are a poor INT8 witness (measured here at 320: match rates
    0.12-0.5 with the head kept, against 0.52-0.73 for the YOLOv8 demo and 6 of 6 for a trained
    checkpoint), so the head-kept twin is held to keeping detections, not to the INT8 thresholds.
    Classify has no head convolutions to keep (its head is a linear layer) and is left out."""
    import dataclasses

    from pipeline.stages.export import onnx_paths
    from pipeline.stages.quantize import ensure_twin
    from pipeline.stages.verify import verify_onnx_level
    cfg, records, _ = families
    spec = dataclasses.replace(next(m for m in cfg.models if m.name == name), precision="int8")
    fp32, twin = onnx_paths(cfg, spec)["fp32"], cfg.onnx_dir / f"{spec.stem}.int8.onnx"
    kept = ensure_twin(cfg, spec, records[name], log=lambda m: None)
    assert kept["excluded_nodes"]
    good = verify_onnx_level(spec, records[name], fp32, twin, "int8")["detections"]
    assert good["matched"] >= 3 and good["match_rate"] >= 0.1, good
    ensure_twin(cfg, spec, records[name], log=lambda m: None, exclude_head=False)
    broken = verify_onnx_level(spec, records[name], fp32, twin, "int8")
    assert broken["detections"]["detections"] == 0 and broken["status"] == "failed"
    ensure_twin(cfg, spec, records[name], log=lambda m: None)   # the good twin back for other tests
