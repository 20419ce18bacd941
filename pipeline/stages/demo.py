"""The embedded default model set: seeded, randomly initialised checkpoints built from
Ultralytics' bundled architectures, marked as demo weights everywhere downstream."""
from __future__ import annotations

import pickle
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_path
from pipeline.tasks import TASKS

SEED = 20261124
# The architecture follows the task (and models.yaml's demo_arch: family), from the task table; the
# classes follow models.yaml's `demo_classes` (the real model's class names), so nothing here knows a
# model by its name.
TASK_ARCH = {name: task.demo_arch() for name, task in TASKS.items()}
CONF = 0.25   # Ultralytics' default predict confidence: demo scores are made decisive around it
CLASS_STEP = 1.0   # logit prior between consecutive classes of a demo detector
VAR_FLOOR = 0.1   # BatchNorm variance floor, as a share of the layer's mean variance


def demo_arch(spec) -> str:
    """The bundled architecture demo weights for ``spec`` are built from."""
    return TASKS[spec.task].demo_arch(spec.demo_arch)


def write_demo_checkpoint(dest: Path, arch: str, names: dict | None, seed: int, imgsz: int = 640) -> None:
    import torch
    from ultralytics import RTDETR, YOLO
    torch.manual_seed(seed)
    yolo = RTDETR(arch) if arch.startswith("rtdetr") else YOLO(arch, verbose=False)
    if names is not None:  # the same architecture (and model class) with these classes
        model = type(yolo.model)(arch, nc=len(names), verbose=False)
        model.names = dict(names)
        yolo.model = model
    _make_responsive(yolo.model, seed, imgsz)
    yolo.ckpt = {**(getattr(yolo, "ckpt", None) or {}), "demo_weights": True, "demo_seed": seed,
                 "demo_note": "random weights from the bundled architecture; not a trained model"}
    with atomic_path(dest, suffix=".pt") as tmp:
        yolo.save(str(tmp))


def _last_conv(module):
    """The last nn.Conv2d inside a head branch (a bare conv, or the conv of Ultralytics' Conv block)."""
    from torch import nn
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def _branch_convs(head, *names: str) -> list:
    return [c for n in names for seq in (getattr(head, n, None) or []) if (c := _last_conv(seq)) is not None]


def _make_responsive(model, seed: int, imgsz: int = 640) -> None:
    """Make random weights behave like a trained network's on real images.

    Ultralytics' own init gives constant boxes and class scores of ~0 (its class bias prior is
    about -10), so every comparison would be trivially equal. Instead: Kaiming weights everywhere
    trainable, BatchNorm statistics calibrated on the bundled images (so activations stay in range
    through 70+ layers), then decisive scores (``_decisive``): trained networks score most anchors
    far below the confidence threshold and a few far above it, while random ones put hundreds of
    anchors within FP16 noise of it, so a precision check on them measures coin flips.
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
    with torch.no_grad():
        # class c gets a prior c x CLASS_STEP lower than class 0: which class an anchor shows is then
        # decided by a margin, not by 80 near-tied random logits that FP16 noise reorders
        for conv in _branch_convs(head, "cv3", "one2one_cv3"):
            conv.bias.copy_(-3.0 - CLASS_STEP * torch.arange(conv.bias.numel(), dtype=conv.bias.dtype))
        # Keypoint offsets are multiplied by 2 x stride (up to 64 px per unit), mask coefficients and
        # angles feed sigmoids: keep these raw outputs small, as training does, or FP16 noise alone
        # moves keypoints by pixels.
        for conv in _branch_convs(head, "cv4", "one2one_cv4", "cv4_kpts", "one2one_cv4_kpts"):
            conv.weight.mul_(0.1)
        # Without a DFL (YOLO26: reg_max 1) the box branch outputs its edge distances directly, and random
        # weights make some negative (boxes with x2 < x1, IoU 0 with anything): start them at 2 strides, as
        # Ultralytics' own bias_init does, with small spread.
        if getattr(head, "reg_max", 16) == 1:
            for conv in _branch_convs(head, "cv2", "one2one_cv2"):
                conv.weight.mul_(0.1)
                conv.bias.fill_(2.0)
    model.float().eval()
    for m in model.modules():   # only the BatchNorms learn their statistics; heads run their inference path
        if isinstance(m, nn.BatchNorm2d):
            m.train()
    # at the size the model will be verified at: statistics from another size leave activations
    # out of range there (measured: YOLO26n calibrated at 320 gives FP16 cosine 0.9994 at 640, 0.99999 at 320)
    x = torch.from_numpy(batches(bundled_images(), imgsz, 2)[0])
    with torch.no_grad():   # one pass: BatchNorm in train mode normalises by the batch's own statistics,
        model(x)            # so a second pass over the same batch would average in the same numbers
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.03  # Ultralytics' default
            # a channel that barely varies on the calibration images would be divided by its tiny
            # spread, amplifying FP16 rounding many times over: floor it at a share of the layer's
            var = m.running_var
            var.clamp_(min=float(var.mean()) * VAR_FLOOR)
    model.eval()
    _decisive(model, imgsz)


def _decisive(model, imgsz: int) -> None:
    """Shift the class logits so that the confidence threshold falls in the widest gap of their
    distribution on the bundled images at ``imgsz`` (between the top 0.5 % and 5 % of anchors, or of
    RT-DETR's queries), and scale a classifier's logits until its top-1 leads by a clear margin."""
    import numpy as np  # here, not at the top: every `engines run` imports this module, few write weights
    import torch
    from torch import nn
    from ultralytics.nn.modules.head import Classify

    from pipeline.checks.images import batches, bundled_images
    head = model.model[-1]
    x = torch.from_numpy(np.concatenate(batches(bundled_images(), imgsz, 1)))
    if isinstance(head, Classify):
        logits = _captured(model, [head.linear], x)[-1]
        top2 = logits.topk(2, dim=1).values
        scale = max(1.0, 3.0 / max(float((top2[:, 0] - top2[:, 1]).min()), 1e-3))
        with torch.no_grad():
            head.linear.weight.mul_(scale)
            head.linear.bias.mul_(scale)
        return
    branches = [_branch_convs(head, "cv3"), _branch_convs(head, "one2one_cv3")]
    score_heads = getattr(head, "dec_score_head", None)
    if score_heads is not None:   # RT-DETR: every decoder layer's score head (the last one is output)
        branches = [[m for m in score_heads if isinstance(m, nn.Linear)]]
    for layers in branches:
        if not layers:
            continue
        seen = _captured(model, layers, x)
        if score_heads is not None:   # (B, queries, nc) per decoder layer: the last is what is output
            best = seen[-1].amax(-1).flatten()
        else:                         # (B, nc, h, w) per scale
            best = torch.cat([t.amax(1).flatten() for t in seen])
        shift = _gap_shift(best.numpy())
        with torch.no_grad():
            for m in layers:
                m.bias.add_(shift)


def _captured(model, layers: list, x) -> list:
    """The outputs of ``layers`` when ``model`` runs on ``x``, in call order."""
    import torch
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().float())) for m in layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _gap_shift(logits) -> float:   # logits: a 1-D numpy array
    """How much to add to every logit so that logit(CONF) sits mid-way in the widest gap between
    consecutive values among the top 0.5-5 % (at least the top 10 and at most the top 400)."""
    import numpy as np
    v = np.sort(logits)[::-1]
    lo, hi = max(10, int(len(v) * 0.005)), min(len(v) - 2, max(12, int(len(v) * 0.05)), 400)
    gaps = v[lo:hi] - v[lo + 1:hi + 1]
    k = lo + int(np.argmax(gaps))
    mid = (v[k] + v[k + 1]) / 2
    return float(np.log(CONF / (1 - CONF)) - mid)


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
        arch = demo_arch(spec)
        names = dict(enumerate(spec.demo_classes)) if spec.demo_classes else None
        write_demo_checkpoint(dest, arch, names, SEED + i, imgsz=spec.imgsz)
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
