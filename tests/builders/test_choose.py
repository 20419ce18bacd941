"""`--backend`: auto takes the first builder of the list usable here; a name takes that builder."""
from __future__ import annotations

import pytest

from pipeline.builders import BUILDERS, TensorRT, TensorRTRTX, builder_for_alias, builder_for_tag, builder_named
from pipeline.builders.choose import choose_backend, parse_target
from pipeline.errors import PipelineError
from pipeline.hardware import GpuFacts

H100 = GpuFacts(0, "NVIDIA H100 80GB HBM3", None, "9.0", "580.95.05", None, None, None)


def test_auto_without_the_full_tensorrt_or_a_gpu_takes_tensorrt_for_rtx(monkeypatch):
    lines = []
    monkeypatch.setattr(TensorRT, "version", classmethod(lambda cls: "11.2.1.2"))
    b = choose_backend("auto", ["8.9"], [], lines.append)       # the full TensorRT, but no GPU
    assert isinstance(b, TensorRTRTX) and b.targets == ["8.9"]
    assert lines and "no GPU found" in lines[0] and "tensorrt-rtx" in lines[0]
    b = choose_backend("auto", None, [H100], lines.append)       # and with a GPU: the full TensorRT
    assert isinstance(b, TensorRT) and b.targets == ["9.0"] and "GPU NVIDIA H100" in lines[-1]


def test_a_named_builder_refuses_what_it_cannot_do(monkeypatch):
    monkeypatch.setattr(TensorRT, "version", classmethod(lambda cls: None))
    with pytest.raises(PipelineError, match="full TensorRT is not installed"):
        choose_backend("tensorrt", None, [H100])
    monkeypatch.setattr(TensorRT, "version", classmethod(lambda cls: "11.2.1.2"))
    with pytest.raises(PipelineError, match="builds only for the GPU it runs on"):
        choose_backend("tensorrt", ["8.6"], [H100])
    with pytest.raises(PipelineError) as err:
        choose_backend("tensorrt-llm", None, [H100])
    assert "unknown backend" in err.value.what and "tensorrt, tensorrt-rtx" in err.value.fix


def test_one_list_names_tags_and_runtime_spellings():
    assert [b.name for b in BUILDERS] == ["tensorrt", "tensorrt-rtx"]
    assert builder_named("tensorrt-rtx") is TensorRTRTX
    assert builder_for_alias("TRT") is TensorRT and builder_for_alias("trtrtx") is TensorRTRTX
    assert builder_for_alias("onnxruntime") is None
    assert builder_for_tag("trt-11.2.1.2-sm86cc") == (TensorRT, "sm86cc")
    assert builder_for_tag("trtrtx-1.7.1.116-sm86_89") == (TensorRTRTX, "sm86_89")
    assert builder_for_tag("current") is None
    assert [parse_target(t) for t in ("sm86", "86", "8.6", "sm120")] == ["8.6", "8.6", "8.6", "12.0"]
