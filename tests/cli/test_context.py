"""Issue 25.4: under --json every failing path prints exactly one JSON document on stdout, click's
usage errors (a refused option, variable or command) included; the message stays on stderr, exit 2."""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from tests.conftest import run_cli

# (arguments, environment): the five usage errors the issue found silent, and the other kinds
USAGE_ERRORS = [
    (["run"], {"ENGINES_RUN_LOCK_TIMEOUT": "abc"}),
    (["run"], {"ENGINES_RUN_PRECISION": "int9"}),
    (["run"], {"ENGINES_RUN_FORCE": "maybe"}),
    (["run"], {"ENGINES_RUN_WORKSPACE": "abc"}),
    (["run", "--precision", "int9"], {}),
    (["run", "--workspace", "-1"], {}),
    (["build"], {"ENGINES_BUILD_WORKSPACE": "nan"}),
    (["run"], {"ENGINES_RUN_TRUST_CHECKPOINT": "1"}),
    (["run", "--no-such-option"], {}),
    (["no-such-command"], {}),
    (["verify", "--batch", "x"], {}),
]


@pytest.mark.parametrize("json_first", [True, False], ids=["--json before", "--json after"])
@pytest.mark.parametrize("args,env", USAGE_ERRORS, ids=[" ".join(a) + " " + " ".join(e) for a, e in USAGE_ERRORS])
def test_every_usage_error_under_json_is_one_json_document(args, env, json_first, tmp_path):
    argv = ["--json", "--config", str(tmp_path / "models.yaml"), *args] if json_first \
        else ["--config", str(tmp_path / "models.yaml"), *args, "--json"]
    res = CliRunner().invoke(cli, argv, env=env)
    assert res.exit_code == 2, res.output
    doc = json.loads(res.stdout)                     # exactly one document: json.loads refuses trailing text
    assert doc["ok"] is False and len(doc["errors"]) == 1
    err = doc["errors"][0]
    assert err["error"] and "--help" in err["fix"]
    assert err["error"].split(":")[0].split("'")[0] in res.stderr   # click's own message, on stderr


def test_without_json_a_usage_error_prints_nothing_on_stdout(tmp_path):
    res = CliRunner().invoke(cli, ["--config", str(tmp_path / "m.yaml"), "run", "--precision", "int9"])
    assert res.exit_code == 2 and res.stdout == "" and "int9" in res.stderr


def test_the_real_command_prints_one_document_for_a_variable_it_refuses(tmp_path):
    res = run_cli("--json", "--config", str(tmp_path / "models.yaml"), "run",
                  env={**os.environ, "ENGINES_RUN_PRECISION": "int9"})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    doc = json.loads(res.stdout)
    assert "int9" in doc["errors"][0]["error"] and "ENGINES_RUN_PRECISION" in doc["errors"][0]["error"]
