"""Which TensorRT is installed here, and the names every module shares.

One list of the distributions that carry each runtime (read from package metadata, so
nothing imports TensorRT to learn its version), and the constants that the builder,
resolve and the Docker runner must agree on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.builders import BUILDERS, TensorRT, TensorRTRTX, builder_for_alias, builder_named
from pipeline.builders.base import installed_version as _installed
from pipeline.builders.tensorrt import BUILDER_CMD  # noqa: F401  (the name every module shares)
from pipeline.errors import PipelineError

# Distribution names that carry each runtime, in the order they are asked (the builders' own lists).
DISTS = {b.name: b.dists for b in BUILDERS}
# Image labels that name the TensorRT an image runs (docs/container.md "Image labels"), asked in this order:
TRT_LABEL = TensorRT.image_label                 # full TensorRT, bare (10.13.2.6) or BACKEND==VERSION
RTX_LABEL = TensorRTRTX.image_label              # TensorRT for RTX, bare (1.7.1.116)
NVIDIA_TRT_LABEL = "com.nvidia.tensorrt.version"  # NVIDIA's own, on NGC TensorRT images and those built on them
DEFAULT_IMAGE = "engines-builder:latest"


def installed_version(backend: str) -> tuple[str, str] | None:
    """(version, distribution) of ``backend`` installed here, or None."""
    return _installed(builder_named(backend).dists)


@dataclass(frozen=True)
class Runtime:
    backend: str          # a builder's name (pipeline.builders.NAMES)
    version: str
    source: str           # where it was read, for messages

    @property
    def label(self) -> str:
        return f"{builder_named(self.backend).label} {self.version}"

    @property
    def spec(self) -> str:
        return f"{self.backend}=={self.version}"

    def to_json(self) -> dict:
        return {"backend": self.backend, "version": self.version, "source": self.source}


def cannot_run_here(manifest, gpus: list) -> str | None:
    """Why this machine cannot run the set's engines (None if it can), without importing TensorRT
    (nor numpy: a cached `engines run` asks it)."""
    found = installed_version(manifest.backend)
    return manifest.cannot_run_here(found[0] if found else None, gpus)


def parse_runtime(text: str, source: str = "--runtime") -> Runtime:
    m = re.match(r"^\s*([A-Za-z_-]+)\s*==\s*(\d+(?:\.\d+)*)\s*$", text or "")
    builder = builder_for_alias(m.group(1)) if m else None
    backend = builder.name if builder else None
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
