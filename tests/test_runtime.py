"""runtime: which TensorRT a --runtime spelling names."""
from __future__ import annotations

import pytest

from pipeline.errors import PipelineError
from pipeline.runtime import Runtime, parse_runtime
from tests.deploy.test_resolve import TRT


def test_parse_runtime():
    assert parse_runtime("tensorrt==10.13.3.9") == Runtime("tensorrt", TRT, "--runtime")
    assert parse_runtime("TensorRT-RTX == 1.7.1.116").backend == "tensorrt-rtx"
    for bad in ("tensorrt", "onnxruntime==1.20", "tensorrt>=10"):
        with pytest.raises(PipelineError, match="cannot read the runtime"):
            parse_runtime(bad)
