"""TensorRT for RTX's own limits, on real builds: FP32 attention cannot be built for Turing (sm75).
Measured with TensorRT for RTX 1.7.1.116: a YOLO11n at FP32 fails with "Cannot compile operation
'/model.10/m/m.0/attn/MatMul' for Turing (SM75): FP32 GEMM is not supported"."""
from __future__ import annotations

import pytest

from tests.conftest import run_cli, write_config

pytestmark = pytest.mark.slow

YAML = ("defaults: {imgsz: 320, precision: fp32}\n"
        "models:\n  - {name: d11, source: m/d11.pt, task: detect, demo_arch: yolo11}\n")


@pytest.fixture(scope="module")
def yolo11_fp32(tmp_path_factory):
    from pipeline.config import load_config
    from pipeline.stages.demo import demo_models
    root = tmp_path_factory.mktemp("rtx-attention")
    demo_models(load_config(write_config(root, YAML)), log=lambda m: None)
    return root


def test_fp32_attention_leaves_sm75_out_of_the_set_with_a_line_saying_why(yolo11_fp32):
    import json
    res = run_cli("--config", str(yolo11_fp32 / "models.yaml"), "run", "--backend", "tensorrt-rtx")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "sm75 left out of this set: d11: TensorRT for RTX cannot build FP32 attention" in out
    assert "set precision: fp16 for d11 to keep sm75" in out
    sets = list((yolo11_fp32 / "engines").glob("trtrtx-*"))
    assert [s.name.split("-")[-1] for s in sets] == ["sm80_86_89_120_121"]
    manifest = json.loads((sets[0] / "manifest.json").read_text())
    assert "7.5" not in manifest["targets"] and manifest["engines"]["d11"]["status"] == "ok"


def test_fp32_attention_with_sm75_asked_for_is_refused_before_building(yolo11_fp32, tmp_path):
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(yolo11_fp32, ws, ignore=shutil.ignore_patterns("engines"))
    res = run_cli("--config", str(ws / "models.yaml"), "run", "--backend", "tensorrt-rtx", "--target", "sm75,sm86")
    assert res.returncode == 1
    assert "cannot build for sm75" in res.stderr and "Next step: set precision: fp16" in res.stderr
    assert "--target sm86" in res.stderr
    assert not list((ws / "engines").glob("trtrtx-*/m/d11.engine"))


@pytest.mark.parametrize("args, key", [(("ampere_plus", False), "compatibility"), ((None, True), "version_compatible")])
def test_tensorrt_for_rtx_refuses_the_portable_set_keys_with_what_applies_instead(args, key):
    """docs/fleet.md: TensorRT for RTX refuses compatibility:/version_compatible: (its plans already
    cover every listed target), naming what to do instead."""
    from pipeline.builders.tensorrt_rtx import TensorRTRTX
    from pipeline.errors import PipelineError
    with pytest.raises(PipelineError, match=f"does not take `{key}:`") as err:
        TensorRTRTX(["8.6"]).configure(*args)
    assert "--target" in err.value.render()
