"""Issue 9, security: checkpoints load safely by default, trust is explicit and recorded,
sha256 pins refuse a changed file before anything is loaded, no auto-install, and killed
exports leave no checkpoint copies behind. Payloads are built here, never checked in."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.stages import export as export_stage
from tests.conftest import REPO, fresh_python, run_cli, write_config

pytestmark = pytest.mark.slow


class _Payload:
    """Unpickling this runs a shell command (what a trojaned checkpoint does)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"echo ran >> {self.marker}",))


def _add_to_checkpoint(path: Path, **extra) -> None:
    """Rewrite a (trusted, our own) demo checkpoint with extra top-level entries."""
    import torch
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    ckpt.update(extra)
    torch.save(ckpt, path)


@pytest.fixture
def trojan(workspace, tmp_path):
    marker = tmp_path / "payload-ran"
    _add_to_checkpoint(workspace / "yolo" / "yolov8n.pt", extra=_Payload(marker))
    return workspace, marker


def test_allow_list_is_derived_and_cannot_execute():
    import builtins

    import torch.nn
    from ultralytics.nn import modules, tasks

    from pipeline.checkpoint import FORBIDDEN_MODULES, allowed_globals
    allow = allowed_globals()
    # derived from the installed packages: layer, model and data classes
    for cls in (tasks.DetectionModel, tasks.PoseModel, modules.Conv, modules.C2f, modules.Pose, modules.DFL,
                torch.nn.Conv2d, torch.nn.SiLU, torch.nn.Sequential, torch.nn.Upsample):
        assert allow[f"{cls.__module__}.{cls.__qualname__}"] is cls
    assert "ultralytics.utils.IterableSimpleNamespace" in allow
    assert len(allow) > 200, "torch.nn and ultralytics.nn together hold hundreds of layer classes"
    # nothing that can run code
    for name, obj in allow.items():
        assert name.split(".")[0] not in FORBIDDEN_MODULES, name
        assert obj not in vars(builtins).values(), name
        assert isinstance(obj, type) or name.endswith("multiarray.scalar"), name
    for name in ("builtins.eval", "builtins.exec", "builtins.getattr", "posix.system", "os.system",
                 "subprocess.Popen", "subprocess.check_output", "builtins.__import__", "functools.partial"):
        assert name not in allow


def test_demo_checkpoints_load_safely(exported):
    cfg = load_config(exported / "models.yaml")
    for spec in cfg.models:
        rec = json.loads(export_stage.onnx_paths(cfg, spec)["record"].read_text())
        assert rec["trusted"] is False and rec["unsafe_globals"] == [], spec.name


def test_trojaned_checkpoint_is_refused_and_nothing_runs_or_publishes(trojan):
    ws, marker = trojan
    res = run_cli("--config", str(ws / "models.yaml"), "run", "--no-demo")
    assert res.returncode == 1, res.stderr
    err = res.stderr
    assert "model 'human': checkpoint needs unsafe loading" in err
    assert "posix.system" in err and str(ws / "yolo" / "yolov8n.pt") in err
    assert "Next step:" in err and "--trust-checkpoint" in err and "trust: true" in err
    assert "Traceback" not in err
    assert not marker.exists(), "the payload ran"
    assert not (ws / "engines").exists() or not any((ws / "engines").iterdir()), "nothing may be published"
    # the library entry refuses too (no CLI involved)
    cfg = load_config(ws / "models.yaml")
    records, errors = export_stage.export_all(cfg, cfg.models[:1])
    assert records == [] and "posix.system" in errors[0].render()
    assert not marker.exists()


def test_trusted_checkpoint_loads_and_is_recorded(trojan):
    ws, marker = trojan
    res = run_cli("--config", str(ws / "models.yaml"), "--json", "export", "--model", "human", "--trust-checkpoint")
    assert res.returncode == 0, res.stderr
    assert marker.exists(), "trusted: the file's code ran, as the user allowed"
    rec = json.loads((ws / "onnx" / "yolo" / "yolov8n.export.json").read_text())
    assert rec["trusted"] is True and rec["unsafe_globals"] == ["posix.system"]
    assert json.loads(res.stdout)["exports"][0]["trusted"] is True
    # trust withdrawn: the export made under trust is not reused, the file is refused
    marker.unlink()
    res = run_cli("--config", str(ws / "models.yaml"), "export", "--model", "human")
    assert res.returncode == 1 and "checkpoint needs unsafe loading" in res.stderr
    assert not marker.exists()
    # per-model trust in models.yaml, bound to the file by its pin: the export is reused (same file)
    digest = export_stage.sha256_file(ws / "yolo" / "yolov8n.pt")
    text = (ws / "models.yaml").read_text().replace("task: detect}", f"task: detect, trust: true, sha256: {digest}}}", 1)
    write_config(ws, text)
    res = run_cli("--config", str(ws / "models.yaml"), "--json", "export", "--model", "human")
    assert res.returncode == 0 and json.loads(res.stdout)["exports"][0]["status"] == "cached"


# -- issue 25.1: every form of trust names the file it trusts ------------------------------------------

def _swap_in_trojan(ws: Path, marker: Path) -> str:
    """Copy a trojan over the honest checkpoint at the same path; returns the trojan's digest."""
    _add_to_checkpoint(ws / "yolo" / "yolov8n.pt", extra=_Payload(marker))
    return export_stage.sha256_file(ws / "yolo" / "yolov8n.pt")


def _run_human(ws: Path, *args: str, env: dict | None = None):
    return run_cli("--config", str(ws / "models.yaml"), "--json", "export", "--model", "human", *args,
                   env={**os.environ, **(env or {})})


@pytest.mark.parametrize("form", ["trust: true", "ENGINES_EXPORT_TRUST_CHECKPOINT=1", "ENGINES_EXPORT_TRUST=yes",
                                  "variable with the honest digest", "trust: true with the honest pin"])
def test_a_trojan_swapped_in_after_trust_was_given_never_runs(workspace, tmp_path, form):
    """Issue 25.1: trust given for the honest file in each form; an honest run; then a trojan copied over
    it and a run with the same models.yaml and environment: refused, the payload never runs."""
    ws, marker = workspace, tmp_path / "payload-ran"
    honest = export_stage.sha256_file(ws / "yolo" / "yolov8n.pt")
    env: dict = {}
    yaml_text = (ws / "models.yaml").read_text()
    if form.startswith("trust: true"):
        pin = f", sha256: {honest}" if "pin" in form else ""
        write_config(ws, yaml_text.replace("task: detect}", f"task: detect, trust: true{pin}}}", 1))
    elif form.startswith("ENGINES_"):
        name, value = form.split("=")
        env = {name: value}
    else:
        env = {"ENGINES_EXPORT_TRUST_CHECKPOINT": f"sha256:{honest}"}
    first = _run_human(ws, env=env)
    if form in ("trust: true", "ENGINES_EXPORT_TRUST_CHECKPOINT=1", "ENGINES_EXPORT_TRUST=yes"):
        # a form that names no file is refused at once, before anything is loaded
        assert first.returncode != 0 and "Traceback" not in first.stderr
        assert "sha256" in first.stderr
    else:
        assert first.returncode == 0, first.stderr
    _swap_in_trojan(ws, marker)
    second = _run_human(ws, env=env)
    assert second.returncode != 0, second.stdout
    assert not marker.exists(), f"the payload ran under {form}"
    assert "Traceback" not in second.stderr
    doc = json.loads(second.stdout)
    assert doc["ok"] is False and doc["errors"][0]["error"]


def test_trust_given_by_digest_loads_exactly_that_file(workspace, tmp_path):
    """The positive side: the variable naming the trojan's own digest is trust in that file (the user
    vouches for it), and it is recorded; a second, different trojan under the same variable is refused."""
    ws, marker = workspace, tmp_path / "payload-ran"
    honest = (ws / "yolo" / "yolov8n.pt").read_bytes()
    trojan = _swap_in_trojan(ws, marker)
    res = _run_human(ws, env={"ENGINES_EXPORT_TRUST_CHECKPOINT": f"sha256:{trojan},{'0' * 64}"})
    assert res.returncode == 0, res.stderr
    assert marker.exists() and json.loads(res.stdout)["exports"][0]["trusted"] is True
    marker.unlink()
    (ws / "yolo" / "yolov8n.pt").write_bytes(honest)   # (loading the trojan here would run it)
    _add_to_checkpoint(ws / "yolo" / "yolov8n.pt", another=_Payload(marker))   # a different trojan now
    res = _run_human(ws, env={"ENGINES_EXPORT_TRUST_CHECKPOINT": f"sha256:{trojan}"})
    assert res.returncode == 1 and "checkpoint needs unsafe loading" in res.stderr
    assert not marker.exists()


def test_autoinstall_is_off_in_every_stage():
    assert fresh_python("import os, pipeline, ultralytics.utils.checks as c; "
                        "print(c.AUTOINSTALL, os.environ['YOLO_AUTOINSTALL'])") == ["False False"]
    # ultralytics imported first (its flag already read): importing pipeline still turns it off
    assert fresh_python("import ultralytics.utils.checks as c; import pipeline; "
                        "print(c.AUTOINSTALL)") == ["False"]


def test_missing_module_in_a_trusted_checkpoint_installs_nothing(workspace, tmp_path):
    """A checkpoint naming a module that is not installed: Ultralytics would pip-install it."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "sec_absent_pkg.py").write_text("class Thing:\n    pass\n")
    sys.path.insert(0, str(mod_dir))
    try:
        import sec_absent_pkg
        _add_to_checkpoint(workspace / "yolo" / "yolov8n.pt", extra=sec_absent_pkg.Thing())
    finally:
        sys.path.remove(str(mod_dir))
        sys.modules.pop("sec_absent_pkg", None)
    code = f"""
import json
from pipeline.config import load_config
from pipeline.stages import export as ex
from ultralytics.nn import tasks
from ultralytics.utils import checks
seen = []
real = tasks.check_requirements
def spy(*a, **k):
    seen.append(checks.AUTOINSTALL)
    return real(*a, **k)
tasks.check_requirements = spy
cfg = load_config({str(workspace / 'models.yaml')!r})
r, e = ex.export_all(cfg, cfg.models[:1], force=True, trust=True)
print("RESULT", json.dumps(seen))
print("RESULT", e[0].render().splitlines()[0] if e else "no error")
"""
    lines = [line.removeprefix("RESULT ") for line in fresh_python(code) if line.startswith("RESULT ")]
    assert json.loads(lines[0]) == [False], "check_requirements ran with auto-install on"
    assert "sec_absent_pkg" in lines[1] and "model 'human'" in lines[1]


def test_wrong_pin_refuses_before_torch_is_imported(workspace):
    text = (workspace / "models.yaml").read_text().replace("task: detect}", f"task: detect, sha256: {'0' * 63}f}}", 1)
    write_config(workspace, text)
    code = ("import sys; from pipeline.config import load_config; from pipeline.stages.export import export_all; "
            f"cfg = load_config({str(workspace / 'models.yaml')!r}); r, e = export_all(cfg, cfg.models); "
            "print(e[0].render().replace(chr(10), ' ')); print('torch' in sys.modules, 'ultralytics' in sys.modules)")
    msg, imported = fresh_python(code)
    assert imported == "False False"
    actual = export_stage.sha256_file(workspace / "yolo" / "yolov8n.pt")
    assert "model 'human': sha256 pin mismatch" in msg and "0" * 63 + "f" in msg and actual in msg
    assert "yolov8n.pt" in msg and "Next step:" in msg
    res = run_cli("--config", str(workspace / "models.yaml"), "run", "--no-demo")
    assert res.returncode == 1 and "sha256 pin mismatch" in res.stderr


def test_right_pin_passes_and_passthrough_pin_is_checked(workspace):
    digest = export_stage.sha256_file(workspace / "yolo" / "yolov8n.pt")
    text = (workspace / "models.yaml").read_text().replace("task: detect}", f"task: detect, sha256: {digest}}}", 1)
    text = text.replace("handwash_xgb.joblib}", f"handwash_xgb.joblib, sha256: '{'1' * 64}'}}")
    write_config(workspace, text)
    res = run_cli("--config", str(workspace / "models.yaml"), "--json", "export")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert [r["status"] for r in doc["exports"]] == ["cached"] * 3
    assert [e["model"] for e in doc["errors"]] == ["handwash"] and "sha256 pin mismatch" in doc["errors"][0]["error"]


def test_renamed_model_still_runs(workspace):
    text = (workspace / "models.yaml").read_text().replace("name: human,  ", "name: person, ")
    assert "person" in text
    write_config(workspace, text)
    res = run_cli("--config", str(workspace / "models.yaml"), "--json", "export", "--model", "person")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)["exports"][0]
    assert (rec["model"], rec["status"]) == ("person", "cached")
    res = run_cli("--config", str(workspace / "models.yaml"), "--json", "run", "--model", "person", "--no-demo",
                  "--backend", "tensorrt-rtx", "--target", "sm89")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert list(doc["build"]["models"]) == ["person"]


def _leftover(onnx_dir: Path, pid: int, host: str | None = None) -> Path:
    d = onnx_dir / "yolo" / f"{export_stage.TEMP_PREFIX}{pid}-abc123"
    d.mkdir(parents=True)
    (d / export_stage.TEMP_OWNER).write_text(f"{host or socket.gethostname()} {pid}\n")
    (d / "yolov8n.pt").write_bytes(b"checkpoint copy")
    return d


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_export_folders_are_removed_by_the_next_export_and_clean(workspace):
    onnx_dir = workspace / "onnx"
    dead = _leftover(onnx_dir, _dead_pid())
    live = _leftover(onnx_dir, os.getpid())  # this test's process: an export still running
    other_host = _leftover(onnx_dir, 1, host="another-host")
    res = run_cli("--config", str(workspace / "models.yaml"), "export")
    assert res.returncode == 0, res.stderr
    assert not dead.exists() and live.exists() and other_host.exists()
    dead = _leftover(onnx_dir, _dead_pid())
    old = time.time() - 2 * export_stage.FOREIGN_TEMP_AGE_S
    os.utime(other_host, (old, old))
    res = run_cli("--config", str(workspace / "models.yaml"), "clean", "--yes")
    assert res.returncode == 0, res.stderr
    assert not dead.exists() and not other_host.exists() and live.exists()
    shutil.rmtree(live)


def test_sigkilled_export_leaves_a_folder_that_clean_removes(workspace):
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(workspace / "models.yaml"),
                             "export", "--model", "human", "--force"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    found: list[Path] = []
    while time.time() < deadline and not found and proc.poll() is None:
        found = [d for d in (workspace / "onnx" / "yolo").glob(export_stage.TEMP_PREFIX + "*")
                 if (d / "yolov8n.pt").is_file()]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert found and found[0].exists(), "the export's work folder (with the checkpoint copy) was not seen"
    res = run_cli("--config", str(workspace / "models.yaml"), "clean", "--yes")
    assert res.returncode == 0, res.stderr
    assert not found[0].exists()
    assert (workspace / "yolo" / "yolov8n.pt").is_file(), "the checkpoint itself is never removed"


# -- issue 17: a pickle the scan cannot read needs unsafe loading ------------------------------------

def _hand_written_checkpoint(path: Path) -> Path:
    """A torch-style zip whose data.pkl is a protocol-0 pickle written by hand (opcodes outside
    torch's weights-only subset: the scan cannot read it, so cannot prove it safe)."""
    import pickle
    import zipfile
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"model": "yolov8n", "epoch": 1}, protocol=0))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


def test_an_unscannable_pickle_needs_unsafe_loading(tmp_path):
    from pipeline.checkpoint import TRUST_FIX, check_loadable
    from pipeline.errors import PipelineError
    ckpt = _hand_written_checkpoint(tmp_path / "hand.pt")
    with pytest.raises(PipelineError) as info:
        check_loadable("human", ckpt, trusted=False)
    err = info.value
    assert err.what.startswith("checkpoint needs unsafe loading: the safe-load scan cannot read its pickle")
    assert err.fix == TRUST_FIX and err.model == "human" and err.file == str(ckpt)
    assert any("Unsupported operand" in d for d in err.details)       # the reason, as a detail
    rec = check_loadable("human", ckpt, trusted=True)                   # trust is the user's call, and recorded
    assert rec["trusted"] is True and rec["unsafe_globals"][0].startswith("(a pickle the scan cannot read")


def test_export_of_an_unscannable_pickle_asks_for_trust_not_a_report(tmp_path):
    ws = tmp_path / "ws"
    _hand_written_checkpoint(ws / "yolo" / "yolov8n.pt")
    write_config(ws, "defaults: {imgsz: 320, opset: 12, precision: fp16, batch: 1}\n"
                     "models:\n  - {name: human, source: yolo/yolov8n.pt, task: detect}\n")
    res = run_cli("--config", str(ws / "models.yaml"), "--json", "export", "--model", "human")
    assert res.returncode == 1, res.stderr
    err = json.loads(res.stdout)["errors"][0]
    assert err["model"] == "human" and "checkpoint needs unsafe loading" in err["error"]
    assert "--trust-checkpoint" in err["fix"] and "trust: true" in err["fix"] and "report" not in err["fix"]
    assert "UnpicklingError" not in res.stdout + res.stderr and "Traceback" not in res.stderr


# -- issue 17: trust is bound to the file's digest, not its path --------------------------------------

def _bench_inputs(ws: Path):
    cfg = load_config(ws / "models.yaml")
    spec = next(s for s in cfg.models if s.name == "human")
    paths = export_stage.onnx_paths(cfg, spec)
    return spec, json.loads(paths["record"].read_text()), paths["fp32"]


def _bench(spec, record, fp32):
    from pipeline.stages.bench import benchmark_model
    return benchmark_model(spec, record, spec.source_path, fp32, iterations=2, warmup=1, device="cpu",
                           views=("engine",), ort=False)


def test_benchmark_refuses_a_checkpoint_swapped_after_a_trusted_export(workspace, tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.fsutil import sha256_file
    spec, record, fp32 = _bench_inputs(workspace)
    assert [r["runtime"] for r in _bench(spec, record, fp32)] == ["torch fp32"]      # the exported file loads
    record = {**record, "trusted": True}               # the honest file was exported under --trust-checkpoint
    marker = tmp_path / "payload-ran"
    _add_to_checkpoint(spec.source_path, extra=_Payload(marker))                      # then swapped for a trojan
    with pytest.raises(PipelineError) as info:
        _bench(spec, record, fp32)
    err = info.value
    assert not marker.exists(), "the payload ran on the old file's trust"
    assert err.model == "human" and err.file == str(spec.source_path)
    assert "changed since it was exported" in err.what
    assert record["sha256"]["source"] in err.what and sha256_file(spec.source_path) in err.what
    assert "engines run" in err.fix


def test_benchmark_of_a_checkpoint_the_safe_loader_refuses_is_an_error_not_a_traceback(workspace, tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.fsutil import sha256_file
    spec, record, fp32 = _bench_inputs(workspace)
    marker = tmp_path / "payload-ran"
    _add_to_checkpoint(spec.source_path, extra=_Payload(marker))
    record = {**record, "trusted": False, "sha256": {**record["sha256"], "source": sha256_file(spec.source_path)}}
    with pytest.raises(PipelineError) as info:
        _bench(spec, record, fp32)
    assert "checkpoint needs unsafe loading" in info.value.what and "posix.system" in info.value.what
    assert "--trust-checkpoint" in info.value.fix and not marker.exists()


def test_the_gate_loads_the_bytes_it_checked(workspace, tmp_path):
    """What is hashed and scanned is a private copy, and that copy is what loads: a file swapped
    after the check is never read."""
    from pipeline.checkpoint import gate
    from pipeline.fsutil import sha256_file
    spec, record, _ = _bench_inputs(workspace)
    marker = tmp_path / "payload-ran"
    with gate("human", spec.source_path, expected_sha256=record["sha256"]["source"], trusted=False) as decision:
        assert decision.path != spec.source_path and sha256_file(decision.path) == record["sha256"]["source"]
        _add_to_checkpoint(spec.source_path, extra=_Payload(marker))    # swapped while the gate is open
        from pipeline.backends.torch import load_yolo
        assert load_yolo(decision.path).task == "detect" and not marker.exists()
    assert not decision.path.exists()                                  # the private copy is gone
