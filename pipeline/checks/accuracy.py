"""Accuracy on the user's own labelled images: mAP with Ultralytics' validator.

The gate compares a candidate (the FP16 or INT8 ONNX an engine is built from, or on a GPU
the engine itself) with the FP32 reference on the same data, in mAP50-95 points (0-100),
and refuses a drop above ``accuracy.max_drop`` for that precision. Ultralytics measures an
ONNX through ONNX Runtime on the CPU and an engine on its GPU.

The data.yaml is checked and rewritten before Ultralytics sees it: paths are resolved
against the data.yaml's own folder (Ultralytics resolves a relative ``path:`` against its
datasets folder instead), the class names must be the model's, labels must be in range,
and a ``download:`` entry (which Ultralytics would execute when a folder is missing) is
never passed on.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from pipeline.checks.images import IMAGE_SUFFIXES
from pipeline.config import Accuracy
from pipeline.errors import PipelineError
from pipeline.fsutil import ACCURACY_SCRATCH, read_json, scratch_dir, sha256_file, sha256_json, write_json_atomic

ACCURACY_VERSION = 1   # bump when the measurement changes: every cached figure is measured again


def _bad(model: str, file: Path, what: str, fix: str, details: list[str] | None = None) -> PipelineError:
    return PipelineError(what, model=model, file=file, fix=fix, details=details)


FORMAT_FIX = ("write an Ultralytics detection data.yaml: path: (the dataset folder, relative to the data.yaml), "
              "val: images/val, names: the model's classes (docs/precision.md)")


def _read(acc: Accuracy, model: str) -> dict:
    import yaml
    f = acc.data
    if not f.is_file():
        raise _bad(model, f, "the accuracy data.yaml does not exist",
                   FORMAT_FIX + "; inside the builder container only the models folder is mounted (at "
                   "/workspace/models): keep labelled data under models/")
    try:
        data = yaml.safe_load(f.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad(model, f, "the accuracy data.yaml is not UTF-8 text", FORMAT_FIX) from None
    except yaml.YAMLError as exc:
        raise _bad(model, f, f"the accuracy data.yaml is not valid YAML ({str(exc).splitlines()[0]})",
                   FORMAT_FIX) from None
    except (OSError, RecursionError) as exc:
        raise _bad(model, f, f"cannot read the accuracy data.yaml ({exc})", FORMAT_FIX) from None
    if not isinstance(data, dict):
        raise _bad(model, f, "the accuracy data.yaml is not a mapping", FORMAT_FIX)
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


def _check_labels(images: list[Path], nc: int, kpt_values: int, model: str) -> int:
    """Every label line is `class x y w h [keypoints]`, class in range, coordinates in 0..1.
    Returns the number of labelled boxes."""
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
            want = 5 + kpt_values
            if len(vals) != want and not (kpt_values == 0 and len(vals) > 5 and len(vals) % 2 == 1):
                raise _bad(model, lab, f"label line {n} has {len(vals)} values, expected {want} "
                           f"(class x y w h{' + keypoints' if kpt_values else ''})",
                           "write YOLO labels: one `class x_center y_center width height` line per box, "
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
            box = coords[:4] if kpt_values or len(coords) == 4 else coords
            if any(not -1e-3 <= v <= 1 + 1e-3 for v in box):
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


def _checked(acc: Accuracy, model: str, task: str, names: dict, kpt_shape) -> tuple[dict, dict, list[Path]]:
    """The dataset checked against the model: (its data.yaml, the model's names, the images)."""
    with _reading(model, acc.data):
        return _checked_unguarded(acc, model, task, names, kpt_shape)


def _checked_unguarded(acc: Accuracy, model: str, task: str, names: dict, kpt_shape) -> tuple[dict, dict, list[Path]]:
    f = acc.data
    data = _read(acc, model)
    if acc.split not in data:
        raise _bad(model, f, f"the data.yaml has no `{acc.split}:` split",
                   f"add {acc.split}: images/{acc.split} (or pass accuracy: split: to one it has: "
                   f"{', '.join(k for k in ('train', 'val', 'test') if k in data) or 'none'})")
    theirs = _names(data.get("names"))
    if theirs is None:
        raise _bad(model, f, "the data.yaml has no readable `names:` (a list or an index -> name mapping)", FORMAT_FIX)
    ours = {int(k): str(v) for k, v in names.items()}
    if len(theirs) != len(ours):
        raise _bad(model, f, f"the data.yaml has {len(theirs)} classes, the model {len(ours)}",
                   "label the data with the model's classes: " + ", ".join(list(ours.values())[:8])
                   + (" ..." if len(ours) > 8 else ""))
    differ = [f"class {k}: data.yaml {theirs[k]!r}, model {ours.get(k)!r}" for k in theirs if theirs[k] != ours.get(k)]
    if differ:
        raise _bad(model, f, "the data.yaml's class names are not the model's", "use the model's class names, in "
                   "its order (they are in the export record: models/onnx/<stem>.export.json)", differ[:5])
    kpt_values = 0
    if task == "pose":
        theirs_k = data.get("kpt_shape")
        if list(theirs_k or []) != list(kpt_shape or []):
            raise _bad(model, f, f"the data.yaml's kpt_shape {theirs_k!r} is not the model's {list(kpt_shape or [])}",
                       f"write kpt_shape: {list(kpt_shape or [])}")
        kpt_values = int(kpt_shape[0]) * int(kpt_shape[1])
    root_value = data.get("path")
    root = f.parent if not root_value else (Path(root_value) if Path(str(root_value)).is_absolute()
                                            else f.parent / str(root_value))
    images = _split_images(root, data[acc.split], model, f, acc.split)
    boxes = _check_labels(images, len(ours), kpt_values, model)
    if boxes == 0:
        raise _bad(model, f, f"no image of the {acc.split} split has a label (labels/{acc.split}/*.txt)",
                   "label the images (one `class x y w h` line per object); mAP on unlabelled images means nothing")
    return data, ours, images


def _digest(images: list[Path], ours: dict, split: str) -> str:
    def digest(p: Path) -> str:
        return _named(p, lambda: sha256_file(p))
    return sha256_json({"images": [[str(p.name), digest(p)] for p in images],
                        "labels": [digest(label_path(p)) if label_path(p).is_file() else None for p in images],
                        "names": ours, "split": split})


def prepare(acc: Accuracy, model: str, task: str, names: dict, kpt_shape, work: Path) -> tuple[Path, str]:
    """Check the dataset against the model and write the data.yaml Ultralytics reads;
    returns (that file, a digest of the data that is measured)."""
    data, ours, images = _checked(acc, model, task, names, kpt_shape)
    with _reading(model, acc.data, "copying the labelled set"):
        return _prepared(data, ours, images, acc, task, kpt_shape, work)


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
    if task == "pose":
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
    """mAP50-95, mAP50, precision and recall of ``model_file`` (ONNX on the CPU, an engine on a GPU)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")   # before the import: Ultralytics reads it once
    from ultralytics import YOLO
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):   # Ultralytics prints its table; stdout may carry --json
            res = YOLO(str(model_file), task=task).val(
                data=str(data_yaml), imgsz=imgsz, batch=1, device=device, plots=False, verbose=False,
                save_json=False, project=str(work), name="val", exist_ok=True)
    except Exception as exc:   # noqa: BLE001  (the validator raises many types for bad data)
        raise PipelineError(f"Ultralytics' validator could not measure {model_file.name} on the labelled data: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                            model=model, file=data_file or data_yaml,
                            fix="check the images it names (too small, corrupt or unreadable images are dropped) "
                                "and the labels beside them; `yolo val model=<the .onnx> data=<data.yaml>` shows "
                                "the same") from None
    box = res.box
    if not int(getattr(getattr(res, "nt_per_class", None), "sum", lambda: 1)()):
        raise PipelineError("Ultralytics' validator found no labelled object in the data (every image was dropped "
                            "or has no label it could read)", model=model, file=data_file or data_yaml,
                            fix="check that each image has its label file in the matching labels/ folder")
    out = {"map50_95": round(float(box.map) * 100, 3), "map50": round(float(box.map50) * 100, 3),
           "precision": round(float(box.mp), 4), "recall": round(float(box.mr), 4),
           "seconds": round(time.perf_counter() - t0, 2)}
    if task == "pose" and getattr(res, "pose", None) is not None:
        out["pose_map50_95"] = round(float(res.pose.map) * 100, 3)
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
    """What the gate compares: keypoint mAP50-95 for pose models, box mAP50-95 otherwise."""
    return "pose_map50_95" if "pose_map50_95" in figures else "map50_95"


def judge(reference: dict, candidate: dict, precision: str, max_drop: float) -> tuple[float, list[str]]:
    """(drop in mAP50-95 points, reasons it is too large)."""
    key = gated_metric(reference)
    what = "keypoint mAP50-95" if key == "pose_map50_95" else "mAP50-95"
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
    _, ours, images = _checked(acc, model, task, names, kpt_shape)
    with _reading(model, acc.data, "hashing the labelled set"):
        return _digest(images, ours, acc.split)
