"""The Triton deploy target on real TensorRT for RTX sets, checked by Triton's own schema and a
real tritonserver (tests/deploy/targets/tritonserver.py says where both come from).

One set is built for real (the demo weights, sm86); the sets "of two or more targets of one
TensorRT version" are copies of it with their manifest edited through the manifest API
(another tag, other targets, another TensorRT version), which is what the writer reads:
building them for real would cost minutes and prove nothing more about the repository.
"""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from pipeline.builders import TensorRTRTX
from pipeline.deploy import pick
from pipeline.deploy.targets import TRITON
from pipeline.deploy.targets.triton import RECORD, STAGING
from pipeline.engine_set import load_set, read_manifest, write_manifest
from pipeline.errors import PipelineError
from pipeline.fsutil import sha256_file
from pipeline.status import Status
from tests.conftest import REPO, run_cli
from tests.deploy.targets.tritonserver import MISSING_BACKEND, config_as_json, parse_config, tritonserver

pytestmark = pytest.mark.slow
pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT for RTX not installed (pip install '.[rtx]')")
MODELS = ["hairnet", "human", "pose"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, exported) -> Path:
    """The demo set built once with TensorRT for RTX for sm86 (copy before changing)."""
    ws = tmp_path_factory.mktemp("triton") / "ws"
    shutil.copytree(exported, ws)
    r = run_cli("--config", str(ws / "models.yaml"), "build", "--backend", "tensorrt-rtx", "--target", "sm86")
    assert r.returncode == 0, r.stderr
    return ws


def real_set(ws: Path):
    """The set the fixture built (the others are derived from it)."""
    (d,) = [d for d in (ws / "engines").iterdir() if d.name == f"trtrtx-{TensorRTRTX.version()}-sm86"]
    return load_set(d)


def derive(ws: Path, targets: list[str], version: str | None = None, **edits) -> str:
    """A set copied from the real one, its manifest edited through the manifest API; returns its tag."""
    src = real_set(ws)
    m = read_manifest(src.path)
    version = version or m.trt_version
    tag = f"trtrtx-{version}-sm{'_'.join(t.replace('.', '') for t in targets)}"
    shutil.copytree(src.path, ws / "engines" / tag)
    m.tag, m.targets, m.trt_version = tag, targets, version
    for k, v in edits.items():
        setattr(m, k, v)
    write_manifest(ws / "engines" / tag, m)
    return tag


@pytest.fixture
def ws(built, tmp_path) -> Path:
    d = tmp_path / "ws"
    shutil.copytree(built, d, symlinks=True)
    return d


def engines(ws: Path, *args: str):
    return run_cli("--config", str(ws / "models.yaml"), *args)


def test_one_command_writes_a_repository_the_schema_and_a_real_tritonserver_accept(ws, tmp_path):
    sm86 = real_set(ws).tag
    sm89, sm120 = derive(ws, ["8.9"]), derive(ws, ["12.0"])
    repo = tmp_path / "repo"
    r = engines(ws, "--json", "triton", str(repo), "--allow-demo")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert sorted(doc["sets"]) == sorted([sm86, sm89, sm120])
    rec = json.loads((repo / RECORD).read_text())
    assert sorted(rec["models"]) == MODELS and rec["version"] == 1
    assert {s["tag"]: s["manifest_sha256"] for s in rec["sets"]} == {
        t: sha256_file(ws / "engines" / t / "manifest.json") for t in (sm86, sm89, sm120)}
    for name in MODELS:
        text = (repo / name / "config.pbtxt").read_text()
        cfg = parse_config(text)   # Triton's own schema
        assert (cfg.name, cfg.platform, cfg.max_batch_size) == (name, "tensorrt_plan", 0)
        assert dict(cfg.cc_model_filenames) == {"8.6": f"{sm86}.plan", "8.9": f"{sm89}.plan", "12.0": f"{sm120}.plan"}
        entry = real_set(ws).models[name]
        assert entry.io["layout"] == "one-to-many"   # what the build recorded (demo heads: raw, NMS needed)
        assert [i.name for i in cfg.input] == [t["name"] for t in entry.io["inputs"]]
        assert [list(o.dims) for o in cfg.output] == [t["shape"] for t in entry.io["outputs"]]
        assert cfg.instance_group[0].kind == 1 and list(cfg.instance_group[0].profile) == ["0"]   # KIND_GPU
        for tag in (sm86, sm89, sm120):   # the raw plan, byte for byte the set's (never the .engine)
            plan = repo / name / "1" / f"{tag}.plan"
            digest = read_manifest(ws / "engines" / tag).engines[name].sha256["plan"]
            assert sha256_file(plan) == digest == rec["files"][f"{name}/1/{tag}.plan"]
            assert plan.read_bytes()[:4] != (ws / "engines" / tag / entry.engine).read_bytes()[:4]
    with tritonserver(repo, tmp_path) as server:
        for name in MODELS:   # configuration accepted; the load stops only at the missing TensorRT backend
            err = server.load(name)
            assert MISSING_BACKEND in err, err
        assert "failed to read text proto" not in server.output()


def test_a_broken_config_is_rejected_by_the_schema_and_by_the_real_server(ws, tmp_path):
    """The check can fail: a config Triton cannot read stops at parsing, not at the backend."""
    repo = tmp_path / "repo"
    assert engines(ws, "triton", str(repo), "--allow-demo").returncode == 0
    cfg = repo / "human" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("max_batch_size: 0", "max_batch_size: none"))
    from google.protobuf import text_format
    with pytest.raises(text_format.ParseError):
        parse_config(cfg.read_text())
    with tritonserver(repo, tmp_path) as server:
        err = server.load("human")
        assert MISSING_BACKEND not in err and "failed to poll from model repository" in err
        assert "failed to read text proto" in server.output()
        assert MISSING_BACKEND in server.load("pose")   # the others are unaffected


def test_metadata_reaches_ultralytics_as_its_triton_client_reads_it(ws, tmp_path):
    """Ultralytics' client evaluates parameters.metadata.string_value with ast.literal_eval and
    applies it with its backend's apply_metadata: names, task, image size and keypoints come through."""
    repo = tmp_path / "repo"
    assert engines(ws, "triton", str(repo), "--allow-demo").returncode == 0
    from ultralytics.nn.backends.triton import TritonBackend  # the backend YOLO("http://...") uses
    got = {}
    for name in ("hairnet", "pose"):
        config = config_as_json((repo / name / "config.pbtxt").read_text())   # as Triton's HTTP API returns it
        meta = ast.literal_eval(config.get("parameters", {}).get("metadata", {}).get("string_value", "None"))
        backend = TritonBackend.__new__(TritonBackend)   # no server: only its metadata handling
        backend.dynamic = False
        backend.apply_metadata(meta)
        got[name] = backend
    assert got["hairnet"].names == {0: "hairnet", 1: "no_hairnet"} and got["hairnet"].task == "detect"
    assert got["pose"].task == "pose" and got["pose"].kpt_shape == [17, 3] and got["pose"].imgsz == [320, 320]
    assert got["pose"].end2end is False and got["pose"].stride == 32


def test_the_readme_names_the_passthrough_model_and_the_backend_that_would_serve_it(ws, tmp_path):
    repo = tmp_path / "repo"
    assert engines(ws, "triton", str(repo), "--allow-demo").returncode == 0
    text = (repo / "README.md").read_text()
    assert "## Not served by this repository" in text and "`handwash`" in text and "FIL backend" in text
    assert json.loads((repo / RECORD).read_text())["not_served"]["handwash"]["triton_backend"] == "fil"
    assert not (repo / "handwash").exists()


def test_a_second_write_adds_a_version_switches_the_config_and_removes_the_old_one(ws, tmp_path):
    repo = tmp_path / "repo"
    assert engines(ws, "triton", str(repo), "--allow-demo").returncode == 0
    sm89 = derive(ws, ["8.9"])
    (repo / "human" / f"{STAGING}7").mkdir()   # left by an interrupted write: the writer's own, removed
    r = engines(ws, "triton", str(repo), "--allow-demo")
    assert r.returncode == 0, r.stderr
    rec = json.loads((repo / RECORD).read_text())
    assert rec["version"] == 2 and "previous" not in rec
    assert sorted(p.name for p in (repo / "human").iterdir()) == ["2", "config.pbtxt"]
    assert f'key: "8.9" value: "{sm89}.plan"' in (repo / "human" / "config.pbtxt").read_text()
    on_disk = {p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()} - {RECORD}
    assert on_disk == set(rec["files"])


def test_sets_of_different_tensorrt_versions_are_refused_in_one_model(ws, tmp_path):
    other = derive(ws, ["8.9"], version="1.6.0.1")
    repo = tmp_path / "repo"
    r = engines(ws, "triton", str(repo), "--allow-demo")
    assert r.returncode == 1 and "different TensorRT versions" in r.stderr and other in r.stderr
    assert "--runtime" in r.stderr and not repo.exists()
    r = engines(ws, "triton", str(repo), "--allow-demo", "--runtime", "tensorrt-rtx==1.6.0.1")
    assert r.returncode == 0, r.stderr
    assert json.loads((repo / RECORD).read_text())["sets"][0]["tag"] == other


def test_demo_sets_are_refused_unless_allow_demo(ws, tmp_path):
    repo = tmp_path / "repo"
    r = engines(ws, "triton", str(repo))
    assert r.returncode == 1 and "demo weights" in r.stderr and "--allow-demo" in r.stderr and not repo.exists()


def test_a_failed_set_is_left_out_and_refused_when_named(ws, tmp_path):
    bad = derive(ws, ["8.9"])
    m = read_manifest(ws / "engines" / bad)
    m.engines["human"].judge_onnx({"status": Status.FAILED, "reasons": ["cosine 0.5 < 0.999"]})
    write_manifest(ws / "engines" / bad, m)
    repo = tmp_path / "repo"
    r = engines(ws, "--json", "triton", str(repo), "--allow-demo")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert bad not in doc["sets"] and "ONNX-level verification failed" in doc["left_out"][bad]
    assert "8.9" not in parse_config((repo / "human" / "config.pbtxt").read_text()).cc_model_filenames
    r = engines(ws, "triton", str(tmp_path / "other"), "--allow-demo", "--set", bad)
    assert r.returncode == 1 and f"set {bad} cannot be served" in r.stderr
    r = engines(ws, "triton", str(tmp_path / "other"), "--allow-demo", "--set", "no-such-set")
    assert r.returncode == 2 and "no engine set no-such-set" in r.stderr


def test_a_folder_holding_files_the_writer_did_not_write_is_refused_and_left_as_it_is(ws, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "notes.txt").write_text("mine")
    r = engines(ws, "triton", str(repo), "--allow-demo")
    assert r.returncode == 1 and "did not write" in r.stderr and "notes.txt" in r.stderr
    assert [p.name for p in repo.iterdir()] == ["notes.txt"]
    (repo / "notes.txt").unlink()
    assert engines(ws, "triton", str(repo), "--allow-demo").returncode == 0
    cfg = repo / "human" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + "# tuned by hand\n")   # a file it wrote, changed since
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    r = engines(ws, "triton", str(repo), "--allow-demo")
    assert r.returncode == 1 and "changed since it was written: human/config.pbtxt" in r.stderr
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before


def test_a_set_that_records_no_tensors_is_refused_with_the_rebuild_command(ws, tmp_path):
    """A set built before entries carried ``io`` (or pulled from an older pipeline) still loads."""
    m = read_manifest(real_set(ws).path)
    m.engines["pose"].io = None
    write_manifest(real_set(ws).path, m)
    assert "io" not in json.loads((real_set(ws).path / "manifest.json").read_text())["engines"]["pose"]
    r = engines(ws, "triton", str(tmp_path / "repo"), "--allow-demo")
    assert r.returncode == 1 and "records no input/output tensors" in r.stderr
    assert "engines build --force --model pose" in r.stderr


def test_a_plan_that_differs_from_its_manifest_is_never_copied(ws, tmp_path):
    s = real_set(ws)
    plan = s.path / s.models["human"].plan
    plan.write_bytes(plan.read_bytes()[:-1] + b"\0")
    r = engines(ws, "triton", str(tmp_path / "repo"), "--allow-demo")
    assert r.returncode == 1 and "sha256 differs from the manifest" in r.stderr


def test_resolve_writes_the_chosen_set_as_a_repository_through_the_targets_list(ws, tmp_path):
    """The Triton writer is one deploy target beside the env file and the mounts: resolve takes
    it from the same list (--write-triton) and hands it the chosen set only."""
    derive(ws, ["8.9"])
    facts = tmp_path / "a10.csv"   # an sm86 GPU on an R580 driver (the set is CUDA 13)
    facts.write_text((REPO / "tests/data/gpu-facts/a10-x2.csv").read_text().replace("535.", "580."))
    repo, env = tmp_path / "repo", tmp_path / ".env.engines"
    tag = real_set(ws).tag
    picked = pick.resolve(ws / "models.yaml", pick.HostQuery(gpu_facts=facts, runtime=f"tensorrt-rtx=={tag.split('-')[1]}"),
                          pick.Policy(allow_demo=True), targets=[(TRITON, repo), (pick.ENV_FILE, env)], link=False)
    assert picked.chosen.tag == tag and picked.written == {"triton": repo, "env": env}
    assert f"ENGINE_SET={tag}" in env.read_text()
    assert dict(parse_config((repo / "human" / "config.pbtxt").read_text()).cc_model_filenames) == {
        "8.6": f"{tag}.plan"}


def test_the_writer_refuses_without_a_pick_of_sets(tmp_path):
    with pytest.raises(PipelineError, match="no engine set to write a Triton repository from"):
        TRITON.write(pick.Pick(None), tmp_path / "repo")


def test_an_interrupted_write_leaves_only_files_the_writer_knows_and_the_next_one_finishes(ws, tmp_path,
                                                                                             monkeypatch):
    from pipeline.deploy.targets import triton
    repo = tmp_path / "repo"
    policy = pick.Policy(allow_demo=True)
    pick.serve(ws / "models.yaml", repo, policy)
    derive(ws, ["8.9"])
    real_write = triton.write_bytes_atomic

    def full_disk(dest, data):
        if Path(dest).name == "config.pbtxt" and Path(dest).parent.name == "pose":   # mid-switch
            raise OSError(28, "No space left on device")
        real_write(dest, data)
    monkeypatch.setattr(triton, "write_bytes_atomic", full_disk)
    with pytest.raises(PipelineError, match="cannot write the Triton repository") as err:
        pick.serve(ws / "models.yaml", repo, policy)
    assert "No space left on device" in err.value.what and "Next step:" in err.value.render()
    monkeypatch.setattr(triton, "write_bytes_atomic", real_write)
    pick.serve(ws / "models.yaml", repo, policy)   # not refused: every file there is one it wrote
    rec = json.loads((repo / RECORD).read_text())
    assert rec["version"] == 3 and "previous" not in rec
    on_disk = {p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()} - {RECORD}
    assert on_disk == set(rec["files"]) and all(sha256_file(repo / r) == d for r, d in rec["files"].items())
