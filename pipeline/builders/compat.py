"""What NVIDIA says moves between hosts: hardware compatibility levels and version
compatibility across TensorRT releases. One table, read by the builders (the build flag),
the tag, the manifest (where a set runs) and resolve (the verdict and its words).

Hardware compatibility (TensorRT Developer Guide, "Hardware Compatibility";
``HardwareCompatibilityLevel``): ``AMPERE_PLUS`` runs on every GPU of compute capability
8.0 or newer; ``SAME_COMPUTE_CAPABILITY`` on every GPU of the building GPU's compute
capability, Turing (7.5) and later. Neither is supported on JetPack.

Version compatibility (TensorRT support matrix): a plan built with
``BuilderFlag.VERSION_COMPATIBLE`` loads on a later TensorRT of the same major, and across
majors only as NVIDIA lists it (``CROSS_MAJOR``).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.hardware import cc_tuple, sm_name

# Compute capabilities only Jetson modules have (Xavier 7.2, Orin 8.7, Thor 10.1 / 11.0 from CUDA 13):
# TensorRT's hardware compatibility does not cover JetPack, so a portable set never runs there.
JETSON_CCS = ("7.2", "8.7", "10.1", "11.0")

# NVIDIA's support matrix, verbatim: the only cross-major pairs (built major -> runtime major).
CROSS_MAJOR_RULE = ("TensorRT 10 version-compatible engines can run with a TensorRT 11 runtime, and TensorRT 8 "
                    "version-compatible engines with a TensorRT 10 runtime. No other combination.")
CROSS_MAJOR = {(10, 11), (8, 10)}


@dataclass(frozen=True)
class HardwareLevel:
    """One ``compatibility:`` value of models.yaml."""
    key: str              # models.yaml spelling and manifest record
    enum: str             # trt.HardwareCompatibilityLevel member
    min_cc: tuple[int, int]
    covers: str           # for messages: which GPUs load the set

    def tag_part(self, targets: list[str]) -> str:
        """The GPU part of the set's tag: ``sm80plus`` (every cc >= 8.0) or ``sm86cc`` (every
        GPU of compute capability 8.6)."""
        if self.key == "ampere_plus":
            return "sm80plus"
        return "_".join(sm_name(t) for t in sorted(targets, key=cc_tuple)) + "cc"

    def runs_on(self, targets: list[str], compute_cap: str) -> bool:
        if compute_cap in JETSON_CCS or cc_tuple(compute_cap) < self.min_cc:
            return False
        return self.key == "ampere_plus" or compute_cap in targets

    def build_refusal(self, gpu) -> str | None:
        """Why this level cannot be built on ``gpu`` (hardware.GpuFacts), or None."""
        if gpu.compute_cap in JETSON_CCS:
            return f"compatibility: {self.key} is not supported on JetPack; {gpu.name} is a Jetson module"
        if cc_tuple(gpu.compute_cap) < self.min_cc:
            return (f"compatibility: {self.key} needs a GPU of compute capability {self.min_cc[0]}.{self.min_cc[1]} "
                    f"or newer to build on; {gpu.name} is {sm_name(gpu.compute_cap)}")
        return None


HARDWARE_LEVELS = {
    # NVIDIA: AMPERE_PLUS "is only supported for engines built on NVIDIA Ampere and later GPUs"
    "ampere_plus": HardwareLevel("ampere_plus", "AMPERE_PLUS", (8, 0),
                                 "every GPU of compute capability 8.0 or newer except Jetson modules (AMPERE_PLUS)"),
    # NVIDIA: SAME_COMPUTE_CAPABILITY is supported on Turing and later, not on JetPack
    "same_compute_capability": HardwareLevel("same_compute_capability", "SAME_COMPUTE_CAPABILITY", (7, 5),
                                             "every GPU of the building GPU's compute capability, Turing or newer, "
                                             "except Jetson modules (SAME_COMPUTE_CAPABILITY)"),
}


def level(key: str | None) -> HardwareLevel | None:
    return HARDWARE_LEVELS.get(key) if key else None


def _version(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in str(text).split("."))
    except (ValueError, AttributeError):   # not a dotted version: no claim of compatibility
        return None


def version_compatible_loads(built: str, runtime: str) -> bool:
    """A version-compatible plan built with ``built`` loads on ``runtime``: a later release of
    the same major, or a major NVIDIA lists as compatible (10 -> 11, 8 -> 10)."""
    b, r = _version(built), _version(runtime)
    if b is None or r is None:
        return False
    if r[0] == b[0]:
        return r >= b
    return (b[0], r[0]) in CROSS_MAJOR
