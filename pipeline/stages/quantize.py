"""INT8 by explicit quantization: the Q/DQ twin of the FP32 ONNX, calibrated on images.

Implicit INT8 calibration (``IInt8Calibrator``) is deprecated in TensorRT 10.1, removed in
11 and absent from TensorRT for RTX; a Q/DQ ONNX built strongly typed is the one INT8 path
on every backend. The twin is made with ONNX Runtime's ``quantize_static`` (QDQ format):

* only the convolutions are quantized, and the head's output convolutions (``cv2/cv3/cv4
  .*.2``: box distances, class logits, keypoints) and the DFL stay in float: YOLOv8's
  ``output0`` carries box pixels (0-640) and scores (0-1) in one tensor, and one INT8 scale
  across both rounds every score to 0 (the rule of Ultralytics PR #26171);
* symmetric INT8 activations and weights, per-channel weights, biases left in float
  (TensorRT refuses an int32 bias DequantizeLinear);
* per-channel DequantizeLinear needs opset 13 (its ``axis``): the twin is converted up
  from the configured opset, and its record says which opset it has;
* MinMax calibration by default (``method: entropy`` on request).

The twin is cached like an export: its key holds the FP32 ONNX's sha256, the digest of the
calibration images, the method and count, the exclusion rule and the quantizer's version.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import re
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from pipeline.checks.images import IMAGE_SUFFIXES, preprocess, reference_images
from pipeline.config import CALIBRATION_MIN_USEFUL, INT8_MIN_OPSET, Config, ModelSpec
from pipeline.errors import PipelineError
from pipeline.fsutil import INT8_SCRATCH, atomic_path, read_json, scratch_dir, sha256_file, sha256_json, write_json_atomic
from pipeline.stages.export import onnx_paths
from pipeline.stages.records import OnnxFiles
from pipeline.tasks import TASKS

QUANTIZER = "onnxruntime.quantization.quantize_static"
QUANTIZE_VERSION = 1   # bump when the quantization procedure changes: recalibrates every twin
# Head convolutions that produce outputs (box distances cv2, class logits cv3, keypoints cv4) and
# everything of the DFL stay in float; see the module docstring.
EXCLUSION_RULE = "head-outputs+dfl/v2"   # v2: per task, from the task table (YOLO26 nesting, Pose26, protos)
_HEAD_NODE = re.compile(r"^/model\.(\d+)/(one2one_)?cv[234]")

Log = Callable[[str], None]
IN_CONTAINER_HINT = ("; inside the builder container only the models folder is mounted (at /workspace/models): "
                     "keep calibration images and labelled data under models/")


def int8_paths(cfg: Config, spec: ModelSpec) -> dict[str, Path]:
    files = OnnxFiles.of(cfg, spec)
    return {"onnx": files.int8, "record": files.int8_record}


def quantizer_version() -> str:
    try:
        return f"onnxruntime {metadata.version('onnxruntime')}"
    except metadata.PackageNotFoundError:
        return "missing"


def head_exclusions(proto, exclude_all: bool = True, task: str = "detect") -> list[str]:
    """Names of the nodes kept in float: the task's head output convolutions (the task table's
    ``int8_float`` patterns: boxes, class logits, keypoints, mask coefficients and prototypes, the
    OBB angle) and the DFL, inside the last head. ``exclude_all=False`` is the deliberately broken
    twin of the tests (nothing kept)."""
    if not exclude_all:
        return []
    patterns = [re.compile(p) for p in TASKS[task].int8_float]
    heads = [int(m.group(1)) for n in proto.graph.node if (m := _HEAD_NODE.match(n.name))]
    if not heads or not patterns:
        return []
    head = f"/model.{max(heads)}/"
    return [n.name for n in proto.graph.node
            if n.name.startswith(head) and any(p.search(n.name[len(head):]) for p in patterns)]


# ----------------------------------------------------------------------------- calibration images
def calibration_images(spec: ModelSpec, log: Log) -> tuple[list[Path], str]:
    """The images to calibrate on and where they came from; bad folders are refused."""
    cal = spec.calibration
    if cal is None:
        imgs = reference_images(spec.verify_images)
        log(f"warning: {spec.name}: no calibration: in models.yaml, so INT8 is calibrated on the {len(imgs)} "
            "reference images; a handful of images is not a calibration set: give calibration: {images: DIR} "
            "with a few hundred frames like the cameras' (docs/precision.md)")
        return imgs, "reference images"
    folder = cal.images
    fix = ("point calibration.images at a folder of JPEG/PNG frames like the cameras' (a few hundred; "
           f"count: {cal.count} are used at most), or remove calibration: to use the reference images")
    if not folder.exists():
        raise PipelineError("the calibration folder does not exist", model=spec.name, file=folder,
                            fix=fix + IN_CONTAINER_HINT)
    if not folder.is_dir():
        raise PipelineError("calibration.images is not a folder", model=spec.name, file=folder, fix=fix)
    try:
        entries = sorted(p for p in folder.rglob("*") if p.is_file())
    except OSError as exc:
        raise PipelineError(f"cannot read the calibration folder ({exc.strerror or exc})", model=spec.name,
                            file=folder, fix="make it readable for this user (the builder container runs as "
                                             "your uid)") from None
    images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        others = ", ".join(p.name for p in entries[:3]) or "nothing"
        raise PipelineError(f"the calibration folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}; "
                            f"found {others})", model=spec.name, file=folder, fix=fix)
    skipped = len(entries) - len(images)
    if skipped:
        log(f"{spec.name}: calibration: skipping {skipped} file(s) that are not images in {folder}")
    if len(images) > cal.count:   # evenly spaced over the sorted list: deterministic, not just the first N
        step = len(images) / cal.count
        images = [images[int(i * step)] for i in range(cal.count)]
    if len(images) < CALIBRATION_MIN_USEFUL:
        log(f"warning: {spec.name}: only {len(images)} calibration image(s) in {folder}; INT8 scales from fewer "
            f"than {CALIBRATION_MIN_USEFUL} frames are unreliable: add more frames like the cameras'")
    return images, str(folder)


_FILE_SHA: dict[tuple, str] = {}   # (path, size, mtime_ns) -> sha256, for this process


def _file_sha(p: Path) -> str:
    """sha256 of a calibration image, hashed once a process (`engines run` checks the twin in
    export and again in build: a few hundred images read twice otherwise)."""
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA:
        _FILE_SHA[key] = sha256_file(p)
    return _FILE_SHA[key]


def images_digest(paths: list[Path]) -> str:
    return sha256_json([[p.name, _file_sha(p)] for p in paths])


def _reader(base, input_name: str, arrays):
    """A CalibrationDataReader over ``arrays``, any iterable (the base class is onnxruntime's,
    imported late)."""
    class Reader(base):
        def __init__(self):
            self._it = iter(arrays)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x}
    return Reader()


def _fold_every(n_images: int) -> int:
    """How many images' activations the MinMax calibrator holds before folding them into its
    ranges: memory stays flat in the image count. ONNX Runtime 1.32 refuses to finish ("No data
    is collected") when the last fold empties its buffer, so the count never divides n."""
    m = 16
    while m > 1 and n_images % m == 0:
        m -= 1
    return m


def _tensors(spec: ModelSpec, paths: list[Path]):
    """One image at a time (512 letterboxed 640 images would hold 2.5 GB), letterboxed exactly
    as at inference (checks.images.preprocess); a file that does not decode is refused by name."""
    for p in paths:
        try:
            x = preprocess(p, spec.imgsz)[None]
        except (ValueError, OSError):
            raise PipelineError("a calibration image cannot be read (corrupt, or not an image despite its name)",
                                model=spec.name, file=p,
                                fix="remove or replace that file, then run again (nothing was built yet)") from None
        yield x


# ----------------------------------------------------------------------------- the twin
def twin_key(export_record: dict, spec: ModelSpec, digest: str, count: int) -> str:
    method = spec.calibration.method if spec.calibration else "max"
    return sha256_json({"fp32": export_record["sha256"]["fp32"], "images": digest, "count": count,
                        "method": method, "exclusions": EXCLUSION_RULE, "quantizer": quantizer_version(),
                        "opset": max(INT8_MIN_OPSET, spec.opset), "version": QUANTIZE_VERSION})


def ensure_twin(cfg: Config, spec: ModelSpec, export_record: dict, force: bool = False, log: Log = lambda m: None,
                exclude_head: bool = True) -> dict:
    """Calibrate and write ``<stem>.int8.onnx`` unless the cached one is current; its record.

    ``exclude_head=False`` quantizes every op (the broken twin the accuracy gate must refuse)."""
    paths = int8_paths(cfg, spec)
    notes: list[str] = []   # the folder's warnings, said only when it is calibrated on
    images, origin = calibration_images(spec, notes.append)
    digest = images_digest(images)
    key = twin_key(export_record, spec, digest, len(images))
    if not exclude_head:
        key = sha256_json({"key": key, "exclude_head": False})
    rec = read_json(paths["record"])
    if not force and rec and rec.get("cache_key") == key and paths["onnx"].is_file() \
            and sha256_file(paths["onnx"]) == rec.get("sha256"):
        return {**rec, "status": "cached"}
    try:
        from onnxruntime import quantization as q
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    except ImportError as exc:
        raise PipelineError(f"the INT8 quantizer is not installed ({exc})", model=spec.name,
                            fix="install onnxruntime (`make install` does), or build this model with "
                                "precision: fp16") from None
    import onnx
    from onnx import version_converter

    for note in notes:
        log(note)
    fp32 = onnx_paths(cfg, spec)["fp32"]
    tensors = _tensors(spec, images)
    t0 = time.perf_counter()
    proto = onnx.load(str(fp32))
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset < INT8_MIN_OPSET:
        meta = {p.key: p.value for p in proto.metadata_props}
        proto = version_converter.convert_version(proto, INT8_MIN_OPSET)
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, meta)
        opset = INT8_MIN_OPSET
    excluded = head_exclusions(proto, exclude_head, spec.task)
    if exclude_head and not excluded:
        log(f"warning: {spec.name}: no detection-head output convolutions found by name (cv2/cv3/cv4.*.2/Conv, "
            "/dfl/) in the ONNX, so every convolution is quantized, box pixels and scores alike; expect the "
            "verification gate to refuse the twin (precision: fp16 for this model)")
    input_name = proto.graph.input[0].name
    method = spec.calibration.method if spec.calibration else "max"

    log(f"{spec.name}: calibrating INT8 on {len(images)} image(s) from {origin} ({method}; "
        f"{len(excluded)} head node(s) kept in float)")
    # ONNX Runtime's quantize_static fixes Entropy at 128 histogram bins, which leaves one candidate
    # range: the same scales as MinMax (measured: byte-identical twins). Real entropy calibration
    # runs the calibrator with 2048 bins (TensorRT's own histogram size) and hands its ranges over.
    # every temporary (ours, and ONNX Runtime's own ort.quant.* folders) lives in one scratch folder
    # beside the twin, named for this process: a kill -9 leaves it where the next run and `engines
    # clean` remove it (export.stale_temp_dirs)
    with atomic_path(paths["onnx"], suffix=".onnx") as out, _root_logger_quiet(), \
            scratch_dir(paths["onnx"].parent, INT8_SCRATCH) as work, _tempdir(work):
        src = Path(work) / "fp32.onnx"   # the FP32 graph at the twin's opset (and the quantizer's scratch)
        onnx.save(proto, str(src))
        try:
            reader, cache = _reader(q.CalibrationDataReader, input_name, tensors), None
            if method == "entropy":
                cache = Path(work) / "ranges.json"
                cal = create_calibrator(src, ["Conv"], augmented_model_path=str(Path(work) / "aug.onnx"),
                                          calibrate_method=q.CalibrationMethod.Entropy,
                                          extra_options={"symmetric": True, "num_bins": 2048,
                                                         "num_quantized_bins": 128})
                # 4 images a pass: each pass folds its activations into the histograms and drops
                # them, so memory stays flat in the image count (a pass holds ~150 MiB an image at 640)
                chunks = iter(lambda: list(itertools.islice(tensors, 4)), [])
                for chunk in chunks:
                    cal.collect_data(_reader(q.CalibrationDataReader, input_name, chunk))
                save_tensors_data(cal.compute_data(), str(cache))
                reader = None
            q.quantize_static(
                str(src), str(out), reader, quant_format=q.QuantFormat.QDQ,
                activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8, per_channel=True,
                op_types_to_quantize=["Conv"] if exclude_head else None, nodes_to_exclude=excluded,
                calibrate_method=q.CalibrationMethod.MinMax if method == "max" else q.CalibrationMethod.Entropy,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                               "CalibMaxIntermediateOutputs": _fold_every(len(images))},
                **({"calibration_cache_path": str(cache)} if cache else {}))
        except PipelineError:   # an unreadable calibration image, named
            raise
        except Exception as exc:   # ONNX Runtime raises many types; nothing was written
            raise PipelineError(f"INT8 quantization failed: {type(exc).__name__}: {str(exc)[:300]}",
                                model=spec.name, file=fp32,
                                fix="re-export with `engines export --force`; if it persists, build this "
                                    "model with precision: fp16 and report the message") from exc
        qproto = onnx.load(str(out))
        if {p.key for p in qproto.metadata_props} != {p.key for p in proto.metadata_props}:
            del qproto.metadata_props[:]
            onnx.helper.set_model_props(qproto, {p.key: p.value for p in proto.metadata_props})
            onnx.save(qproto, str(out))
    seconds = round(time.perf_counter() - t0, 2)
    rec = {"model": spec.name, "cache_key": key, "sha256": sha256_file(paths["onnx"]),
           "fp32_sha256": export_record["sha256"]["fp32"], "quantizer": QUANTIZER, "quantizer_version":
           quantizer_version(), "method": method, "calibration_images": len(images),
           "calibration_digest": digest, "calibration_source": origin, "excluded_nodes": excluded,
           "exclusion_rule": EXCLUSION_RULE if exclude_head else "none (every op quantized)", "opset": opset,
           "seconds": seconds, "file": str(paths["onnx"].relative_to(cfg.root))}
    write_json_atomic(paths["record"], rec)
    log(f"{spec.name}: INT8 twin written in {seconds}s -> {rec['file']}")
    return {**rec, "status": "calibrated"}


@contextlib.contextmanager
def _tempdir(folder: Path):
    """Python's temporary folder for this block (ONNX Runtime's quantizer makes its own)."""
    saved = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved


@contextlib.contextmanager
def _root_logger_quiet():
    """ONNX Runtime's quantizer advises pre-processing through the root logger on every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def provenance(rec: dict) -> dict:
    """What the manifest's engine record carries about an INT8 engine."""
    return {k: rec[k] for k in ("quantizer", "quantizer_version", "method", "calibration_images",
                                "calibration_digest", "excluded_nodes", "exclusion_rule", "opset") if k in rec}
