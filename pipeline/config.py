"""models.yaml: schema, defaults and validation.

Every error names the model (or section), the file and the fix. Paths in the file are
relative to the file's own folder and may not leave it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.builders.compat import HARDWARE_LEVELS
from pipeline.engine_set import SET_FILES  # a passthrough mirrored onto one of them would overwrite it
from pipeline.errors import ConfigError
from pipeline.tasks import REFUSED as REFUSED_TASKS
from pipeline.tasks import TASKS as TASK_TABLE

TASKS = tuple(TASK_TABLE)   # detect, segment, pose, obb, classify: the task table (pipeline/tasks)
# nms: the output layout. None: Ultralytics' default (raw one-to-many outputs, NMS on the host);
# false: the NMS-free head of YOLO26/YOLOv10 (end2end rows); true: NMS embedded in the graph
# (full TensorRT only: TensorRT for RTX cannot build it, NVIDIA/TensorRT-RTX#32).
NMS_CHOICES = (None, False, True)
PRECISIONS = ("fp16", "fp32", "int8")
MIN_OPSET = 12
MAX_IMGSZ = 4096  # 4096 x 4096 is already 40x the pixels of 640; larger is a typo or a memory blow-up

# Comparator thresholds; docs/models-yaml.md "Thresholds" explains them. Outputs are
# pixel coordinates (0..imgsz) next to scores (0..1), so tolerances are in pixels.
# FP32: measured worst max-abs 0.034 px on the demo models (ONNX Runtime vs PyTorch).
# FP16: a handful of box edges move by up to ~40 px (DFL bins that are nearly tied flip)
# while cosine stays >= 0.99999 and mean error ~0.3 px, so elementwise tolerances are off
# (atol None) and FP16 is judged by cosine, mean error and the detections themselves.
# Detection figures measured on the demo set, TensorRT-for-RTX FP16 ONNX vs FP32:
# match rate 0.935-0.99, mean IoU of matches 0.96-0.99, mean keypoint error 1.0 px (640)
# and 4.2 px (320), mean score delta up to 0.017;
# the worst single score moved 0.23 (a box near the threshold), hence a mean, not a max.
DEFAULT_VERIFY = {
    "fp32": {"atol": 0.1, "rtol": 1e-3, "min_cosine": 0.99999, "max_mean_abs": 0.01,
             "min_match_rate": 0.98, "max_mean_score_delta": 0.001, "min_iou": 0.98, "max_kpt_px": 1.0,
             "min_mask_iou": 0.98, "min_top1_agreement": 1.0, "max_prob_delta": 0.001},
    "fp16": {"atol": None, "rtol": None, "min_cosine": 0.9995, "max_mean_abs": 1.0,
             "min_match_rate": 0.90, "max_mean_score_delta": 0.03, "min_iou": 0.90, "max_kpt_px": 8.0,
             "min_mask_iou": 0.90, "min_top1_agreement": 1.0, "max_prob_delta": 0.02},
    # INT8 (Q/DQ ONNX, convolutions only, head outputs and DFL in float; docs/precision.md): judged
    # on detections only (elementwise and cosine figures of a quantized graph say little), and set
    # to catch a broken quantization, not to prove accuracy: that is the accuracy gate's job
    # (accuracy: in models.yaml, mAP on labelled images). Measured, ONNX Runtime, 2 reference images:
    # - a trained YOLOv8 checkpoint (issue 15): 6 of 6 detections kept, mean IoU 0.93, score delta 0.034;
    # - the demo weights (random, with decisive scores: stages/demo.py), imgsz 320 and 640: detectors
    #   match rate 0.40-0.70, mean IoU 0.66-0.69, mean score delta 0.16-0.21; pose 0.50-0.58, keypoints
    #   41-42 px; YOLO26n NMS-free 0.12, Pose26 0.37, segment 0.40 (mask IoU 0.29), obb 0.50;
    # - every op quantized (one scale across box pixels and scores): 0 detections left, on every head.
    # The limits sit below the demo figures and far above a broken twin.
    "int8": {"atol": None, "rtol": None, "min_cosine": None, "max_mean_abs": None,
             "min_match_rate": 0.30, "max_mean_score_delta": 0.30, "min_iou": 0.60, "max_kpt_px": 64.0,
             "min_mask_iou": 0.20, "min_top1_agreement": 0.5, "max_prob_delta": 0.20},
}

DEFAULTS_KEYS = {"imgsz", "opset", "precision", "batch", "workspace", "verify", "verify_images", "calibration",
                 "accuracy"}
# Set-wide keys (under defaults: only): every engine of a set shares them, as does its tag.
# compatibility: ampere_plus -> HardwareCompatibilityLevel.AMPERE_PLUS, tag trt-<ver>-sm80plus;
# same_compute_capability -> SAME_COMPUTE_CAPABILITY, tag trt-<ver>-sm86cc (docs/fleet.md "Portable
# tier"; the levels: pipeline.builders.compat); version_compatible -> BuilderFlag.VERSION_COMPATIBLE.
SET_KEYS = {"compatibility", "version_compatible"}
COMPATIBILITY = tuple(HARDWARE_LEVELS)
MODEL_KEYS = {"name", "source", "task", "sha256", "trust", "demo_classes", "demo_arch", "nms"} | DEFAULTS_KEYS
PASSTHROUGH_KEYS = {"name", "source", "sha256"}
TOP_KEYS = {"defaults", "models", "passthrough"}
BUILTIN_DEFAULTS: dict[str, Any] = {"imgsz": 640, "opset": 12, "precision": "fp16", "batch": 1,
                                    "workspace": None, "verify": {}, "verify_images": None, "calibration": None,
                                    "accuracy": None}
# INT8 calibration (docs/precision.md). MinMax ("max") by default: entropy calibration cost YOLO
# models 10-20 % mAP in NVIDIA/TensorRT#3922, and Ultralytics moved to MinMax (ultralytics#20345).
CALIBRATION_METHODS = ("max", "entropy")
CALIBRATION_COUNT = 512        # images used at most (Ultralytics' default calibration fraction for INT8 exports)
CALIBRATION_MIN_USEFUL = 32    # fewer: a warning that a handful of images is not a calibration set
INT8_MIN_OPSET = 13            # per-channel DequantizeLinear needs `axis` (opset 13)
# Accuracy gate: the largest drop in mAP50-95 points (0-100) against the FP32 reference. FP16 is
# expected to lose about nothing (Ultralytics' and DeepStream-Yolo's tables show <= 0.1-0.3 points);
# INT8 post-training quantization of YOLOv8 typically loses 1-3 points (NVIDIA's TensorRT YOLOv8
# QAT/PTQ examples, DeepStream-Yolo INT8 tables): 3 points lets a good calibration pass and stops a
# broken one, which loses tens of points.
DEFAULT_MAX_DROP = {"fp32": 0.3, "fp16": 1.0, "int8": 3.0}
ACCURACY_SPLITS = ("val", "test", "train")


@dataclass(frozen=True)
class Batch:
    min: int
    opt: int
    max: int

    @property
    def dynamic(self) -> bool:
        return not (self.min == self.opt == self.max)

    def to_json(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class Calibration:
    images: Path
    count: int = CALIBRATION_COUNT
    method: str = "max"

    def to_json(self) -> dict:
        return {"images": str(self.images), "count": self.count, "method": self.method}


@dataclass(frozen=True)
class Accuracy:
    data: Path                 # an Ultralytics data.yaml
    split: str = "val"
    max_drop: dict = field(default_factory=lambda: dict(DEFAULT_MAX_DROP))   # precision -> mAP50-95 points

    def to_json(self) -> dict:
        return {"data": str(self.data), "split": self.split, "max_drop": dict(self.max_drop)}


@dataclass
class ModelSpec:
    name: str
    source: str               # relative to the config folder, e.g. yolo/yolov8n.pt
    task: str
    imgsz: int
    opset: int
    precision: str
    batch: Batch
    workspace: float | None   # GiB; None lets TensorRT decide
    verify: dict
    verify_images: Path | None
    root: Path                # the config's folder
    sha256: str | None = None  # pinned digest of the checkpoint (lower-case hex)
    trust: bool = False        # load the checkpoint without the safe-load allow-list
    demo_classes: tuple[str, ...] | None = None  # class names for demo weights (None: the COCO 80)
    demo_arch: str | None = None   # the family demo weights are built from (None: the task table's default)
    nms: bool | None = None        # output layout: None raw, False NMS-free head, True NMS in the graph
    calibration: Calibration | None = None    # INT8 calibration images (None: the reference images)
    accuracy: Accuracy | None = None          # labelled data for the mAP gate (None: no gate)

    @property
    def source_path(self) -> Path:
        return self.root / self.source

    @property
    def stem(self) -> str:
        """Source path without suffix, e.g. ``yolo/yolov8n``: outputs mirror it."""
        return str(Path(self.source).with_suffix(""))

    def export_options(self) -> dict:
        opts = {"imgsz": self.imgsz, "opset": self.opset, "batch": self.batch.to_json(), "task": self.task}
        if self.nms is not None:   # only when set: the default layout keeps the exports cached before the key
            opts["nms"] = self.nms
        return opts

    def thresholds(self, precision: str | None = None) -> dict:
        """Defaults for the precision, then flat ``verify:`` keys, then ``verify: {fp16: ...}``."""
        precision = precision or self.precision
        out = dict(DEFAULT_VERIFY[precision])
        out.update({k: v for k, v in self.verify.items() if k not in PRECISIONS})
        out.update(self.verify.get(precision, {}))
        return out


@dataclass
class PassthroughSpec:
    name: str
    source: str
    root: Path
    sha256: str | None = None

    @property
    def source_path(self) -> Path:
        return self.root / self.source


@dataclass
class Config:
    path: Path
    models: list[ModelSpec]
    passthrough: list[PassthroughSpec] = field(default_factory=list)
    compatibility: str | None = None      # None: this GPU type only; "ampere_plus": any cc >= 8.0;
    #                                       "same_compute_capability": any GPU of the building GPU's cc
    version_compatible: bool = False      # the plan also loads on later TensorRT of the same major

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def onnx_dir(self) -> Path:
        return self.root / "onnx"

    @property
    def engines_dir(self) -> Path:
        return self.root / "engines"

    def select(self, names: tuple[str, ...] | list[str] | None) -> list[ModelSpec]:
        if not names:
            return list(self.models)
        known = {m.name: m for m in self.models}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown model(s) {', '.join(unknown)}", file=self.path,
                              fix=f"use one of: {', '.join(known)}")
        return [known[n] for n in names]


def _err(what: str, where: str, path: Path, fix: str) -> ConfigError:
    return ConfigError(what, model=where, file=path, fix=fix)


def _check_keys(entry: dict, allowed: set[str], where: str, path: Path) -> None:
    extra = sorted(set(entry) - allowed, key=str)
    if extra:
        import difflib  # only when there is something to hint at
        hints = [f"{k} -> {near[0]}" for k in extra
                 if (near := difflib.get_close_matches(str(k), sorted(allowed), n=1))]
        hint = f"did you mean {', '.join(hints)}? " if hints else ""
        raise _err(f"unknown key(s) {', '.join(map(str, extra))}", where, path,
                   f"{hint}remove or rename them; allowed keys are {', '.join(sorted(allowed))}")


def workspace_problem(value: Any) -> str | None:
    """Why ``value`` is not a builder workspace (a finite number of GiB > 0), or None. The one
    check for every source: models.yaml, --workspace and its ENGINES_*_WORKSPACE variable."""
    import math
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"workspace {value!r} is not a number of GiB"
    if not math.isfinite(value) or value <= 0:
        return f"workspace {value!r} must be a positive number of GiB"
    return None


def _parse_batch(value: Any, where: str, path: Path) -> Batch:
    fix = "write batch as a positive integer (static) or {min: 1, opt: 4, max: 8} (dynamic)"
    if isinstance(value, bool):
        raise _err(f"batch {value!r} is not valid", where, path, fix)
    if isinstance(value, int):
        if value < 1:
            raise _err(f"batch {value} must be at least 1", where, path, fix)
        return Batch(value, value, value)
    if isinstance(value, dict):
        if set(value) != {"min", "opt", "max"} or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value.values()):
            raise _err(f"batch {value!r} needs exactly min, opt and max, each a positive integer",
                       where, path, fix)
        b = Batch(value["min"], value["opt"], value["max"])
        if not b.min <= b.opt <= b.max:
            raise _err(f"batch needs min <= opt <= max, got {value!r}", where, path, fix)
        return b
    raise _err(f"batch {value!r} is not valid", where, path, fix)


def _merged(entry: dict, defaults: dict, where: str, path: Path, root: Path) -> dict:
    opts = {**BUILTIN_DEFAULTS, **defaults, **{k: v for k, v in entry.items() if k in DEFAULTS_KEYS}}
    imgsz = opts["imgsz"]
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz <= 0 or imgsz % 32:
        raise _err(f"imgsz {imgsz!r} is not a positive multiple of 32 (the YOLO stride)", where,
                   path, "use 320, 416, 480, 640, ... (a multiple of 32)")
    if imgsz > MAX_IMGSZ:
        raise _err(f"imgsz {imgsz} is above {MAX_IMGSZ}", where, path,
                   f"use an imgsz of at most {MAX_IMGSZ} (the cameras' frames are letterboxed to it)")
    opset = opts["opset"]
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise _err(f"opset {opset!r} is below {MIN_OPSET}", where, path,
                   f"use opset {MIN_OPSET} or higher (TensorRT's ONNX parser needs it)")
    if opset > MIN_OPSET:  # every onnx release supports MIN_OPSET: import onnx only above it
        _check_opset_supported(opset, where, path)
    if opts["precision"] not in PRECISIONS:
        raise _err(f"precision {opts['precision']!r} is not one of {', '.join(PRECISIONS)}",
                   where, path, "use precision: fp16, fp32 or int8")
    why = workspace_problem(opts["workspace"])
    if why:
        raise _err(why, where, path, "write e.g. workspace: 4, or remove it to let TensorRT decide")
    if not isinstance(opts["verify"], dict):
        raise _err("verify must be a mapping of thresholds", where, path,
                   "write e.g. verify: {min_match_rate: 0.9}")
    known_thr = set(DEFAULT_VERIFY["fp32"])
    for scope, table in [("verify", opts["verify"])] + [
            (f"verify.{p}", opts["verify"][p]) for p in PRECISIONS if p in opts["verify"]]:
        if not isinstance(table, dict):
            raise _err(f"{scope} must be a mapping of thresholds", where, path,
                       f"write e.g. {scope}: {{min_match_rate: 0.9}}")
        bad = sorted(set(table) - known_thr - (set(PRECISIONS) if scope == "verify" else set()))
        if bad:
            raise _err(f"unknown {scope} threshold(s) {', '.join(bad)}", where, path,
                       f"use any of {', '.join(sorted(known_thr))}")
        wrong = sorted(k for k, v in table.items() if k in known_thr and v is not None
                       and (isinstance(v, bool) or not isinstance(v, (int, float))))
        if wrong:
            raise _err(f"{scope} threshold(s) {', '.join(wrong)} must be numbers", where, path,
                       "write numbers, e.g. min_match_rate: 0.9")
    vi = opts["verify_images"]
    opts["verify_images"] = _inside(root, vi, where, path, "verify_images") if vi else None
    opts["calibration"] = _calibration(opts["calibration"], where, path, root)
    opts["accuracy"] = _accuracy(opts["accuracy"], where, path, root)
    opts["batch"] = _parse_batch(opts["batch"], where, path)
    return opts


def _data_path(root: Path, value: Any, where: str, path: Path, key: str) -> Path:
    """A path to data the user owns (images, a dataset): relative to the config's folder, or
    absolute. Only read, never executed; inside the builder container it must be under models/."""
    if not isinstance(value, str) or not value.strip():
        raise _err(f"{key} must be a path (relative to {root}, or absolute)", where, path,
                   f"write e.g. {key}: calibration/ (a folder beside models.yaml)")
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


def _block(value: Any, key: str, allowed: set[str], required: str, what: str, where: str, path: Path,
           fix: str) -> dict:
    """A nested mapping of models.yaml: a mapping, known keys only, its required key present."""
    if not isinstance(value, dict):
        raise _err(f"{key} {value!r} is not a mapping", where, path, fix)
    bad = sorted(set(value) - allowed)
    if bad:
        raise _err(f"unknown {key} key(s) {', '.join(bad)}", where, path, fix)
    if required not in value:
        raise _err(f"{key} needs {required}: ({what})", where, path, fix)
    return value


def _calibration(value: Any, where: str, path: Path, root: Path) -> Calibration | None:
    if value is None:
        return None
    _block(value, "calibration", {"images", "count", "method"}, "images", "a folder of pictures like the cameras' "
           "frames", where, path, "write calibration: {images: calib/, count: 512, method: max}")
    count = value.get("count", CALIBRATION_COUNT)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise _err(f"calibration count {count!r} is not a positive whole number", where, path,
                   f"write e.g. count: {CALIBRATION_COUNT} (at most that many images are used)")
    method = value.get("method", "max")
    if method not in CALIBRATION_METHODS:
        raise _err(f"calibration method {method!r} is not one of {', '.join(CALIBRATION_METHODS)}", where, path,
                   "use method: max (MinMax, the default and the better one for YOLO) or method: entropy")
    return Calibration(_data_path(root, value["images"], where, path, "calibration.images"), count, method)


def _accuracy(value: Any, where: str, path: Path, root: Path) -> Accuracy | None:
    if value is None:
        return None
    fix = "write accuracy: {data: datasets/line1/data.yaml, split: val, max_drop: {fp16: 1.0, int8: 3.0}}"
    _block(value, "accuracy", {"data", "split", "max_drop"}, "data",
           "an Ultralytics data.yaml of labelled images, or a classification dataset folder",
           where, path, fix)
    split = value.get("split", "val")
    if split not in ACCURACY_SPLITS:
        raise _err(f"accuracy split {split!r} is not one of {', '.join(ACCURACY_SPLITS)}", where, path, fix)
    drops = value.get("max_drop", {})
    if not isinstance(drops, dict) or not set(drops) <= set(PRECISIONS) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in drops.values()):
        raise _err(f"accuracy max_drop {drops!r} must map precisions ({', '.join(PRECISIONS)}) to points "
                   "of the task's metric (0-100, not negative: mAP50-95, or top-1 accuracy for classify)", where, path,
                   "write e.g. max_drop: {fp16: 1.0, int8: 3.0}")
    return Accuracy(_data_path(root, value["data"], where, path, "accuracy.data"), split,
                    {**DEFAULT_MAX_DROP, **{k: float(v) for k, v in drops.items()}})


def _check_opset_supported(opset: int, where: str, path: Path) -> None:
    from importlib import metadata

    import onnx.defs
    top = onnx.defs.onnx_opset_version()
    if opset > top:
        raise _err(f"opset {opset} is above what the installed onnx {metadata.version('onnx')} supports "
                   f"(at most {top})", where, path,
                   f"use an opset between {MIN_OPSET} and {top}, or upgrade onnx")


def _sha256(value: Any, where: str, path: Path) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        raise _err(f"sha256 {value!r} was read as a number (the digest is all digits)", where, path,
                   "quote the digest: sha256: '<64 hex digits>'")
    text = value.strip().lower() if isinstance(value, str) else ""
    text = text.removeprefix("sha256:")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise _err(f"sha256 {value!r} is not a sha256 digest (64 hex digits)", where, path,
                   "write the output of `sha256sum FILE` (its first field), or remove the pin")
    return text


def _trust(value: Any, where: str, path: Path, pinned: str | None, source: str) -> bool:
    """trust: true binds to the model's sha256: pin (checkpoint.Trust): without one it would trust
    whatever file is later copied to the path."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _err(f"trust {value!r} is not true or false", where, path,
                   "write trust: true only for a checkpoint whose origin you trust, or remove it")
    if value and pinned is None:
        raise _err("trust: true needs a sha256: pin on the same model (trust names the file by its digest, so a "
                   "file copied over it later is not trusted with it)", where, path,
                   f"add sha256: '<digest>' from `sha256sum {path.parent / source}` once you have checked that "
                   "file is the one you trust, or remove trust: true and pass --trust-checkpoint for one run")
    return value


def _task(value: Any, where: str, path: Path) -> None:
    if value in TASKS:
        return
    if value in REFUSED_TASKS:
        raise _err(f"task {value!r} is not supported: {REFUSED_TASKS[value]}", where, path,
                   f"build it with Ultralytics' own `yolo export` for now, or use one of: {', '.join(TASKS)}")
    raise _err(f"task {value!r} is not supported", where, path, f"use one of: {', '.join(TASKS)}")


def _demo_arch(value: Any, task: str, where: str, path: Path) -> str | None:
    if value is None:
        return None
    families = TASK_TABLE[task].demo
    if value not in families:
        raise _err(f"demo_arch {value!r} has no {task} architecture here", where, path,
                   f"use one of: {', '.join(families)} (the family demo weights are built from), or remove it")
    return value


def _nms(value: Any, task: str, where: str, path: Path) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _err(f"nms {value!r} is not true or false", where, path,
                   "write nms: false (the NMS-free head of YOLO26/YOLOv10), nms: true (NMS inside the engine, full "
                   "TensorRT only), or remove it for Ultralytics' default raw outputs")
    if not TASK_TABLE[task].end2end:
        raise _err(f"nms: {str(value).lower()} does not apply to a {task} model (it has no boxes)", where, path,
                   "remove nms: from this entry")
    return value


def _demo_classes(value: Any, where: str, path: Path) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _err(f"demo_classes {value!r} is not a list of class names", where, path,
                   "write demo_classes: [hairnet, no_hairnet] (the real model's classes), or remove it")
    if len(set(value)) != len(value):
        raise _err("demo_classes names a class twice", where, path, "give every class once")
    return tuple(value)


def _same_source(sources: dict[str, str], source: str, name: str, path: Path) -> None:
    """Refuse a second entry with the same (normalised) source path: both would write the
    same ONNX and engine files."""
    key = str(Path(source))
    if key in sources:
        raise _err(f"has the same source {key} as model '{sources[key]}'", name, path,
                   "give every model and passthrough its own source file (copy it if two entries need it)")
    sources[key] = name


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key given twice (PyYAML keeps the last)."""


def _construct_unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key: construct_mapping reports it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first on line {first.line + 1}, again on line "
                            f"{key_node.start_mark.line + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _read_yaml(path: Path) -> Any:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"file is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} cannot be decoded",
                          file=path, fix="save models.yaml as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=path,
                          fix="fix the YAML syntax (each key once per mapping)") from None


def _inside(root: Path, rel: Any, where: str, path: Path, key: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise _err(f"{key} must be a relative path string", where, path,
                   f"set {key}: to a path relative to {root}")
    p = Path(rel)
    resolved = (root / p).resolve()
    if p.is_absolute() or not resolved.is_relative_to(root.resolve()):
        raise _err(f"{key} {rel!r} points outside the config's folder {root}", where, path,
                   f"move the file under {root} and give its path relative to it")
    return root / p


def load_config(path: Path | str) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", file=path,
                          fix="pass --config PATH or create models/models.yaml (docs/models-yaml.md)")
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping", file=path,
                          fix="start the file with defaults:, models: and passthrough:")
    _check_keys(data, TOP_KEYS, "(top level)", path)
    root = path.parent
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise _err("defaults must be a mapping", "defaults", path, "write defaults: {imgsz: 640}")
    _check_keys(defaults, DEFAULTS_KEYS | SET_KEYS, "defaults", path)
    compatibility, version_compatible = _set_options(defaults, path)
    raw_models = data.get("models") or []
    if not isinstance(raw_models, list) or not raw_models:
        raise ConfigError("models: must be a non-empty list", file=path,
                          fix="list at least one {name, source, task} entry under models:")
    seen: set[str] = set()
    sources: dict[str, str] = {}
    models: list[ModelSpec] = []
    for i, entry in enumerate(raw_models):
        if not isinstance(entry, dict):
            raise _err("entry is not a mapping", f"models[{i}]", path, "write {name:, source:, task:}")
        where = str(entry.get("name") or f"models[{i}]")
        for key in sorted(SET_KEYS & set(entry)):
            raise _err(f"`{key}` applies to the whole engine set, not to one model", where, path,
                       f"move `{key}: {entry[key]}` under defaults: (every engine of a set shares it, and so "
                       "does the set's tag)")
        _check_keys(entry, MODEL_KEYS, where, path)
        for req in ("name", "source", "task"):
            if not entry.get(req):
                raise _err(f"missing required field '{req}'", where, path,
                           f"add {req}: to this entry")
        name = str(entry["name"])
        if name in seen:
            raise _err("duplicate model name", name, path, "give every model a unique name")
        seen.add(name)
        _task(entry["task"], name, path)
        _inside(root, entry["source"], name, path, "source")
        _same_source(sources, entry["source"], name, path)
        opts = _merged(entry, defaults, name, path, root)
        models.append(ModelSpec(name=name, source=str(Path(entry["source"])), task=entry["task"],
                                imgsz=opts["imgsz"], opset=opts["opset"],
                                precision=opts["precision"], batch=opts["batch"],
                                workspace=opts["workspace"], verify=opts["verify"],
                                verify_images=opts["verify_images"], root=root,
                                sha256=_sha256(entry.get("sha256"), name, path),
                                trust=_trust(entry.get("trust"), name, path, _sha256(entry.get("sha256"), name, path),
                                             str(entry["source"])),
                                demo_classes=_demo_classes(entry.get("demo_classes"), name, path),
                                demo_arch=_demo_arch(entry.get("demo_arch"), entry["task"], name, path),
                                nms=_nms(entry.get("nms"), entry["task"], name, path),
                                calibration=opts["calibration"], accuracy=opts["accuracy"]))
    passthrough: list[PassthroughSpec] = []
    for i, entry in enumerate(data.get("passthrough") or []):
        where = str(entry.get("name") or f"passthrough[{i}]") if isinstance(entry, dict) else f"passthrough[{i}]"
        if not isinstance(entry, dict):
            raise _err("entry is not a mapping", where, path, "write {name:, source:}")
        _check_keys(entry, PASSTHROUGH_KEYS, where, path)
        for req in ("name", "source"):
            if not entry.get(req):
                raise _err(f"missing required field '{req}'", where, path, f"add {req}: to this entry")
        if entry["name"] in seen:
            raise _err("duplicate model name", entry["name"], path, "give every model a unique name")
        seen.add(entry["name"])
        _inside(root, entry["source"], entry["name"], path, "source")
        if str(Path(entry["source"])) in SET_FILES:
            raise _err(f"source {entry['source']} would overwrite the engine set's own {Path(entry['source'])}",
                       entry["name"], path, "move the file into a subfolder or rename it")
        _same_source(sources, entry["source"], entry["name"], path)
        passthrough.append(PassthroughSpec(entry["name"], str(Path(entry["source"])), root,
                                           sha256=_sha256(entry.get("sha256"), entry["name"], path)))
    return Config(path=path, models=models, passthrough=passthrough, compatibility=compatibility,
                  version_compatible=version_compatible)


def _set_options(defaults: dict, path: Path) -> tuple[str | None, bool]:
    comp = defaults.get("compatibility")
    if comp in (None, "none"):
        comp = None
    elif comp not in COMPATIBILITY:
        raise _err(f"compatibility {comp!r} is not supported", "defaults", path,
                   "write compatibility: ampere_plus (one engine set for every GPU of compute capability 8.0 "
                   "or newer, full TensorRT only, slower: docs/fleet.md \"Portable tiers\"), compatibility: "
                   "same_compute_capability (one set for every GPU of the building GPU's compute capability, "
                   "Turing or newer, not Jetson), or remove it to build for the building GPU's type only")
    vc = defaults.get("version_compatible", False)
    if not isinstance(vc, bool):
        raise _err(f"version_compatible {vc!r} must be true or false", "defaults", path,
                   "write version_compatible: true (the plan also loads on later TensorRT of the same major "
                   "version, and a TensorRT 10 plan on TensorRT 11) or remove it")
    return comp, vc
