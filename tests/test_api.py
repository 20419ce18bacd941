"""The library face (pipeline/api.py): what a run returns, clean's plan."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def models(tmp_path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    (d / "models.yaml").write_text((REPO / "models" / "models.yaml").read_text())
    return d


def engines(*args, models: Path):
    return CliRunner().invoke(cli, ["--config", str(models / "models.yaml"), *args], catch_exceptions=False)


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
