"""The library face (pipeline/api.py): what a run returns, clean's plan; the run path, one record per
model handed from export to build to the engine level."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import load_config
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]




def test_run_result_set_dir_when_the_run_stopped_early():
    from pipeline.api import RunResult
    assert RunResult().set_dir is None
    assert RunResult(build={"models": {}, "set": "/x/engines/t"}).set_dir == Path("/x/engines/t")


def test_damaged_export_records_are_no_records(models):
    """clean and the export cache treat a record that is not a JSON object (or not UTF-8) as
    missing, never a traceback."""
    from pipeline import api
    from pipeline.config import load_config
    from pipeline.fsutil import read_json
    onnx_dir = models / "onnx" / "yolo"
    onnx_dir.mkdir(parents=True)
    (onnx_dir / "a.export.json").write_text("[1, 2]")
    (onnx_dir / "b.export.json").write_bytes(b"\xff\xfe{")
    assert read_json(onnx_dir / "a.export.json") is None and read_json(onnx_dir / "b.export.json") is None
    plan = api.plan_clean(load_config(models / "models.yaml"), everything=False)
    assert plan.remove == []


RTX4090 = REPO / "tests" / "data" / "gpu-facts" / "rtx4090.csv"

# `python -m pipeline ...` with fsutil.sha256_file counting its calls per path (patched in fsutil and
# in every module that bound the name already), the counts written to argv[1] as JSON with whether numpy
# was loaded (the task table holds it lazily: a module object that loads on first use)
COUNTING = """
import collections, importlib.util, json, runpy, sys
import pipeline.fsutil as fsutil
from tests.conftest import engines
counts, real = collections.Counter(), fsutil.sha256_file
def counted(path, *a, **k):
    counts[str(path)] += 1
    return real(path, *a, **k)
for module in [m for n, m in sys.modules.items() if n.split(".")[0] == "pipeline"]:
    if getattr(module, "sha256_file", None) is real:
        module.sha256_file = counted
out, sys.argv = sys.argv[1], ["pipeline", *sys.argv[2:]]
try:
    runpy.run_module("pipeline", run_name="__main__")
finally:
    np = sys.modules.get("numpy")
    loaded = np is not None and not isinstance(np, importlib.util._LazyModule)
    open(out, "w").write(json.dumps({"counts": counts, "numpy": loaded}))
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory, exported) -> Path:
    """The demo workspace after one `engines run` for sm86 (copy before changing)."""
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT for RTX not installed (pip install '.[rtx]')")
    ws = tmp_path_factory.mktemp("ran") / "ws"
    shutil.copytree(exported, ws)
    res = run_cli("--config", str(ws / "models.yaml"), "run", "--backend", "tensorrt-rtx", "--target", "sm86")
    assert res.returncode == 0, res.stderr
    return ws


@pytest.mark.slow
def test_a_cached_run_hashes_each_checkpoint_and_onnx_once(ran, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(ran, ws)
    counts_file = tmp_path / "counts.json"
    res = subprocess.run([sys.executable, "-c", COUNTING, str(counts_file), "--config", str(ws / "models.yaml"),
                          "--json", "run", "--backend", "tensorrt-rtx", "--target", "sm86"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc["build"]["models"].values()) == {"cached"}, doc["build"]
    out = json.loads(counts_file.read_text())
    counts = Counter({Path(p).resolve().relative_to(ws.resolve()).as_posix(): n for p, n in out["counts"].items()})
    cfg = load_config(ws / "models.yaml")
    inputs = [f"{m.source}" for m in cfg.models] + [f"onnx/{m.stem}{s}" for m in cfg.models
                                                    for s in (".onnx", ".fp16.onnx")]
    assert {f: counts[f] for f in inputs} == {f: 1 for f in inputs}, counts
    assert out["numpy"] is False   # nothing of a cached run decodes or compares


@pytest.mark.slow
def test_run_hands_records_gpu_facts_and_gated_models_to_the_engine_level(ran, tmp_path, monkeypatch):
    from pipeline import api
    from pipeline.hardware import detect_gpus
    from pipeline.stages import verify
    from pipeline.stages.records import ExportRecord
    ws = tmp_path / "ws"
    shutil.copytree(ran, ws)
    seen = {}

    def fake_verify_set(cfg, set_dir, **kw):
        seen.update(kw)
        return None, []
    monkeypatch.setattr(verify, "verify_set", fake_verify_set)
    monkeypatch.setattr(api, "to_verify_here", lambda manifest, gpus, names: list(names))
    cfg = load_config(ws / "models.yaml")
    res = api.run(cfg, backend="tensorrt-rtx", targets=["8.6"], gpu_facts=RTX4090)
    assert res.ok, [e.render() for e in res.errors]
    assert [g.name for g in seen["gpus"]] == [g.name for g in detect_gpus(RTX4090)]   # not detected again
    assert set(seen["records"]) == {"human", "hairnet", "pose"}
    assert all(isinstance(r, ExportRecord) and r.spec.name == n for n, r in seen["records"].items())
    assert seen["gated"] == {"human", "hairnet", "pose"}   # judged (or found current) by this run's build
    assert res.exports == list(seen["records"].values())


@pytest.mark.slow
def test_precision_is_resolved_once_into_the_specs_the_records_carry(ran, tmp_path, monkeypatch):
    from pipeline import api
    ws = tmp_path / "ws"
    shutil.copytree(ran, ws)
    cfg = load_config(ws / "models.yaml")
    built_with = []
    from pipeline.stages import build as build_stage
    real = build_stage.build_all

    def spy(cfg, records, *a, **kw):
        built_with.extend(r.spec.precision for r in records)
        return real(cfg, records, *a, **kw)
    monkeypatch.setattr(build_stage, "build_all", spy)
    res = api.run(cfg, ["human"], backend="tensorrt-rtx", targets=["8.6"], precision="fp32")
    assert res.ok, [e.render() for e in res.errors]
    assert [r.spec.precision for r in res.exports] == ["fp32"] and built_with == ["fp32"]
    assert res.build["models"] == {"human": "built"}


@pytest.mark.slow
def test_a_misspelt_model_fails_before_any_work(ran, tmp_path):
    from pipeline import api
    from pipeline.errors import UsageProblem
    cfg = load_config(ran / "models.yaml")
    with pytest.raises(UsageProblem, match="humann"):
        api.run(cfg, ["humann"], backend="tensorrt-rtx", targets=["8.6"])


def test_sha256_files_hashes_every_file_once_in_order_and_none_for_one_it_cannot_read(tmp_path):
    import hashlib

    from pipeline.fsutil import sha256_files
    files = [tmp_path / f"f{i}" for i in range(6)]
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * (i * 300_000 + 1))
    want = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert sha256_files([*files, tmp_path / "missing", tmp_path]) == [*want, None, None]
    assert sha256_files(files[:1]) == want[:1] and sha256_files([]) == []
