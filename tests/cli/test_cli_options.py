"""Options and their environment variables: named after the option, shown in --help, and an
unknown ENGINES_* variable warned about (issue 18, item 14); the INT8-vs-FP16 verdict."""
from __future__ import annotations

import os

from click.testing import CliRunner

from pipeline.cli import OPTION_ENV, cli, unknown_env
from pipeline.stages.verify import int8_advice
from tests.conftest import run_cli, write_config


def test_environment_variables_follow_the_option_spelling_and_show_in_help():
    assert {"ENGINES_RUN_TRUST_CHECKPOINT", "ENGINES_VERIFY_BENCHMARK", "ENGINES_RUN_TARGET",
            "ENGINES_RUN_MODEL"} <= OPTION_ENV
    assert {"ENGINES_RUN_TRUST", "ENGINES_VERIFY_DO_BENCH", "ENGINES_RUN_TARGETS"} <= OPTION_ENV   # still read
    out = CliRunner().invoke(cli, ["run", "--help"]).output
    assert "ENGINES_RUN_TRUST_CHECKPOINT" in out and "env var" in out
    out = CliRunner().invoke(cli, ["verify", "--help"]).output
    assert "ENGINES_VERIFY_BENCHMARK" in out


def test_a_misspelt_engines_variable_is_warned_about_with_the_nearest_name():
    said = unknown_env({"ENGINES_RUN_TARGTS": "sm89", "ENGINES_RUN_TARGET": "sm89", "HOME": "/root",
                        "ENGINES_TEST_DOCKER_HOST": "x"})
    assert said == ["warning: ENGINES_RUN_TARGTS is not read by any `engines` option and is ignored "
                    "(did you mean ENGINES_RUN_TARGET?)"]


def test_the_new_name_is_read_by_the_real_command(tmp_path):
    path = write_config(tmp_path, "models:\n  - {name: a, source: a.pt, task: detect}\n")
    env = {**os.environ, "ENGINES_RUN_MODEL": "nope", "ENGINES_CONFIG": str(path), "ENGINES_RUN_TARGTS": "sm89"}
    res = run_cli("run", env=env)
    assert res.returncode == 2 and "unknown model(s) nope" in res.stderr
    assert "ENGINES_RUN_TARGTS is not read" in res.stderr


def test_int8_is_recommended_only_where_it_is_ten_percent_faster_than_fp16():
    assert int8_advice(1200.0, 1000.0)["recommend"] == "int8"
    slow = int8_advice(1050.0, 1000.0)
    assert slow["recommend"] == "fp16" and "use precision: fp16" in slow["note"] and slow["ratio"] == 1.05
    assert int8_advice(900.0, None)["recommend"] == "int8" and "not compared" in int8_advice(900.0, None)["note"]


def test_a_bad_lock_timeout_names_the_variable_it_came_from(tmp_path):
    path = write_config(tmp_path, "models:\n  - {name: a, source: a.pt, task: detect}\n")
    env = {**os.environ, "ENGINES_BUILD_LOCK_TIMEOUT": "abc", "ENGINES_CONFIG": str(path)}
    res = run_cli("build", env=env)
    assert res.returncode == 2 and "(from ENGINES_BUILD_LOCK_TIMEOUT)" in res.stderr, res.stderr
