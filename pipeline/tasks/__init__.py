"""The task table: one entry per Ultralytics task.

An entry says everything the pipeline does differently for a task: the outputs its export
has, the decoder that turns them into detections (or class probabilities), the comparison
and the thresholds it is judged by, the accuracy metric the gate compares, the demo
architecture of every bundled family, and the head nodes INT8 keeps in float. Adding a task
is one entry here plus its decoder and comparison (docs/architecture.md "Adding a task").
Numpy only: config validates against the table, checks and stages run it.
"""
from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass

# Head output convolutions by name, as Ultralytics' ONNX export names them
# (/model.<head>/<branch>.<scale>/<branch>.<scale>.2/Conv; YOLO26 nests one level deeper
# inside, Pose26 ends its keypoint branch in cv4_kpts.<scale>).
_BOX = r"(one2one_)?cv2\.\d+/(one2one_)?cv2\.\d+\.2/Conv$"
_CLS = r"(one2one_)?cv3\.\d+/(one2one_)?cv3\.\d+\.2/Conv$"
_TASK_CONV = r"(one2one_)?cv4\.\d+/(one2one_)?cv4\.\d+\.2/Conv$"
_KPTS26 = r"(one2one_)?cv4_kpts\.\d+/Conv$"
_DFL = r"dfl/"
_PROTO = r"proto/"


@dataclass(frozen=True)
class Head:
    """What a model's export says about its outputs (from the ONNX metadata)."""
    task: str
    nc: int
    kpt_shape: tuple[int, int] | None = None
    end2end: bool = False   # NMS-free rows (YOLO26/YOLOv10 with nms: false)
    rtdetr: bool = False    # RT-DETR's decoder: NMS-free rows, boxes normalised to 0..1
    imgsz: int = 640


@dataclass(frozen=True)
class Task:
    name: str
    outputs: tuple[str, ...]                      # the ONNX outputs, in order
    decode: Callable[[Head, dict], list[dict]]    # outputs -> per image detections
    compare: Callable[[list[dict], list[dict], dict], dict]   # reference, candidate, thresholds -> figures
    thresholds: tuple[str, ...]                   # the verify: keys its comparison reads
    metric: str                                   # what the accuracy gate compares (a key of checks.accuracy)
    metric_label: str
    demo: dict[str, str]                          # family -> Ultralytics' bundled architecture
    int8_float: tuple[str, ...] = ()              # head node-name patterns kept in float by INT8
    end2end: bool = True                          # whether an NMS-free layout exists (nms: false)
    labels: str = "box"                           # the accuracy gate's label format (a key of checks.accuracy.LABELS)
    layout: str | None = None                     # a fixed output layout (classify); None: from the head

    def demo_arch(self, family: str | None = None) -> str:
        return self.demo[family or DEFAULT_FAMILY]


def _lazy(module: str, name: str) -> Callable:
    """A decoder or comparison imported on first call: they need numpy, which `engines resolve` and
    `engines list` (which read the table through config) never load."""
    def call(*args, **kwargs):
        from importlib import import_module
        return getattr(import_module(f"pipeline.tasks.{module}"), name)(*args, **kwargs)
    call.__qualname__ = call.__name__ = f"{module}.{name}"
    return call


_DECODE_BOXES, _DECODE_ROTATED = _lazy("decode", "decode_boxes"), _lazy("decode", "decode_rotated")
_DECODE_PROBS = _lazy("decode", "decode_probs")
_COMPARE_DETECTIONS, _COMPARE_PROBS = _lazy("compare", "compare_detections"), _lazy("compare", "compare_probs")
_DET_THR = ("min_match_rate", "max_mean_score_delta", "min_iou")
DEFAULT_FAMILY = "yolov8"   # the embedded default's family (the seed's yolov8n and yolov8n-pose)

_DETECT_FAMILIES = {"yolov5": "yolov5nu.yaml", "yolov8": "yolov8n.yaml", "yolov9": "yolov9t.yaml",
                    "yolov10": "yolov10n.yaml", "yolo11": "yolo11n.yaml", "yolo12": "yolo12n.yaml",
                    "yolo26": "yolo26n.yaml", "rtdetr": "rtdetr-l.yaml"}


def _suffixed(suffix: str, families: tuple[str, ...]) -> dict[str, str]:
    return {f: _DETECT_FAMILIES[f].replace(".yaml", f"-{suffix}.yaml") for f in families}


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("detect", ("output0",), _DECODE_BOXES, _COMPARE_DETECTIONS, _DET_THR,
         "map50_95", "box mAP50-95", _DETECT_FAMILIES, (_BOX, _CLS, _DFL)),
    Task("segment", ("output0", "output1"), _DECODE_BOXES, _COMPARE_DETECTIONS,
         _DET_THR + ("min_mask_iou",), "mask_map50_95", "mask mAP50-95",
         _suffixed("seg", ("yolov8", "yolov9", "yolo11", "yolo26")), (_BOX, _CLS, _DFL, _TASK_CONV, _PROTO),
         labels="polygon"),
    Task("pose", ("output0",), _DECODE_BOXES, _COMPARE_DETECTIONS, _DET_THR + ("max_kpt_px",),
         "pose_map50_95", "keypoint mAP50-95", _suffixed("pose", ("yolov8", "yolo11", "yolo26")),
         (_BOX, _CLS, _DFL, _TASK_CONV, _KPTS26), labels="keypoints"),
    Task("obb", ("output0",), _DECODE_ROTATED, _COMPARE_DETECTIONS, _DET_THR,
         "map50_95", "rotated-box mAP50-95", _suffixed("obb", ("yolov8", "yolo11", "yolo26")),
         (_BOX, _CLS, _DFL, _TASK_CONV), labels="rotated"),
    Task("classify", ("output0",), _DECODE_PROBS, _COMPARE_PROBS,
         ("min_top1_agreement", "max_prob_delta"), "top1", "top-1 accuracy",
         _suffixed("cls", ("yolov8", "yolo11", "yolo26")), (), end2end=False, labels="folders",
         layout="probabilities"),
)}

# Ultralytics tasks the pipeline refuses, with why (shown in the error).
REFUSED = {
    "semantic": "semantic segmentation (YOLO26-sem) outputs a per-pixel class map that no check here decodes yet",
    "depth": "depth estimation (YOLO26-depth) outputs a depth map that no check here compares yet",
}


def get(name: str) -> Task:
    return TASKS[name]


def _literal(value):
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def model_names(metadata: dict) -> tuple[dict, list | None]:
    """(class names, kpt_shape) from Ultralytics' ONNX metadata (values are Python literals as text)."""
    names = _literal(metadata.get("names", "{}")) or {}
    kpt = _literal(metadata.get("kpt_shape"))
    return dict(names), (list(kpt) if kpt else None)


def head_of(record: dict) -> Head:
    """The Head of an exported model, from its export record (metadata and I/O)."""
    meta = record.get("metadata", {})
    names, kpt = model_names(meta)
    task = meta.get("task") or record.get("task", "detect")
    args = _literal(meta.get("args"))
    # NMS-free head (end2end), or NMS embedded by the export (args nms: True): rows, one per object
    end2end = str(meta.get("end2end", "False")) == "True" or (isinstance(args, dict) and args.get("nms") is True)
    rtdetr = "RTDETR" in str(meta.get("head", "")) or record.get("head") == "RTDETRDecoder"
    imgsz = _literal(meta.get("imgsz"))
    imgsz = int(imgsz[0]) if isinstance(imgsz, (list, tuple)) else int(record.get("options", {}).get("imgsz", 640))
    return Head(task=task, nc=len(names), kpt_shape=tuple(kpt) if kpt else None, end2end=end2end,
                rtdetr=rtdetr, imgsz=imgsz)


def output_layout(record: dict) -> str:
    """The layout of a model's outputs (manifest.LAYOUTS), from its export record: what a serving
    config or a client needs to post-process them."""
    head = head_of(record)
    fixed = TASKS[head.task].layout
    return fixed or ("rtdetr" if head.rtdetr else "end2end" if head.end2end else "one-to-many")


def decode_outputs(record: dict, outputs: dict) -> list[dict]:
    head = head_of(record)
    return TASKS[head.task].decode(head, outputs)
