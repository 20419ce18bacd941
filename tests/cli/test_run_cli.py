"""End-to-end through the CLI on real builds (TensorRT for RTX): the manifest a build
writes is the one resolve judges, verification results do not stick once their cause
is fixed, and file-system failures are paragraphs with a next step."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.builders import TensorRTRTX
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow
pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT for RTX not installed (pip install '.[rtx]')")
FACTS = REPO / "tests" / "data" / "gpu-facts"
RTX = f"tensorrt-rtx=={TensorRTRTX.version()}"


def engines(ws: Path, *args: str):
    return run_cli("--config", str(ws / "models.yaml"), *args)


@pytest.fixture(scope="module")
def built_all_targets(tmp_path_factory, exported) -> Path:
    """`engines run` as users type it: every RTX target, the manifest written by the build."""
    ws = tmp_path_factory.mktemp("roundtrip") / "ws"
    shutil.copytree(exported, ws)
    res = engines(ws, "run")
    assert res.returncode == 0, res.stderr
    return ws


def test_round_trip_build_then_resolve_on_rtx4090_and_h100(built_all_targets, tmp_path):
    ws = built_all_targets
    (tag,) = [d.name for d in (ws / "engines").iterdir() if not d.name.startswith(".")]
    assert json.loads((ws / "engines" / tag / "manifest.json").read_text())["cuda"] == "13.0"  # tensorrt-rtx-cu13
    # the published facts of that RTX 4090 show driver 535: too old for a CUDA 13 set
    r = engines(ws, "--json", "resolve", "--gpu-facts", str(FACTS / "rtx4090.csv"), "--runtime", RTX,
                "--allow-demo", "--no-link")
    refusal = json.loads(r.stdout)["errors"][0]
    assert r.returncode == 1 and refusal["sets"][0]["kinds"] == ["driver"]
    assert "R580 or newer" in refusal["fix"]
    # the same card on an R580 driver gets the set
    upgraded = tmp_path / "rtx4090-r580.csv"
    upgraded.write_text((FACTS / "rtx4090.csv").read_text().replace("535.86.05", "580.95.05"))
    r = engines(ws, "--json", "resolve", "--gpu-facts", str(upgraded), "--runtime", RTX, "--allow-demo", "--no-link")
    doc = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert doc["chosen"] == tag and "_89_" in tag
    assert any("demo weights" in w for w in doc["warnings"])
    assert any("pending" in w for w in doc["warnings"])  # built ahead of time: no GPU has run them yet
    r = engines(ws, "--json", "resolve", "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", RTX,
                "--allow-demo", "--no-link")
    refusal = json.loads(r.stdout)["errors"][0]   # the refusal carries every set's verdict
    assert r.returncode == 1 and refusal["chosen"] is None
    (v,) = refusal["sets"]
    assert v["kinds"] == ["cc"] and "this GPU is sm90" in v["reasons"][0]
    assert "TensorRT for RTX does not build for sm90" in refusal["fix"]


def test_failed_verification_does_not_stick(built_all_targets, tmp_path):
    """Tighten the thresholds: `run` re-judges (no rebuild) and fails, and list says failed;
    loosen them again: the next `run` passes with the same engines."""
    ws = tmp_path / "ws"
    shutil.copytree(built_all_targets, ws)
    (set_dir,) = [d for d in (ws / "engines").iterdir() if not d.name.startswith(".")]
    engine = set_dir / "yolo" / "yolov8n.engine"
    before = engine.stat().st_ino
    original = (ws / "models.yaml").read_text()
    strict = original.replace("defaults: {", "defaults: {verify: {fp16: {min_cosine: 0.9999999999}}, ")
    (ws / "models.yaml").write_text(strict)
    r = engines(ws, "run")
    assert r.returncode == 1 and "re-verifying the onnx level" in r.stdout, r.stdout + r.stderr
    assert "fails the onnx-level verification under the changed verify: thresholds in models.yaml" in r.stderr
    listed = json.loads(engines(ws, "--json", "list").stdout)["sets"][0]
    assert listed["status"] == "failed" and any("ONNX-level verification failed" in x for x in listed["reasons"])
    (ws / "models.yaml").write_text(original)
    r = engines(ws, "run")
    assert r.returncode == 0, r.stderr
    listed = json.loads(engines(ws, "--json", "list").stdout)["sets"][0]
    assert listed["status"] == "pending" and listed["reasons"] == []
    assert engine.stat().st_ino == before  # judged again, never rebuilt


@contextlib.contextmanager
def tmpfs(path: Path, size: str, readonly_after=None):
    """A real small or read-only file system (root only); skips where mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()}); needs root with CAP_SYS_ADMIN")
    try:
        if readonly_after is not None:
            readonly_after(path)
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _paragraph(res, *needles):
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "Next step:" in res.stderr, res.stderr
    for n in needles:
        assert n.lower() in res.stderr.lower(), res.stderr


def test_read_only_models_folder_is_a_paragraph(built_all_targets, tmp_path):
    def fill(p):
        shutil.copytree(built_all_targets, p, dirs_exist_ok=True)
    with tmpfs(tmp_path / "ro", "400m", readonly_after=fill) as ro:
        (ro / "models.yaml").exists()
        _paragraph(engines(ro, "verify"), "read-only file system")
        _paragraph(engines(ro, "clean", "--yes"), "read-only file system")
        _paragraph(engines(ro, "run", "--force"), "read-only")
    with tmpfs(tmp_path / "ro2", "1m", readonly_after=lambda p: (p / "models.yaml").write_text(
            (built_all_targets / "models.yaml").read_text())) as ro:
        _paragraph(engines(ro, "demo-models"), "read-only file system")


def test_full_disk_names_the_disk(built_all_targets, tmp_path):
    """Room for the checkpoints and ONNX, not for the engines: the next step is the disk."""
    src = built_all_targets
    need = sum(f.stat().st_size for f in src.rglob("*") if f.is_file() and "engines" not in f.parts)
    with tmpfs(tmp_path / "small", f"{need // 1024 + 2048}k") as small:
        for f in src.rglob("*"):
            if f.is_file() and "engines" not in f.relative_to(src).parts:
                (small / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, small / f.relative_to(src))
        res = engines(small, "build", "--backend", "tensorrt-rtx")
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert "disk" in res.stderr and "--force" not in res.stderr.split("Next step:")[-1]
        assert not [d for d in (small / "engines").iterdir() if not d.name.startswith(".")] \
            if (small / "engines").exists() else True
