"""The full TensorRT builder (10 and 11): its GPU is its only target, the compatibility levels
it takes or refuses, FP16 by feature, and the next steps it gives."""
from __future__ import annotations

import types

import pytest

from pipeline.builders import TensorRT
from pipeline.errors import PipelineError
from pipeline.hardware import GpuFacts


def _gpu(name: str, cc: str) -> GpuFacts:
    return GpuFacts(0, name, None, cc, "580.95.05", None, None, None)


@pytest.mark.parametrize(("name", "cc", "level", "words"), [
    ("Tesla T4", "7.5", "ampere_plus", "8.0 or newer to build on"),
    ("Tesla V100-SXM2-16GB", "7.0", "same_compute_capability", "7.5 or newer to build on"),
    ("Orin (nvgpu)", "8.7", "same_compute_capability", "not supported on JetPack"),
    ("Orin (nvgpu)", "8.7", "ampere_plus", "not supported on JetPack"),
])
def test_a_level_the_build_gpu_does_not_support_is_refused_before_building(name, cc, level, words):
    with pytest.raises(PipelineError) as err:
        TensorRT(_gpu(name, cc)).configure(level, False)
    assert words in err.value.what and "remove compatibility:" in err.value.fix


def test_levels_the_gpu_supports_are_taken_and_tag_the_set():
    t4 = TensorRT(_gpu("Tesla T4", "7.5"))
    t4.configure("same_compute_capability", True)
    assert (t4.compatibility, t4.version_compatible, t4.targets) == ("same_compute_capability", True, ["7.5"])
    assert TensorRT.tag("11.2.1.2", t4.targets, t4.compatibility) == "trt-11.2.1.2-sm75cc"
    assert TensorRT.tag("11.2.1.2", ["9.0"], "ampere_plus") == "trt-11.2.1.2-sm80plus"
    assert TensorRT.tag("10.13.2.6", ["9.0"]) == "trt-10.13.2.6-sm90"


def test_fp16_follows_the_module_not_the_version(monkeypatch):
    b = TensorRT(_gpu("NVIDIA A10", "8.6"))
    ten = types.SimpleNamespace(BuilderFlag=types.SimpleNamespace(FP16=1))   # TensorRT 10: the flag exists
    eleven = types.SimpleNamespace(BuilderFlag=types.SimpleNamespace())      # TensorRT 11: removed
    monkeypatch.setattr(TensorRT, "module", lambda self: ten)
    assert b.strongly_typed is False
    monkeypatch.setattr(TensorRT, "module", lambda self: eleven)
    assert b.strongly_typed is True


def test_the_next_steps_name_the_builder_image_variant():
    a10 = _gpu("NVIDIA A10", "8.6")
    fix = TensorRT.build_fix("trt-10.13.2.6-sm86", a10, "10.13.2.6")
    assert "make image TRT=10" in fix and "docker compose" in fix and "--build-missing" in fix
    assert TensorRT.rebuild_command("90").startswith("docker compose -f docker-compose.build.yml run")
    assert "CUDA 12" in TensorRT.older_cuda_route and "TRT=" not in TensorRT.older_cuda_route   # both variants are CUDA 13
