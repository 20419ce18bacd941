"""The full-TensorRT code path, held against the TensorRT 10.13 API as published in
tensorrt-stubs (read as text/AST: mypy rejects their syntax), and run for real where
`tensorrt` imports with a GPU."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

BACKEND_FILES = [REPO / "pipeline" / "backends" / f for f in
                 ("trt_builder.py", "tensorrt_runner.py", "trt_backends.py")]
REMOVED_IN_10 = ("max_workspace_size", "build_engine", "execute_async_v2", "execute_v2",
                 "get_binding_index", "get_binding_shape", "binding_is_input", "num_bindings",
                 "set_binding_shape", "max_batch_size", "build_cuda_engine")


def _stub_api() -> dict[str, set[str]]:
    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is None:
        pytest.skip("tensorrt-stubs not installed (make install adds it with --no-deps)")
    pyi = Path(spec.origin).parent.parent / "tensorrt_bindings" / "tensorrt.pyi"
    # Line-based, not ast: some stub signatures are not valid Python (a non-default
    # argument after defaults), which is also why mypy rejects them.
    api: dict[str, set[str]] = {}
    current = None
    for line in pyi.read_text().splitlines():
        if m := re.match(r"class (\w+)\b", line):
            current = api.setdefault(m.group(1), set())
        elif current is not None and (m := re.match(r"    (?:def |class )?(\w+)\b", line)):
            current.add(m.group(1))
        elif current is not None and (m := re.match(r"\s+:ivar (\w+):", line)):
            current.add(m.group(1))  # properties are documented, not declared
    return api


def _sources() -> str:
    return "\n".join(f.read_text() for f in BACKEND_FILES)


def test_every_trt_attribute_exists_in_tensorrt_10_13():
    api = _stub_api()
    used = set(re.findall(r"\btrt\.(\w+)(?:\.(\w+))?", _sources()))
    assert used, "the backends must use the trt module"
    missing = []
    for cls, member in used:
        if cls not in api:
            missing.append(cls)
        elif member and member not in api[cls] and member not in ("Severity",):
            missing.append(f"{cls}.{member}")
    # ComputeCapability and set_compute_capability are TensorRT for RTX only: the code
    # reaches them only through the RTX backend (target_enums is empty for TensorRT).
    missing = [m for m in missing if not m.startswith("ComputeCapability")]
    assert missing == []


def test_every_builder_method_called_exists_in_the_stubs():
    api = _stub_api()
    all_members = set().union(*api.values())
    calls = set(re.findall(r"\.(\w+)\(", (REPO / "pipeline/backends/trt_builder.py").read_text()
                           + (REPO / "pipeline/backends/tensorrt_runner.py").read_text()))
    python_side = {"append", "read_bytes", "is_file", "write_bytes", "get", "item", "float", "cpu",
                   "numpy", "cuda", "data_ptr", "empty", "from_numpy", "synchronize", "Stream",
                   "is_available", "inputs", "outputs", "_spec", "_is_input", "name", "lines",
                   "__init__", "serialize", "deque", "ILogger", "suppress", "read_engine", "ascontiguousarray", "items",
                   "tuple", "BuildRequest", "_set_shape"}
    # the runner's own helpers and its device side (cuda_mem: cuda-python or torch)
    python_side |= {"_bind", "_enqueue", "astype", "close", "fetch", "loader", "put", "timer"}
    python_side |= {"locked"}  # pipeline.backends.timing_cache: the per-uid lock around the cache file
    trt_calls = calls - python_side
    # set_compute_capability: TensorRT for RTX only, guarded by `if req.targets`
    unknown = sorted(c for c in trt_calls if c not in all_members and c not in api
                     and c != "set_compute_capability")
    assert unknown == []
    for name in ("create_network", "build_serialized_network", "set_memory_pool_limit",
                 "create_optimization_profile", "execute_async_v3", "set_tensor_address"):
        assert name in trt_calls and name in all_members


def test_no_api_removed_in_tensorrt_10():
    src = _sources()
    used = [name for name in REMOVED_IN_10 if re.search(rf"\b{name}\b", src)]
    assert used == []


def test_fp16_is_feature_detected_not_version_parsed():
    src = (REPO / "pipeline/backends/trt_backends.py").read_text()
    assert 'hasattr(self.module().BuilderFlag, "FP16")' in src
    assert "__version__" not in src and "split(\".\")[0]" not in src


def _real_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return trt if hasattr(trt, "Builder") else None


needs_trt_gpu = pytest.mark.skipif(
    _real_tensorrt() is None or not __import__("shutil").which("nvidia-smi"),
    reason="needs the full TensorRT and a GPU (run in the builder container: make verify-gpu)")


@pytest.mark.gpu
@needs_trt_gpu
def test_full_tensorrt_build_and_run(workspace):
    """Build the demo detector with the full TensorRT and run it against ONNX Runtime."""
    from pipeline.backends.tensorrt_runner import TensorRTRunner
    from tests.conftest import build_full_trt_human
    backend, engine = build_full_trt_human(workspace)
    with TensorRTRunner(engine, backend.module(), "human") as runner:
        assert [s.name for s in runner.inputs()] == ["images"]
        import numpy as np
        out = runner.infer({"images": np.zeros((1, 3, 320, 320), np.float32)})
        assert out["output0"].shape == (1, 84, 2100)


# Attribute reads (properties) on TensorRT objects, by the stub class of the object.
PROPERTIES = {
    "INetworkDefinition": ["num_inputs"],
    "OnnxParser": ["num_errors"],
    "ICudaEngine": ["num_io_tensors", "device_memory_size", "device_memory_size_v2"],
    "IBuilderConfig": ["num_compute_capabilities",  # TensorRT for RTX only (guarded)
                       "hardware_compatibility_level"],   # the portable tier (issue 11)
    "Runtime": ["engine_host_code_allowed"],           # loading a version-compatible plan
}


def test_properties_read_exist_on_their_classes():
    api = _stub_api()
    src = _sources()
    missing = []
    for cls, names in PROPERTIES.items():
        for name in names:
            assert re.search(rf"\.{name}\b|\"{name}\"", src), f"{name} is no longer used: update PROPERTIES"
            if name not in api.get(cls, set()) and name != "num_compute_capabilities":
                missing.append(f"{cls}.{name}")
    assert missing == []


# -- portable tier (issue 11) -------------------------------------------------------------

def test_portable_tier_api_is_used_and_exists_in_tensorrt_10_13():
    api = _stub_api()
    used = set(re.findall(r"\btrt\.(\w+)(?:\.(\w+))?", _sources()))
    assert ("HardwareCompatibilityLevel", "AMPERE_PLUS") in used
    assert ("BuilderFlag", "VERSION_COMPATIBLE") in used
    assert "AMPERE_PLUS" in api["HardwareCompatibilityLevel"]
    assert "VERSION_COMPATIBLE" in api["BuilderFlag"]
    assert "hardware_compatibility_level" in api["IBuilderConfig"]
    assert "engine_host_code_allowed" in api["Runtime"]
    # feature-detected, never version-parsed
    src = (REPO / "pipeline/backends/trt_builder.py").read_text()
    assert 'hasattr(trt, "HardwareCompatibilityLevel")' in src and 'hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE")' in src


def _rtx():
    mod = pytest.importorskip("tensorrt_rtx_bindings")
    if not hasattr(mod, "Builder"):
        pytest.skip("tensorrt_rtx_bindings is stubs only")
    return mod


def test_apply_compatibility_on_a_real_builder_config_and_one_that_ignores_the_level(tmp_path):
    """TensorRT for RTX (importable here, no GPU needed) has the same builder API, takes
    VERSION_COMPATIBLE, but leaves hardware_compatibility_level at NONE when AMPERE_PLUS is
    set: the read-back refuses that build instead of publishing an exact engine tagged portable."""
    from pipeline.backends.trt_builder import BuildRequest, apply_compatibility, make_logger
    from pipeline.errors import PipelineError
    trt = _rtx()
    config = trt.Builder(make_logger(trt)).create_builder_config()
    req = BuildRequest(model="human", onnx=tmp_path / "x.onnx", use_fp16_flag=False, strongly_typed=True,
                       imgsz=320, batch={"min": 1, "opt": 1, "max": 1}, workspace_bytes=None, timing_cache=None)
    apply_compatibility(trt, config, req)
    assert config.hardware_compatibility_level == trt.HardwareCompatibilityLevel.NONE
    assert not config.get_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    req.version_compatible = True
    apply_compatibility(trt, config, req)
    assert config.get_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    req.compatibility = "ampere_plus"
    with pytest.raises(PipelineError, match="did not take hardware compatibility level AMPERE_PLUS"):
        apply_compatibility(trt, config, req)


def test_apply_compatibility_refuses_a_tensorrt_without_it(tmp_path):
    import types

    from pipeline.backends.trt_builder import BuildRequest, apply_compatibility
    from pipeline.errors import PipelineError
    old_trt = types.SimpleNamespace(BuilderFlag=types.SimpleNamespace())   # a TensorRT before 8.6
    req = BuildRequest(model="human", onnx=tmp_path / "x.onnx", use_fp16_flag=False, strongly_typed=True,
                       imgsz=320, batch={"min": 1, "opt": 1, "max": 1}, workspace_bytes=None, timing_cache=None,
                       compatibility="ampere_plus")
    with pytest.raises(PipelineError, match="no hardware compatibility levels"):
        apply_compatibility(old_trt, object(), req)


def _gpu(name: str, cc: str):
    from pipeline.hardware import GpuFacts
    return GpuFacts(0, name, None, cc, "580.159.04", None, None, None)


def test_backends_take_or_refuse_the_portable_tier():
    from pipeline.backends.trt_backends import TensorRT, TensorRTRTX
    from pipeline.errors import PipelineError
    rtx = TensorRTRTX(["8.6"])
    rtx.configure(None, False)
    with pytest.raises(PipelineError) as info:
        rtx.configure("ampere_plus", False)
    assert "TensorRT for RTX does not take `compatibility:`" in info.value.what and "--target" in info.value.fix
    with pytest.raises(PipelineError, match="version_compatible"):
        rtx.configure(None, True)
    t4 = TensorRT(_gpu("Tesla T4", "7.5"))
    with pytest.raises(PipelineError) as info:
        t4.configure("ampere_plus", False)
    assert "Ampere or newer GPU to build on" in info.value.what and "sm75" in info.value.what
    t4.configure(None, True)                       # version compatibility works on any GPU
    h100 = TensorRT(_gpu("NVIDIA H100 80GB HBM3", "9.0"))
    h100.configure("ampere_plus", True)
    assert (h100.compatibility, h100.version_compatible) == ("ampere_plus", True)


CFG = "models:\n  - {name: human, source: yolo/yolov8n.pt, task: detect}\n"


@pytest.mark.parametrize("text, expect", [
    ("defaults: {compatibility: ampere_plus}\n" + CFG, ("ampere_plus", False)),
    ("defaults: {compatibility: ampere_plus, version_compatible: true}\n" + CFG, ("ampere_plus", True)),
    ("defaults: {compatibility: none}\n" + CFG, (None, False)),
    (CFG, (None, False)),
])
def test_models_yaml_compatibility_keys(tmp_path, text, expect):
    from pipeline.config import load_config
    p = tmp_path / "models.yaml"
    p.write_text(text)
    cfg = load_config(p)
    assert (cfg.compatibility, cfg.version_compatible) == expect


@pytest.mark.parametrize("text, what, fix", [
    ("defaults: {compatibility: turing_plus}\n" + CFG, "compatibility 'turing_plus' is not supported",
     "compatibility: ampere_plus"),
    ("defaults: {version_compatible: yes please}\n" + CFG, "version_compatible 'yes please' must be true or false",
     "version_compatible: true"),
    ("models:\n  - {name: human, source: yolo/yolov8n.pt, task: detect, compatibility: ampere_plus}\n",
     "`compatibility` applies to the whole engine set", "under defaults:"),
])
def test_models_yaml_compatibility_errors(tmp_path, text, what, fix):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError
    p = tmp_path / "models.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert what in info.value.what and fix in info.value.fix
