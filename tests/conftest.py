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
    from pipeline.builders.choose import choose_backend
    from pipeline.config import load_config
    from pipeline.hardware import detect_gpus
    from pipeline.stages.build import build_all
    cfg = load_config(workspace / "models.yaml")
    gpus = detect_gpus()
    backend = choose_backend("tensorrt", None, gpus)
    summary, errors = build_all(cfg, cfg.models[:1], backend, gpus)
    assert not errors, [e.render() for e in errors]
    return backend, Path(summary["set"]) / "yolo/yolov8n.engine"


# --------------------------------------------------------------------------- Docker clean-up

DOCKER_TEST_LABEL = "org.engines.test"  # value: the session id; on every image the tests make


class DockerLeftovers:
    """What this session makes on a Docker daemon, removed when the session ends (issue 18).

    The Docker tests import one base image labelled ``org.engines.test=<session>``; every image
    built FROM it, every build's intermediate container and every container run from them
    inherits the label, so the session removes them by label. Volumes carry no inherited label:
    those that appeared during the session and no container uses any more are removed too."""

    def __init__(self) -> None:
        import uuid
        self.session = uuid.uuid4().hex[:12]
        self.label = f"{DOCKER_TEST_LABEL}={self.session}"
        self.client = None
        self.volumes_before: set[str] = set()

    def attach(self, client) -> None:
        if self.client is None:
            self.client = client
            self.volumes_before = {v["Name"] for v in client.api.volumes().get("Volumes") or []}

    def left(self) -> tuple[list, list]:
        f = {"label": self.label}
        return self.client.api.containers(all=True, filters=f), self.client.api.images(all=True, filters=f)

    def clean(self) -> None:
        import docker
        api = self.client.api
        for c in api.containers(all=True, filters={"label": self.label}):
            try:
                api.remove_container(c["Id"], force=True, v=True)
            except docker.errors.NotFound:
                pass
        for _ in range(5):  # children before parents: repeat until nothing more goes
            images = api.images(all=True, filters={"label": self.label})
            if not images:
                break
            for img in sorted(images, key=lambda i: i.get("Created", 0), reverse=True):
                try:
                    api.remove_image(img["Id"], force=True)
                except docker.errors.APIError:
                    pass
        for v in api.volumes().get("Volumes") or []:
            if v["Name"] not in self.volumes_before:
                try:
                    api.remove_volume(v["Name"])
                except docker.errors.APIError:
                    pass  # still in use (then not ours to remove)


@pytest.fixture(scope="session")
def docker_leftovers():
    """Session-wide: remove what the Docker tests made, then fail loudly if anything stayed."""
    tracker = DockerLeftovers()
    yield tracker
    if tracker.client is None:
        return
    tracker.clean()
    containers, images = tracker.left()
    if containers or images:
        pytest.fail(f"the tests left Docker objects labelled {tracker.label}: containers "
                    f"{[c['Id'][:12] for c in containers]}, images {[i['Id'][:19] for i in images]}")


@pytest.fixture
def models(tmp_path) -> Path:
    """A models folder holding a copy of the shipped models.yaml (no checkpoints)."""
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(REPO / "models" / "models.yaml", d / "models.yaml")
    return d


def engines(*args, models: Path):
    """The CLI in this process (click's runner) on ``models``' models.yaml."""
    from click.testing import CliRunner

    from pipeline.cli import cli
    return CliRunner().invoke(cli, ["--config", str(models / "models.yaml"), *args], catch_exceptions=False)
