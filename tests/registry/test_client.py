"""registry.client, the OCI transport, against a real registry: an unreachable, a plain-HTTP, a
stalling or a refusing registry, a bad reference, ENGINES_REGISTRY_TIMEOUT, the login read from
the Docker config (and a config or a credential helper that is broken), and no oras at start-up.
"""
from __future__ import annotations

import base64
import json
import os
import time

import pytest

from pipeline.cli import stages as commands  # noqa: F401  (registers every command, push/pull/fleet included)
from tests.deploy.test_resolve import TRT, make_set
from tests.registry.oci_server import (
    H100_FACTS,
    REGISTRY_BIN,
    StallingRegistry,
    _free_port,
    engines,
    models_dir,
)

pytestmark = pytest.mark.skipif(REGISTRY_BIN is None, reason="docker-registry not installed "
                                "(apt-get install docker-registry; .ci/run does)")


def test_unreachable_registry(tmp_path):
    dst = models_dir(tmp_path, "dst")
    t0 = time.perf_counter()
    r, out = engines(dst, "pull", "--plain-http", f"127.0.0.1:{_free_port()}/engines", "--gpu-facts", H100_FACTS,
                     "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 1 and time.perf_counter() - t0 < 10          # no minutes of silent retries
    err = out["errors"][0]
    assert "cannot reach the registry" in err["error"] and "connection refused" in err["error"]
    assert "--plain-http" in err["fix"]


def test_https_to_a_plain_http_registry(tmp_path, registry):
    src = models_dir(tmp_path, "src")
    make_set(src / "engines")
    r, out = engines(src, "push", f"{registry.host}/engines/tls")
    assert r.exit_code == 1 and "--plain-http" in out["errors"][0]["fix"]


def test_unknown_repository(tmp_path, registry):
    dst = models_dir(tmp_path, "dst")
    r, out = engines(dst, "pull", "--plain-http", f"{registry.host}/no/such/repo", "--gpu-facts", H100_FACTS,
                     "--runtime", f"tensorrt=={TRT}")
    assert r.exit_code == 1 and "does not exist" in out["errors"][0]["error"]
    assert "engines push" in out["errors"][0]["fix"]


def test_bad_reference(tmp_path):
    r, out = engines(models_dir(tmp_path, "m"), "fleet", "status", "engines")
    assert r.exit_code == 1 and "REGISTRY/REPO" in out["errors"][0]["fix"]


def test_auth_from_docker_config(tmp_path, auth_registry, docker_config):
    repo = f"{auth_registry.host}/engines"
    src = models_dir(tmp_path, "src")
    make_set(src / "engines")
    r, out = engines(src, "push", "--plain-http", repo)              # no credentials at all
    assert r.exit_code == 1 and "asks for a login" in out["errors"][0]["error"]
    assert f"docker login {auth_registry.host}" in out["errors"][0]["fix"]

    def login(user, password):
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        (docker_config / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))

    login("docker", "wrong")
    r, out = engines(src, "push", "--plain-http", repo)
    assert r.exit_code == 1 and "refused" in out["errors"][0]["error"] and "401" in out["errors"][0]["error"]
    login("docker", auth_registry.password())
    r, out = engines(src, "push", "--plain-http", repo)
    assert r.exit_code == 0 and len(out["uploaded"]) == 8
    r, out = engines(src, "fleet", "status", "--plain-http", repo)
    assert r.exit_code == 0 and [s["tag"] for s in out["sets"]] == [f"trt-{TRT}-sm90"]


def test_cli_starts_without_oras():
    from tests.conftest import fresh_python
    assert fresh_python("import sys; from pipeline.cli import stages; print('oras' in sys.modules)") == ["False"]


@pytest.mark.parametrize("setting", ["1", "0.2"])   # below 1 s counts as 1 s, never "no time at all"
def test_a_stalling_registry_fails_after_the_timeout(tmp_path, setting):
    from tests.conftest import run_cli
    stall = StallingRegistry()
    try:
        dst = models_dir(tmp_path, "dst")
        t0 = time.perf_counter()
        r = run_cli("--config", str(dst / "models.yaml"), "--json", "pull", "--plain-http", f"{stall.host}/engines",
                    "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}", timeout=60,
                    env={**os.environ, "ENGINES_REGISTRY_TIMEOUT": setting})
        assert r.returncode == 1 and time.perf_counter() - t0 < 30, r.stderr
        err = json.loads(r.stdout)["errors"][0]
        assert "lost the connection" in err["error"] and "timed out" in err["error"]
        assert "ENGINES_REGISTRY_TIMEOUT" in err["fix"] and "Traceback" not in r.stderr
    finally:
        stall.close()


@pytest.mark.parametrize("setting", ["abc", "nan", "inf", "0", "-5", "60s"])
@pytest.mark.parametrize("command", ["pull", "push", "resolve"])
def test_a_bad_registry_timeout_is_an_error_naming_the_variable(tmp_path, monkeypatch, setting, command):
    monkeypatch.setenv("ENGINES_REGISTRY_TIMEOUT", setting)
    dst = models_dir(tmp_path, "dst")
    make_set(dst / "engines")
    ref = f"127.0.0.1:{_free_port()}/engines"       # never contacted: the setting fails first
    args = {"pull": ["pull", "--plain-http", ref, "--gpu-facts", H100_FACTS, "--runtime", f"tensorrt=={TRT}"],
            "push": ["push", "--plain-http", ref],
            "resolve": ["resolve", "--from", ref, "--plain-http", "--gpu-facts", H100_FACTS,
                        "--runtime", f"tensorrt=={TRT}", "--no-link"]}[command]
    r, out = engines(dst, *args)
    assert r.exit_code == 1, r.output                # never a silent 60 s, never a fallback on local sets
    err = out["errors"][0]
    assert f"ENGINES_REGISTRY_TIMEOUT={setting!r}" in err["error"] and "greater than 0" in err["error"]
    assert "export ENGINES_REGISTRY_TIMEOUT=60" in err["fix"] and "cannot reach" not in err["error"]


def test_a_refused_login_never_falls_back(tmp_path, auth_registry):
    """Only an outage falls back on local sets: a registry that refuses us is an error to fix."""
    dst = models_dir(tmp_path, "dst")
    make_set(dst / "engines")
    r, out = engines(dst, "resolve", "--from", f"{auth_registry.host}/engines", "--plain-http", "--gpu-facts",
                     H100_FACTS, "--runtime", f"tensorrt=={TRT}", "--no-link")
    assert r.exit_code == 1 and "asks for a login" in out["errors"][0]["error"]


@pytest.mark.parametrize("text, words", [
    ("{not json", "is not valid JSON"),
    ('{"auths": ["a list"]}', "the Docker config is not one"),
    ("\xff\xfe{}", "is not UTF-8 text"),
])
def test_a_docker_config_that_is_not_json_is_one_paragraph(tmp_path, registry, repo, docker_config, text, words):
    (docker_config / "config.json").write_bytes(text.encode("latin-1"))
    src = models_dir(tmp_path, "src")
    make_set(src / "engines")
    r, out = engines(src, "push", "--plain-http", repo)
    assert r.exit_code == 1, r.output
    err = out["errors"][0]
    assert words in err["error"] and err["file"] == str(docker_config / "config.json")
    assert f"docker login {registry.host}" in err["fix"]


@pytest.mark.parametrize("key", ["credsStore", "credHelpers"])
def test_a_missing_credential_helper_is_named(tmp_path, auth_registry, docker_config, key):
    helper = "engines-test-nosuch"
    cfg = {"credsStore": helper} if key == "credsStore" else {"credHelpers": {auth_registry.host: helper}}
    (docker_config / "config.json").write_text(json.dumps(cfg))
    src = models_dir(tmp_path, "src")
    make_set(src / "engines")
    r, out = engines(src, "push", "--plain-http", f"{auth_registry.host}/engines")
    assert r.exit_code == 1, r.output
    err = out["errors"][0]
    assert f"credential helper '{helper}' ({key}" in err["error"] and f"docker-credential-{helper}" in err["error"]
    assert "not on PATH" in err["error"] and f"install docker-credential-{helper}" in err["fix"]
    r, _ = engines(src, "push", "--plain-http", f"{auth_registry.host}/engines", json_out=False)
    assert "Traceback" not in r.output and "Next step:" in r.output
