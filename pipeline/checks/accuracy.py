"""Accuracy on the user's own labelled images, with Ultralytics' validator and the task's metric.

The gate compares a candidate (the FP16 or INT8 ONNX an engine is built from, or on a GPU
the engine itself) with the FP32 reference on the same data, in points (0-100) of the task's
metric (the task table's ``metric``: box mAP50-95, mask mAP50-95, keypoint mAP50-95,
rotated-box mAP50-95, top-1 accuracy), and refuses a drop above ``accuracy.max_drop`` for that
precision. Ultralytics measures an ONNX through ONNX Runtime on the CPU and an engine on its GPU.

The dataset is checked and rewritten before Ultralytics sees it: paths are resolved against
the data.yaml's own folder (Ultralytics resolves a relative ``path:`` against its datasets
folder instead), the class names must be the model's, every label line must have the task's
format (``LABELS``, picked by the task table's ``labels``) with coordinates in range, and a
``download:`` entry (which Ultralytics would execute when a folder is missing) is never passed
on. Classification reads Ultralytics' folder layout instead (``<split>/<class name>/*.jpg``).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline import tasks
from pipeline.checks.images import IMAGE_SUFFIXES
from pipeline.config import Accuracy
from pipeline.errors import PipelineError
from pipeline.fsutil import ACCURACY_SCRATCH, read_json, scratch_dir, sha256_file, sha256_json, write_json_atomic

ACCURACY_VERSION = 2   # bump when the measurement changes: every cached figure is measured again
                       # (2: the task's metric, its key and label carried in the figures)


@dataclass(frozen=True)
class LabelFormat:
    """One YOLO label-line format: what a line holds, whether ``n`` values fit it (``k``: the
    keypoint values per line), and how many values after the class must lie in 0..1."""
    shape: str
    fits: Callable[[int, int], bool]
    in_unit: Callable[[int], int]


# The label formats of Ultralytics' YOLO datasets (docs.ultralytics.com/datasets), by the task
# table's ``labels``. Detection also takes polygon lines, as Ultralytics does (it boxes them).
LABELS = {
    "box": LabelFormat("class x_center y_center width height", lambda n, k: n == 5 or (n >= 7 and n % 2 == 1),
                       lambda n: n - 1),
    "keypoints": LabelFormat("class x_center y_center width height + the keypoints (x y [visibility] each)",
                             lambda n, k: n == 5 + k, lambda n: 4),
    "polygon": LabelFormat("class x1 y1 x2 y2 x3 y3 ... (a polygon of at least 3 points)",
                           lambda n, k: n >= 7 and n % 2 == 1, lambda n: n - 1),
    "rotated": LabelFormat("class x1 y1 x2 y2 x3 y3 x4 y4 (the 4 corners of the rotated box)",
                           lambda n, k: n == 9, lambda n: n - 1),
}
FOLDERS = "folders"   # classification: images in one folder per class, no label files


def _bad(model: str, file: Path, what: str, fix: str, details: list[str] | None = None) -> PipelineError:
    return PipelineError(what, model=model, file=file, fix=fix, details=details)


FORMAT_FIX = ("write an Ultralytics data.yaml: path: (the dataset folder, relative to the data.yaml), "
              "val: images/val (labels/val beside it), names: the model's classes (docs/precision.md)")
FOLDERS_FIX = ("point accuracy: data: at an Ultralytics classification dataset folder, <split>/<class name>/*.jpg "
               "with the model's class names as folder names (or a data.yaml whose path: names that folder; "
               "docs/precision.md)")


def _fix(task: str) -> str:
    return FOLDERS_FIX if tasks.TASKS[task].labels == FOLDERS else FORMAT_FIX


def _read(acc: Accuracy, model: str, fix: str = FORMAT_FIX) -> dict:
    import yaml
    f = acc.data
    if not f.is_file():
        raise _bad(model, f, "the accuracy data.yaml does not exist",
                   fix + "; inside the builder container only the models folder is mounted (at "
                   "/workspace/models): keep labelled data under models/")
    try:
        data = yaml.safe_load(f.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad(model, f, "the accuracy data.yaml is not UTF-8 text", fix) from None
    except yaml.YAMLError as exc:
        raise _bad(model, f, f"the accuracy data.yaml is not valid YAML ({str(exc).splitlines()[0]})",
                   fix) from None
    except (OSError, RecursionError) as exc:
        raise _bad(model, f, f"cannot read the accuracy data.yaml ({exc})", fix) from None
    if not isinstance(data, dict):
        raise _bad(model, f, "the accuracy data.yaml is not a mapping", fix)
    return data


def _names(value) -> dict[int, str] | None:
    if isinstance(value, list):
        return {i: str(n) for i, n in enumerate(value)}
    if isinstance(value, dict) and all(isinstance(k, int) or str(k).isdigit() for k in value):
        return {int(k): str(v) for k, v in sorted(value.items(), key=lambda kv: int(kv[0]))}
    return None


def _split_images(root: Path, value, model: str, f: Path, split: str) -> list[Path]:
    entries = value if isinstance(value, list) else [value]
    images: list[Path] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise _bad(model, f, f"{split}: must name an image folder or a .txt list of images, not {entry!r}",
                       FORMAT_FIX)
        p = Path(entry) if Path(entry).is_absolute() else root / entry
        if p.is_dir():
            images += sorted(x for x in p.rglob("*") if x.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file() and p.suffix == ".txt":
            try:
                lines = p.read_bytes().decode("utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise _bad(model, p, f"cannot read the {split} image list ({exc})",
                           "write one image path per line, UTF-8") from None
            for line in lines:
                line = line.strip()
                if line:
                    q = Path(line) if Path(line).is_absolute() else p.parent / line
                    images.append(q)
        else:
            raise _bad(model, f, f"the {split} images are not there: {p} is neither a folder nor a .txt list",
                       f"create {p} (images/{split} with labels/{split} beside it), or fix `{split}:` and "
                       "`path:` in the data.yaml (relative to the data.yaml's folder)")
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise _bad(model, f, f"{len(missing)} image(s) listed for {split} do not exist", FORMAT_FIX, missing[:5])
    if not images:
        raise _bad(model, f, f"the {split} split holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})", FORMAT_FIX)
    return images


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last /images/ of the path becomes /labels/, the suffix .txt."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _check_labels(images: list[Path], nc: int, kpt_values: int, model: str, fmt: LabelFormat = LABELS["box"]) -> int:
    """Every label line has the task's format (``fmt``), its class in range, its coordinates in 0..1.
    Returns the number of labelled objects."""
    boxes = 0
    for img in images:
        lab = label_path(img)
        if not lab.is_file():
            continue   # a background image: allowed, as in Ultralytics
        for n, line in enumerate(_named(lab, lab.read_bytes).decode(errors="replace").splitlines(), 1):
            vals = line.split()
            if not vals:
                continue
            where = f"{lab}:{n}"
            if not fmt.fits(len(vals), kpt_values):
                raise _bad(model, lab, f"label line {n} has {len(vals)} values, which is not `{fmt.shape}`"
                           + (f" ({5 + kpt_values} values)" if fmt is LABELS["keypoints"] else ""),
                           f"write YOLO labels for this model's task: one `{fmt.shape}` line per object, "
                           "normalised to 0..1", [where + ": " + line[:80]])
            try:
                cls, coords = int(vals[0]), [float(v) for v in vals[1:]]
            except ValueError:
                raise _bad(model, lab, f"label line {n} is not numbers", "fix or remove that line",
                           [where + ": " + line[:80]]) from None
            if not 0 <= cls < nc:
                raise _bad(model, lab, f"label line {n} names class {cls}; the model has classes 0..{nc - 1}",
                           "fix the class index, or label with the model's own class list",
                           [where + ": " + line[:80]])
            if any(not -1e-3 <= v <= 1 + 1e-3 for v in coords[:fmt.in_unit(len(vals))]):
                raise _bad(model, lab, f"label line {n} has coordinates outside 0..1 (labels are normalised by the "
                           "image size)", "divide pixel coordinates by the image width and height",
                           [where + ": " + line[:80]])
            boxes += 1
    return boxes


def _named(path: Path, read):
    """``read()``, with ``path`` put on an OSError that lacks it (a failed read() names no file)."""
    try:
        return read()
    except OSError as exc:
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


@contextlib.contextmanager
def _reading(model: str, data_file: Path, what: str = "reading the labelled set"):
    """An OSError while walking the labelled set (a vanished /proc entry, a permission, a broken
    link) as a paragraph naming the model, the data.yaml and the file it could not read."""
    try:
        yield
    except OSError as exc:
        failed = exc.filename or "?"
        raise _bad(model, data_file, f"error while {what} that this data.yaml names: cannot read {failed} "
                   f"({exc.strerror or type(exc).__name__})",
                   "point path: and the split at a folder of your own images and labels (under models/, which the "
                   "builder container also sees), readable by this user, that does not change while it is read",
                   [f"data.yaml: {data_file}", f"could not read: {failed}"]) from None


def _checked(acc: Accuracy, model: str, task: str, names: dict,
             kpt_shape) -> tuple[dict, dict, list[Path], list[str] | None]:
    """The dataset checked against the model: (its data.yaml, the model's names, the images, and
    for a classification set each image's class name; None where labels are files)."""
    with _reading(model, acc.data):
        if tasks.TASKS[task].labels == FOLDERS:
            return _class_folders(acc, model, names)
        return (*_checked_unguarded(acc, model, task, names, kpt_shape), None)


def _same_names(theirs: dict, ours: dict, model: str, f: Path) -> None:
    if len(theirs) != len(ours):
        raise _bad(model, f, f"the data.yaml has {len(theirs)} classes, the model {len(ours)}",
                   "label the data with the model's classes: " + ", ".join(list(ours.values())[:8])
                   + (" ..." if len(ours) > 8 else ""))
    differ = [f"class {k}: data.yaml {theirs[k]!r}, model {ours.get(k)!r}" for k in theirs if theirs[k] != ours.get(k)]
    if differ:
        raise _bad(model, f, "the data.yaml's class names are not the model's", "use the model's class names, in "
                   "its order (they are in the export record: models/onnx/<stem>.export.json)", differ[:5])


def _class_folders(acc: Accuracy, model: str, names: dict) -> tuple[dict, dict, list[Path], list[str]]:
    """A classification set in Ultralytics' layout: ``<root>/<split>/<class name>/<image>``; ``data:``
    is that root folder, or a data.yaml whose ``path:`` names it (and whose ``<split>:`` may name the
    split's folder). Every class folder must be one of the model's names: Ultralytics would skip the
    others without a word."""
    f = acc.data
    ours = {int(k): str(v) for k, v in names.items()}
    if f.is_dir():
        data, root = {}, f
    else:
        data = _read(acc, model, FOLDERS_FIX)
        if data.get("names") is not None:
            theirs = _names(data["names"])
            if theirs is None:
                raise _bad(model, f, "the data.yaml's `names:` is not a list or an index -> name mapping", FOLDERS_FIX)
            _same_names(theirs, ours, model, f)
        value = data.get("path")
        root = f.parent if not value else (Path(str(value)) if Path(str(value)).is_absolute()
                                           else f.parent / str(value))
    sub = data.get(acc.split, acc.split)
    if not isinstance(sub, str) or not sub:
        raise _bad(model, f, f"{acc.split}: must name the split's folder of class folders, not {sub!r}", FOLDERS_FIX)
    split_dir = Path(sub) if Path(sub).is_absolute() else root / sub
    if not split_dir.is_dir():
        raise _bad(model, f, f"the {acc.split} split's folder {split_dir} does not exist",
                   f"create {split_dir} with one folder per class (named as the model names it) holding its images; "
                   + FOLDERS_FIX)
    known = set(ours.values())
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir())
    loose = sorted(p.name for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        raise _bad(model, f, f"{len(loose)} image(s) lie directly in {split_dir}, outside a class folder, so they "
                   "have no class", "move each image into the folder of its class: "
                   f"{split_dir}/<class name>/", loose[:5])
    strangers = [p.name for p in folders if p.name not in known]
    if strangers:
        raise _bad(model, f, f"{len(strangers)} class folder(s) of {split_dir} are not classes of the model "
                   "(Ultralytics would skip their images without a word)",
                   "name each folder exactly as the model names its class (the names are in the export record: "
                   "models/onnx/<stem>.export.json), or remove the folder",
                   [f"{n!r}" for n in strangers[:5]] + [f"the model's classes: {', '.join(list(known)[:8])}"
                                                         + (" ..." if len(known) > 8 else "")])
    images: list[Path] = []
    classes: list[str] = []
    for folder in folders:
        found = sorted(x for x in folder.rglob("*") if x.suffix.lower() in IMAGE_SUFFIXES and x.is_file())
        images += found
        classes += [folder.name] * len(found)
    if not images:
        raise _bad(model, f, f"no class folder of {split_dir} holds an image ({', '.join(sorted(IMAGE_SUFFIXES))})",
                   "put labelled images in their class folders; top-1 accuracy on no image means nothing")
    return data, ours, images, classes


def _checked_unguarded(acc: Accuracy, model: str, task: str, names: dict, kpt_shape) -> tuple[dict, dict, list[Path]]:
    f = acc.data
    if f.is_dir():
        raise _bad(model, f, f"accuracy: data: is a folder; a {task} model's labelled set is named by its data.yaml",
                   FORMAT_FIX)
    data = _read(acc, model)
    fmt = LABELS[tasks.TASKS[task].labels]
    if acc.split not in data:
        raise _bad(model, f, f"the data.yaml has no `{acc.split}:` split",
                   f"add {acc.split}: images/{acc.split} (or pass accuracy: split: to one it has: "
                   f"{', '.join(k for k in ('train', 'val', 'test') if k in data) or 'none'})")
    theirs = _names(data.get("names"))
    if theirs is None:
        raise _bad(model, f, "the data.yaml has no readable `names:` (a list or an index -> name mapping)", FORMAT_FIX)
    ours = {int(k): str(v) for k, v in names.items()}
    _same_names(theirs, ours, model, f)
    kpt_values = 0
    if fmt is LABELS["keypoints"]:
        theirs_k = data.get("kpt_shape")
        if list(theirs_k or []) != list(kpt_shape or []):
            raise _bad(model, f, f"the data.yaml's kpt_shape {theirs_k!r} is not the model's {list(kpt_shape or [])}",
                       f"write kpt_shape: {list(kpt_shape or [])}")
        kpt_values = int(kpt_shape[0]) * int(kpt_shape[1])
    root_value = data.get("path")
    root = f.parent if not root_value else (Path(root_value) if Path(str(root_value)).is_absolute()
                                            else f.parent / str(root_value))
    images = _split_images(root, data[acc.split], model, f, acc.split)
    boxes = _check_labels(images, len(ours), kpt_values, model, fmt)
    if boxes == 0:
        raise _bad(model, f, f"no image of the {acc.split} split has a label (labels/{acc.split}/*.txt)",
                   f"label the images (one `{fmt.shape}` line per object); mAP on unlabelled images means nothing")
    return data, ours, images


def _digest(images: list[Path], ours: dict, split: str, classes: list[str] | None = None) -> str:
    def digest(p: Path) -> str:
        return _named(p, lambda: sha256_file(p))
    labels = classes if classes is not None else [digest(label_path(p)) if label_path(p).is_file() else None
                                                  for p in images]
    return sha256_json({"images": [[str(p.name), digest(p)] for p in images], "labels": labels,
                        "names": ours, "split": split})


def prepare(acc: Accuracy, model: str, task: str, names: dict, kpt_shape, work: Path) -> tuple[Path, str]:
    """Check the dataset against the model and write what Ultralytics reads (a data.yaml, or a
    classification folder); returns (that file or folder, a digest of the data that is measured)."""
    data, ours, images, classes = _checked(acc, model, task, names, kpt_shape)
    with _reading(model, acc.data, "copying the labelled set"):
        if classes is not None:
            return _prepared_folders(ours, images, classes, acc, work)
        return _prepared(data, ours, images, acc, task, kpt_shape, work)


def _prepared_folders(ours: dict, images: list[Path], classes: list[str], acc: Accuracy,
                      work: Path) -> tuple[Path, str]:
    """Links to the images under <work>/val/<class>/ (Ultralytics aligns class folders to the
    model's names by name); train/ is the same folder, as Ultralytics reads the class list there."""
    root = work / "classes"
    for i, (img, cls) in enumerate(zip(images, classes)):
        (root / "val" / cls).mkdir(parents=True, exist_ok=True)
        (root / "val" / cls / f"{i:06d}{img.suffix.lower()}").symlink_to(img.absolute())
    (root / "train").symlink_to("val", target_is_directory=True)
    return root, _digest(images, ours, acc.split, classes)


def _prepared(data: dict, ours: dict, images: list[Path], acc: Accuracy, task: str, kpt_shape,
              work: Path) -> tuple[Path, str]:
    import yaml
    # Ultralytics reads and writes a label cache beside the labels it is given, and loads it with
    # pickle: it gets a private copy of the layout (links to the images, copies of the labels), so
    # nothing in the user's folders is ever unpickled or written
    (work / "images" / "val").mkdir(parents=True, exist_ok=True)
    (work / "labels" / "val").mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        link = work / "images" / "val" / f"{i:06d}{img.suffix.lower()}"
        link.symlink_to(img.absolute())
        lab = label_path(img)
        if lab.is_file():
            (work / "labels" / "val" / f"{i:06d}.txt").write_bytes(_named(lab, lab.read_bytes))
    norm = {"path": str(work), "train": "images/val", "val": "images/val", "names": ours}
    if tasks.TASKS[task].labels == "keypoints":
        norm["kpt_shape"] = list(kpt_shape)
        if "flip_idx" in data:
            norm["flip_idx"] = data["flip_idx"]
    out = work / "data.yaml"
    out.write_text(yaml.safe_dump(norm, sort_keys=False))
    return out, _digest(images, ours, acc.split)


def scratch(reference_onnx: Path):
    """The validator's work folder (private dataset layout, label caches, Ultralytics' outputs), beside
    the reference ONNX and named for this process, so a kill's leftover is removed by the next run and
    by `engines clean` (export.stale_temp_dirs); removed on the way out."""
    return scratch_dir(reference_onnx.parent, ACCURACY_SCRATCH)


def measure(model_file: Path, task: str, data_yaml: Path, imgsz: int, work: Path, device: str = "cpu",
            model: str = "?", data_file: Path | None = None) -> dict:
    """The figures of ``model_file`` (ONNX on the CPU, an engine on a GPU): those Ultralytics' metrics
    for the task have (``figures``), with the task's gated metric named under ``metric``."""
    os.environ.setdefault("YOLO_OFFLINE", "1")   # before the import: Ultralytics reads it once
    # overlap_mask=False: every labelled object keeps its whole mask. Ultralytics' default (a training
    # setting) merges a segment set's masks into one image, the smaller object on top, so an object
    # covered by smaller ones is judged on what is left of it; ignored by the other tasks.
    from ultralytics import YOLO
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):   # Ultralytics prints its table; stdout may carry --json
            res = YOLO(str(model_file), task=task).val(
                data=str(data_yaml), imgsz=imgsz, batch=1, device=device, plots=False, verbose=False,
                save_json=False, project=str(work), name="val", exist_ok=True, overlap_mask=False)
    except Exception as exc:   # noqa: BLE001  (the validator raises many types for bad data)
        raise PipelineError(f"Ultralytics' validator could not measure {model_file.name} on the labelled data: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                            model=model, file=data_file or data_yaml,
                            fix="check the images it names (too small, corrupt or unreadable images are dropped) "
                                "and the labels beside them; `yolo val model=<the .onnx> data=<data.yaml>` shows "
                                "the same") from None
    if not int(getattr(getattr(res, "nt_per_class", None), "sum", lambda: 1)()):
        raise PipelineError("Ultralytics' validator found no labelled object in the data (every image was dropped "
                            "or has no label it could read)", model=model, file=data_file or data_yaml,
                            fix="check that each image has its label file in the matching labels/ folder")
    t = tasks.TASKS[task]
    out = {**figures(res), "metric": t.metric, "metric_label": t.metric_label,
           "seconds": round(time.perf_counter() - t0, 2)}
    if t.metric not in out:
        raise PipelineError(f"Ultralytics' validator gave no {t.metric_label} for this {task} model "
                            f"(it returned {type(res).__name__})", model=model, file=data_file or data_yaml,
                            fix="check that the model's task is the one models.yaml names (the export record's "
                                "metadata says task:), and that `yolo val` on this data reports it")
    return out


def figures(res) -> dict:
    """The figures an Ultralytics metrics object holds, in points (0-100) for the gated ones:
    box (for OBB models the rotated boxes), mask (.seg), keypoint (.pose), top-1/top-5 (classify)."""
    out = {}
    box = getattr(res, "box", None)
    if box is not None:
        out.update(map50_95=round(float(box.map) * 100, 3), map50=round(float(box.map50) * 100, 3),
                   precision=round(float(box.mp), 4), recall=round(float(box.mr), 4))
    for attr, key in (("seg", "mask"), ("pose", "pose")):
        m = getattr(res, attr, None)
        if m is not None:
            out[f"{key}_map50_95"] = round(float(m.map) * 100, 3)
            out[f"{key}_map50"] = round(float(m.map50) * 100, 3)
    if hasattr(res, "top1") and hasattr(res, "top5"):
        out.update(top1=round(float(res.top1) * 100, 3), top5=round(float(res.top5) * 100, 3))
    return out


def cached_measure(cache_file: Path, model_file: Path, task: str, data_yaml: Path, digest: str, imgsz: int,
                   work: Path, device: str = "cpu", model: str = "?", data_file: Path | None = None) -> dict:
    """``measure`` remembered by (model file sha256, data digest, imgsz, device) in ``cache_file``."""
    from importlib import metadata
    key = sha256_json({"model": sha256_file(model_file), "data": digest, "imgsz": imgsz, "device": device,
                       "ultralytics": metadata.version("ultralytics"), "version": ACCURACY_VERSION})
    cache = read_json(cache_file) or {}
    if key in cache:
        return {**cache[key], "cached": True}
    figures = measure(model_file, task, data_yaml, imgsz, work, device, model, data_file)
    cache[key] = figures
    write_json_atomic(cache_file, dict(list(cache.items())[-16:]))   # a few entries: reference and candidates
    return figures


def gated_metric(figures: dict) -> str:
    """What the gate compares: the task's metric, named in the figures by ``measure`` (figures of
    ACCURACY_VERSION 1, in older manifests, name none: keypoint mAP for pose, box mAP otherwise)."""
    return figures.get("metric") or ("pose_map50_95" if "pose_map50_95" in figures else "map50_95")


def metric_label(figures: dict) -> str:
    return figures.get("metric_label") or {"pose_map50_95": "keypoint mAP50-95"}.get(gated_metric(figures),
                                                                                    "mAP50-95")


def detail(figures: dict) -> str:
    """The figures beside the gated one, for the report: mAP50, precision / recall, or top-5."""
    if "top5" in figures:
        return f"top-5 {figures['top5']:.2f}"
    key = gated_metric(figures).replace("50_95", "50")
    return (f"mAP50 {figures.get(key, 0.0):.2f}, P/R {figures.get('precision', 0.0):.3f} / "
            f"{figures.get('recall', 0.0):.3f}")


def judge(reference: dict, candidate: dict, precision: str, max_drop: float) -> tuple[float, list[str]]:
    """(drop in points of the task's metric, reasons it is too large)."""
    key = gated_metric(reference)
    what = metric_label(reference)
    drop = round(reference[key] - candidate.get(key, 0.0), 3)
    if drop > max_drop:
        return drop, [f"accuracy: {what} dropped {drop:.2f} points ({reference[key]:.2f} -> "
                      f"{candidate.get(key, 0.0):.2f}), more than max_drop {precision}: {max_drop:g}"]
    return drop, []


def signature(acc: Accuracy, precision: str, digest: str) -> dict:
    """What a gate verdict depends on besides the ONNX: the data (digest), the split and the
    max_drop of this precision. Not the data.yaml's path, which depends on how --config was spelt."""
    return {"data": digest, "split": acc.split, "max_drop": acc.max_drop.get(precision, 0.0),
            "version": ACCURACY_VERSION}


def data_digest(acc: Accuracy, model: str, task: str, names: dict, kpt_shape) -> str:
    """The digest ``prepare`` computes, without writing its layout (for the cache check of a build)."""
    _, ours, images, classes = _checked(acc, model, task, names, kpt_shape)
    with _reading(model, acc.data, "hashing the labelled set"):
        return _digest(images, ours, acc.split, classes)
