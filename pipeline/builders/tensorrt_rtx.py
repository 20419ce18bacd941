"""TensorRT for RTX, from PyPI: builds ahead of time for listed compute capabilities on a
machine with or without a GPU; its engines run only on those GPUs, on its own version."""
from __future__ import annotations

from pipeline.builders.base import Builder, MissingBuild
from pipeline.errors import PipelineError
from pipeline.hardware import cc_tuple, sm_name

# TensorRT for RTX 1.7's ComputeCapability enum; read from the module when it imports.
RTX_KNOWN_TARGETS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")


class TensorRTRTX(Builder):
    name, tag_prefix, label, module_name = "tensorrt-rtx", "trtrtx", "TensorRT for RTX", "tensorrt_rtx_bindings"
    aliases = ("tensorrt_rtx", "trt-rtx", "trtrtx")
    dists = ("tensorrt-rtx-cu13-bindings", "tensorrt-rtx-cu12-bindings", "tensorrt-rtx")
    image_label = "org.engines.tensorrt-rtx.version"   # bare (1.7.1.116)
    missing = "TensorRT for RTX is not installed (pip install '.[rtx]')"
    install_fix = "pip install -e '.[rtx]' (make install does this)"
    import_fix = ("pip install 'tensorrt-rtx-cu13-libs' 'tensorrt-rtx-cu13-bindings' (the `rtx` extra), "
                  "or use --backend tensorrt in the NGC container")
    # TensorRT for RTX ignores the timing cache (deprecated there since 1.2, no effect on the engine:
    # NVIDIA's TensorRT for RTX docs, "timing cache migration"); it has a runtime cache on the host instead
    timing_cache = False
    needs_build_gpu = False
    builds_nms = False   # TensorRT for RTX has no NMS layer (NVIDIA/TensorRT-RTX#32)
    tuned_on_build_gpu = False     # specialised on the device at first run
    strongly_typed = True          # TensorRT for RTX networks are always strongly typed
    gpu = None                     # builds ahead of time; no build GPU recorded
    older_cuda_route = "the tensorrt-rtx-cu12 packages instead of -cu13"

    def __init__(self, targets: list[str] | None = None):
        self.targets = sorted(targets or self.supported_targets(), key=cc_tuple)
        self.explicit_targets = bool(targets)   # --target given: refuse rather than drop a target
        unknown = [t for t in self.targets if t not in self.supported_targets()]
        if unknown:
            raise PipelineError(
                f"TensorRT for RTX cannot target compute capability {', '.join(unknown)}",
                fix=f"use --target with any of: {', '.join(sm_name(t) for t in self.supported_targets())}")

    @classmethod
    def for_host(cls, targets: list[str] | None, gpus: list) -> TensorRTRTX:
        ok, why = cls.available()
        if not ok:
            raise PipelineError(why, fix=cls.install_fix)
        return cls(targets)

    @classmethod
    def supported_targets(cls) -> tuple[str, ...]:
        return RTX_KNOWN_TARGETS

    def unbuildable(self, precision: str, has_attention: bool) -> dict[str, str]:
        """TensorRT for RTX 1.7 cannot compile an FP32 matrix product of two activations (attention:
        YOLO11, YOLO12, YOLO26) for Turing: "FP32 GEMM is not supported" (measured on a YOLO11n at FP32,
        and on YOLO26n's INT8 twin, whose attention stays in float). FP16 builds do."""
        if precision in ("fp32", "int8") and has_attention and "7.5" in self.targets:
            return {"7.5": f"TensorRT for RTX cannot build {precision.upper()} attention (a MatMul of two activations) "
                          "for Turing (sm75): \"FP32 GEMM is not supported\""}
        return {}

    def configure(self, compatibility: str | None, version_compatible: bool) -> None:
        if compatibility or version_compatible:
            key = "compatibility" if compatibility else "version_compatible"
            raise PipelineError(
                f"TensorRT for RTX does not take `{key}:` (models.yaml defaults): its engines already run on every "
                "compute capability listed with --target (built ahead of time for each, specialised on the device "
                "at first run), and load only on the TensorRT for RTX version that built them",
                fix="for RTX GPUs list them with --target (e.g. --target sm86,sm89,sm120) and remove the key; for "
                    "one full-TensorRT set for every Ampere-or-newer GPU build with --backend tensorrt on such a GPU")

    def target_enums(self, trt) -> list:
        return [getattr(trt.ComputeCapability, sm_name(t).upper()) for t in self.targets]

    def reproduce(self, model: str) -> str:
        return super().reproduce(model) + f" --target {','.join(sm_name(t) for t in self.targets)}"

    @classmethod
    def builds_for(cls, compute_cap: str) -> bool:
        return compute_cap in RTX_KNOWN_TARGETS

    @classmethod
    def missing_build(cls, gpu, config_arg: str = "") -> MissingBuild:
        return MissingBuild(argv=["run", "--backend", cls.name, "--target", gpu.sm])

    @classmethod
    def build_command(cls, gpu, config_arg: str = "") -> str:
        return f"engines{config_arg} run --backend {cls.name} --target {gpu.sm}"

    @classmethod
    def build_fix(cls, want: str, gpu, version: str, config_arg: str = "") -> str:
        return (f"build {want} with `{cls.build_command(gpu, config_arg)}` (tensorrt-rtx {version} installed), or "
                "rerun with --build-missing")

    @classmethod
    def no_build_fix(cls, gpu) -> str | None:
        if cls.builds_for(gpu.compute_cap):
            return None
        from pipeline.builders.tensorrt import BUILDER_CMD
        return (f"TensorRT for RTX does not build for {gpu.sm} (it targets {', '.join(RTX_KNOWN_TARGETS)}): run the "
                f"service with the full TensorRT and build its set here with `{BUILDER_CMD}` "
                "(then resolve with `--runtime tensorrt==<its version>`)")

    @classmethod
    def rebuild_command(cls, tag_targets: str | None, config_arg: str = "") -> str:
        targets = ",".join(f"sm{t}" for t in (tag_targets or "").split("_") if t)
        return f"engines{config_arg} run --force --backend {cls.name} --target {targets}"
