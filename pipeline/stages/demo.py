"""The embedded default model set: seeded, randomly initialised checkpoints built from
Ultralytics' bundled architectures, marked as demo weights everywhere downstream."""
from __future__ import annotations

import pickle
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_path

SEED = 20261124
# The architecture follows the task; the classes follow models.yaml's `demo_classes` (the
# real model's class names), so nothing here knows a model by its name.
TASK_ARCH = {"detect": "yolov8n.yaml", "pose": "yolov8n-pose.yaml"}


def write_demo_checkpoint(dest: Path, arch: str, names: dict | None, seed: int) -> None:
    import torch
    from ultralytics import YOLO
    torch.manual_seed(seed)
    yolo = YOLO(arch, verbose=False)
    if names is not None:  # the same architecture (and model class: detect or pose) with these classes
        model = type(yolo.model)(arch, nc=len(names), verbose=False)
        model.names = dict(names)
        yolo.model = model
    _make_responsive(yolo.model, seed)
    yolo.ckpt = {**(getattr(yolo, "ckpt", None) or {}), "demo_weights": True, "demo_seed": seed,
                 "demo_note": "random weights from the bundled architecture; not a trained model"}
    with atomic_path(dest, suffix=".pt") as tmp:
        yolo.save(str(tmp))


def _make_responsive(model, seed: int) -> None:
    """Make random weights behave like a trained network's on real images.

    Ultralytics' own init gives constant boxes and class scores of ~0 (its class bias
    prior is about -10), so every comparison would be trivially equal. Instead: Kaiming
    weights everywhere trainable, BatchNorm statistics calibrated on the bundled images
    (so activations stay in range through 70+ layers), and a class bias of -3 so a few
    percent of anchors score above the usual 0.25 confidence.
    """
    import torch
    from torch import nn

    from pipeline.checks.images import batches, bundled_images

    gen = torch.Generator().manual_seed(seed)
    head = model.model[-1]
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.requires_grad:  # DFL's fixed conv is frozen
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    for seq in getattr(head, "cv3", []):
        with torch.no_grad():
            seq[-1].bias.fill_(-3.0)
    # Keypoint offsets are multiplied by 2 x stride (up to 64 px per unit): keep the raw
    # outputs small, as training does, or FP16 noise alone moves keypoints by pixels.
    for seq in getattr(head, "cv4", []):
        with torch.no_grad():
            seq[-1].weight.mul_(0.1)
    model.float().train()
    x = torch.from_numpy(batches(bundled_images(), 320, 2)[0])
    with torch.no_grad():
        for _ in range(2):
            model(x)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.03  # Ultralytics' default
    model.eval()


def write_demo_passthrough(dest: Path) -> None:
    """A stand-in for the XGBoost hand-wash model: the pipeline only copies and hashes it."""
    payload = {"demo_weights": True, "kind": "handwash-classifier-placeholder",
               "note": "demo stand-in; put the real handwash_xgb.joblib here for production"}
    with atomic_path(dest) as tmp:
        tmp.write_bytes(pickle.dumps(payload, protocol=4))


def is_demo_passthrough(path: Path) -> bool:
    """Whether ``path`` is the stand-in ``write_demo_passthrough`` wrote."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return b"demo_weights" in head and b"handwash-classifier-placeholder" in head


# The embedded default: the sources (and tasks) of models/models.yaml as shipped. `engines run`
# writes demo weights unasked only for these, so a fresh clone builds at once, while a missing
# checkpoint anywhere else (a typo in `source:`) is an error naming the nearest file (issue 26).
DEFAULT_SOURCES = {"yolo/yolov8n.pt": "detect", "hairnet_detection/hairnet_detection.pt": "detect",
                   "yolo/yolov8n-pose.pt": "pose"}
DEFAULT_PASSTHROUGH = ("handwash_xgb.joblib",)


def is_embedded_default(source: str, task: str | None = None) -> bool:
    """Whether a models.yaml entry is one of the embedded default's (``task`` None: passthrough)."""
    from pathlib import PurePosixPath
    source = PurePosixPath(source).as_posix()   # ./yolo/yolov8n.pt is the same entry
    if task is None:
        return source in DEFAULT_PASSTHROUGH
    return DEFAULT_SOURCES.get(source) == task


def nearest_file(path: Path, root: Path) -> Path | None:
    """The existing file whose path (relative to ``root``) is closest to ``path``'s, by difflib:
    first among the files of its own folder, else among files of the same suffix under ``root``."""
    import difflib
    if path.parent.is_dir():
        pool = [f for f in path.parent.iterdir() if f.is_file() and not f.name.startswith(".")]
        near = difflib.get_close_matches(path.name, [f.name for f in pool], n=1, cutoff=0.5)
        if near:
            return path.parent / near[0]
    if not root.is_dir():
        return None
    skip = {"onnx", "engines"}   # what the stages write, never a checkpoint
    pool = []
    for f in root.rglob(f"*{path.suffix}"):
        rel = f.relative_to(root)
        if f.is_file() and rel.parts[0] not in skip and not any(p.startswith(".") for p in rel.parts):
            pool.append(rel.as_posix())
        if len(pool) >= 5000:
            break
    try:
        want = path.relative_to(root).as_posix()
    except ValueError:
        want = path.name
    near = difflib.get_close_matches(want, pool, n=1, cutoff=0.5)
    return root / near[0] if near else None


def missing_checkpoint(name: str, path: Path, config: Path, what: str = "checkpoint") -> PipelineError:
    """The error for a ``source:`` of ``config`` that names no file: the path, and the nearest file there is."""
    root = config.parent
    near = nearest_file(path, root)
    hint = f"did you mean {near.relative_to(root).as_posix() if near.is_relative_to(root) else near}? " if near else ""
    return PipelineError(f"{what} not found", model=name, file=path,
                         details=[f"nearest existing file: {near}" if near else
                                  f"no file with a similar name in {path.parent if path.parent.is_dir() else root}"],
                         fix=f"{hint}correct source: in {config} or place the trained file at "
                             f"{path}; for a trial run without trained weights, `engines run --demo` (or "
                             "`engines demo-models`) writes seeded demo weights there")


def demo_models(cfg: Config, log=print, default_only: bool = False) -> list[dict]:
    """Write every missing checkpoint (with ``default_only``, only the embedded default's: see
    DEFAULT_SOURCES); never touch an existing file."""
    done = []
    for i, spec in enumerate(cfg.models):
        dest = spec.source_path
        if default_only and not dest.exists() and not is_embedded_default(spec.source, spec.task):
            continue
        if dest.exists():
            done.append({"model": spec.name, "file": str(dest), "action": "kept (exists)"})
            continue
        arch = TASK_ARCH[spec.task]
        names = dict(enumerate(spec.demo_classes)) if spec.demo_classes else None
        write_demo_checkpoint(dest, arch, names, SEED + i)
        done.append({"model": spec.name, "file": str(dest), "action": f"wrote demo weights ({arch})"})
        log(f"{spec.name}: wrote demo weights from {arch} -> {dest}")
    for p in cfg.passthrough:
        if default_only and not p.source_path.exists() and not is_embedded_default(p.source):
            continue
        if not p.source_path.exists():
            write_demo_passthrough(p.source_path)
            done.append({"model": p.name, "file": str(p.source_path), "action": "wrote demo stand-in"})
            log(f"{p.name}: wrote demo stand-in -> {p.source_path}")
        else:
            done.append({"model": p.name, "file": str(p.source_path), "action": "kept (exists)"})
    return done
