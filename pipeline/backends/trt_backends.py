"""The two TensorRT build backends behind one interface, and `--backend auto`.

``tensorrt``: the full TensorRT (NGC container), builds for the GPU it runs on.
``tensorrt-rtx``: TensorRT for RTX from PyPI, builds ahead of time for listed compute
capabilities on a machine with or without a GPU; its engines run only on those GPUs.

Versions come from package metadata, so the incremental check imports no TensorRT.
"""
from __future__ import annotations

import importlib

from pipeline.errors import PipelineError
from pipeline.hardware import cc_tuple, sm_name
from pipeline.runtime import installed_version

# TensorRT for RTX 1.7's ComputeCapability enum; read from the module when it imports.
RTX_KNOWN_TARGETS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")


def _import_real(name: str):
    """Import a TensorRT module, rejecting stub-only namespace packages (tensorrt-stubs
    installs a bare ``tensorrt/`` folder of .pyi files that imports as an empty package)."""
    try:
        mod = importlib.import_module(name)
    except ImportError as exc:
        return None, f"`import {name}` failed: {exc}"
    if not hasattr(mod, "Builder"):
        return None, f"`{name}` is only type stubs here (no Builder)"
    return mod, None


def parse_target(token: str) -> str:
    """'sm86' / '86' / '8.6' -> '8.6'."""
    t = token.strip().lower().removeprefix("sm").removeprefix("_")
    if "." in t:
        major, minor = t.split(".", 1)
    elif len(t) >= 2 and t.isdigit():
        major, minor = t[:-1], t[-1]
    else:
        raise ValueError(token)
    return f"{int(major)}.{int(minor)}"


class _Backend:
    """What both backends share: the version from package metadata (no import), and
    the module, imported only when a build or run needs it."""
    name = module_name = label = ""
    missing: str = ""      # the `available()` reason when not installed
    import_fix: str = ""   # the next step when the module does not import
    compatibility: str | None = None   # models.yaml defaults (set-wide), set by configure()
    version_compatible: bool = False

    def configure(self, compatibility: str | None, version_compatible: bool) -> None:
        """Take the set-wide compatibility options of models.yaml (checked here)."""
        self.compatibility, self.version_compatible = compatibility, version_compatible

    @classmethod
    def version(cls) -> str | None:
        found = installed_version(cls.name)
        return found[0] if found else None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        v = cls.version()
        return (True, f"{cls.label} {v} is installed") if v else (False, cls.missing)

    def module(self):
        mod, why = _import_real(self.module_name)
        if mod is None:
            raise PipelineError(f"{self.label} cannot be used: {why}", fix=self.import_fix)
        return mod


class TensorRTRTX(_Backend):
    name, module_name, label = "tensorrt-rtx", "tensorrt_rtx_bindings", "TensorRT for RTX"
    missing = "TensorRT for RTX is not installed (pip install '.[rtx]')"
    import_fix = ("pip install 'tensorrt-rtx-cu13-libs' 'tensorrt-rtx-cu13-bindings' (the `rtx` extra), "
                  "or use --backend tensorrt in the NGC container")
    strongly_typed = True   # TensorRT for RTX networks are always strongly typed
    gpu = None              # builds ahead of time; no build GPU recorded

    def __init__(self, targets: list[str] | None = None):
        self.targets = sorted(targets or self.supported_targets(), key=cc_tuple)
        unknown = [t for t in self.targets if t not in self.supported_targets()]
        if unknown:
            raise PipelineError(
                f"TensorRT for RTX cannot target compute capability {', '.join(unknown)}",
                fix=f"use --target with any of: {', '.join(sm_name(t) for t in self.supported_targets())}")

    @classmethod
    def supported_targets(cls) -> tuple[str, ...]:
        return RTX_KNOWN_TARGETS

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


class TensorRT(_Backend):
    name, module_name, label = "tensorrt", "tensorrt", "TensorRT"
    missing = "the full TensorRT is not installed (it ships in the NGC container)"
    import_fix = "run inside the builder container (`make engines-docker`), or use --backend tensorrt-rtx"

    def __init__(self, gpu):
        self.gpu = gpu  # hardware.GpuFacts of the build GPU (the engine's only target)
        self.targets = [gpu.compute_cap]

    def configure(self, compatibility: str | None, version_compatible: bool) -> None:
        # NVIDIA: AMPERE_PLUS "is only supported for engines built on NVIDIA Ampere and later GPUs"
        if compatibility == "ampere_plus" and cc_tuple(self.gpu.compute_cap) < (8, 0):
            raise PipelineError(
                f"compatibility: ampere_plus needs an Ampere or newer GPU to build on; {self.gpu.name} is "
                f"{sm_name(self.gpu.compute_cap)}",
                fix="build the portable set on a GPU of compute capability 8.0 or newer (A10, L4, A100, H100...); "
                    f"for {self.gpu.name} build an exact set (remove compatibility: from models.yaml)")
        super().configure(compatibility, version_compatible)

    @property
    def strongly_typed(self) -> bool:
        """TensorRT 11 removed BuilderFlag.FP16: FP16 then means building the FP16 ONNX."""
        return not hasattr(self.module().BuilderFlag, "FP16")

    def target_enums(self, trt) -> list:
        return []


def choose_backend(name: str, targets: list[str] | None, gpus: list, log=lambda m: None):
    """Resolve --backend (auto|tensorrt|tensorrt-rtx) to a backend object, saying why."""
    if name == "auto":
        ok, why = TensorRT.available()
        if ok and gpus:
            log(f"backend: tensorrt ({why}; GPU {gpus[0].name})")
            name = "tensorrt"
        else:
            reason = why if not ok else "no GPU found"
            log(f"backend: tensorrt-rtx ({reason}; TensorRT for RTX builds without a GPU)")
            name = "tensorrt-rtx"
    if name == "tensorrt-rtx":
        ok, why = TensorRTRTX.available()
        if not ok:
            raise PipelineError(why, fix="pip install -e '.[rtx]' (make install does this)")
        return TensorRTRTX(targets)
    if name == "tensorrt":
        ok, why = TensorRT.available()
        if not ok:
            raise PipelineError(why, fix="run in the builder container: docker compose -f "
                                         "docker-compose.build.yml run builder")
        if not gpus:
            raise PipelineError("--backend tensorrt needs a GPU to build on, and none was found",
                                fix="run on a GPU host, or use --backend tensorrt-rtx for RTX targets")
        if targets and targets != [gpus[0].compute_cap]:
            raise PipelineError(
                f"TensorRT builds only for the GPU it runs on (sm{gpus[0].compute_cap}); "
                f"--target {', '.join(targets)} cannot be honoured",
                fix="drop --target, or build on a GPU of that compute capability")
        return TensorRT(gpus[0])
    raise PipelineError(f"unknown backend {name!r}", fix="use auto, tensorrt or tensorrt-rtx")
