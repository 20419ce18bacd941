"""The full TensorRT (10 and 11), from the NGC builder image: builds for the GPU it runs on.

TensorRT 11 removed ``BuilderFlag.FP16``/``INT8``, implicit INT8 calibration and weakly typed
networks; what differs is detected on the module (``hasattr``), never read from a version.
"""
from __future__ import annotations

from pipeline.builders.base import Builder, MissingBuild
from pipeline.builders.compat import level, version_compatible_loads
from pipeline.errors import PipelineError

BUILDER_CMD = "docker compose -f docker-compose.build.yml run --rm builder"
# Strongly typed networks take a Q/DQ ONNX as it is; TensorRT 10.12 is the oldest full TensorRT
# this pipeline builds INT8 with (NVIDIA deprecates the implicit INT8 path from 10.1 on and
# removes it in 11; issue 15).
INT8_MIN_TRT = (10, 12)


class TensorRT(Builder):
    name, tag_prefix, label, module_name = "tensorrt", "trt", "TensorRT", "tensorrt"
    aliases = ("trt",)
    dists = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings",
             "tensorrt-bindings")
    image_label = "org.engines.tensorrt.version"   # bare (10.13.2.6) or BACKEND==VERSION
    missing = "the full TensorRT is not installed (it ships in the NGC container)"
    install_fix = "run in the builder container: docker compose -f docker-compose.build.yml run builder"
    import_fix = "run inside the builder container (`make engines-docker`), or use --backend tensorrt-rtx"
    timing_cache = True
    needs_build_gpu = True
    tuned_on_build_gpu = True
    # both make variants (NGC 25.08 and 26.08) are CUDA 13: a CUDA 12 one is an older NGC tag
    older_cuda_route = ("a CUDA 12 builder image (an NGC TensorRT tag before 25.08, given as TRT_IMAGE with its "
                        "EXPECTED_TRT_VERSION)")

    def __init__(self, gpu):
        self.gpu = gpu  # hardware.GpuFacts of the build GPU (the engine's only target)
        self.targets = [gpu.compute_cap]

    @classmethod
    def for_host(cls, targets: list[str] | None, gpus: list) -> TensorRT:
        ok, why = cls.available()
        if not ok:
            raise PipelineError(why, fix=cls.install_fix)
        if not gpus:
            raise PipelineError("--backend tensorrt needs a GPU to build on, and none was found",
                                fix="run on a GPU host, or use --backend tensorrt-rtx for RTX targets")
        if targets and targets != [gpus[0].compute_cap]:
            raise PipelineError(
                f"TensorRT builds only for the GPU it runs on (sm{gpus[0].compute_cap}); "
                f"--target {', '.join(targets)} cannot be honoured",
                fix="drop --target, or build on a GPU of that compute capability")
        return cls(gpus[0])

    def configure(self, compatibility: str | None, version_compatible: bool) -> None:
        lv = level(compatibility)
        why = lv.build_refusal(self.gpu) if lv else None
        if why:
            portable = ("build the portable set on a GPU of compute capability 8.0 or newer (A10, L4, A100, H100...)"
                        if lv.key == "ampere_plus" else "build it on a Turing-or-newer data-centre or desktop GPU")
            raise PipelineError(why, fix=f"{portable}; for {self.gpu.name} build an exact set (remove "
                                         "compatibility: from models.yaml)")
        super().configure(compatibility, version_compatible)

    @property
    def strongly_typed(self) -> bool:
        """TensorRT 11 removed BuilderFlag.FP16: FP16 then means building the FP16 ONNX."""
        return not hasattr(self.module().BuilderFlag, "FP16")

    @classmethod
    def int8_refusal(cls, version: str | None) -> str | None:
        version = version or "0"
        try:
            have = tuple(int(x) for x in version.split(".")[:2])
        except ValueError:
            have = (0, 0)
        if have < INT8_MIN_TRT:
            return (f"INT8 needs TensorRT {'.'.join(map(str, INT8_MIN_TRT))} or newer (a strongly typed build of the "
                    f"Q/DQ ONNX); this is TensorRT {version}")
        return None   # 10.12+: STRONGLY_TYPED exists, or (11) every network is strongly typed

    @classmethod
    def runtime_loads(cls, built: str, runtime: str, version_compatible: bool) -> bool:
        return built == runtime or (version_compatible and version_compatible_loads(built, runtime))

    @classmethod
    def missing_build(cls, gpu, config_arg: str = "") -> MissingBuild:
        return MissingBuild(container_args=["run", "--backend", cls.name])

    @classmethod
    def build_command(cls, gpu, config_arg: str = "") -> str:
        return BUILDER_CMD

    @classmethod
    def build_fix(cls, want: str, gpu, version: str, config_arg: str = "") -> str:
        return (f"build {want} on this host with `{BUILDER_CMD}` (or `make engines-docker`) from a builder image "
                f"that carries TensorRT {version} (`make image TRT={version.split('.')[0]}` builds the NGC variant of "
                "that major; `engines docker image-info` reads an image's version), or rerun with --build-missing")

    @classmethod
    def rebuild_command(cls, tag_targets: str | None, config_arg: str = "") -> str:
        return f"{BUILDER_CMD} run --force   (on a GPU of the set's type)"

