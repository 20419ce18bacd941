"""The root group (pipeline/cli/__init__.py): options after the command and click types, exit 2 for
usage problems and 1 for failures, no option declared twice."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli import cli
from tests.conftest import engines
from tests.deploy.test_resolve import TRT, make_set

REPO = Path(__file__).resolve().parents[2]




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


def test_no_command_declares_an_option_twice():
    import click

    def walk(cmd, path):
        names = [p.name for p in cmd.params]
        assert len(names) == len(set(names)), f"{path}: {sorted(n for n in names if names.count(n) > 1)}"
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")
    assert isinstance(cli, click.Group)
    walk(cli, "engines")


def test_list_with_a_bad_gpu_facts_file_is_a_usage_error(models, tmp_path):
    bad = tmp_path / "gpu.csv"
    bad.write_text("| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: 13.0 |\n")
    r = CliRunner().invoke(cli, ["--config", str(models / "models.yaml"), "list", "--gpu-facts", str(bad)])
    assert r.exit_code == 2 and "Traceback" not in r.output and "Next step:" in r.output, r.output
