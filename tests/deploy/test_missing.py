"""`engines resolve --build-missing` (pipeline.deploy.missing): the builder of the host's runtime
says how its missing set is built; the pure rules only judge."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from pipeline.deploy import missing, rules
from pipeline.errors import PipelineError
from pipeline.hardware import GpuFacts
from pipeline.runtime import parse_runtime

A10 = GpuFacts(0, "NVIDIA A10", None, "8.6", "580.95.05", None, None, None, source="test")
H100 = GpuFacts(0, "NVIDIA H100 80GB HBM3", None, "9.0", "580.95.05", None, None, None, source="test")


def _refused(tmp_path: Path, gpu: GpuFacts, runtime: str) -> rules.Resolution:
    res = rules.resolve(tmp_path / "engines", gpu, parse_runtime(runtime))
    assert res.chosen is None
    return res


def test_tensorrt_for_rtx_builds_here_with_this_python(tmp_path, monkeypatch):
    import subprocess
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 0)
    lines = []
    code = missing.build_missing(_refused(tmp_path, A10, "tensorrt-rtx==1.7.1.116"), tmp_path, None,
                                 on_line=lines.append)
    assert code == 0
    assert calls == [[sys.executable, "-m", "pipeline", "--config", str(tmp_path / "models.yaml"), "run",
                      "--backend", "tensorrt-rtx", "--target", "sm86"]]
    assert lines and lines[0].startswith("running: ")


def test_tensorrt_for_rtx_cannot_build_for_an_h100_and_says_what_can(tmp_path):
    with pytest.raises(rules.NoMatchingSet) as err:
        missing.build_missing(_refused(tmp_path, H100, "tensorrt-rtx==1.7.1.116"), tmp_path, None)
    assert "does not build for sm90" in err.value.fix and "docker compose" in err.value.fix


def test_a_builder_image_of_another_tensorrt_names_the_variant_to_build(tmp_path, monkeypatch):
    fake = types.ModuleType("pipeline.docker_runner")
    fake.connect, fake.CONTAINER_MODELS = (lambda: None), "/workspace/models"
    fake.image_trt_version = lambda client, image: "11.2.1.2"
    fake.run_builder = lambda *a, **k: pytest.fail("built with the wrong TensorRT")
    monkeypatch.setitem(sys.modules, "pipeline.docker_runner", fake)
    import pipeline
    monkeypatch.setattr(pipeline, "docker_runner", fake, raising=False)
    with pytest.raises(PipelineError) as err:
        missing.build_missing(_refused(tmp_path, H100, "tensorrt==10.13.2.6"), tmp_path, None)
    assert "carries TensorRT 11.2.1.2, the service runs 10.13.2.6" in err.value.what
    assert "make image TRT=10" in err.value.fix and "--builder-image engines-builder:trt10" in err.value.fix


def test_the_rules_start_nothing():
    """Building left the pure rules: they import no subprocess, docker_runner or builder execution."""
    import inspect
    src = inspect.getsource(rules)
    assert "subprocess" not in src and "docker_runner" not in src and "def build_missing" not in src
