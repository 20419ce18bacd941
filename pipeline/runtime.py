"""Which TensorRT is installed here, and the names every module shares.

One list of the distributions that carry each runtime (read from package metadata, so
nothing imports TensorRT to learn its version), and the constants that the builder,
resolve and the Docker runner must agree on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import PipelineError

# Distribution names that carry each runtime, in the order they are asked.
DISTS = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings",
                 "tensorrt-cu12-bindings", "tensorrt-bindings"),
    "tensorrt-rtx": ("tensorrt-rtx-cu13-bindings", "tensorrt-rtx-cu12-bindings", "tensorrt-rtx"),
}
# Image labels that name the TensorRT an image runs (docs/container.md "Image labels"), asked in this order:
TRT_LABEL = "org.engines.tensorrt.version"       # full TensorRT, bare (10.13.2.6) or BACKEND==VERSION
RTX_LABEL = "org.engines.tensorrt-rtx.version"   # TensorRT for RTX, bare (1.7.1.116)
NVIDIA_TRT_LABEL = "com.nvidia.tensorrt.version"  # NVIDIA's own, on NGC TensorRT images and those built on them
DEFAULT_IMAGE = "engines-builder:latest"
BUILDER_CMD = "docker compose -f docker-compose.build.yml run --rm builder"


def installed_version(backend: str) -> tuple[str, str] | None:
    """(version, distribution) of ``backend`` installed here, or None."""
    from importlib import metadata  # ~15 ms: only where the question is asked
    for dist in DISTS[backend]:
        try:
            return metadata.version(dist), dist
        except metadata.PackageNotFoundError:
            continue
    return None


RUNTIME_ALIASES = {"tensorrt": "tensorrt", "trt": "tensorrt", "tensorrt-rtx": "tensorrt-rtx",
                   "tensorrt_rtx": "tensorrt-rtx", "trt-rtx": "tensorrt-rtx", "trtrtx": "tensorrt-rtx"}


@dataclass(frozen=True)
class Runtime:
    backend: str          # tensorrt | tensorrt-rtx
    version: str
    source: str           # where it was read, for messages

    @property
    def label(self) -> str:
        return ("TensorRT for RTX " if self.backend == "tensorrt-rtx" else "TensorRT ") + self.version

    @property
    def spec(self) -> str:
        return f"{self.backend}=={self.version}"

    def to_json(self) -> dict:
        return {"backend": self.backend, "version": self.version, "source": self.source}


def parse_runtime(text: str, source: str = "--runtime") -> Runtime:
    m = re.match(r"^\s*([A-Za-z_-]+)\s*==\s*(\d+(?:\.\d+)*)\s*$", text or "")
    backend = RUNTIME_ALIASES.get(m.group(1).lower()) if m else None
    if not m or backend is None:
        raise PipelineError(f"cannot read the runtime {text!r}",
                            fix="write it as `tensorrt==10.13.3.9` or `tensorrt-rtx==1.7.1.116`")
    return Runtime(backend, m.group(2), source)


def installed_runtime() -> Runtime | None:
    """The TensorRT this Python would load, read from package metadata (no import)."""
    for backend in DISTS:
        found = installed_version(backend)
        if found:
            return Runtime(backend, found[0], f"installed package {found[1]}")
    return None
