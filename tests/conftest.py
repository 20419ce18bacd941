"""Shared fixtures: a small demo workspace exported once per session (imgsz 320 keeps
the real Ultralytics exports and TensorRT for RTX builds fast on 2 cores)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL_YAML = """\
defaults: {imgsz: 320, opset: 12, precision: fp16, batch: 1}
models:
  - {name: human,   source: yolo/yolov8n.pt,                        task: detect}
  - {name: hairnet, source: hairnet_detection/hairnet_detection.pt, task: detect,
     demo_classes: [hairnet, no_hairnet]}
  - {name: pose,    source: yolo/yolov8n-pose.pt,                   task: pose}
passthrough:
  - {name: handwash, source: handwash_xgb.joblib}
"""


def write_config(folder: Path, text: str = SMALL_YAML) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "models.yaml"
    p.write_text(text)
    return p


@pytest.fixture(scope="session")
def demo_checkpoints(tmp_path_factory) -> Path:
    """A folder holding models.yaml and the three seeded demo checkpoints."""
    from pipeline.config import load_config
    from pipeline.stages.demo import demo_models
    root = tmp_path_factory.mktemp("demo-src")
    cfg = load_config(write_config(root))
    demo_models(cfg, log=lambda m: None)
    return root


@pytest.fixture(scope="session")
def exported(tmp_path_factory, demo_checkpoints) -> Path:
    """The demo set exported once (read-only for tests: copy it before changing it)."""
    from pipeline.config import load_config
    from pipeline.stages.export import export_all
    root = tmp_path_factory.mktemp("exported")
    shutil.copytree(demo_checkpoints, root, dirs_exist_ok=True)
    cfg = load_config(root / "models.yaml")
    records, errors = export_all(cfg, cfg.models)
    assert not errors, [e.render() for e in errors]
    return root


@pytest.fixture
def workspace(tmp_path, exported) -> Path:
    """A private copy of the exported demo workspace."""
    dest = tmp_path / "ws"
    shutil.copytree(exported, dest)
    return dest


def fresh_python(code: str) -> list[str]:
    """Run ``code`` in a new interpreter (so sys.modules shows only what it imported);
    returns its stdout lines."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """`python -m pipeline ...` in a subprocess: exit codes and output as users see them."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def build_full_trt_human(workspace: Path):
    """Build the `human` demo model with the full TensorRT on this GPU: (backend, engine path).
    Only for tests that already skip unless the full TensorRT and a GPU are here."""
    from pipeline.backends.trt_backends import choose_backend
    from pipeline.config import load_config
    from pipeline.hardware import detect_gpus
    from pipeline.stages.build import build_all
    cfg = load_config(workspace / "models.yaml")
    gpus = detect_gpus()
    backend = choose_backend("tensorrt", None, gpus)
    summary, errors = build_all(cfg, cfg.models[:1], backend, gpus)
    assert not errors, [e.render() for e in errors]
    return backend, Path(summary["set"]) / "yolo/yolov8n.engine"
