"""Which TensorRT is installed here, and the names every module shares.

One list of the distributions that carry each runtime (read from package metadata, so
nothing imports TensorRT to learn its version), and the constants that the builder,
resolve and the Docker runner must agree on.
"""
from __future__ import annotations

# Distribution names that carry each runtime, in the order they are asked.
DISTS = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings",
                 "tensorrt-cu12-bindings", "tensorrt-bindings"),
    "tensorrt-rtx": ("tensorrt-rtx-cu13-bindings", "tensorrt-rtx-cu12-bindings", "tensorrt-rtx"),
}
# Image labels that name the TensorRT an image runs (README "Image labels"), asked in this order:
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
