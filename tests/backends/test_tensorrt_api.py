"""The full-TensorRT code path, held against the TensorRT 10.13 API as published in
tensorrt-stubs (read as text/AST: mypy rejects their syntax) and against TensorRT 11.4 as
published on PyPI (the dispatch runtime imported for real, the builder's names read from the
full bindings' wheel: tests/data/tensorrt-11.4.0.106-builder-names.txt), and run for real
where `tensorrt` imports with a GPU."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

TRT11_NAMES = REPO / "tests" / "data" / "tensorrt-11.4.0.106-builder-names.txt"

BUILD_PLAN = REPO / "pipeline" / "builders" / "build_plan.py"
BACKEND_FILES = [BUILD_PLAN, REPO / "pipeline" / "backends" / "tensorrt_runner.py",
                 *(REPO / "pipeline" / "builders" / f for f in ("base.py", "tensorrt.py", "tensorrt_rtx.py", "compat.py"))]
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
    calls = set(re.findall(r"\.(\w+)\(", BUILD_PLAN.read_text()
                           + (REPO / "pipeline/backends/tensorrt_runner.py").read_text()))
    python_side = {"append", "read_bytes", "is_file", "write_bytes", "get", "item", "float", "cpu",
                   "numpy", "cuda", "data_ptr", "empty", "from_numpy", "synchronize", "Stream",
                   "is_available", "inputs", "outputs", "_spec", "_is_input", "name", "lines",
                   "__init__", "serialize", "deque", "ILogger", "suppress", "read_engine", "ascontiguousarray", "items",
                   "tuple", "BuildRequest", "_set_shape"}
    # the runner's own helpers and its device side (cuda_mem: cuda-python or torch)
    python_side |= {"_bind", "_enqueue", "astype", "close", "fetch", "loader", "put", "timer"}
    python_side |= {"locked"}  # pipeline.builders.timing_cache: the per-uid lock around the cache file
    python_side |= {"level"}   # pipeline.builders.compat: the hardware compatibility level of models.yaml
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
    src = (REPO / "pipeline/builders/tensorrt.py").read_text()
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
    assert ("BuilderFlag", "VERSION_COMPATIBLE") in used
    # the levels are read by name from one table (pipeline.builders.compat): AMPERE_PLUS exists in 10.13
    from pipeline.builders.compat import HARDWARE_LEVELS
    assert HARDWARE_LEVELS["ampere_plus"].enum == "AMPERE_PLUS" and "AMPERE_PLUS" in api["HardwareCompatibilityLevel"]
    assert "VERSION_COMPATIBLE" in api["BuilderFlag"]
    assert "hardware_compatibility_level" in api["IBuilderConfig"]
    assert "engine_host_code_allowed" in api["Runtime"]
    # feature-detected, never version-parsed
    src = BUILD_PLAN.read_text()
    assert 'getattr(trt, "HardwareCompatibilityLevel", None)' in src and "hasattr(levels, lv.enum)" in src
    assert 'hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE")' in src


def _rtx():
    mod = pytest.importorskip("tensorrt_rtx_bindings")
    if not hasattr(mod, "Builder"):
        pytest.skip("tensorrt_rtx_bindings is stubs only")
    return mod


def test_apply_compatibility_on_a_real_builder_config_and_one_that_ignores_the_level(tmp_path):
    """TensorRT for RTX (importable here, no GPU needed) has the same builder API, takes
    VERSION_COMPATIBLE, but leaves hardware_compatibility_level at NONE when AMPERE_PLUS is
    set: the read-back refuses that build instead of publishing an exact engine tagged portable."""
    from pipeline.builders.build_plan import BuildRequest, apply_compatibility, make_logger
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

    from pipeline.builders.build_plan import BuildRequest, apply_compatibility
    from pipeline.errors import PipelineError
    old_trt = types.SimpleNamespace(BuilderFlag=types.SimpleNamespace())   # a TensorRT before 8.6
    req = BuildRequest(model="human", onnx=tmp_path / "x.onnx", use_fp16_flag=False, strongly_typed=True,
                       imgsz=320, batch={"min": 1, "opt": 1, "max": 1}, workspace_bytes=None, timing_cache=None,
                       compatibility="ampere_plus")
    with pytest.raises(PipelineError, match="no hardware compatibility level AMPERE_PLUS"):
        apply_compatibility(old_trt, object(), req)


def _gpu(name: str, cc: str):
    from pipeline.hardware import GpuFacts
    return GpuFacts(0, name, None, cc, "580.159.04", None, None, None)


def test_backends_take_or_refuse_the_portable_tier():
    from pipeline.builders import TensorRT, TensorRTRTX
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
    assert "compute capability 8.0 or newer to build on" in info.value.what and "sm75" in info.value.what
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


# -- TensorRT 11 (issue 23) ---------------------------------------------------------------
# The 10 -> 11 migration: BuilderFlag.FP16/INT8/BF16/FP8, IInt8Calibrator (implicit INT8) and
# weakly typed networks are gone; networks are strongly typed. Names the builder path must not use:
REMOVED_IN_11 = ("IInt8Calibrator", "IInt8EntropyCalibrator2", "int8_calibrator", "get_calibration_profile",
                 "set_calibration_profile", "max_workspace_size", "build_engine")


def _trt11():
    """TensorRT 11.4's dispatch runtime, imported for real (no GPU needed): its enums are the
    full TensorRT's (one header), its Runtime/ICudaEngine/IExecutionContext the runner's."""
    mod = pytest.importorskip("tensorrt_dispatch_bindings",
                              reason="tensorrt-dispatch-cu13-bindings 11.4 not installed (the test extra)")
    assert mod.__version__.startswith("11."), mod.__version__
    return mod


def _trt11_builder_names() -> set[str]:
    """The full 11.4 bindings' registered names beyond the dispatch runtime's, plus the dispatch
    module's own strings (the linker merges a name into the tail of a longer one: 'serialize'
    lives in 'deserialize'), so a name exists when one of them ends with it."""
    trt = _trt11()
    names = {line.strip() for line in TRT11_NAMES.read_text().splitlines() if line.strip() and not line.startswith("#")}
    so = next(Path(trt.__file__).parent.glob("tensorrt_dispatch*.so"))
    names |= {m.decode() for m in re.findall(rb"(?<=\x00)([A-Za-z_]\w{1,80})(?=\x00)", so.read_bytes())}
    return names


def _exists_in_11(name: str, names: set[str]) -> bool:
    return name in names or any(n.endswith(name) for n in names)


def test_tensorrt_11_dropped_what_the_builder_detects_and_has_the_levels_it_sets():
    trt = _trt11()
    # the FP16 route switches on this attribute (TensorRT.strongly_typed): 11 builds the FP16 ONNX
    assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.BuilderFlag, "INT8")
    assert not hasattr(trt, "IInt8Calibrator")
    assert hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE") and hasattr(trt.Runtime, "engine_host_code_allowed")
    from pipeline.builders.compat import HARDWARE_LEVELS
    for lv in HARDWARE_LEVELS.values():
        assert hasattr(trt.HardwareCompatibilityLevel, lv.enum), lv.enum
    src = _sources()
    assert [n for n in REMOVED_IN_11 if re.search(rf"\b{n}\b", src)] == []
    # BuilderFlag.FP16 is set only on a weakly typed TensorRT 10 build, where the attribute exists
    assert re.findall(r"trt\.BuilderFlag\.(FP16|INT8|BF16|FP8)\b", src) == ["FP16"]
    assert "    if req.use_fp16_flag:\n        config.set_flag(trt.BuilderFlag.FP16)" in BUILD_PLAN.read_text()


def test_the_builder_on_tensorrt_11_builds_strongly_typed_fp16(monkeypatch):
    from pipeline.builders import TensorRT
    trt = _trt11()
    b = TensorRT(_gpu("NVIDIA A10", "8.6"))
    monkeypatch.setattr(TensorRT, "module", lambda self: trt)
    assert b.strongly_typed is True        # no BuilderFlag.FP16: the FP16 twin ONNX is built, strongly typed


def test_every_name_the_builder_path_uses_exists_in_tensorrt_11():
    names = _trt11_builder_names()
    used = {m for pair in re.findall(r"\btrt\.(\w+)(?:\.(\w+))?", _sources()) for m in pair if m}
    used |= set(re.findall(r"\.(\w+)\(", BUILD_PLAN.read_text())) - {
        "append", "read_bytes", "is_file", "write_bytes", "deque", "ILogger", "suppress", "locked", "level", "name",
        "__init__", "range", "get", "BuildRequest"}
    # TensorRT for RTX only (ComputeCapability, set_compute_capability, num_compute_capabilities): guarded
    rtx_only = {"ComputeCapability", "set_compute_capability"}
    ten_only = {"FP16"}   # BuilderFlag.FP16: weakly typed TensorRT 10 only (the test above holds the guard)
    missing = sorted(n for n in used - rtx_only - ten_only if not _exists_in_11(n, names))
    assert missing == []
    for name in ("create_network", "build_serialized_network", "set_memory_pool_limit", "OnnxParser",
                 "STRONGLY_TYPED", "create_timing_cache", "hardware_compatibility_level"):
        assert re.search(rf"\b{name}\b", BUILD_PLAN.read_text()) and _exists_in_11(name, names), name
    # properties read (not calls): the same check
    for cls, props in PROPERTIES.items():
        for name in props:
            # num_compute_capabilities: TensorRT for RTX only; device_memory_size: the runner reads
            # device_memory_size_v2 first and falls back to it on TensorRT 10 only (gone in 11)
            if name not in ("num_compute_capabilities", "device_memory_size"):
                assert _exists_in_11(name, names) or hasattr(getattr(_trt11(), cls, None), name), f"{cls}.{name}"
    # the check can fail: names TensorRT 11 removed are not there
    assert not any(n in names for n in ("IInt8Calibrator", "int8_calibrator", "max_workspace_size"))


def test_the_runner_api_exists_in_tensorrt_11s_runtime():
    trt = _trt11()
    runner = (REPO / "pipeline/backends/tensorrt_runner.py").read_text()
    for cls, names in {"Runtime": ("deserialize_cuda_engine", "engine_host_code_allowed"),
                       "ICudaEngine": ("create_execution_context", "num_io_tensors", "get_tensor_name",
                                       "get_tensor_mode", "get_tensor_profile_shape", "device_memory_size_v2"),
                       "IExecutionContext": ("set_input_shape", "set_tensor_address", "get_tensor_shape",
                                             "execute_async_v3")}.items():
        for name in names:
            assert name in runner, f"{name} is no longer used: update this list"
            assert hasattr(getattr(trt, cls), name), f"{cls}.{name}"
    assert hasattr(trt.TensorIOMode, "INPUT")


def test_apply_compatibility_sets_same_compute_capability_with_tensorrt_11s_enum(tmp_path):
    import types

    from pipeline.builders.build_plan import BuildRequest, apply_compatibility
    trt = _trt11()
    flags = []
    config = types.SimpleNamespace(hardware_compatibility_level=trt.HardwareCompatibilityLevel.NONE,
                                   set_flag=flags.append)
    req = BuildRequest(model="human", onnx=tmp_path / "x.onnx", use_fp16_flag=False, strongly_typed=True,
                       imgsz=320, batch={"min": 1, "opt": 1, "max": 1}, workspace_bytes=None, timing_cache=None,
                       compatibility="same_compute_capability", version_compatible=True)
    apply_compatibility(trt, config, req)
    assert config.hardware_compatibility_level == trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
    assert flags == [trt.BuilderFlag.VERSION_COMPATIBLE]


def _names_of(so: Path) -> set[str]:
    return {m.decode() for m in re.findall(rb"(?<=\x00)([A-Za-z_][A-Za-z0-9_]{1,80})(?=\x00)", so.read_bytes())}


if __name__ == "__main__":   # regenerate TRT11_NAMES from unpacked -bindings and dispatch-bindings wheels
    import sys
    root = Path(sys.argv[1])
    full = _names_of(root / "tensorrt_bindings" / "tensorrt.so")
    dispatch = _names_of(root / "tensorrt_dispatch_bindings" / "tensorrt_dispatch.so")
    header = "".join(line + "\n" for line in TRT11_NAMES.read_text().splitlines() if line.startswith("#"))
    print(header + "\n".join(sorted(n for n in full - dispatch
                                    if not n.startswith(("_Z", "__", "GLIBC", "cuda", "nv", "PyUnicode", "Py")))))
