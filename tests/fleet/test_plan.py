"""`engines fleet plan`: Job manifests from the kubernetes client's models, validated offline
against the Kubernetes JSON schemas that kubernetes-validate bundles; GPU-list errors;
--out; --apply against an unreachable cluster and against an HTTP endpoint on 127.0.0.1."""
from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.errors import PipelineError
from tests.conftest import REPO, fresh_python

kv = pytest.importorskip("kubernetes_validate")
pytest.importorskip("kubernetes")

# An old and the newest Kubernetes the validator ships schemas for (it bundles 1.25 .. 1.37)
K8S_VERSIONS = ("1.30.0", kv.latest_version() + ".0" if kv.latest_version().count(".") == 1 else kv.latest_version())

GPUS = """\
registry: registry.example.com/engines/yolo
namespace: engines
models: {pvc: engines-models}
registry_secret: engines-registry
image_pull_secret: ngc-pull
cells:
  - {gpu: Tesla-T4, image: registry.example.com/engines-builder:25.08, trt: "10.13.2.6"}
  - {gpu: NVIDIA A10, image: registry.example.com/engines-builder:25.08, trt: "10.13.2.6"}
  - {gpu: NVIDIA-H100-80GB-HBM3, image: registry.example.com/engines-builder:25.08, trt: "10.13.2.6"}
  - {compute_cap: "8.9", image: registry.example.com/engines-builder:25.08}
"""

GPUS_INIT_IMAGE = """\
registry: 127.0.0.1:5000/engines
models: {image: registry.example.com/yolo-models:2026-11, path: /models}
plain_http: true
allow_demo: true
cells:
  - {gpu: NVIDIA L4, image: registry.example.com/engines-builder:25.08}
"""


def _file(tmp_path: Path, text: str, name: str = "gpus.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _plan(tmp_path: Path, text: str = GPUS):
    from pipeline.fleet import plan as fleet
    ff = fleet.load_fleet(_file(tmp_path, text))
    return ff, fleet.plan(ff)


def _pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("text", [GPUS, GPUS_INIT_IMAGE], ids=["pvc", "init-image"])
def test_generated_jobs_validate_against_the_kubernetes_schemas(tmp_path, text, version):
    _, jobs = _plan(tmp_path, text)
    assert jobs
    for job in jobs:
        # strict: an unknown field anywhere is an error, not silently dropped by the API server
        kv.validate(job, version, strict=True)
        assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"


def test_the_validator_rejects_a_broken_job(tmp_path):
    """The check above can fail: a misspelt field, a wrong type, a missing image are refused."""
    _, jobs = _plan(tmp_path)
    version = K8S_VERSIONS[-1]
    misspelt = json.loads(json.dumps(jobs[0]))
    misspelt["spec"]["backofflimit"] = misspelt["spec"].pop("backoffLimit")
    wrong_type = json.loads(json.dumps(jobs[0]))
    wrong_type["spec"]["ttlSecondsAfterFinished"] = "one day"
    no_image_name = json.loads(json.dumps(jobs[0]))
    del _pod(no_image_name)["containers"][0]["name"]
    for broken in (misspelt, wrong_type, no_image_name):
        with pytest.raises(kv.ValidationError):
            kv.validate(broken, version, strict=True)


def _dockerfile_fact(pattern: str) -> str:
    m = re.search(pattern, (REPO / "Dockerfile.build").read_text())
    assert m, pattern
    return m.group(1)


def test_job_pins_the_gpu_asks_for_one_and_runs_build_verify_push_as_the_image_user(tmp_path):
    ff, jobs = _plan(tmp_path)
    uid = int(_dockerfile_fact(r"useradd .*--uid (\d+)"))
    home = _dockerfile_fact(r"HOME=(\S+)")
    selectors = [_pod(j)["nodeSelector"] for j in jobs]
    assert selectors == [{"nvidia.com/gpu.product": "Tesla-T4"}, {"nvidia.com/gpu.product": "NVIDIA-A10"},
                         {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                         {"nvidia.com/gpu.compute.major": "8", "nvidia.com/gpu.compute.minor": "9"}]
    for job in jobs:
        pod = _pod(job)
        assert job["metadata"]["namespace"] == "engines"
        assert job["spec"]["backoffLimit"] <= 2 and job["spec"]["ttlSecondsAfterFinished"] > 0
        assert pod["restartPolicy"] == "Never"
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid and sc["fsGroup"] == uid
        (build,) = pod["containers"]
        assert build["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert build["image"] == "registry.example.com/engines-builder:25.08"
        # the image's own entrypoint (NGC's set-up script), then `engines` steps in bash
        assert build["command"] == [_dockerfile_fact(r'ENTRYPOINT \["([^"]+)"'), "/bin/bash", "-c"]
        script = build["args"][0]
        steps = [line for line in script.splitlines() if line.startswith("engines ")]
        assert steps == ["engines run --backend tensorrt --no-demo", "engines verify",
                         'engines push "$ENGINES_REGISTRY"']
        env = {e["name"]: e["value"] for e in build["env"]}
        assert env["ENGINES_REGISTRY"] == ff.registry
        assert env["DOCKER_CONFIG"] == f"{home}/.docker"
        # registry auth: the docker-registry Secret's key becomes ~/.docker/config.json
        auth = next(v for v in pod["volumes"] if v["name"] == "registry-auth")
        assert auth["secret"] == {"secretName": "engines-registry",
                                  "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}
        assert {"mountPath": f"{home}/.docker", "name": "registry-auth", "readOnly": True} in build["volumeMounts"]
        # models: the PVC read-only, copied into the Job's own working folder (engines/ left out)
        src = next(v for v in pod["volumes"] if v["name"] == "models-src")
        assert src["persistentVolumeClaim"] == {"claimName": "engines-models", "readOnly": True}
        (init,) = pod["initContainers"]
        assert "--exclude=./engines" in init["args"][0] and "/workspace/models" in init["args"][0]
        assert pod["imagePullSecrets"] == [{"name": "ngc-pull"}]
    # the cells with trt: check the image's TensorRT before building
    assert "ENGINES_EXPECT_TRT" in _pod(jobs[0])["containers"][0]["args"][0]
    assert "ENGINES_EXPECT_TRT" not in _pod(jobs[3])["containers"][0]["args"][0]


def test_init_image_variant_fills_an_empty_dir_and_honours_plain_http_and_demo(tmp_path):
    _, (job,) = _plan(tmp_path, GPUS_INIT_IMAGE)
    pod = _pod(job)
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    work = next(v for v in pod["volumes"] if v["name"] == "work")
    assert "emptyDir" in work
    (init,) = pod["initContainers"]
    assert init["image"] == "registry.example.com/yolo-models:2026-11" and "-C /models " in init["args"][0]
    script = pod["containers"][0]["args"][0]
    assert "engines run --backend tensorrt\n" in script  # allow_demo: no --no-demo
    assert 'engines push --plain-http "$ENGINES_REGISTRY"' in script
    assert job["metadata"]["namespace"] == "default"


def test_job_names_are_dns1123_at_most_63_deterministic_and_distinct(tmp_path):
    long_gpu = "NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition-Long-Variant-N"  # 60 chars
    text = GPUS + f"  - {{gpu: {long_gpu}, image: registry.example.com/engines-builder:25.08}}\n" \
                  f"  - {{gpu: {long_gpu}, image: registry.example.com/engines-builder:25.09}}\n"
    _, jobs = _plan(tmp_path, text)
    names = [j["metadata"]["name"] for j in jobs]
    assert len(set(names)) == len(names) == 6
    for n in names:
        assert len(n) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n), n
    _, again = _plan(tmp_path, text)
    assert [j["metadata"]["name"] for j in again] == names
    assert names[0].startswith("engines-tesla-t4-trt10-13-2-6-")


@pytest.mark.parametrize("text, expect", [
    ("registry: r.example/x\nmodels: {pvc: m}\ncells:\n  - {gpu: Tesla-T4, image: b:1}\n  - {gpu: NVIDIA-L4}\n",
     r"cells\[1\] \(line 5\): missing `image`"),
    ("registry: r.example/x\nmodels: {pvc: m}\ncells:\n  - {image: b:1}\n", r"cells\[0\] \(line 4\): names no GPU"),
    ("registry: r.example/x\nmodels: {pvc: m}\ncells:\n  - {compute_cap: sm90, image: b:1}\n",
     r"cells\[0\] \(line 4\): `compute_cap: sm90` is not a compute capability"),
    ("registry: r.example/x\nmodels: {pvc: m}\ncells:\n  - {gpu: Tesla-T4, image: b:1}\n  - {gpu: Tesla T4, image: b:1}\n",
     r"cells\[1\] \(line 5\) repeats cells\[0\] \(line 4\)"),
    ("registry: r.example/x\nmodels: {pvc: m}\ncells:\n  - {gpu: Tesla-T4, image: b:1, gpus: 2}\n",
     r"cells\[0\] \(line 4\): unknown key\(s\) gpus"),
    ("registry: r.example/x\nmodels: {pvc: m, image: i}\ncells:\n  - {gpu: Tesla-T4, image: b:1}\n",
     r"`models:` must name either"),
    ("models: {pvc: m}\ncells:\n  - {gpu: Tesla-T4, image: b:1}\n", r"missing `registry`"),
    ("registry: r.example/x\nmodels: {pvc: Models_1}\ncells:\n  - {gpu: Tesla-T4, image: b:1}\n",
     r"not a valid Kubernetes object name"),
    ("registry: r.example/x\nmodels: {pvc: m}\ncells:\n  - {gpu: Tesla-T4, image: b:1, trt: latest}\n",
     r"`trt: latest` is not a TensorRT version"),
    ("registry: r.example/x\nmodels: {pvc: m}\ncells:\n  - {gpu: Tesla-T4, image: b:1, runtime: tensorrt-rtx==1.7}\n",
     r"not a full-TensorRT runtime"),
    ("registry: r.example/x\nmodels: {pvc: m}\ncells: []\n", r"`cells:` must be a non-empty list"),
    ("registry: r.example/x\nmodels: {pvc: m}\ncells:\n  - {gpu: Tesla-T4, image: b:1\n", r"not valid YAML"),
])
def test_gpu_list_errors_name_the_entry_the_line_and_the_next_step(tmp_path, text, expect):
    from pipeline.fleet import plan as fleet
    with pytest.raises(PipelineError) as info:
        fleet.load_fleet(_file(tmp_path, text))
    err = info.value
    assert re.search(expect, err.what), err.render()
    assert err.fix and "gpus.yaml" in (err.file or "")


def test_fleet_status_cells_form_is_accepted(tmp_path):
    """The list `engines fleet status --gpus` reads (nvidia-smi name, runtime: tensorrt==X) plans too."""
    _, (job,) = _plan(tmp_path, "registry: r.example/x\nmodels: {pvc: m}\ncells:\n"
                                "  - {gpu: NVIDIA H100 80GB HBM3, runtime: tensorrt==10.13.3.9, compute_cap: '9.0',"
                                " image: b.example/builder:1}\n")
    assert _pod(job)["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                                         "nvidia.com/gpu.compute.major": "9", "nvidia.com/gpu.compute.minor": "0"}
    assert job["metadata"]["labels"]["engines.pipeline/tensorrt"] == "10.13.3.9"


def _engines(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_cli_plan_to_stdout_a_file_and_a_folder(tmp_path):
    gpus = _file(tmp_path, GPUS)
    r = _engines("fleet", "plan", "--gpus", str(gpus))
    assert r.exit_code == 0, r.output
    docs = list(yaml.safe_load_all(r.output))
    assert [d["kind"] for d in docs] == ["Job"] * 4
    out = tmp_path / "plan" / "jobs.yaml"
    r = _engines("fleet", "plan", "--gpus", str(gpus), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert list(yaml.safe_load_all(out.read_text())) == docs
    folder = tmp_path / "jobs"
    r = _engines("fleet", "plan", "--gpus", str(gpus), "--out", str(folder) + "/")
    assert r.exit_code == 0, r.output
    files = sorted(folder.glob("*.yaml"))
    assert sorted(f.stem for f in files) == sorted(d["metadata"]["name"] for d in docs)
    for f in files:
        kv.validate(yaml.safe_load(f.read_text()), K8S_VERSIONS[-1], strict=True)
    r = _engines("fleet", "plan", "--gpus", str(gpus), "--json")
    assert r.exit_code == 0
    assert [j["name"] for j in json.loads(r.output)["jobs"]] == [d["metadata"]["name"] for d in docs]


def test_cli_plan_bad_file_exits_2_with_the_next_step(tmp_path):
    gpus = _file(tmp_path, "registry: r.example/x\nmodels: {pvc: m}\ncells:\n  - {gpu: Tesla-T4}\n")
    r = _engines("fleet", "plan", "--gpus", str(gpus))
    assert r.exit_code == 2
    assert "cells[0] (line 4): missing `image`" in r.output and "Next step:" in r.output


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
           "clusters": [{"name": "test", "cluster": {"server": server}}],
           "users": [{"name": "test", "user": {"token": "not-a-real-token"}}],
           "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "engines"}}]}
    p = tmp_path / "kubeconfig"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_apply_without_a_reachable_cluster_says_what_to_do(tmp_path):
    port = _closed_port()
    kubeconfig = _kubeconfig(tmp_path, f"http://127.0.0.1:{port}")
    r = _engines("fleet", "plan", "--gpus", str(_file(tmp_path, GPUS)), "--out", str(tmp_path / "jobs.yaml"),
                 "--apply", "--kubeconfig", str(kubeconfig))
    assert r.exit_code == 1, r.output
    assert f"cannot reach the Kubernetes API at http://127.0.0.1:{port}" in r.output
    assert "Next step:" in r.output and "kubectl apply -f" in r.output
    assert (tmp_path / "jobs.yaml").is_file()  # the plan is written before the submit is tried


def test_apply_with_no_kubeconfig_says_what_to_do(tmp_path):
    r = _engines("fleet", "plan", "--gpus", str(_file(tmp_path, GPUS)), "--apply",
                 "--kubeconfig", str(tmp_path / "missing-kubeconfig"))
    assert r.exit_code == 1
    assert "no usable kubeconfig" in r.output and "Next step:" in r.output


class _Recorder(BaseHTTPRequestHandler):
    """Answers POST .../jobs like the API server's create: 201 with the object, 409 for a
    name it already holds, 403 for the namespace `forbidden`. Stands in for a kube-apiserver,
    which no package here installs."""
    seen: list = []
    names: set = set()

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, self.headers.get("Authorization"), body))
        ns = self.path.split("/")[5]  # /apis/batch/v1/namespaces/NS/jobs
        code = 403 if ns == "forbidden" else 409 if body["metadata"]["name"] in self.names else 201
        self.names.add(body["metadata"]["name"])
        reply = json.dumps(body if code == 201 else {"kind": "Status", "code": code}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def api_endpoint():
    _Recorder.seen, _Recorder.names = [], set()
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_apply_posts_each_job_and_reports_existing_ones(tmp_path, api_endpoint):
    kubeconfig = _kubeconfig(tmp_path, api_endpoint)
    gpus = _file(tmp_path, GPUS)
    r = _engines("fleet", "plan", "--gpus", str(gpus), "--out", str(tmp_path / "jobs"), "--apply",
                 "--kubeconfig", str(kubeconfig), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [a["result"] for a in out["applied"]] == ["created"] * 4
    paths = {p for p, _, _ in _Recorder.seen}
    assert paths == {"/apis/batch/v1/namespaces/engines/jobs"}
    assert all(auth == "Bearer not-a-real-token" for _, auth, _ in _Recorder.seen)
    assert [b for _, _, b in _Recorder.seen] == out["manifests"]
    r = _engines("fleet", "plan", "--gpus", str(gpus), "--apply", "--kubeconfig", str(kubeconfig), "--json")
    assert [a["result"] for a in json.loads(r.output)["applied"]] == ["exists"] * 4


def test_apply_refused_by_the_cluster_names_the_permission(tmp_path, api_endpoint):
    gpus = _file(tmp_path, GPUS.replace("namespace: engines", "namespace: forbidden"))
    r = _engines("fleet", "plan", "--gpus", str(gpus), "--apply", "--kubeconfig",
                 str(_kubeconfig(tmp_path, api_endpoint)))
    assert r.exit_code == 1
    assert "this user may not create Jobs there" in r.output and "kubectl auth can-i create jobs" in r.output


def test_cli_start_does_not_import_kubernetes():
    lines = fresh_python("import sys; import pipeline.cli; "
                         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'yaml_k8s')))")
    assert lines == ["[]"]


# -- registry: is an OCI reference; hostile GPU lists are one-paragraph errors (issue 17) ----------

@pytest.mark.parametrize("value, words", [
    ("r.example.com/x;id", "'x;id' is not allowed"),
    ("r.example.com/Engines/yolo", "'Engines' is not allowed"),
    ("r.example.com/engines:latest", "a tag (:TAG) does not belong"),
    ("r.example.com/engines//yolo", "'' is not allowed"),
    ("engines", "names no repository"),
    ("r/x", "'r' is not a registry host"),
    ("r.example.com/a@sha256:00", "a digest"),
])
def test_registry_must_be_an_oci_reference(tmp_path, value, words):
    gpus = _file(tmp_path, GPUS.replace("registry.example.com/engines/yolo", value, 1))
    r = _engines("--json", "fleet", "plan", "--gpus", str(gpus))
    assert r.exit_code == 2 and "Traceback" not in r.output
    err = json.loads(r.stdout)["errors"][0]
    assert f"`registry: {value}` is not an OCI repository reference" in err["error"] and words in err["error"]
    assert err["file"] == str(gpus) and "HOST[:PORT]/PATH" in err["fix"]


@pytest.mark.parametrize("value", ["registry.example.com/engines/yolo", "127.0.0.1:5000/engines",
                                   "localhost:5000/a/b_c-d.e__f", "ghcr.io/acme/engines"])
def test_registry_accepts_oci_references(tmp_path, value):
    ff, _ = _plan(tmp_path, GPUS.replace("registry.example.com/engines/yolo", value, 1))
    assert ff.registry == value


def _hostile(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / f"{kind}.yaml"
    if kind == "lists":
        p.write_text("[" * 50_000 + "]" * 50_000)
    elif kind == "mappings":
        p.write_text("{a: " * 5_000 + "1" + "}" * 5_000)
    elif kind == "block-mappings":
        p.write_text("".join(" " * i + "a:\n" for i in range(1_200)))   # deeper than the recursion limit
    elif kind == "binary":
        p.write_bytes(bytes(range(256)) * 4)
    elif kind == "latin-1":
        p.write_bytes("registry: r.example.com/x\n# caf\u00e9 GPUs\ncells: []\n".encode("latin-1"))
    elif kind == "duplicate":
        p.write_text("registry: r.example.com/x\nregistry: r.example.com/y\nmodels: {pvc: m}\n"
                     "cells:\n  - {gpu: Tesla-T4, image: b:1}\n")
    return p


HOSTILE = [("lists", "nests lists or mappings more than 32 deep"),
           ("mappings", "nests lists or mappings more than 32 deep"),
           ("block-mappings", "nests lists or mappings more than 32 deep"),
           ("binary", "is not UTF-8 text: byte 0x80 on line 2"),
           ("latin-1", "is not UTF-8 text: byte 0xe9 on line 2"),
           ("duplicate", "key 'registry' appears twice")]


@pytest.mark.parametrize("kind, words", HOSTILE)
@pytest.mark.parametrize("command", ["plan", "status"])
def test_a_hostile_gpu_list_is_one_paragraph_with_a_next_step(tmp_path, command, kind, words):
    """`fleet plan` and `fleet status` share one reader (pipeline.fleet.cells): the same checks, the same words."""
    gpus = _hostile(tmp_path, kind)
    args = ["fleet", "plan", "--gpus", str(gpus)] if command == "plan" else \
        ["fleet", "status", "--gpus", str(gpus), "127.0.0.1:9/engines"]   # the list is read before the registry
    for as_json in (True, False):
        r = _engines(*(["--json"] if as_json else []), *args)
        assert r.exit_code in (1, 2) and isinstance(r.exception, SystemExit), r.output
        assert "Traceback" not in r.output and "RecursionError" not in r.output
        if as_json:
            err = json.loads(r.stdout)["errors"][0]
            assert words in err["error"] and err["file"] == str(gpus) and err["fix"], err
        else:
            assert words in r.output and "Next step:" in r.output, r.output


def test_plan_and_status_read_the_gpu_list_through_one_reader():
    import inspect

    from pipeline.fleet import plan, status
    for fn in (plan.load_fleet, status.read_cells):
        src = inspect.getsource(fn)
        assert "read_gpu_list" in src and "safe_load" not in src and "read_text" not in src
