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
    python_side |= {"locked"}  # pipeline.timing_cache: the per-uid lock around the cache file
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
    from pipeline.backends.trt_backends import choose_backend
    from pipeline.config import load_config
    from pipeline.hardware import detect_gpus
    from pipeline.stages.build import build_all
    cfg = load_config(workspace / "models.yaml")
    gpus = detect_gpus()
    backend = choose_backend("tensorrt", None, gpus)
    summary, errors = build_all(cfg, cfg.models[:1], backend, gpus)
    assert not errors, [e.render() for e in errors]
    engine = Path(summary["set"]) / "yolo/yolov8n.engine"
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
    "IBuilderConfig": ["num_compute_capabilities"],  # TensorRT for RTX only (guarded)
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
