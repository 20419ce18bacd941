"""Shared options (cli/options.py): issue 25.3, one validation of the builder workspace for every
source (models.yaml, --workspace, ENGINES_*_WORKSPACE), refused before any stage runs, never a
TypeError from TensorRT."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import load_config, workspace_problem
from pipeline.errors import ConfigError
from tests.conftest import write_config

BAD = ["-1", "0", "nan", "inf", "-inf", "abc"]


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("source", ["option", "variable"])
def test_a_bad_workspace_from_the_command_line_is_refused_before_any_stage(tmp_path, value, source):
    cfg = write_config(tmp_path)   # a real config: without the check, the run would start exporting
    args = ["--json", "--config", str(cfg), "run", "--no-demo"]
    env = {}
    if source == "option":
        args += [f"--workspace={value}"]
    else:
        env = {"ENGINES_RUN_WORKSPACE": value}
    res = CliRunner().invoke(cli, args, env=env)
    assert res.exit_code == 2, res.output
    err = json.loads(res.stdout)["errors"][0]["error"]
    assert "workspace" in err and ("positive number of GiB" in err or "not a number" in err)
    if source == "variable":
        assert "from ENGINES_RUN_WORKSPACE" in err
    assert not (tmp_path / "onnx").exists(), "no stage may run"


@pytest.mark.parametrize("value", ["-1", "0", ".nan", ".inf", "'4'", "true"])
def test_models_yaml_refuses_the_same_values(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, f"defaults: {{workspace: {value}}}\n"
                                            "models:\n  - {name: a, source: a.pt, task: detect}\n"))
    assert "workspace" in err.value.what and err.value.fix


def test_one_check_serves_every_source():
    assert workspace_problem(None) is None and workspace_problem(4) is None and workspace_problem(0.5) is None
    for bad in (-1, 0, float("nan"), float("inf"), "4", True):
        assert workspace_problem(bad)


def test_a_good_workspace_reaches_the_build_as_a_number(tmp_path, monkeypatch):
    from pipeline import api
    seen = {}

    def fake_run(cfg, names=(), **kw):
        seen.update(kw)
        return api.RunResult()

    monkeypatch.setattr(api, "run", fake_run)
    CliRunner().invoke(cli, ["--config", str(write_config(tmp_path)), "run"], env={"ENGINES_RUN_WORKSPACE": "2.5"})
    assert seen.get("workspace") == 2.5
