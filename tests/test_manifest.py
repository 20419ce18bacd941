"""The typed manifest: schema and path checks on load, one verdict for list and resolve,
the library API's set selection, and the CLI's shape (options after the command, click
types, no import circle, lock waits)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.deploy.rules import resolve
from pipeline.engine_set import read_manifest, scan_sets, set_lock
from pipeline.hardware import read_facts_file
from pipeline.manifest import ManifestError, SetManifest
from pipeline.runtime import parse_runtime
from tests.deploy.test_resolve import FACTS, H100, H200, TRT, make_set

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def models(tmp_path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    (d / "models.yaml").write_text((REPO / "models" / "models.yaml").read_text())
    return d


def engines(*args, models: Path):
    return CliRunner().invoke(cli, ["--config", str(models / "models.yaml"), *args], catch_exceptions=False)


def _manifest(set_dir: Path) -> dict:
    return json.loads((set_dir / "manifest.json").read_text())


def _rewrite(set_dir: Path, change) -> None:
    m = _manifest(set_dir)
    change(m)
    (set_dir / "manifest.json").write_text(json.dumps(m))


def test_round_trip_keeps_unknown_fields(models):
    d = make_set(models / "engines")
    _rewrite(d, lambda m: (m.update(future_field={"a": 1}), m["engines"]["human"].update(note="kept"),
                           m["engines"]["human"]["verification"].update(power={"status": "passed"})))
    m = read_manifest(d)
    again = SetManifest.from_dict(m.to_dict()).to_dict()
    assert again["future_field"] == {"a": 1} and again["engines"]["human"]["note"] == "kept"
    assert again["engines"]["human"]["verification"]["power"] == {"status": "passed"}   # a newer level survives
    assert again["engines"]["human"]["verification"]["engine"]["runs"][0]["gpu_name"] == H100


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.update(schema=2), "unknown manifest schema 2"),
    (lambda m: m["engines"]["human"].update(engine="../../etc/passwd"), "leaves the set"),
    (lambda m: m["engines"]["human"].update(plan="/etc/passwd"), "leaves the set"),
    (lambda m: m["passthrough"]["handwash"].update(file="../x.joblib"), "leaves the set"),
    (lambda m: m.update(engines=["human"]), "expected dict"),
    (lambda m: m.update(targets="9.0"), "expected list"),
    (lambda m: m["engines"]["human"]["verification"]["engine"].update(runs="x"), "expected list"),
    (lambda m: m["engines"]["human"]["sha256"].pop("engine"), "sha256.engine"),
    # a tag names folders and registry tags: never a path, never the handover link
    (lambda m: m.update(tag="../../victim"), "is not a set tag"),
    (lambda m: m.update(tag="current"), "is not a set tag"),
    (lambda m: m.update(tag="a/b"), "is not a set tag"),
    # wrong types are refused on load, not a traceback later in resolve
    (lambda m: m["engines"]["human"].update(source=7), "engines.human.source: expected str"),
    (lambda m: m["engines"]["human"].update(gpu="H100"), "engines.human.gpu: expected dict"),
    (lambda m: m["engines"]["human"].update(demo="no"), "engines.human.demo: expected bool"),
    (lambda m: m.update(trt_version="ten"), "is not a version"),
    (lambda m: m.update(version_compatible="yes"), "version_compatible: expected bool"),
    (lambda m: m["gpu"].update(name=["x"]), "gpu.name: expected"),
    (lambda m: m["engines"]["human"].update(gpu={"name": ["x"]}), "engines.human.gpu.name: expected"),
    # a failed entry's files are judged again by `verify`: its paths must stay inside too
    (lambda m: m["engines"]["human"].update(status="failed", engine="../../model.engine"), "leaves the set"),
])
def test_damaged_manifest_is_refused_with_the_reason(models, change, expected):
    d = make_set(models / "engines")
    _rewrite(d, change)
    with pytest.raises(ManifestError) as err:
        read_manifest(d)
    assert expected in err.value.what and "Next step:" in err.value.render()
    sets, broken = scan_sets(models / "engines")
    assert not sets and broken[0].path == d and expected in broken[0].reason


def test_corrupt_manifest_is_listed_and_named_by_resolve(models):
    d = make_set(models / "engines")
    (d / "manifest.json").write_text("{not json")
    r = engines("list", models=models)
    assert r.exit_code == 0 and "CORRUPT" in r.output and "not valid JSON" in r.output
    r = engines("resolve", "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--no-link", models=models)
    assert r.exit_code == 1 and "manifest.json is damaged" in r.output and "Traceback" not in r.output


def test_manifest_vouching_outside_the_set_is_never_resolved(models, tmp_path):
    """A tampered manifest that points at a file outside the set cannot pass the hash check."""
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"x")
    d = make_set(models / "engines")
    _rewrite(d, lambda m: m["engines"]["human"].update(engine=str(outside)))
    res = resolve(models / "engines", read_facts_file(FACTS / "h100-80gb-hbm3.csv")[0],
                  parse_runtime(f"tensorrt=={TRT}"))
    assert res.chosen is None and res.verdicts[0].kinds == ["corrupt"]


def test_list_and_resolve_judge_a_mixed_set_alike(models):
    """Passed on the H100, failed on the H200: list and resolve say the same per GPU."""
    d = make_set(models / "engines", built_on=H100, verified_on=H100)

    def fail_on_h200(m):
        for e in m["engines"].values():
            e["verification"]["engine"]["runs"].append(
                {"gpu_name": H200, "compute_cap": "9.0", "status": "failed", "driver": "580"})
            e["verification"]["engine"]["status"] = "failed"
    _rewrite(d, fail_on_h200)
    for facts, status, exit_code in (("h100-80gb-hbm3.csv", "ok", 0), ("h200.csv", "failed", 1)):
        listed = json.loads(engines("list", "--json", "--gpu-facts", str(FACTS / facts), models=models).output)
        assert listed["sets"][0]["status"] == status
        r = engines("resolve", "--gpu-facts", str(FACTS / facts), "--runtime", f"tensorrt=={TRT}", "--no-link",
                    models=models)
        assert r.exit_code == exit_code, r.output
    across = read_manifest(d).verdict(None)
    assert across.status == "mixed" and any(H200 in why for why in across.reasons)


def test_a_demo_passthrough_makes_a_demo_set(models):
    d = make_set(models / "engines", demo=False)
    _rewrite(d, lambda m: m["passthrough"]["handwash"].update(demo=True))
    listed = json.loads(engines("--json", "list", models=models).output)
    assert listed["sets"][0]["demo"] is True
    r = engines("resolve", "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--no-link", models=models)
    assert r.exit_code == 1 and "demo" in r.output
    from pipeline.stages.verify import render_report
    assert "demo stand-in" in render_report(read_manifest(d))


def test_resolve_warns_about_a_checkpoint_newer_than_the_engine(models):
    make_set(models / "engines")
    src = models / "yolo" / "yolov8n.pt"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"a retrained checkpoint")
    r = engines("resolve", "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--no-link", models=models)
    assert r.exit_code == 0, r.output
    assert "model 'human': the engine was built from another yolo/yolov8n.pt" in r.output
    assert "hairnet" not in r.output.split("warning")[-1]  # no checkpoint there: nothing to compare


def test_options_after_the_command_and_click_types(models):
    make_set(models / "engines")
    r = engines("list", "--json", models=models)
    assert json.loads(r.output)["sets"][0]["tag"] == f"trt-{TRT}-sm90"
    other = models.parent / "other"
    other.mkdir()
    (other / "models.yaml").write_text((models / "models.yaml").read_text())
    r = CliRunner().invoke(cli, ["list", "--json", "--config", str(other / "models.yaml")])
    assert json.loads(r.output)["sets"] == []
    r = engines("verify", "--batch", "1,x", models=models)
    assert r.exit_code == 2 and "'x' is not a positive whole number" in r.output
    r = engines("build", "--target", "sm86,banana", models=models)
    assert r.exit_code == 2 and "unknown target 'banana'" in r.output


def test_usage_problems_exit_2_and_runtime_failures_1(models):
    r = engines("verify", "--set", "nope", models=models)
    assert r.exit_code == 2 and "no engine sets" in r.output
    make_set(models / "engines")
    r = engines("verify", "--set", "nope", models=models)
    assert r.exit_code == 2 and "engine set 'nope' not found" in r.output and "Next step:" in r.output


def test_waiting_on_a_set_lock_names_the_holder_and_times_out(models):
    d = make_set(models / "engines")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from pipeline.engine_set import set_lock\n"
        f"with set_lock(Path({str(d)!r})):\n    print('held', flush=True); time.sleep(30)")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        r = engines("verify", "--lock-timeout", "1", models=models)
        assert time.monotonic() - t0 < 15
        assert r.exit_code == 1 and f"pid {holder.pid}" in r.output and "--lock-timeout" in r.output
        assert f"waiting for the lock on {d.name}: process {holder.pid}" in r.output
    finally:
        holder.kill()
        holder.wait()
    with set_lock(d, timeout=1):  # free again once the holder is gone
        pass


def test_no_command_declares_an_option_twice():
    import click

    def walk(cmd, path):
        names = [p.name for p in cmd.params]
        assert len(names) == len(set(names)), f"{path}: {sorted(n for n in names if names.count(n) > 1)}"
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")
    assert isinstance(cli, click.Group)
    walk(cli, "engines")


# -- review fixes ------------------------------------------------------------------------------

def test_a_folder_whose_manifest_names_another_set_is_broken(models):
    d = make_set(models / "engines")
    moved = d.with_name("trt-copied-by-hand")
    d.rename(moved)
    sets, broken = scan_sets(models / "engines")
    assert sets == [] and broken[0].path == moved and f"manifest.json is for set {d.name}" in broken[0].reason
    r = engines("list", models=models)
    assert "trt-copied-by-hand  CORRUPT" in r.output
    r = engines("verify", "--set", "trt-copied-by-hand", models=models)   # the full reason, not "not found"
    assert r.exit_code != 0 and f"rename the folder back to {d.name}/" in r.output, r.output


def test_a_failure_outranks_mixed(models):
    """One model passed on the H100 and failed on the H200 (mixed); another failed outright:
    the set is failed, not mixed."""
    d = make_set(models / "engines", verified_on=H100)

    def change(m):
        m["engines"]["human"]["verification"]["engine"]["runs"].append(
            {"gpu_name": H200, "compute_cap": "9.0", "status": "failed", "driver": "580"})
        m["engines"]["hairnet"]["verification"]["engine"]["runs"] = [
            {"gpu_name": H100, "compute_cap": "9.0", "status": "failed", "driver": "580"}]
    _rewrite(d, change)
    v = read_manifest(d).verdict(None)
    assert v.status == "failed" and any("'hairnet'" in r for r in v.reasons)
    _rewrite(d, lambda m: m["engines"]["hairnet"]["verification"]["engine"]["runs"][0].update(status="passed"))
    assert read_manifest(d).verdict(None).status == "mixed"
    assert read_manifest(d).verdict(None, expected_models=["human", "hairnet", "pose", "extra"]).status == "failed"


def test_engine_level_drops_only_runs_judged_under_other_thresholds():
    from pipeline.manifest import EngineLevel, VerificationRun
    new, old = {"min_cosine": 0.9995}, {"min_cosine": 0.99}
    level = EngineLevel(runs=[VerificationRun("passed", H100, extra={"thresholds": old}),
                              VerificationRun("failed", H200, extra={"thresholds": new})], status="failed")
    assert level.drop_stale(new) == [H100]
    assert [r.gpu_name for r in level.runs] == [H200] and level.status == "failed"
    assert level.verdict(H100)[0] == "pending" and "thresholds changed" in level.note
    assert level.drop_stale(new) == []


def test_set_tier_follows_every_engine():
    from pipeline.manifest import EngineRecord
    from pipeline.stages.build import _set_tier
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


def test_list_with_a_bad_gpu_facts_file_is_a_usage_error(models, tmp_path):
    bad = tmp_path / "gpu.csv"
    bad.write_text("| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: 13.0 |\n")
    r = CliRunner().invoke(cli, ["--config", str(models / "models.yaml"), "list", "--gpu-facts", str(bad)])
    assert r.exit_code == 2 and "Traceback" not in r.output and "Next step:" in r.output, r.output


def test_lock_holder_file_is_written_whole_and_removed_on_release(models):
    d = make_set(models / "engines")
    holder = d.parent / f".{d.name}.holder.lock"
    with set_lock(d):
        assert holder.read_text() == str(__import__("os").getpid())
        assert not list(d.parent.glob(f".{d.name}.holder.lock.*.tmp"))
    assert not holder.exists()


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


# -- io: a set describes its tensors (issue 21 item 1) ---------------------------------------------
IO = {"inputs": [{"name": "images", "shape": ["batch", 3, 640, 640], "dtype": "float32"}],
      "outputs": [{"name": "output0", "shape": ["batch", 84, 8400], "dtype": "float32"}], "layout": "one-to-many"}


def test_io_is_optional_and_read_both_ways(models):
    """An older set (no io) loads and is rewritten without one; a newer one keeps it (an older
    reader keeps it too: unknown keys are kept as they are)."""
    d = make_set(models / "engines")
    m = read_manifest(d)
    assert m.engines["human"].io is None and "io" not in m.to_dict()["engines"]["human"]
    _rewrite(d, lambda raw: raw["engines"]["human"].update(io=IO))
    m = read_manifest(d)
    assert m.engines["human"].io == IO and SetManifest.from_dict(m.to_dict()).to_dict()["engines"]["human"]["io"] == IO


def test_the_output_layout_follows_the_task_and_the_export():
    from pipeline.manifest import engine_io
    tensors = {"inputs": IO["inputs"], "outputs": IO["outputs"]}
    assert engine_io(tensors, "detect", False)["layout"] == "one-to-many"
    assert engine_io(tensors, "pose", True)["layout"] == "end2end"
    assert engine_io(tensors, "classify", False)["layout"] == "probabilities"
    assert engine_io(tensors, "detect", False, "RTDETRDecoder")["layout"] == "rtdetr"


@pytest.mark.parametrize("change, expected", [
    (lambda io: io.update(layout="nchw"), "io.layout: 'nchw' is not one of"),
    (lambda io: io.update(inputs="images"), "io.inputs: expected list"),
    (lambda io: io["outputs"][0].update(shape=[1, 84.5]), "io.outputs[0].shape[1]: expected int or str"),
    (lambda io: io["outputs"][0].pop("dtype"), "io.outputs[0].dtype: expected str"),
])
def test_a_damaged_io_record_is_refused_with_the_reason(models, change, expected):
    d = make_set(models / "engines")
    io = json.loads(json.dumps(IO))
    change(io)
    _rewrite(d, lambda raw: raw["engines"]["human"].update(io=io))
    with pytest.raises(ManifestError) as err:
        read_manifest(d)
    assert expected in err.value.what
