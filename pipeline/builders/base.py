"""The builder interface: what a TensorRT builder owns, so a new one is one file and one
entry in ``pipeline.builders.BUILDERS`` (never a name compared elsewhere).

A builder knows its identity (name, tag prefix, label, the distributions and image label
that carry it), its version (package metadata: no import), its module (imported only to
build or run), its policies (targets, timing cache, precision and compatibility refusals),
and the commands a user runs to build its sets (reproduce, rebuild, build what a host lacks).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from pipeline.errors import PipelineError
from pipeline.hardware import sm_name


def import_real(name: str):
    """Import a TensorRT module, rejecting stub-only namespace packages (tensorrt-stubs
    installs a bare ``tensorrt/`` folder of .pyi files that imports as an empty package)."""
    try:
        mod = importlib.import_module(name)
    except ImportError as exc:
        return None, f"`import {name}` failed: {exc}"
    if not hasattr(mod, "Builder"):
        return None, f"`{name}` is only type stubs here (no Builder)"
    return mod, None


def installed_version(dists: tuple[str, ...]) -> tuple[str, str] | None:
    """(version, distribution) of the first of ``dists`` installed here, or None."""
    from importlib import metadata  # ~15 ms: only where the question is asked
    for dist in dists:
        try:
            return metadata.version(dist), dist
        except metadata.PackageNotFoundError:
            continue
    return None


@dataclass(frozen=True)
class MissingBuild:
    """How a host's missing set is built: a local `engines` command (``argv``, run with this
    Python) or the builder container (``container_args``, given to `engines` inside it)."""
    argv: list[str] | None = None
    container_args: list[str] | None = None


class Builder:
    """Class attributes describe the builder; an instance is one configured build (targets,
    build GPU, set-wide compatibility options)."""
    name = tag_prefix = label = module_name = ""
    aliases: tuple[str, ...] = ()   # other spellings `--runtime` accepts (trt, trtrtx ...)
    dists: tuple[str, ...] = ()     # distributions that carry it, asked in order
    image_label = ""                # the image label that names its version (docs/container.md)
    missing = ""                    # the `available()` reason when not installed
    install_fix = ""                # the next step when it is not installed
    import_fix = ""                 # the next step when the module does not import
    timing_cache = False            # keeps a timing cache across builds
    needs_build_gpu = True          # False: builds ahead of time for listed targets, with or without a GPU
    tuned_on_build_gpu = True       # tactics timed on the building GPU (another model of the same cc: a warning)
    older_cuda_route = ""           # how to build for a host whose driver is too old for CUDA 13
    builds_nms = True               # can build NMS embedded in the graph (models.yaml nms: true)

    def unbuildable(self, precision: str, has_attention: bool) -> dict[str, str]:
        """Targets this configured build cannot build a model for, each with why (none by default)."""
        return {}

    compatibility: str | None = None   # models.yaml defaults (set-wide), set by configure()
    version_compatible: bool = False
    gpu = None                          # hardware.GpuFacts of the build GPU, or None
    targets: list[str] = []

    # -- identity and installation (no TensorRT import) --------------------------------
    @classmethod
    def version(cls) -> str | None:
        found = installed_version(cls.dists)
        return found[0] if found else None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        v = cls.version()
        return (True, f"{cls.label} {v} is installed") if v else (False, cls.missing)

    @classmethod
    def tag(cls, version: str, targets: list[str], compatibility: str | None = None) -> str:
        from pipeline.builders.compat import level
        from pipeline.hardware import cc_tuple
        lv = level(compatibility)
        if lv is not None:
            return f"{cls.tag_prefix}-{version}-{lv.tag_part(targets)}"
        return f"{cls.tag_prefix}-{version}-sm" + "_".join(sm_name(t)[2:] for t in sorted(targets, key=cc_tuple))

    def module(self):
        mod, why = import_real(self.module_name)
        if mod is None:
            raise PipelineError(f"{self.label} cannot be used: {why}", fix=self.import_fix)
        return mod

    # -- a build -----------------------------------------------------------------------
    @classmethod
    def usable_here(cls, gpus: list) -> tuple[bool, str]:
        """Whether `--backend auto` may take this builder on this machine, and why."""
        ok, why = cls.available()
        if ok and cls.needs_build_gpu and not gpus:
            return False, "no GPU found"
        return ok, why

    @classmethod
    def for_host(cls, targets: list[str] | None, gpus: list) -> Builder:
        raise NotImplementedError

    def configure(self, compatibility: str | None, version_compatible: bool) -> None:
        """Take the set-wide compatibility options of models.yaml (refusing what it cannot build)."""
        self.compatibility, self.version_compatible = compatibility, version_compatible

    @property
    def strongly_typed(self) -> bool:
        raise NotImplementedError

    def target_enums(self, trt) -> list:
        """Compute capabilities to pass to the builder config (ahead-of-time builders)."""
        return []

    @classmethod
    def int8_refusal(cls, version: str | None) -> str | None:
        """Why this builder, at ``version``, cannot build a Q/DQ ONNX strongly typed (None: it can)."""
        return None

    # -- commands a user runs ------------------------------------------------------------
    def reproduce(self, model: str) -> str:
        return f"engines build --model {model} --backend {self.name}"

    @classmethod
    def runtime_loads(cls, built: str, runtime: str, version_compatible: bool) -> bool:
        """A plan built with ``built`` loads on runtime ``runtime`` (an exact match is asked first)."""
        return built == runtime

    @classmethod
    def builds_for(cls, compute_cap: str) -> bool:
        """This builder can build a set for a GPU of this compute capability."""
        return True

    @classmethod
    def missing_build(cls, gpu, config_arg: str = "") -> MissingBuild:
        raise NotImplementedError

    @classmethod
    def build_command(cls, gpu, config_arg: str = "") -> str:
        """The command a user types to build the set this host lacks."""
        raise NotImplementedError

    @classmethod
    def build_fix(cls, want: str, gpu, version: str, config_arg: str = "") -> str:
        """The next step of a refusal when no set fits: build ``want`` for this host."""
        return f"build {want} with `{cls.build_command(gpu, config_arg)}`, or rerun with --build-missing"

    @classmethod
    def no_build_fix(cls, gpu) -> str | None:
        """The next step when this builder cannot build for ``gpu`` at all (None: it can)."""
        return None

    @classmethod
    def rebuild_command(cls, tag_targets: str | None, config_arg: str = "") -> str:
        """The command that builds a set of this builder again, from the GPU part of its tag."""
        raise NotImplementedError
