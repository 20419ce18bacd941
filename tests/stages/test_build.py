"""Build stage: real TensorRT for RTX builds of the exported demo models (no GPU needed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from pipeline import engine_set as es
from pipeline.builders import TensorRTRTX
from pipeline.builders.choose import parse_target
from pipeline.config import load_config
from pipeline.engine_file import read_engine
from pipeline.errors import PipelineError
from pipeline.fsutil import sha256_file
from pipeline.stages.build import build_all
from pipeline.stages.export import onnx_paths
from tests.conftest import REPO, fresh_python, run_cli, write_config

pytestmark = pytest.mark.slow
pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT for RTX not installed (pip install '.[rtx]')")
H100 = REPO / "tests" / "data" / "gpu-facts" / "h100-80gb-hbm3.csv"
TAG = f"trtrtx-{TensorRTRTX.version()}-sm86"


def _build(ws: Path, *extra: str):
    return run_cli("--config", str(ws / "models.yaml"), "--json", "build", "--backend", "tensorrt-rtx",
                   "--target", "sm86", *extra)


@pytest.fixture(scope="module")
def built(tmp_path_factory, exported) -> Path:
    """The demo set built once for sm86 (copy before changing)."""
    import shutil
    ws = tmp_path_factory.mktemp("built") / "ws"
    shutil.copytree(exported, ws)
    res = _build(ws)
    assert res.returncode == 0, res.stderr
    return ws


def test_set_layout_manifest_and_engine_format(built):
    set_dir = built / "engines" / TAG
    m = json.loads((set_dir / "manifest.json").read_text())
    assert (m["backend"], m["trt_version"], m["targets"], m["gpu"]) == (
        "tensorrt-rtx", TensorRTRTX.version(), ["8.6"], None)
    assert m["demo"] is True and set(m["engines"]) == {"human", "hairnet", "pose"}
    assert m["passthrough"]["handwash"]["sha256"] == sha256_file(set_dir / "handwash_xgb.joblib")
    from ultralytics.nn.backends.base import BaseBackend  # the real client's reader
    for name, stem in (("human", "yolo/yolov8n"), ("hairnet", "hairnet_detection/hairnet_detection"),
                       ("pose", "yolo/yolov8n-pose")):
        e = m["engines"][name]
        assert (e["engine"], e["plan"], e["status"]) == (f"{stem}.engine", f"{stem}.plan", "ok")
        engine, plan = set_dir / e["engine"], set_dir / e["plan"]
        assert e["sha256"]["engine"] == sha256_file(engine) and e["sha256"]["plan"] == sha256_file(plan)
        offset, meta = BaseBackend.engine_header(engine)
        assert meta["task"] == e["task"] and meta["imgsz"] == [320, 320] and meta["stride"] == 32
        assert engine.read_bytes()[offset:] == plan.read_bytes()
        assert (meta.get("kpt_shape") == [17, 3]) == (name == "pose")
        assert e["options"]["onnx"] == "fp16" and e["options"]["strongly_typed"] is True
        assert e["verification"]["onnx"]["status"] == "passed"
        assert e["verification"]["engine"]["status"] == "pending"
        assert e["build_seconds"] > 0 and "--target sm86" in e["reproduce"]
    names = BaseBackend.engine_header(set_dir / "hairnet_detection/hairnet_detection.engine")[1]["names"]
    assert list(names.values()) == ["hairnet", "no_hairnet"]
    assert not list(set_dir.rglob("*.tmp")) and not list(set_dir.rglob(".*"))
    staging = built / "engines" / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), "staging is cleaned up"


def test_plan_deserializes_only_where_it_can_run(built):
    """The TensorRT for RTX runtime reads the plan; on this machine there is no target GPU."""
    _, plan = read_engine(built / "engines" / TAG / "yolo/yolov8n.engine")
    assert len(plan) > 1_000_000


def test_second_build_does_nothing_and_list_shows_set(built):
    before = (built / "engines" / TAG / "manifest.json").read_bytes()
    res = _build(built)
    assert res.returncode == 0
    assert json.loads(res.stdout)["build"]["models"] == {"human": "cached", "hairnet": "cached", "pose": "cached"}
    assert (built / "engines" / TAG / "manifest.json").read_bytes() == before
    res = run_cli("--config", str(built / "models.yaml"), "--json", "list")
    sets = json.loads(res.stdout)["sets"]
    assert [(s["tag"], s["status"], s["demo"], s["models"]) for s in sets] == [
        (TAG, "pending", True, ["hairnet", "human", "pose"])]


def test_incremental_check_imports_no_tensorrt(built):
    code = ("import sys; from pipeline.config import load_config; from pipeline.stages.build import build_all; "
            "from pipeline.builders import TensorRTRTX; "
            f"cfg = load_config({str(built / 'models.yaml')!r}); "
            "s, e = build_all(cfg, cfg.models, TensorRTRTX(['8.6']), []); assert not e, e; "
            "print(sorted(set(s['models'].values())), 'tensorrt_rtx_bindings' in sys.modules, 'torch' in sys.modules)")
    assert fresh_python(code) == ["['cached'] False False"]


def test_unparseable_op_lists_node_and_op(workspace):
    cfg = load_config(workspace / "models.yaml")
    spec = cfg.models[0]
    node = helper.make_node("FancyOp", ["images"], ["output0"], name="fancy_node_1", domain="")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 320, 320])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 320, 320])])
    bad = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    _replace_onnx(cfg, spec, bad.SerializeToString())
    with pytest.raises(PipelineError) as info:
        _run_build(cfg, [spec])
    msg = info.value.render()
    assert "model 'human'" in msg and "ONNX parser rejected" in msg
    assert "fancy_node_1" in msg and "FancyOp" in msg


def test_truncated_onnx(workspace):
    cfg = load_config(workspace / "models.yaml")
    spec = cfg.models[0]
    data = onnx_paths(cfg, spec)["fp16"].read_bytes()
    _replace_onnx(cfg, spec, data[: len(data) // 3])
    with pytest.raises(PipelineError) as info:
        _run_build(cfg, [spec])
    assert "ONNX parser rejected" in info.value.render() and "yolov8n.fp16.onnx" in info.value.render()


def test_workspace_larger_than_free_memory(workspace):
    res = run_cli("--config", str(workspace / "models.yaml"), "build", "--backend", "tensorrt-rtx",
                  "--target", "sm86", "--workspace", "200", "--gpu-facts", str(H100), "--model", "human")
    assert res.returncode == 1
    assert "workspace 200 GiB exceeds the" in res.stderr and "NVIDIA H100 80GB HBM3" in res.stderr
    assert "Next step: set workspace:" in res.stderr
    assert not (workspace / "engines" / TAG).exists()


def test_unknown_target():
    with pytest.raises(PipelineError, match="cannot target compute capability 9.0"):
        TensorRTRTX(["9.0"])
    with pytest.raises(ValueError):
        parse_target("smXY")
    res = run_cli("build", "--backend", "tensorrt-rtx", "--target", "sm90")
    assert res.returncode == 2 and "sm86" in res.stderr


def test_read_only_output_folder(workspace):
    (workspace / "engines").write_text("a file where the folder should be")  # root ignores chmod
    res = _build(workspace, "--model", "human")
    assert res.returncode == 1 and "engines folder is not writable" in res.stderr


def test_failed_verification_keeps_previous_engine(built, tmp_path):
    """A damaged FP16 ONNX (one conv scaled) fails the gate; the set keeps its engine."""
    import shutil

    import numpy as np
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    cfg = load_config(ws / "models.yaml")
    spec = cfg.models[0]
    set_dir = ws / "engines" / TAG
    before = {p: sha256_file(p) for p in set_dir.rglob("*") if p.is_file()}
    proto = onnx.load(str(onnx_paths(cfg, spec)["fp16"]))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    init = next(i for i in proto.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float16(3), init.name))
    _replace_onnx(cfg, spec, proto.SerializeToString())
    res = _build(ws, "--model", "human")
    assert res.returncode == 1
    assert "failed verification and was not published" in res.stderr
    after = {p: sha256_file(p) for p in set_dir.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert after == {p: h for p, h in before.items() if p.name != "manifest.json"}
    m = json.loads((set_dir / "manifest.json").read_text())
    assert m["engines"]["human"]["status"] == "ok"
    assert m["engines"]["human"]["last_attempt"]["status"] == "failed"
    assert es.load_set(set_dir).check_files() == []


def test_kill_during_build_leaves_previous_set_intact(built, tmp_path):
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    set_dir = ws / "engines" / TAG
    before = {p.relative_to(set_dir): sha256_file(p) for p in set_dir.rglob("*") if p.is_file()}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(ws / "models.yaml"), "build",
                             "--backend", "tensorrt-rtx", "--target", "sm86", "--force"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    staging = ws / "engines" / ".staging"
    deadline = time.time() + 120
    while time.time() < deadline and not (staging.exists() and any(staging.rglob("*.engine"))):
        time.sleep(0.05)
    assert any(staging.rglob("*.engine")), "the kill must land mid-build, with an engine staged"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    after = {p.relative_to(set_dir): sha256_file(p) for p in set_dir.rglob("*") if p.is_file()}
    assert after == before
    assert es.load_set(set_dir).check_files() == []
    # the next build cleans up after the killed one and still has nothing to do
    res = _build(ws)
    assert res.returncode == 0
    assert json.loads(res.stdout)["build"]["models"] == {"human": "cached", "hairnet": "cached", "pose": "cached"}
    assert not any(staging.iterdir())


def _replace_onnx(cfg, spec, data: bytes) -> None:
    """Swap the exported FP16 ONNX for ``data`` and keep the export record consistent."""
    paths = onnx_paths(cfg, spec)
    paths["fp16"].write_bytes(data)
    rec = json.loads(paths["record"].read_text())
    rec["sha256"]["fp16"] = sha256_file(paths["fp16"])
    paths["record"].write_text(json.dumps(rec))


def _run_build(cfg, specs):
    summary, errors = build_all(cfg, specs, TensorRTRTX(["8.6"]), [])
    if errors:
        raise errors[0]
    return summary


def test_verify_command_rechecks_and_reports(built, tmp_path):
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    res = run_cli("--config", str(ws / "models.yaml"), "--json", "verify")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["set"] == TAG and "| human | fp16 | passed |" in doc["report"]
    eng = doc["engines"]["pose"]
    assert eng["onnx"]["status"] == "passed" and eng["engine"]["status"] == "pending"
    assert eng["onnx"]["detections"]["mean_kpt_px"] < 8.0
    assert (ws / "engines" / TAG / "report.md").read_text() == doc["report"]
    # a tampered engine is refused before anything is compared
    engine = ws / "engines" / TAG / "yolo" / "yolov8n.engine"
    engine.write_bytes(engine.read_bytes()[:-10] + b"0123456789")
    res = run_cli("--config", str(ws / "models.yaml"), "verify", "--set", TAG)
    assert res.returncode == 1 and "yolo/yolov8n.engine: sha256 differs" in res.stderr
    res = run_cli("--config", str(ws / "models.yaml"), "verify", "--set", "nope")
    assert res.returncode == 2 and TAG in res.stderr


def test_dynamic_batch_builds_one_profile(tmp_path, demo_checkpoints):
    """batch: {min, opt, max} exports a dynamic ONNX (simplified, FP16 twin checked) and
    builds one optimization profile, recorded in the manifest and the engine metadata."""
    import shutil

    from ultralytics.nn.backends.base import BaseBackend
    ws = tmp_path / "dyn"
    shutil.copytree(demo_checkpoints, ws)
    text = (ws / "models.yaml").read_text().replace("batch: 1}", "batch: {min: 1, opt: 2, max: 4}}")
    write_config(ws, text)
    res = run_cli("--config", str(ws / "models.yaml"), "--json", "run", "--backend", "tensorrt-rtx",
                  "--target", "sm86", "--model", "human")
    assert res.returncode == 0, res.stderr
    rec = json.loads((ws / "onnx" / "yolo" / "yolov8n.export.json").read_text())
    assert rec["io"]["inputs"][0]["shape"][0] == "batch" and rec["simplify"]["applied"]
    m = json.loads((ws / "engines" / TAG / "manifest.json").read_text())["engines"]["human"]
    assert m["options"]["batch"] == {"min": 1, "opt": 2, "max": 4}
    assert m["verification"]["onnx"]["status"] == "passed" and m["verification"]["onnx"]["images"] == 2
    assert BaseBackend.engine_header(ws / "engines" / TAG / "yolo/yolov8n.engine")[1]["batch"] == 4


def test_two_builders_on_one_set_are_serialised(built, tmp_path):
    """While one process holds the set's lock, a second build waits instead of interleaving."""
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    set_dir = ws / "engines" / TAG
    with es.set_lock(set_dir):
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(ws / "models.yaml"), "build",
                                 "--backend", "tensorrt-rtx", "--target", "sm86", "--force", "--model", "human"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(4)
        assert proc.poll() is None, "the second builder must wait for the lock"
        assert not (ws / "engines" / ".staging").exists() or not any((ws / "engines" / ".staging").iterdir())
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert es.load_set(set_dir).check_files() == []


def test_verify_picks_the_set_this_host_can_run(built, tmp_path):
    """With a second set built by a TensorRT that is not installed here, verify still knows
    which set is this machine's (the TensorRT for RTX one) without --set."""
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    other = ws / "engines" / "trt-10.13.2.6-sm90"
    shutil.copytree(ws / "engines" / TAG, other)
    m = json.loads((other / "manifest.json").read_text())
    m.update(tag=other.name, backend="tensorrt", trt_version="10.13.2.6", targets=["9.0"])
    (other / "manifest.json").write_text(json.dumps(m))
    res = run_cli("--config", str(ws / "models.yaml"), "--json", "verify", "--model", "pose")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["set"] == TAG


def _snapshot(set_dir: Path) -> dict:
    return {p.relative_to(set_dir): sha256_file(p) for p in set_dir.rglob("*") if p.is_file()}


def test_interrupt_at_publish_leaves_previous_set_intact(built, tmp_path, monkeypatch):
    """Ctrl-C at the last moment (the swap) publishes nothing: the set is byte-identical."""
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    cfg = load_config(ws / "models.yaml")
    set_dir = ws / "engines" / TAG
    before = _snapshot(set_dir)

    def interrupted(new_dir, dest):
        raise KeyboardInterrupt
    monkeypatch.setattr(es, "swap_in", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_all(cfg, cfg.models[:1], TensorRTRTX(["8.6"]), [], force=True)
    assert _snapshot(set_dir) == before
    assert not any((ws / "engines" / ".staging").iterdir())


def test_missing_passthrough_publishes_nothing(built, tmp_path):
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    set_dir = ws / "engines" / TAG
    before = _snapshot(set_dir)
    (ws / "handwash_xgb.joblib").unlink()
    res = _build(ws, "--force", "--model", "human")
    assert res.returncode == 1
    assert "model 'handwash': passthrough model not found" in res.stderr and "demo-models" in res.stderr
    assert _snapshot(set_dir) == before


def test_engine_level_stays_pending_where_the_set_cannot_run():
    import dataclasses

    from pipeline.hardware import detect_gpus
    from pipeline.manifest import SetManifest
    from pipeline.stages.verify import cannot_run_here
    h100 = detect_gpus(H100)
    rtx4090 = detect_gpus(REPO / "tests" / "data" / "gpu-facts" / "rtx4090.csv")
    m = SetManifest("t", "tensorrt-rtx", TensorRTRTX.version(), ["8.6", "8.9", "12.0"])
    assert "not one of the set's targets (8.6, 8.9, 12.0)" in cannot_run_here(m, h100)
    assert cannot_run_here(m, rtx4090) is None
    assert cannot_run_here(m, []) == "no GPU on this machine"
    assert "the set needs 0.0.1" in cannot_run_here(dataclasses.replace(m, trt_version="0.0.1"), rtx4090)
    assert "tensorrt is not installed here" in cannot_run_here(dataclasses.replace(m, backend="tensorrt"), h100)


def test_verify_refuses_an_engine_whose_onnx_changed(built, tmp_path):
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    cfg = load_config(ws / "models.yaml")
    fp16 = onnx_paths(cfg, cfg.models[0])["fp16"]
    fp16.write_bytes(fp16.read_bytes() + b"\0")
    res = run_cli("--config", str(ws / "models.yaml"), "verify", "--model", "human")
    assert res.returncode == 1
    assert "model 'human': the ONNX export changed since this engine was built" in res.stderr
    assert "engines build" in res.stderr


def test_clean_removes_demo_outputs_only(built, tmp_path):
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    real = ws / "engines" / "trt-10.13.2.6-sm90"
    shutil.copytree(ws / "engines" / TAG, real)
    m = json.loads((real / "manifest.json").read_text())
    m.update(tag=real.name, demo=False)  # the flag is derived from the entries: they must say real too
    for entry in [*m["engines"].values(), *m["passthrough"].values()]:
        entry["demo"] = False
    (real / "manifest.json").write_text(json.dumps(m))
    res = run_cli("--config", str(ws / "models.yaml"), "--json", "clean", "--yes")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["kept"] == [real.name] and not (ws / "engines" / TAG).exists() and real.is_dir()
    assert not list((ws / "onnx").rglob("*.onnx"))  # the demo exports went too
    assert (ws / "yolo" / "yolov8n.pt").is_file()  # checkpoints never
    res = run_cli("--config", str(ws / "models.yaml"), "clean", "--all", "--yes")
    assert res.returncode == 0 and not real.exists()


def test_first_build_with_one_failed_gate_publishes_only_the_others(workspace):
    import numpy as np
    cfg = load_config(workspace / "models.yaml")
    spec = cfg.models[0]
    proto = onnx.load(str(onnx_paths(cfg, spec)["fp16"]))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    init = next(i for i in proto.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float16(3), init.name))
    _replace_onnx(cfg, spec, proto.SerializeToString())
    res = _build(workspace, "--keep-going")
    assert res.returncode == 1
    set_dir = workspace / "engines" / TAG
    m = json.loads((set_dir / "manifest.json").read_text())
    assert m["engines"]["human"]["status"] == "failed" and m["engines"]["pose"]["status"] == "ok"
    assert not (set_dir / "yolo" / "yolov8n.engine").exists() and (set_dir / "yolo" / "yolov8n-pose.engine").exists()
    assert es.load_set(set_dir).check_files() == []


def test_build_and_gate_import_no_torch(workspace):
    """The onnx-level gate needs ONNX Runtime and numpy only; torch costs seconds to import."""
    code = ("import sys; from pipeline.config import load_config; from pipeline.stages.build import build_all; "
            "from pipeline.builders import TensorRTRTX; "
            f"cfg = load_config({str(workspace / 'models.yaml')!r}); "
            "s, e = build_all(cfg, cfg.models[:1], TensorRTRTX(['8.6']), []); assert not e, e; "
            "print(s['models']['human'], 'torch' in sys.modules, 'ultralytics' in sys.modules)")
    assert fresh_python(code) == ["built False False"]


# -- review fixes: a verdict never outlives its thresholds, and `verify` sets the status ----------

STRICT = "defaults: {verify: {fp16: {min_cosine: 0.9999999999}}, "


def _copy(built: Path, tmp_path: Path) -> tuple[Path, Path]:
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    return ws, ws / "engines" / TAG


def test_verify_failing_the_onnx_level_marks_the_engine_failed_until_it_passes(built, tmp_path):
    """`engines verify` under stricter thresholds fails the onnx level: the entry's status says
    so (list: failed; build: not "cached"); under the old thresholds `verify` restores it."""
    ws, set_dir = _copy(built, tmp_path)
    original = (ws / "models.yaml").read_text()
    engine = set_dir / "yolo" / "yolov8n.engine"
    inode = engine.stat().st_ino
    (ws / "models.yaml").write_text(original.replace("defaults: {", STRICT))
    res = run_cli("--config", str(ws / "models.yaml"), "verify")
    assert res.returncode == 1 and "onnx-level verification failed" in res.stderr
    m = json.loads((set_dir / "manifest.json").read_text())
    assert {e["status"] for e in m["engines"].values()} == {"failed"}
    assert "cosine" in m["engines"]["human"]["error"]
    listed = json.loads(run_cli("--config", str(ws / "models.yaml"), "--json", "list").stdout)["sets"][0]
    assert listed["status"] == "failed"

    (ws / "models.yaml").write_text(original)   # the cause fixed: verify judges the same files again
    res = run_cli("--config", str(ws / "models.yaml"), "verify")
    assert res.returncode == 0, res.stderr
    m = json.loads((set_dir / "manifest.json").read_text())
    assert {e["status"] for e in m["engines"].values()} == {"ok"} and m["engines"]["human"]["error"] is None
    assert engine.stat().st_ino == inode and es.load_set(set_dir).check_files() == []

    (ws / "models.yaml").write_text(original.replace("defaults: {", STRICT))
    assert run_cli("--config", str(ws / "models.yaml"), "verify").returncode == 1
    res = _build(ws, "--model", "human")   # same thresholds as the failed verify: never "cached"
    assert res.returncode == 1 and json.loads(res.stdout)["build"]["models"]["human"] != "cached"
    human = es.read_manifest(set_dir).engines["human"]   # the judged engine stays, no orphan files
    assert human.status == "failed" and human.get("last_attempt")["status"] == "failed"
    assert engine.stat().st_ino == inode and human.sha256["engine"] == sha256_file(engine)
    (ws / "models.yaml").write_text(original)
    assert run_cli("--config", str(ws / "models.yaml"), "verify").returncode == 0
    assert es.read_manifest(set_dir).engines["human"].status == "ok"


def test_changed_thresholds_void_engine_level_runs_judged_under_the_old_ones(built, tmp_path):
    """A GPU run recorded under the old verify: thresholds no longer proves the engine: the
    re-judgement drops it, so that GPU runs the engine level again."""
    ws, set_dir = _copy(built, tmp_path)
    m = json.loads((set_dir / "manifest.json").read_text())
    human = m["engines"]["human"]
    old_thr = human["verification"]["onnx"]["thresholds"]
    human["verification"]["engine"] = {"status": "passed", "runs": [
        {"status": "passed", "gpu_name": "NVIDIA GeForce RTX 3090", "compute_cap": "8.6", "driver": "580.95.05",
         "at": "2026-11-30T00:00:00+00:00", "thresholds": old_thr}]}
    (set_dir / "manifest.json").write_text(json.dumps(m))
    assert es.read_manifest(set_dir).verdict("NVIDIA GeForce RTX 3090").status == "pending"  # others pending
    original = (ws / "models.yaml").read_text()
    (ws / "models.yaml").write_text(original.replace("defaults: {", "defaults: {verify: {fp16: {max_mean_abs: 1.5}}, "))
    res = _build(ws, "--model", "human")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["build"]["models"]["human"] == "re-verified"
    level = es.read_manifest(set_dir).engines["human"].engine_level
    assert level.runs == [] and level.status == "pending" and "thresholds changed" in level.note
    assert level.verdict("NVIDIA GeForce RTX 3090")[0] == "pending"

    # the same through `engines verify` (no GPU here: the note keeps both reasons)
    m = json.loads((set_dir / "manifest.json").read_text())
    m["engines"]["hairnet"]["verification"]["engine"] = human["verification"]["engine"]
    (set_dir / "manifest.json").write_text(json.dumps(m))
    res = run_cli("--config", str(ws / "models.yaml"), "verify", "--model", "hairnet")
    assert res.returncode == 0, res.stderr
    level = es.read_manifest(set_dir).engines["hairnet"].engine_level
    assert level.runs == [] and "thresholds changed" in level.note and "engine level pending" in level.note


def test_publish_derives_the_set_tier_from_its_engines(built, tmp_path):
    """A set flag left from an earlier build (version_compatible) is dropped when the engines
    were rebuilt without it."""
    ws, set_dir = _copy(built, tmp_path)
    m = json.loads((set_dir / "manifest.json").read_text())
    m["version_compatible"] = True
    (set_dir / "manifest.json").write_text(json.dumps(m))
    assert es.read_manifest(set_dir).version_compatible
    res = _build(ws, "--model", "human", "--force")
    assert res.returncode == 0, res.stderr
    assert "version_compatible" not in json.loads((set_dir / "manifest.json").read_text())


def test_a_build_over_a_folder_holding_another_sets_manifest_rebuilds_it(built, tmp_path):
    ws, set_dir = _copy(built, tmp_path)
    m = json.loads((set_dir / "manifest.json").read_text())
    m["tag"] = "trtrtx-copied"
    (set_dir / "manifest.json").write_text(json.dumps(m))
    res = _build(ws)
    assert res.returncode == 0 and "building" in res.stderr + res.stdout, res.stderr
    assert es.read_manifest(set_dir).tag == TAG
    listed = json.loads(run_cli("--config", str(ws / "models.yaml"), "--json", "list").stdout)["sets"]
    assert [s["tag"] for s in listed] == [TAG] and listed[0]["status"] != "corrupt"


def test_a_crash_while_re_judging_is_a_paragraph_and_keeps_the_set(built, tmp_path, monkeypatch):
    from pipeline.stages import verify
    ws, set_dir = _copy(built, tmp_path)
    before = (set_dir / "manifest.json").read_bytes()
    original = (ws / "models.yaml").read_text()
    (ws / "models.yaml").write_text(original.replace("defaults: {", "defaults: {verify: {fp16: {max_mean_abs: 1.5}}, "))

    def broken(*_a, **_k):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")
    monkeypatch.setattr(verify, "verify_onnx_level", broken)
    cfg = load_config(ws / "models.yaml")
    summary, errors = build_all(cfg, cfg.models[:1], TensorRTRTX(["8.6"]), [])
    assert summary["models"]["human"] == "error"
    assert "re-verifying the onnx level failed: RuntimeError" in errors[0].render()
    assert "Next step:" in errors[0].render() and errors[0].model == "human"
    assert (set_dir / "manifest.json").read_bytes() == before


# -- the set follows models.yaml (issue 26) ---------------------------------------------------
def _without(ws: Path, name: str) -> None:
    """models.yaml without the one-line entry of ``name``."""
    text = (ws / "models.yaml").read_text()
    (ws / "models.yaml").write_text("".join(x for x in text.splitlines(True) if f"name: {name}," not in x))


def test_a_model_removed_from_models_yaml_leaves_the_next_set(built, tmp_path):
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    _without(ws, "pose")
    assert [m.name for m in load_config(ws / "models.yaml").models] == ["human", "hairnet"]
    listed = json.loads(run_cli("--config", str(ws / "models.yaml"), "--json", "list").stdout)["sets"][0]
    assert listed["unlisted"] == ["pose"]   # before the next run: said by list, never mounted by resolve
    assert "not in models.yaml: pose" in run_cli("--config", str(ws / "models.yaml"), "list").stdout
    res = _build(ws)
    assert res.returncode == 0, res.stderr
    assert "pose: no longer in models.yaml; removing it from" in res.stderr
    doc = json.loads(res.stdout)["build"]
    assert doc["models"] == {"human": "cached", "hairnet": "cached", "pose": "removed"}
    s = es.load_set(ws / "engines" / TAG)
    assert sorted(s.models) == ["hairnet", "human"] and s.check_files() == []
    assert not list(s.path.rglob("yolov8n-pose.*"))   # its engine and plan left with it
    listed = json.loads(run_cli("--config", str(ws / "models.yaml"), "--json", "list").stdout)["sets"][0]
    assert listed["models"] == ["hairnet", "human"] and listed["unlisted"] == []
    res = _build(ws)   # nothing left to remove: nothing published
    assert json.loads(res.stdout)["build"]["models"] == {"human": "cached", "hairnet": "cached"}


def _real_checkpoint(demo: Path, dest: Path) -> None:
    """A checkpoint without the demo marks (what a trained file looks like to the pipeline)."""
    import torch
    ckpt = torch.load(demo, map_location="cpu", weights_only=False)
    for key in ("demo_weights", "demo_seed", "demo_note"):
        ckpt.pop(key, None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dest)


def test_a_demo_set_becomes_real_by_editing_models_yaml(built, tmp_path):
    """The issue's loop: the demo entries deleted, a real `fall` and a real passthrough in
    place; the next run leaves a set that is not DEMO, without `engines clean`."""
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    assert es.load_set(ws / "engines" / TAG).demo
    _real_checkpoint(ws / "yolo" / "yolov8n.pt", ws / "fall" / "best.pt")
    (ws / "handwash_xgb.joblib").write_bytes(b"a trained xgboost model")
    (ws / "models.yaml").write_text("defaults: {imgsz: 320, opset: 12, precision: fp16, batch: 1}\n"
                                    "models:\n  - {name: fall, source: fall/best.pt, task: detect}\n"
                                    "passthrough:\n  - {name: handwash, source: handwash_xgb.joblib}\n")
    res = run_cli("--config", str(ws / "models.yaml"), "--json", "run", "--backend", "tensorrt-rtx",
                  "--target", "sm86")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["build"]["models"] == {"fall": "built", "human": "removed", "hairnet": "removed", "pose": "removed"}
    assert doc["demo"] == []
    s = es.load_set(ws / "engines" / TAG)
    assert not s.demo and sorted(s.models) == ["fall"] and s.check_files() == []
    assert sorted(p.relative_to(s.path).as_posix() for p in s.path.rglob("*.engine")) == ["fall/best.engine"]
    res = run_cli("--config", str(ws / "models.yaml"), "run", "--backend", "tensorrt-rtx", "--target", "sm86")
    assert res.returncode == 0 and "DEMO WEIGHTS" not in res.stdout and "fall: cached" in res.stdout


def test_the_demo_line_names_the_models_that_hold_demo_weights(built):
    res = run_cli("--config", str(built / "models.yaml"), "run", "--backend", "tensorrt-rtx", "--target", "sm86")
    assert res.returncode == 0, res.stderr
    assert "DEMO WEIGHTS in hairnet, human, pose, handwash:" in res.stdout


def test_clean_removes_what_a_wrong_source_left(built, tmp_path):
    """A typo's leftovers: demo weights at fall/bst.pt, onnx/fall/bst.*, bst.engine/.plan in a
    set (not in its manifest). `engines clean` removes them and keeps real files."""
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(built, ws)
    set_dir = ws / "engines" / TAG
    m = json.loads((set_dir / "manifest.json").read_text())
    for entry in [*m["engines"].values(), *m["passthrough"].values()]:
        entry["demo"] = False   # a set kept by clean (built from real weights)
    (set_dir / "manifest.json").write_text(json.dumps(m))
    typo = ws / "fall" / "bst.pt"
    typo.parent.mkdir()
    shutil.copy(ws / "yolo" / "yolov8n.pt", typo)             # the demo weights a run wrote there
    (ws / "fall" / "best.pt").write_bytes(b"the trained file")  # the file meant
    (ws / "onnx" / "fall").mkdir()
    for suffix in (".onnx", ".fp16.onnx"):
        shutil.copy(ws / "onnx" / "yolo" / f"yolov8n{suffix}", ws / "onnx" / "fall" / f"bst{suffix}")
    rec = json.loads((ws / "onnx" / "yolo" / "yolov8n.export.json").read_text())
    (ws / "onnx" / "fall" / "bst.export.json").write_text(json.dumps({**rec, "model": "fall", "source": "fall/bst.pt"}))
    (set_dir / "fall").mkdir()
    for kind in ("engine", "plan"):
        shutil.copy(set_dir / "yolo" / f"yolov8n.{kind}", set_dir / "fall" / f"bst.{kind}")
    other = ws / "fall" / "other.pt"   # real weights models.yaml no longer names: never removed
    other.write_bytes(b"trained")
    res = run_cli("--config", str(ws / "models.yaml"), "--json", "clean", "--yes")
    assert res.returncode == 0, res.stderr
    removed = set(json.loads(res.stdout)["removed"])
    assert {str(typo), str(set_dir / "fall" / "bst.engine"), str(set_dir / "fall" / "bst.plan"),
            str(ws / "onnx" / "fall" / "bst.onnx"), str(ws / "onnx" / "fall" / "bst.export.json")} <= removed
    assert not typo.exists() and not list((ws / "onnx" / "fall").iterdir())
    assert not list((set_dir / "fall").iterdir())
    assert (ws / "fall" / "best.pt").is_file() and other.is_file() and (ws / "yolo" / "yolov8n.pt").is_file()
    assert es.load_set(set_dir).check_files() == []   # the kept set is whole


def _level(thresholds: dict, max_drop: float | None, drop: float = 0.5) -> dict:
    level = {"thresholds": thresholds, "reasons": []}
    if max_drop is not None:
        level["accuracy"] = {"metric": "map50_95", "reference": {"map50_95": 40.0}, "candidate": {"map50_95": 40 - drop},
                             "drop_map50_95": drop, "max_drop": max_drop, "data": "d/data.yaml",
                             "signature": {"data": "abc", "split": "val", "max_drop": max_drop, "version": 1}}
    return level


def test_a_re_judged_failure_names_the_key_that_changed(exported):
    from pipeline.manifest import EngineRecord
    from pipeline.stages.build import _accuracy_summary, _gate_error, changed_keys
    spec = load_config(exported / "models.yaml").models[0]
    thr = spec.thresholds(spec.precision)
    prev = EngineRecord(onnx_level=_level(thr, 1.0))
    now = EngineRecord(onnx_level=_level(thr, 0.2), status="failed",
                       error="accuracy: mAP50-95 dropped 0.50 points (40.00 -> 39.50), more than max_drop fp16: 0.2")
    assert changed_keys(spec, prev, now) == ["accuracy: max_drop: fp16"]
    errors: list = []
    _gate_error(errors, spec, now, rejudged=changed_keys(spec, prev, now))
    assert "under the changed accuracy: max_drop: fp16 in models.yaml" in errors[0].render()
    assert "verify: thresholds" not in errors[0].render()
    stricter = EngineRecord(onnx_level=_level({**thr, "min_cosine": 0.5}, 1.0))
    assert changed_keys(spec, stricter, EngineRecord(onnx_level=_level(thr, 1.0))) == ["verify: thresholds"]
    summary: dict = {}
    now.onnx_level["reasons"] = [now.error]
    _accuracy_summary(summary, spec, now)
    assert summary["accuracy"]["human"] == {
        "metric": "map50_95", "reference": 40.0, "candidate": 39.5, "drop": 0.5, "limit": 0.2,
        "limit_key": "accuracy.max_drop.fp16", "passed": False, "data": "d/data.yaml"}


def test_the_accuracy_verdict_line_gives_reference_candidate_drop_and_limit():
    from pipeline.stages.verify import accuracy_line
    line = accuracy_line("fall", _level({}, 3.0, drop=2.61)["accuracy"], "int8", passed=True)
    assert line == ("fall: accuracy gate passed: mAP50-95 40.00 (FP32 reference) -> 37.39 (int8), drop 2.61 points, "
                    "limit 3 (accuracy: max_drop: int8)")


def test_a_typo_in_source_end_to_end(exported, tmp_path):
    """The issue's typo: `source: fall/bst.pt` is an error naming fall/best.pt; with --demo it
    builds demo weights there; once corrected, the set holds fall/best.engine only, and
    `engines clean` removes the demo checkpoint and exports the typo left."""
    ws = tmp_path / "ws"
    _real_checkpoint(exported / "yolo" / "yolov8n.pt", ws / "fall" / "best.pt")
    typo = "defaults: {imgsz: 320}\nmodels:\n  - {name: fall, source: fall/bst.pt, task: detect}\n"
    write_config(ws, typo)
    run = ("--config", str(ws / "models.yaml"), "run", "--backend", "tensorrt-rtx", "--target", "sm86")
    res = run_cli(*run)
    assert res.returncode == 1 and "did you mean fall/best.pt?" in res.stderr and not (ws / "fall" / "bst.pt").exists()
    res = run_cli(*run, "--demo")
    assert res.returncode == 0, res.stderr
    assert "DEMO WEIGHTS in fall:" in res.stdout and (ws / "fall" / "bst.pt").is_file()
    write_config(ws, typo.replace("bst.pt", "best.pt"))
    res = run_cli(*run)
    assert res.returncode == 0, res.stderr
    assert "DEMO WEIGHTS" not in res.stdout
    s = es.load_set(ws / "engines" / TAG)
    assert not s.demo and s.check_files() == [] and not list(s.path.rglob("bst.*"))   # the set follows at once
    res = run_cli("--config", str(ws / "models.yaml"), "clean", "--yes")
    assert res.returncode == 0, res.stderr
    assert not (ws / "fall" / "bst.pt").exists() and not list((ws / "onnx").rglob("bst.*"))
    assert (ws / "fall" / "best.pt").is_file() and list((ws / "onnx").rglob("best.onnx")) and s.path.is_dir()


def test_set_tier_follows_every_engine():
    from pipeline.manifest import EngineRecord, SetManifest
    from pipeline.stages.build import _set_tier
    from tests.deploy.test_resolve import TRT
    m = SetManifest(tag="t", backend="tensorrt", trt_version=TRT, targets=["9.0"],
                    extra={"version_compatible": True, "compatibility": "ampere_plus"})
    m.engines = {"a": EngineRecord(options={"version_compatible": True}), "b": EngineRecord(options={})}
    _set_tier(m)   # b was rebuilt without the flag: the set no longer claims it
    assert not m.version_compatible and m.compatibility is None
    m.engines["b"].options = {"version_compatible": True, "compatibility": "ampere_plus"}
    m.engines["a"].options["compatibility"] = "ampere_plus"
    _set_tier(m)
    assert m.version_compatible and m.compatibility == "ampere_plus"
    m.engines["a"].status = "failed"   # a failed entry does not vote
    m.engines["a"].options = {}
    _set_tier(m)
    assert m.version_compatible
