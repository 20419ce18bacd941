"""The embedded default model set: seeded, randomly initialised checkpoints built from
Ultralytics' bundled architectures, marked as demo weights everywhere downstream."""
from __future__ import annotations

import pickle
from pathlib import Path

from pipeline.config import Config
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


def demo_models(cfg: Config, log=print) -> list[dict]:
    """Write every missing checkpoint; never touch an existing file."""
    done = []
    for i, spec in enumerate(cfg.models):
        dest = spec.source_path
        if dest.exists():
            done.append({"model": spec.name, "file": str(dest), "action": "kept (exists)"})
            continue
        arch = TASK_ARCH[spec.task]
        names = dict(enumerate(spec.demo_classes)) if spec.demo_classes else None
        write_demo_checkpoint(dest, arch, names, SEED + i)
        done.append({"model": spec.name, "file": str(dest), "action": f"wrote demo weights ({arch})"})
        log(f"{spec.name}: wrote demo weights from {arch} -> {dest}")
    for p in cfg.passthrough:
        if not p.source_path.exists():
            write_demo_passthrough(p.source_path)
            done.append({"model": p.name, "file": str(p.source_path), "action": "wrote demo stand-in"})
            log(f"{p.name}: wrote demo stand-in -> {p.source_path}")
        else:
            done.append({"model": p.name, "file": str(p.source_path), "action": "kept (exists)"})
    return done
