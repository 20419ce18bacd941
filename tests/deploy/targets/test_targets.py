"""Deploy targets as one list: every target has one signature and one resolve option."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from pipeline.deploy.pick import Pick
from pipeline.deploy.targets import COMPOSE_MOUNTS, ENV_FILE, TARGETS, TRITON, Target
from pipeline.errors import PipelineError
from tests.conftest import run_cli


def test_one_list_of_targets_with_one_signature():
    assert TARGETS == (ENV_FILE, COMPOSE_MOUNTS, TRITON)
    assert len({t.name for t in TARGETS}) == len(TARGETS)
    for t in TARGETS:
        assert isinstance(t, Target) and t.help
        assert list(inspect.signature(t.write).parameters) == ["pick", "dest"]


def test_resolve_offers_one_write_option_per_target():
    r = run_cli("resolve", "--help")
    assert r.returncode == 0
    for t in TARGETS:
        assert f"{t.option} {t.metavar}" in r.stdout and f"ENGINES_RESOLVE_WRITE_{t.name.upper()}" in r.stdout


def test_the_env_file_needs_the_host_resolve_reads(tmp_path: Path):
    """A pick without a host (as `engines triton` makes) cannot name a GPU in an env file."""
    with pytest.raises(PipelineError, match="only `engines resolve` reads"):
        ENV_FILE.write(Pick(None), tmp_path / ".env.engines")
    assert not (tmp_path / ".env.engines").exists()
