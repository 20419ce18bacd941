"""ONNX -> serialized plan with the TensorRT builder API shared by TensorRT 10/11 and
TensorRT for RTX (same class and method names; the module object is passed in).

Only post-10.0 API is used: ``create_network``, ``OnnxParser``, ``set_memory_pool_limit``,
``build_serialized_network``, optimization profiles by tensor name. Features are
detected with ``hasattr``, never by parsing version numbers.
"""
from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.builders import timing_cache
from pipeline.builders.compat import level
from pipeline.errors import PipelineError
from pipeline.fsutil import atomic_path


@dataclass
class BuildRequest:
    model: str
    onnx: Path                      # the file to parse (the FP16 twin for strongly typed FP16)
    use_fp16_flag: bool             # BuilderFlag.FP16 (weakly typed TensorRT 10 only)
    strongly_typed: bool            # pass NetworkDefinitionCreationFlag.STRONGLY_TYPED if it exists
    imgsz: int
    batch: dict                     # {min, opt, max}
    workspace_bytes: int | None
    timing_cache: Path | None
    targets: list = field(default_factory=list)  # TensorRT for RTX ComputeCapability enums
    compatibility: str | None = None  # a key of builders.compat.HARDWARE_LEVELS (full TensorRT)
    version_compatible: bool = False  # BuilderFlag.VERSION_COMPATIBLE


def make_logger(trt, keep: int = 40):
    """A logger that keeps the last ``keep`` warnings/errors for error messages."""
    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.lines = collections.deque(maxlen=keep)

        def log(self, severity, msg):
            if severity <= trt.ILogger.Severity.WARNING:
                self.lines.append(f"[{severity.name}] {msg}")
    return _Logger()


def parse_onnx(trt, builder, logger, req: BuildRequest):
    flags = 0
    if req.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    try:
        ok = parser.parse_from_file(str(req.onnx))
    except Exception as exc:  # the bindings raise on unreadable files
        ok, extra = False, [f"parser raised {type(exc).__name__}: {exc}"]
    else:
        extra = []
    if not ok:
        details = extra + [
            f"node '{e.node_name()}' (op {e.node_operator() or '?'}): {e.desc()}"
            for e in (parser.get_error(i) for i in range(parser.num_errors))]
        raise PipelineError(
            f"TensorRT's ONNX parser rejected the model ({len(details)} error(s))",
            model=req.model, file=req.onnx, details=details or list(logger.lines)[-5:],
            fix="if the file is truncated, rerun `engines export --force`; for an unsupported op, "
                "re-export with a different opset or replace the op in the model")
    return network, parser


def build_plan(trt, req: BuildRequest) -> bytes:
    """Build and return the serialized plan; errors name the model, file and next step."""
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = parse_onnx(trt, builder, logger, req)
    config = builder.create_builder_config()
    if req.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(req.workspace_bytes))
    if req.use_fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    apply_compatibility(trt, config, req)
    if req.targets:
        config.num_compute_capabilities = len(req.targets)
        for i, cc in enumerate(req.targets):
            config.set_compute_capability(cc, i)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = lambda b: (b, 3, req.imgsz, req.imgsz)
        profile.set_shape(t.name, shape(req.batch["min"]), shape(req.batch["opt"]), shape(req.batch["max"]))
    config.add_optimization_profile(profile)

    cache = None
    if req.timing_cache is not None and hasattr(config, "create_timing_cache"):
        with timing_cache.locked(req.timing_cache):
            data = req.timing_cache.read_bytes() if req.timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, False)  # ignore_mismatch=False: never reuse across GPUs
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise PipelineError("TensorRT returned no engine", model=req.model, file=req.onnx,
                            details=list(logger.lines)[-10:] or ["(TensorRT logged nothing)"],
                            fix="read the log lines above; for out-of-memory lower `workspace` "
                                "or the batch max in models.yaml")
    if cache is not None:
        merge_timing_cache(config, cache, req.timing_cache)
    return bytes(plan)


def apply_compatibility(trt, config, req: BuildRequest) -> None:
    """The portable tiers: a hardware compatibility level (AMPERE_PLUS: every GPU of compute
    capability 8.0 or newer; SAME_COMPUTE_CAPABILITY: every GPU of the building GPU's), and/or a
    version-compatible plan that later TensorRT releases load (pipeline.builders.compat).
    Feature-detected: a TensorRT without them refuses the build instead of ignoring it."""
    lv = level(req.compatibility)
    if lv is not None:
        levels = getattr(trt, "HardwareCompatibilityLevel", None)
        if levels is None or not hasattr(levels, lv.enum) or not hasattr(config, "hardware_compatibility_level"):
            raise PipelineError(f"this TensorRT has no hardware compatibility level {lv.enum} (compatibility: "
                                f"{lv.key})", model=req.model, file=req.onnx,
                                fix="build in a builder image that has it (`make image`: TensorRT 11; AMPERE_PLUS "
                                    "since 8.6), or remove compatibility: from models.yaml")
        wanted = getattr(levels, lv.enum)
        config.hardware_compatibility_level = wanted
        if config.hardware_compatibility_level != wanted:
            # read back: a builder that ignores it would publish an exact engine tagged portable
            raise PipelineError(f"this TensorRT did not take hardware compatibility level {lv.enum} (it reads "
                                f"back {config.hardware_compatibility_level})", model=req.model, file=req.onnx,
                                fix="build the portable set with the full TensorRT (--backend tensorrt) on a GPU "
                                    "the level supports, or remove compatibility: from models.yaml")
    if req.version_compatible:
        if not hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE"):
            raise PipelineError("this TensorRT cannot build version-compatible engines", model=req.model,
                                file=req.onnx, fix="remove version_compatible: from models.yaml")
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)


def merge_timing_cache(config, cache, path: Path) -> None:
    """Merge this build's timings into the shared file under a lock (Polygraphy's way):
    another builder may have added entries since we loaded it."""
    with timing_cache.locked(path):
        current = path.read_bytes() if path.is_file() else b""
        merged = config.create_timing_cache(current)
        with contextlib.suppress(Exception):  # a corrupt file is replaced, not fatal
            merged.combine(cache, False)
        if not current:
            merged = cache
        with atomic_path(path) as tmp:
            tmp.write_bytes(bytes(merged.serialize()))
