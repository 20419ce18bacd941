"""`engines triton DIR` as users type it: exit codes, --json, refusals as paragraphs.

The sets are the fixture sets of tests/deploy/test_resolve.py (a manifest plus small files
whose sha256 it records) given an ``io`` record, which is all the writer reads; the real
builds and the real tritonserver are in tests/deploy/targets/test_triton.py.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.engine_set import read_manifest, write_manifest
from tests.conftest import run_cli
from tests.deploy.targets.tritonserver import MISSING_BACKEND, parse_config, tritonserver
from tests.deploy.test_resolve import make_set

IO = {"inputs": [{"name": "images", "shape": [1, 3, 640, 640], "dtype": "float32"}],
      "outputs": [{"name": "output0", "shape": [1, 84, 8400], "dtype": "float32"}], "layout": "one-to-many"}



def with_io(d: Path) -> Path:
    m = read_manifest(d)
    for e in m.engines.values():
        e.io = IO
    write_manifest(d, m)
    return d


def engines(models: Path, *args: str):
    return run_cli("--config", str(models / "models.yaml"), *args)


def test_three_gpu_sets_of_one_version_make_one_model_with_three_plans(models, tmp_path):
    """The issue's example: an sm86, an sm89 and an sm90 set (full TensorRT) -> one model each,
    cc_model_filenames naming the three plans."""
    tags = [with_io(make_set(models / "engines", targets=(cc,))).name for cc in ("8.6", "8.9", "9.0")]
    repo = tmp_path / "repo"
    r = engines(models, "--json", "triton", str(repo))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert sorted(doc["sets"]) == sorted(tags) and doc["left_out"] == {}
    text = (repo / "human" / "config.pbtxt").read_text()
    for cc, tag in zip(("8.6", "8.9", "9.0"), tags):
        assert f'cc_model_filenames {{ key: "{cc}" value: "{tag}.plan" }}' in text
        plan = (models / "engines" / tag / "yolo/yolov8n.plan").read_bytes()
        assert (repo / "human" / "1" / f"{tag}.plan").read_bytes() == plan
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "engines-repository.json", "hairnet", "human",
                                                       "pose"]
    assert dict(parse_config(text).cc_model_filenames) == {cc: f"{t}.plan" for cc, t in zip(("8.6", "8.9", "9.0"), tags)}
    with tritonserver(repo, tmp_path) as server:   # the real server takes every config
        assert all(MISSING_BACKEND in server.load(name) for name in ("hairnet", "human", "pose"))


def test_a_tensorrt_11_set_beside_them_is_refused_until_one_version_is_chosen(models, tmp_path):
    with_io(make_set(models / "engines", targets=("9.0",)))
    newer = with_io(make_set(models / "engines", version="11.2.1.2", targets=("9.0",))).name
    r = engines(models, "--json", "triton", str(tmp_path / "repo"))
    err = json.loads(r.stdout)["errors"][0]
    assert r.returncode == 1 and "different TensorRT versions" in err["error"] and "--runtime" in err["fix"]
    assert any(newer in d for d in err["details"])
    r = engines(models, "triton", str(tmp_path / "repo"), "--runtime", "tensorrt==11.2.1.2")
    assert r.returncode == 0, r.stderr
    assert f"from {newer}" in r.stdout


def test_no_set_is_a_paragraph_with_the_next_step(models, tmp_path):
    r = engines(models, "triton", str(tmp_path / "repo"))
    assert r.returncode == 1 and "can be served by Triton" in r.stderr and "Next step:" in r.stderr
    assert not (tmp_path / "repo").exists()


def test_a_bad_runtime_and_an_unknown_set_are_usage_errors_or_paragraphs(models, tmp_path):
    with_io(make_set(models / "engines", targets=("9.0",)))
    r = engines(models, "triton", str(tmp_path / "repo"), "--runtime", "trt 10")
    assert r.returncode == 1 and "cannot read the runtime" in r.stderr
    r = engines(models, "triton", str(tmp_path / "repo"), "--set", "trt-9.9-sm90")
    assert r.returncode == 2 and "no engine set trt-9.9-sm90" in r.stderr


def test_the_repository_path_must_be_a_folder(models, tmp_path):
    with_io(make_set(models / "engines", targets=("9.0",)))
    f = tmp_path / "file"
    f.write_text("x")
    r = engines(models, "triton", str(f))
    assert r.returncode != 0 and f.read_text() == "x"


def test_help_names_every_option():
    r = run_cli("triton", "--help")
    assert r.returncode == 0
    for opt in ("--runtime", "--set", "--allow-demo", "--require", "--allow-pending", "cc_model_filenames"):
        assert opt in r.stdout


def test_demo_engines_are_left_out_but_a_demo_passthrough_is_not_served_anyway(models, tmp_path):
    d = with_io(make_set(models / "engines", targets=("9.0",)))
    m = read_manifest(d)
    m.passthrough["handwash"].demo = True   # a stand-in hand-wash model: Triton does not serve it
    write_manifest(d, m)
    r = engines(models, "triton", str(tmp_path / "repo"))
    assert r.returncode == 0, r.stderr
    m.engines["human"].demo = True
    write_manifest(d, m)
    r = engines(models, "--json", "triton", str(tmp_path / "other"))
    err = json.loads(r.stdout)["errors"][0]
    assert r.returncode == 1 and any("demo weights" in x and "--allow-demo" in x for x in err["details"])
