"""Which TensorRT is installed here, and the names every module shares.

One list of the distributions that carry each runtime (read from package metadata, so
nothing imports TensorRT to learn its version), and the constants that the builder,
resolve and the Docker runner must agree on.
"""
from __future__ import annotations

from importlib import metadata

# Distribution names that carry each runtime, in the order they are asked.
DISTS = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings",
                 "tensorrt-cu12-bindings", "tensorrt-bindings"),
    "tensorrt-rtx": ("tensorrt-rtx-cu13-bindings", "tensorrt-rtx-cu12-bindings", "tensorrt-rtx"),
}
# Image label carrying the TensorRT version of a builder or service image (see README
# "Labels"): a bare version means the full TensorRT; `tensorrt-rtx==1.7.1.116` names the runtime.
TRT_LABEL = "org.engines.tensorrt.version"
DEFAULT_IMAGE = "engines-builder:latest"
BUILDER_CMD = "docker compose -f docker-compose.build.yml run --rm builder"


def installed_version(backend: str) -> tuple[str, str] | None:
    """(version, distribution) of ``backend`` installed here, or None."""
    for dist in DISTS[backend]:
        try:
            return metadata.version(dist), dist
        except metadata.PackageNotFoundError:
            continue
    return None
