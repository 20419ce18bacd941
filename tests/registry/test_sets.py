"""registry.sets, engine sets as OCI artifacts (issue 11): push, pull, resolve --from and fleet
status against a real registry (tests/registry/oci_server.py): the artifact's layout and
annotations, blobs sent once, hostile or broken artifacts refused, the set lock honoured.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.cli import stages as commands  # noqa: F401  (registers every command, push/pull/fleet included)
from pipeline.engine_set import load_set
from tests.deploy.test_resolve import H100, RTX, TRT, make_set
from tests.registry.oci_server import (
    A10_FACTS,
    H100_FACTS,
    REGISTRY_BIN,
    T4_FACTS,
    StallingRegistry,
    _free_port,
    engines,
    models_dir,
    snapshot,
)

pytestmark = pytest.mark.skipif(REGISTRY_BIN is None, reason="docker-registry not installed "
                                "(apt-get install docker-registry; .ci/run does)")


# ------------------------------------------------------------------ push / pull


def test_push_pull_round_trip_and_noop_second_push(tmp_path, registry, repo):
    src = models_dir(tmp_path, "src")
    d = make_set(src / "engines")
    (d / "report.md").write_text("# verification report\n")
    before = len(registry.requests("POST", "/blobs/uploads/"))
    r, out = engines(src, "push", "--plain-http", repo)
    assert r.exit_code == 0, r.output
    assert out["tag"] == d.name and len(out["uploaded"]) == 9 and out["already_there"] == []  # 8 files + manifest
    assert len(registry.requests("POST", "/blobs/uploads/")) == before + 9

    # second push of the unchanged set: every blob is there (HEAD), nothing is sent, the tag stays
    puts = len(registry.requests("PUT"))
    r, out = engines(src, "push", "--plain-http", repo)
    assert r.exit_code == 0, r.output
    assert out["uploaded"] == [] and out["uploaded_bytes"] == 0 and not out["tag_changed"]
    assert len(registry.requests("POST", "/blobs/uploads/")) == before + 9
    assert len(registry.requests("PUT")) == puts             # no blob PUT, no manifest PUT

    dst = models_dir(tmp_path, "dst")
    r, out = engines(dst, "pull", "--plain-http", repo, "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 0, r.output
    assert out["chosen"] == d.name and out["downloaded"] is True
    pulled = dst / "engines" / d.name
    assert snapshot(pulled) == snapshot(d)                   # manifest.json byte for byte, report.md too
    assert os.readlink(dst / "engines" / "current") == d.name
    assert not list((dst / "engines" / ".staging").iterdir())

    # a pulled set pushes back as the same artifact: nothing new, and a second pull downloads nothing
    r, out = engines(dst, "push", "--plain-http", repo)
    assert out["uploaded"] == [] and not out["tag_changed"]
    gets = len(registry.requests("GET", "/blobs/"))
    r, out = engines(dst, "pull", "--plain-http", repo, "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 0 and out["downloaded"] is False
    assert len(registry.requests("GET", "/blobs/")) - gets == 1   # the config blob only


def test_artifact_layout_and_annotations(tmp_path, registry, repo):
    from pipeline.registry.client import TITLE, Remote
    from pipeline.registry.sets import CONFIG_MEDIA_TYPE
    src = models_dir(tmp_path, "src")
    d = make_set(src / "engines", engine="pending", demo=True)
    assert engines(src, "push", "--plain-http", repo)[0].exit_code == 0
    oci = Remote(repo, plain_http=True).oci_manifest(d.name)
    assert oci["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    titles = {layer["annotations"][TITLE] for layer in oci["layers"]}
    assert titles == set(load_set(d).files())
    assert "yolo/yolov8n.engine" in titles                       # the path inside the set, not a basename
    a = oci["annotations"]
    assert a["org.engines.set.tag"] == d.name and a["org.engines.backend"] == "tensorrt"
    assert a["org.engines.tensorrt.version"] == TRT and a["org.engines.compute-caps"] == "9.0"
    assert a["org.engines.gpu.product"] == H100 and a["org.engines.cuda.version"] == "13.0"
    assert a["org.engines.driver.min"] == "580.159.04"
    assert a["org.engines.demo"] == "true" and a["org.engines.verification"] == "pending"
    assert a["org.engines.models"] == "hairnet,human,pose"


def test_pull_chooses_like_resolve_and_downloads_only_the_match(tmp_path, registry, repo):
    src = models_dir(tmp_path, "src")
    sets = {"h100": make_set(src / "engines"),
            "a10": make_set(src / "engines", targets=("8.6",), built_on="NVIDIA A10", cuda="12.2"),  # R535 host
            "old": make_set(src / "engines", version="10.3.0.26"),
            "rtx": make_set(src / "engines", backend="tensorrt-rtx", version=RTX, targets=("8.6", "8.9", "12.0"),
                            built_on=None)}
    for d in sets.values():
        assert engines(src, "push", "--plain-http", "--set", d.name, repo)[0].exit_code == 0
    layer_digests = {}
    from pipeline.registry.client import Remote
    for k, d in sets.items():
        layer_digests[k] = [x["digest"] for x in Remote(repo, plain_http=True).oci_manifest(d.name)["layers"]]

    dst = models_dir(tmp_path, "dst")
    log_mark = len(registry.log.read_text().splitlines())
    r, out = engines(dst, "pull", "--plain-http", repo, "--gpu-facts", A10_FACTS, "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 0, r.output
    assert out["chosen"] == sets["a10"].name
    verdicts = {s["tag"]: s for s in out["sets"]}
    assert "version" in verdicts[sets["old"].name]["kinds"] and "cc" in verdicts[sets["h100"].name]["kinds"]
    served = "\n".join(registry.log.read_text().splitlines()[log_mark:])
    name = repo.split("/", 1)[1]
    assert all(f"GET /v2/{name}/blobs/{dg}" in served for dg in layer_digests["a10"])
    others = {dg for k, digests in layer_digests.items() if k != "a10" for dg in digests} - set(layer_digests["a10"])
    assert others and not [dg for dg in others if f"/v2/{name}/blobs/{dg}" in served]   # no other layer moved
    assert sorted(p.name for p in (dst / "engines").iterdir() if not p.name.startswith(".")) == \
        sorted([sets["a10"].name, "current"])

    # RTX runtime on the A10: the RTX set (its targets include 8.6)
    r, out = engines(dst, "pull", "--plain-http", repo, "--gpu-facts", A10_FACTS, "--runtime", f"tensorrt-rtx=={RTX}")
    assert r.exit_code == 0 and out["chosen"] == sets["rtx"].name

    # a T4 (sm75) gets nothing: every tag is listed with its reason, the folder stays as it was
    before = snapshot(dst / "engines")
    r, out = engines(dst, "pull", "--plain-http", repo, "--gpu-facts", T4_FACTS, "--runtime", f"tensorrt=={TRT}",
                     json_out=False)
    assert r.exit_code == 1
    assert f"no engine set in {repo} fits Tesla T4" in r.output
    for d in sets.values():
        assert f"{d.name}: refused" in r.output
    assert "engines push" in r.output and "Next step:" in r.output
    assert snapshot(dst / "engines") == before


def test_resolve_from_pulls_then_hands_over(tmp_path, registry, repo):
    src = models_dir(tmp_path, "src")
    d = make_set(src / "engines")
    assert engines(src, "push", "--plain-http", repo)[0].exit_code == 0
    dst = models_dir(tmp_path, "dst")
    env = tmp_path / ".env.engines"
    r, out = engines(dst, "resolve", "--from", repo, "--plain-http", "--gpu-facts", H100_FACTS,
                     "--runtime", f"tensorrt=={TRT}", "--write-env", str(env), "--require")
    assert r.exit_code == 0, r.output
    assert out["chosen"] == d.name and out["link"]
    assert f"ENGINE_SET={d.name}" in env.read_text()
    assert load_set(dst / "engines" / d.name).check_files() == []


def test_push_refuses_an_altered_set(tmp_path, registry, repo):
    src = models_dir(tmp_path, "src")
    d = make_set(src / "engines")
    (d / "yolo" / "yolov8n.engine").write_bytes(b"edited by hand")
    r, _ = engines(src, "push", "--plain-http", repo, json_out=False)
    assert r.exit_code == 1 and "differs from its manifest" in r.output and "yolov8n.engine" in r.output
    assert not registry.requests("HEAD", repo.split("/", 1)[1] + "/")


# ------------------------------------------------------------------ broken registries


def _pushed(tmp_path, repo) -> tuple[Path, Path, dict]:
    src = models_dir(tmp_path, "src")
    d = make_set(src / "engines")
    assert engines(src, "push", "--plain-http", repo)[0].exit_code == 0
    dst = models_dir(tmp_path, "dst")
    old = make_set(dst / "engines", version="10.3.0.26")         # a set already here must survive
    (dst / "engines" / "current").symlink_to(old.name)
    from pipeline.registry.client import Remote
    return d, dst, Remote(repo, plain_http=True).oci_manifest(d.name)


def _pull_fails(dst: Path, repo: str, *words: str) -> None:
    before = snapshot(dst / "engines")
    r, _ = engines(dst, "pull", "--plain-http", repo, "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}",
                   json_out=False)
    assert r.exit_code == 1, r.output
    for w in words:
        assert w in r.output, r.output
    assert "Next step:" in r.output and "nothing was changed in models/engines" in r.output
    staging = dst / "engines" / ".staging"
    assert not staging.exists() or not list(staging.iterdir())
    after = snapshot(dst / "engines")
    assert {k: v for k, v in after.items() if not k.startswith(".staging")} == before


def test_tampered_blob_is_refused(tmp_path, own_registry):
    registry, repo = own_registry, f"{own_registry.host}/engines"
    d, dst, oci = _pushed(tmp_path, repo)
    layer = next(x for x in oci["layers"] if x["annotations"]["org.opencontainers.image.title"] == "yolo/yolov8n.engine")
    blob = registry.blob_file(layer["digest"])
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF                                              # same size, one byte flipped
    blob.write_bytes(bytes(data))
    _pull_fails(dst, repo, "yolo/yolov8n.engine", "does not match its digest", f"engines push --set {d.name}")


def test_missing_blob_interrupts_the_pull(tmp_path, own_registry):
    registry, repo = own_registry, f"{own_registry.host}/engines"
    d, dst, oci = _pushed(tmp_path, repo)
    layer = next(x for x in oci["layers"] if x["annotations"]["org.opencontainers.image.title"] == "yolo/yolov8n.plan")
    registry.blob_file(layer["digest"]).unlink()
    _pull_fails(dst, repo, "was interrupted", "yolo/yolov8n.plan", "run the same command again")


def test_killed_pull_leftovers_are_cleared(tmp_path, registry, repo):
    """A pull killed mid-download leaves only its staging folder (never a half set); the next
    pull of that tag clears it and completes."""
    d, dst, _ = _pushed(tmp_path, repo)
    stale = dst / "engines" / ".staging" / f"{d.name}.999999"
    (stale / "yolo").mkdir(parents=True)
    (stale / "yolo" / "yolov8n.engine").write_bytes(b"half a download")
    assert load_set(dst / "engines" / d.name) is None
    r, out = engines(dst, "pull", "--plain-http", repo, "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 0, r.output
    assert not stale.exists() and load_set(dst / "engines" / d.name).check_files() == []


# ------------------------------------------------------------------ fleet status


def test_fleet_status(tmp_path, registry, repo):
    src = models_dir(tmp_path, "src")
    for kw in ({}, {"targets": ("8.6",), "built_on": "NVIDIA A10", "engine": "failed"},
               {"targets": ("8.9",), "built_on": "NVIDIA L4", "engine": "pending", "demo": True}):
        d = make_set(src / "engines", **kw)
        assert engines(src, "push", "--plain-http", "--set", d.name, repo)[0].exit_code == 0
    gpus = tmp_path / "gpus.yaml"
    gpus.write_text(f"- {{gpu: {H100}, runtime: tensorrt=={TRT}}}\n"
                    f"- {{gpu: NVIDIA A10, tensorrt: '{TRT}'}}\n"
                    f"- {{gpu: NVIDIA L4, runtime: tensorrt=={TRT}}}\n"
                    f"- {{gpu: NVIDIA H200, runtime: tensorrt=={TRT}, compute_cap: '9.0'}}\n"
                    f"- {{gpu: Tesla T4, runtime: tensorrt=={TRT}, compute_cap: '7.5'}}\n")
    r, out = engines(src, "fleet", "status", "--plain-http", "--gpus", str(gpus), repo)
    assert r.exit_code == 0, r.output
    rows = {s["tag"]: s for s in out["sets"]}
    assert rows[f"trt-{TRT}-sm90"]["verification"] == "passed"
    assert rows[f"trt-{TRT}-sm86"]["verification"] == "failed" and rows[f"trt-{TRT}-sm86"]["gpu"] == "NVIDIA A10"
    assert rows[f"trt-{TRT}-sm89"]["verification"] == "pending" and rows[f"trt-{TRT}-sm89"]["demo"] is True
    cells = {c["gpu"]: c for c in out["cells"]}
    assert cells[H100]["status"] == "passed" and cells[H100]["tag"] == f"trt-{TRT}-sm90"
    assert cells["NVIDIA A10"]["status"] == "failed"
    assert cells["NVIDIA L4"]["status"] == "pending" and "demo" in cells["NVIDIA L4"]["why"]
    assert cells["NVIDIA H200"]["status"] == "missing" and "compute capability only" in cells["NVIDIA H200"]["why"]
    assert cells["Tesla T4"]["status"] == "missing"

    r, _ = engines(src, "fleet", "status", "--plain-http", "--gpus", str(gpus), repo, json_out=False)
    assert r.exit_code == 0
    table = r.output.splitlines()
    assert table[0].split()[:2] == ["tag", "backend"] and any("missing" in line and "Tesla T4" in line for line in table)

    # the `fleet plan` file serves too: label spelling (dashes) and trt:
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"registry: {repo}\ncells:\n"
                    f"  - {{gpu: {H100.replace(' ', '-')}, image: builder:1, trt: '{TRT}'}}\n"
                    f"  - {{gpu: NVIDIA-A10, image: builder:1, trt: '{TRT}'}}\n")
    r, out = engines(src, "fleet", "status", "--plain-http", "--gpus", str(plan), repo)
    assert r.exit_code == 0, r.output
    assert [(c["gpu"], c["status"]) for c in out["cells"]] == [(H100, "passed"), ("NVIDIA A10", "failed")]


# ------------------------------------------------------------------ hostile artifacts


@pytest.mark.parametrize("claimed, words", [
    ("../../victim", "is not a set tag"),
    ("trt-other-set", "its manifest.json is for set 'trt-other-set'"),
])
def test_a_manifest_claiming_another_tag_is_never_pulled(tmp_path, registry, repo, claimed, words):
    """The folder a pull writes is named by the registry tag, and the manifest inside must name
    the same set: a manifest.json saying `../../victim` can never reach outside models/engines."""
    from pipeline.engine_set import EngineSet, read_manifest
    from pipeline.registry.client import Remote
    from pipeline.registry.sets import push
    src = models_dir(tmp_path, "src")
    d = make_set(src / "engines")
    manifest = read_manifest(d)
    raw = json.loads((d / "manifest.json").read_text())
    raw["tag"] = claimed
    (d / "manifest.json").write_text(json.dumps(raw))            # the config blob pushed as it is
    push(EngineSet(d, manifest), Remote(repo, plain_http=True))
    dst = models_dir(tmp_path / "deep" / "er", "dst")
    victim = dst.parent / "victim"                                # models/engines/../../victim
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    before = snapshot(dst / "engines")
    r, _ = engines(dst, "pull", "--plain-http", repo, "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}",
                   json_out=False)
    assert r.exit_code == 1 and words in r.output, r.output
    assert (victim / "keep.txt").read_text() == "precious" and snapshot(dst / "engines") == before


def test_a_tampered_manifest_blob_spoils_only_its_own_tag(tmp_path, own_registry):
    registry, repo = own_registry, f"{own_registry.host}/engines"
    from pipeline.registry.client import Remote
    src = models_dir(tmp_path, "src")
    good = make_set(src / "engines")
    old = make_set(src / "engines", version="10.3.0.26")
    for d in (good, old):
        assert engines(src, "push", "--plain-http", "--set", d.name, repo)[0].exit_code == 0
    blob = registry.blob_file(Remote(repo, plain_http=True).oci_manifest(old.name)["config"]["digest"])
    blob.write_bytes(blob.read_bytes().replace(b"10.3.0.26", b"10.3.0.27"))
    dst = models_dir(tmp_path, "dst")
    r, out = engines(dst, "pull", "--plain-http", repo, "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 0 and out["chosen"] == good.name, r.output
    r, _ = engines(dst, "pull", "--plain-http", repo, "--gpu-facts", T4_FACTS, "--runtime", f"tensorrt=={TRT}",
                   json_out=False)
    assert r.exit_code == 1 and f"{old.name}: its manifest.json does not match its digest" in r.output, r.output


# ------------------------------------------------------------------ outages during a deploy


def test_resolve_from_an_unreachable_registry_uses_the_set_already_here(tmp_path):
    dst = models_dir(tmp_path, "dst")
    d = make_set(dst / "engines")
    down = f"127.0.0.1:{_free_port()}/engines"
    r, out = engines(dst, "resolve", "--from", down, "--plain-http", "--gpu-facts", H100_FACTS,
                     "--runtime", f"tensorrt=={TRT}", "--no-link")
    assert r.exit_code == 0, r.output
    assert out["chosen"] == d.name
    assert any(f"the registry {down} did not answer" in w and "may be older" in w for w in out["warnings"])
    # nothing here fits a T4: the outage is the error reported, with its next step
    r, out = engines(dst, "resolve", "--from", down, "--plain-http", "--gpu-facts", T4_FACTS,
                     "--runtime", f"tensorrt=={TRT}", "--no-link")
    assert r.exit_code == 1 and "cannot reach the registry" in out["errors"][0]["error"]


def test_resolve_from_a_registry_answering_503_uses_the_set_already_here(tmp_path):
    down = StallingRegistry(status=503)
    try:
        dst = models_dir(tmp_path, "dst")
        d = make_set(dst / "engines")
        r, out = engines(dst, "resolve", "--from", f"{down.host}/engines", "--plain-http", "--gpu-facts", H100_FACTS,
                         "--runtime", f"tensorrt=={TRT}", "--no-link")
        assert r.exit_code == 0 and out["chosen"] == d.name, r.output
        assert any("is unavailable (GET /v2/: HTTP 503)" in w for w in out["warnings"])
        # the gate names the outage when the set it expects could not be pulled
        r, out = engines(dst, "resolve", "--from", f"{down.host}/engines", "--plain-http", "--gpu-facts",
                         H100_FACTS, "--runtime", f"tensorrt=={TRT}", "--no-link", "--set", "trt-10.99.0.1-sm90")
        assert r.exit_code == 1 and "could not be pulled" in out["errors"][0]["error"]
    finally:
        down.close()


def test_an_unreachable_registry_names_why_the_local_sets_do_not_fit(tmp_path):
    dst = models_dir(tmp_path, "dst")
    make_set(dst / "engines", engine="pending")
    r, out = engines(dst, "resolve", "--from", f"127.0.0.1:{_free_port()}/engines", "--plain-http", "--require",
                     "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}", "--no-link")
    err = out["errors"][0]
    assert r.exit_code == 1 and "cannot reach the registry" in err["error"]
    assert any("no set already in" in line for line in err["details"])
    assert any("pending" in line for line in err["details"]), err["details"]


def test_push_refuses_a_folder_copied_under_another_name(tmp_path, registry, repo):
    src = models_dir(tmp_path, "src")
    d = make_set(src / "engines")
    shutil.copytree(d, d.with_name("my-copy"))
    r, _ = engines(src, "push", "--plain-http", "--set", "my-copy", repo, json_out=False)
    assert r.exit_code != 0 and f"its manifest.json is for set {d.name}" in r.output, r.output
    assert f"remove this folder: {d.name}/ is here already" in r.output


# ------------------------------------------------------------------ an artifact may carry only the set's files


def _plant_layers(tmp_path: Path, repo: str, tag: str, extra: list[tuple[str, bytes]]) -> None:
    """Rewrite the pushed artifact ``tag`` with ``extra`` (title, bytes) layers appended, by
    raw OCI uploads (what a hostile or careless registry user can do without `engines push`)."""
    import oras.oci

    from pipeline.registry.client import TITLE, Remote, upload_streaming
    remote = Remote(repo, plain_http=True)
    oci, container = remote.oci_manifest(tag), remote.container(tag)
    blobs: dict[bytes, dict] = {}
    for i, (title, data) in enumerate(extra):
        if data not in blobs:
            f = tmp_path / f"planted-{i}"
            f.write_bytes(data)
            layer = oras.oci.NewLayer(str(f), media_type="application/octet-stream")
            if not remote.reg.blob_exists(layer, container):
                assert upload_streaming(remote.reg, f, container, layer).status_code == 201
            blobs[data] = layer
        oci["layers"].append({**blobs[data], "annotations": {TITLE: title}})
    r = remote.reg.upload_manifest(oci, container)
    assert r.status_code == 201, r.text


def _layer_gets(registry, oci: dict) -> int:
    return sum(len(registry.requests("GET", f"/blobs/{x['digest']}")) for x in oci["layers"])


@pytest.mark.parametrize("planted, words", [
    ([("yolo/evil.sh", b"#!/bin/sh\necho owned\n")], ["'yolo/evil.sh'", "not a file of the set"]),
    ([("yolo/yolov8n.engine", b"a second copy")], ["'yolo/yolov8n.engine'", "comes twice"]),
    ([("yolo", b"a file where the set has a folder")], ["'yolo'", "titled like the folder yolo/",
                                                        "the registry's copy is at fault, not this disk"]),
])
def test_a_layer_that_is_not_a_file_of_the_set_is_refused_before_any_download(tmp_path, own_registry, planted,
                                                                              words):
    registry, repo = own_registry, f"{own_registry.host}/engines"
    d, dst, _ = _pushed(tmp_path, repo)
    _plant_layers(tmp_path, repo, d.name, planted)
    from pipeline.registry.client import Remote
    oci = Remote(repo, plain_http=True).oci_manifest(d.name)
    _pull_fails(dst, repo, *words, f"engines push --set {d.name}")
    assert _layer_gets(registry, oci) == 0                       # refused from the manifest alone
    assert not (dst / "engines" / d.name).exists()


def test_thousands_of_extra_layers_are_refused_by_their_count(tmp_path, registry, repo):
    d, dst, _ = _pushed(tmp_path, repo)
    _plant_layers(tmp_path, repo, d.name, [(f"junk/{i}.bin", b"x") for i in range(2000)])
    t0 = time.perf_counter()
    _pull_fails(dst, repo, "has 2007 layers", "lists 7 files", "report.md")
    assert time.perf_counter() - t0 < 10 and not (dst / "engines" / d.name).exists()


def test_a_pulled_report_is_still_accepted_with_the_set(tmp_path, registry, repo):
    src = models_dir(tmp_path, "src")
    d = make_set(src / "engines")
    (d / "report.md").write_text("# verification report\n")
    assert engines(src, "push", "--plain-http", repo)[0].exit_code == 0
    dst = models_dir(tmp_path, "dst")
    r, out = engines(dst, "pull", "--plain-http", repo, "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 0 and (dst / "engines" / d.name / "report.md").is_file(), r.output


# ------------------------------------------------------------------ no silent wait on a set's lock


class _LockHolder:
    """Another process holding the lock of one engine set (as a build, verify or pull would)."""

    def __init__(self, set_dir: Path):
        import sys
        self.proc = subprocess.Popen([sys.executable, "-c", (
            "import time; from pathlib import Path; from pipeline.engine_set import set_lock\n"
            f"with set_lock(Path({str(set_dir)!r})):\n    print('held', flush=True); time.sleep(60)")],
            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"
        self.pid = self.proc.pid

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.proc.kill()
        self.proc.wait()


def _stdout_json(r) -> dict:
    return json.loads(r.stdout)


@pytest.mark.parametrize("how", ["option", "env"])
def test_pull_announces_the_lock_holder_and_honours_the_lock_timeout(tmp_path, registry, repo, monkeypatch, how):
    d, dst, _ = _pushed(tmp_path, repo)
    args = ["pull", "--plain-http", repo, "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}"]
    if how == "option":
        args += ["--lock-timeout", "1"]
    else:
        monkeypatch.setenv("ENGINES_LOCK_TIMEOUT", "1")
    with _LockHolder(dst / "engines" / d.name) as holder:
        t0 = time.monotonic()
        r, out = engines(dst, *args)
        assert time.monotonic() - t0 < 20
    assert r.exit_code == 1, r.output
    err = out["errors"][0]                                        # stdout: valid JSON
    assert f"pid {holder.pid}" in err["error"] and "more than 1s" in err["error"]
    assert "--lock-timeout" in err["fix"] and "ENGINES_LOCK_TIMEOUT" in err["fix"]
    assert f"waiting for the lock on {d.name}: process {holder.pid}" in r.stderr   # announced even with --json
    assert not (dst / "engines" / d.name).exists()
    r, out = engines(dst, *args)                                  # the holder is gone: the pull completes
    assert r.exit_code == 0 and out["downloaded"] is True, r.output


def test_a_bad_lock_timeout_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINES_LOCK_TIMEOUT", "soon")
    dst = models_dir(tmp_path, "dst")
    r, _ = engines(dst, "pull", "--plain-http", f"127.0.0.1:{_free_port()}/engines", json_out=False)
    assert r.exit_code == 2 and "ENGINES_LOCK_TIMEOUT" in r.output and "'soon'" in r.output, r.output


def test_resolve_from_falls_back_on_the_local_set_while_another_process_holds_the_lock(tmp_path, registry, repo):
    d, dst, _ = _pushed(tmp_path, repo)                          # dst holds only an older set, which does not fit
    here = dst / "engines" / d.name
    args = ["resolve", "--from", repo, "--plain-http", "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}",
            "--no-link", "--lock-timeout", "1"]
    with _LockHolder(here) as holder:
        # nothing here fits: the lock is the error reported, with why the local sets do not fit
        r, out = engines(dst, *args)
        assert r.exit_code == 1, r.output
        err = out["errors"][0]
        assert f"pid {holder.pid}" in err["error"] and any("no set already in" in x for x in err["details"])
        assert "--lock-timeout" in err["fix"]
        shutil.copytree(d, here)                                  # an earlier pull left the same set here
        r, out = engines(dst, *args)
        assert r.exit_code == 0, r.output
        assert out["chosen"] == d.name
        assert any(f"pid {holder.pid}" in w and "may be older" in w for w in out["warnings"]), out["warnings"]
        assert f"waiting for the lock on {d.name}: process {holder.pid}" in r.stderr


def test_pull_and_resolve_from_are_library_calls_without_click(tmp_path, registry, repo):
    """`engines pull` and `engines resolve --from` are each one call of pipeline.api (issue 16)."""
    from pipeline import api
    src = models_dir(tmp_path, "src")
    d = make_set(src / "engines")
    api.push(src / "engines", repo, d.name, plain_http=True)
    dst = models_dir(tmp_path, "dst")
    host = api.HostQuery(gpu_facts=Path(H100_FACTS), runtime=f"tensorrt=={TRT}")
    remote = api.Remote(repo, plain_http=True)
    got = api.pull(dst / "models.yaml", remote, host, api.Policy())
    assert got.downloaded and got.chosen.tag == d.name and (dst / "engines" / "current").resolve().name == d.name
    env = tmp_path / ".env.engines"
    from pipeline.deploy.targets import ENV_FILE
    picked = api.resolve(dst / "models.yaml", host, api.Policy(require=True, allow_pending=True), from_remote=remote,
                         targets=[(ENV_FILE, env)], link=False)
    assert picked.chosen.tag == d.name and picked.pulled_from == repo and f"ENGINE_SET={d.name}" in env.read_text()
    with pytest.raises(api.PipelineError, match="no engine set in"):   # the same policy, one set of defaults
        api.pull(dst / "models.yaml", remote, api.HostQuery(gpu_facts=Path(H100_FACTS), runtime="tensorrt==10.3.0.26"),
                 api.Policy())
