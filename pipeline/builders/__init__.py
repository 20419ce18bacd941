"""TensorRT builders: one interface (``base.Builder``) and one list (``BUILDERS``) that
`--backend`, the manifest, the set tag, the runtime names and resolve read. Adding a
builder is one module and one entry here (docs/architecture.md "Adding a builder")."""
from __future__ import annotations

from pipeline.builders.base import Builder
from pipeline.builders.tensorrt import TensorRT
from pipeline.builders.tensorrt_rtx import TensorRTRTX
from pipeline.errors import PipelineError

# Order matters for `--backend auto`: the first usable here builds.
BUILDERS: tuple[type[Builder], ...] = (TensorRT, TensorRTRTX)
NAMES = tuple(b.name for b in BUILDERS)


def builder_named(name: str) -> type[Builder]:
    """The builder class of a manifest's ``backend`` or a `--backend` value."""
    for b in BUILDERS:
        if b.name == name:
            return b
    raise PipelineError(f"unknown backend {name!r}", fix=f"use auto or one of: {', '.join(NAMES)}")


def builder_for_alias(text: str) -> type[Builder] | None:
    """`--runtime` spellings: a builder's name or one of its aliases (case-insensitive)."""
    t = text.lower()
    return next((b for b in BUILDERS if t == b.name or t in b.aliases), None)


def builder_for_tag(tag: str) -> tuple[type[Builder], str] | None:
    """(builder, GPU part) of a set tag ``<prefix>-<version>-<gpu part>``, or None."""
    prefix, _, rest = tag.partition("-")
    version, _, gpu = rest.rpartition("-")
    b = next((b for b in BUILDERS if b.tag_prefix == prefix), None)
    return (b, gpu) if b and version else None


__all__ = ["BUILDERS", "NAMES", "Builder", "TensorRT", "TensorRTRTX", "builder_for_alias", "builder_for_tag",
           "builder_named"]
