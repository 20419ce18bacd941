"""The typed manifest: schema and path checks on load, unknown fields kept, one verdict for
list and resolve (mixed, failed, demo), engine-level runs judged under other thresholds, and
the io record read both ways."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.deploy.rules import resolve
from pipeline.engine_set import read_manifest, scan_sets
from pipeline.hardware import read_facts_file
from pipeline.manifest import ManifestError, SetManifest
from pipeline.runtime import parse_runtime
from tests.conftest import engines
from tests.deploy.test_resolve import FACTS, H100, H200, TRT, make_set

REPO = Path(__file__).resolve().parents[1]




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


# -- review fixes ------------------------------------------------------------------------------


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
    from pipeline.tasks import output_layout
    tensors = {"inputs": IO["inputs"], "outputs": IO["outputs"]}
    rec = lambda task, **meta: {"task": task, "metadata": {"task": task, "names": "{0: 'a'}", **meta}}
    assert engine_io(tensors, output_layout(rec("detect")))["layout"] == "one-to-many"
    assert engine_io(tensors, output_layout(rec("pose", end2end="True")))["layout"] == "end2end"
    assert engine_io(tensors, output_layout(rec("detect", args="{'nms': True}")))["layout"] == "end2end"
    assert engine_io(tensors, output_layout(rec("classify")))["layout"] == "probabilities"
    assert engine_io(tensors, output_layout(rec("detect", head="RTDETRDecoder")))["layout"] == "rtdetr"


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
