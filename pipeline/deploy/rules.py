"""The deploy step: pick the engine set that matches the host, prove it, hand it over.

Pure functions over files, starting nothing: building a missing set is ``deploy.missing``,
the hand-over (env file, ``models/engines/current``) is in ``handover`` and the runtime's
version (``--runtime``, an image label, or package metadata) in ``runtime``. What differs
between builders is the builder's (``pipeline.builders``). Imports no torch, ultralytics or
TensorRT.

Rules (issue 5, and issue 4 "Two levels of verification"):

* a ``tensorrt`` set matches on the exact TensorRT version and the compute capability;
  among matches the one built on the same GPU name wins, and a match on compute
  capability alone is accepted with a warning (TensorRT itself warns: "Using an engine
  plan file across different models of devices is not recommended and is likely to
  affect performance or even cause errors");
* a ``tensorrt-rtx`` set matches when its targets include the GPU's compute capability
  and its version is the runtime's;
* the portable tier (issue 11): a ``tensorrt`` set built with ``compatibility: ampere_plus``
  matches any GPU of compute capability 8.0 or newer, accepted with a warning naming its cost;
  one built ``same_compute_capability`` (issue 23) any GPU of its compute capability (Turing
  and later, not Jetson), with no warning: NVIDIA's sanctioned form of moving a plan between
  models of one compute capability;
* version compatibility (issue 23): a set built ``version_compatible`` also loads on a later
  TensorRT of the same major and, as NVIDIA's support matrix states, a 10.x one on 11.y and an
  8.x one on 10.y ("No other combination"); accepted with a warning; an exact set always wins;
* refused always: a set with a model that failed, an engine whose verification failed,
  a manifest missing a model of models.yaml, files whose sha256 differ from the manifest;
* refused unless allowed: demo weights (``allow_demo``), engine-level verification not
  yet passed on this GPU (``allow_pending``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.builders import builder_named
from pipeline.builders.compat import CROSS_MAJOR_RULE, level
from pipeline.engine_set import EngineSet, make_tag, rebuild_command, scan_sets
from pipeline.errors import PipelineError
from pipeline.fsutil import sha256_file
from pipeline.hardware import GpuFacts, cc_tuple, sm_name
from pipeline.runtime import BUILDER_CMD, Runtime
from pipeline.status import Status

# The oldest driver branch that runs each CUDA major (NVIDIA, "Supported Drivers and CUDA
# Toolkit Versions", docs.nvidia.com/datacenter/tesla/drivers/supported-drivers-and-cuda-toolkit-versions.html:
# R535 and R570 support CUDA 12.x, R580 supports CUDA 13.x; the CUDA 13.0 GA release notes
# list >= 580.65.06 for Linux). A set built with CUDA 13 (nvcr.io/nvidia/tensorrt:25.08-py3,
# tensorrt-rtx-cu13) cannot run on an older driver.
CUDA_MIN_DRIVER = {12: 525, 13: 580}


def set_cuda(manifest) -> str | None:
    """The CUDA a set was built with: its own field (the build records it), else the
    highest CUDA of the driver on the GPU host that built it."""
    return str(manifest.extra.get("cuda") or (manifest.gpu or {}).get("cuda") or "") or None


def driver_refusal(manifest, gpu: GpuFacts) -> str | None:
    """Why this host's driver cannot run the set, or None (also when either fact is unknown)."""
    cuda, driver = set_cuda(manifest), gpu.driver
    try:
        major, branch = int(str(cuda).split(".")[0]), int(str(driver).split(".")[0])
    except ValueError:
        return None
    need = CUDA_MIN_DRIVER.get(major)
    if need is None or branch >= need:
        return None
    return (f"built with CUDA {cuda}, which needs driver R{need} or newer; this host runs driver {driver} "
            f"(NVIDIA's CUDA toolkit/driver table)")


@dataclass
class Verdict:
    """What resolve thinks of one set."""
    tag: str
    path: Path
    reasons: list[str] = field(default_factory=list)     # why it is refused (empty: acceptable)
    kinds: list[str] = field(default_factory=list)       # per reason: backend, version, cc, failed,
    warnings: list[str] = field(default_factory=list)    # incomplete, pending, demo, files
    same_gpu: bool = False
    portable: bool = False      # matched through the portable tier (AMPERE_PLUS or a later TensorRT)
    updated: str = ""
    chosen: bool = False
    note: str = ""

    def refuse(self, kind: str, reason: str) -> None:
        self.kinds.append(kind)
        self.reasons.append(reason)

    @property
    def accepted(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict:
        return {"tag": self.tag, "path": str(self.path), "accepted": self.accepted, "chosen": self.chosen,
                "reasons": self.reasons, "kinds": self.kinds, "warnings": self.warnings,
                "same_gpu": self.same_gpu, "portable": self.portable, "note": self.note or None}


def judge(s: EngineSet, gpu: GpuFacts, runtime: Runtime, *, allow_demo: bool, allow_pending: bool,
          expected_models: list[str] | None = None, pending_ok: str = "--allow-pending") -> Verdict:
    """Every rule except the file hashes (those are checked on the candidates, best first).
    What the engines are worth on this GPU is the manifest's own verdict."""
    m = s.manifest
    v = Verdict(s.tag, s.path, updated=str(m.updated or m.created or ""))
    v.same_gpu = m.built_on_same_gpu(gpu.name)
    builder = builder_named(m.backend)
    if m.backend != runtime.backend:
        v.refuse("backend", f"built with {m.backend}; the service runs {runtime.label}")
    elif m.trt_version != runtime.version:
        if builder.runtime_loads(m.trt_version, runtime.version, m.version_compatible):
            v.portable = True
            # NVIDIA (Developer Guide, "Version Compatibility"): "version-compatible engines can be
            # slower than engines built for a specific runtime version"
            v.warnings.append(f"version-compatible set built with TensorRT {m.trt_version}, loaded by "
                              f"{runtime.label} through its embedded lean runtime: NVIDIA notes such engines can "
                              "be slower than ones built for the runtime's version; build an exact set with "
                              f"TensorRT {runtime.version} for full speed")
        else:
            v.refuse("version", f"built with {m.backend} {m.trt_version}; the service runs {runtime.label} "
                                "(an engine only loads on the TensorRT version that built it)"
                                + (" or, version-compatible, on a later one of the same major version and across "
                                   f"majors only as NVIDIA's support matrix states: \"{CROSS_MAJOR_RULE}\""
                                   if m.version_compatible else ""))
    tier = level(m.compatibility)
    if not m.runs_on(gpu.compute_cap):
        built_for = ", ".join(sm_name(t) for t in sorted(m.targets, key=cc_tuple)) or "nothing"
        if tier is not None:
            built_for = tier.covers + (f" (built for {built_for})" if tier.key != "ampere_plus" else "")
        v.refuse("cc", f"built for {built_for}; this GPU is {gpu.sm} (compute capability {gpu.compute_cap})")
    elif m.compatibility == "ampere_plus":
        v.portable = True
        # The cost, as NVIDIA documents it for HardwareCompatibilityLevel.AMPERE_PLUS (TensorRT API
        # reference, NvInferRuntimeBase.h, and the Developer Guide's "Hardware Compatibility"): the
        # engine may use at most 48 KiB of shared memory per kernel (driver-reserved included), fewer
        # tactics per layer and fewer fusions, and no cuDNN/cuBLAS/cuBLASLt tactics, "thus this can
        # decrease the performance, especially for tf32 models". NVIDIA publishes no percentage: the
        # warning names these limits, and `engines verify --benchmark` measures it on the GPU.
        built = (m.gpu or {}).get("name") or "?"
        v.warnings.append(
            f"portable set (TensorRT hardware compatibility AMPERE_PLUS, built on {built}): it runs on any GPU "
            "of compute capability 8.0 or newer, at a cost NVIDIA documents as kernels limited to 48 KiB of "
            "shared memory, fewer tactics and fusions, and no cuDNN/cuBLAS tactics (slower, especially TF32); "
            f"an exact set built on {gpu.name} is faster: build one with `{BUILDER_CMD}`")
    too_old = driver_refusal(m, gpu)
    if too_old and not {"backend", "version", "cc"} & set(v.kinds):   # moot on a GPU it cannot run on
        v.refuse("driver", too_old)
    sv = m.verdict(gpu.name, expected_models)
    for reason in sv.reasons:
        v.refuse("failed", reason)
    for reason in sv.missing:
        v.refuse("incomplete", reason)
    if sv.pending and not {"backend", "version", "cc", "driver"} & set(v.kinds):   # moot on a GPU it cannot run on
        text = f"engine-level verification pending on {gpu.name} for {', '.join(sv.pending)}"
        if allow_pending:
            v.warnings.append(f"{text}; accepted ({pending_ok}): run `engines verify` on this GPU before "
                              "production")
        else:
            v.refuse("pending", text)
    # demo weights of a model models.yaml no longer lists are never deployed, so they do not make the set demo
    listed = [e for n, e in m.engines.items() if expected_models is None or n in expected_models]
    if any(e.demo for e in listed) or any(p.demo for p in m.passthrough.values()):
        if allow_demo:
            v.warnings.append("holds demo weights, not the real checkpoints; accepted because of --allow-demo")
        else:
            v.refuse("demo", "holds demo weights or a demo stand-in (`engines demo-models`), not the real models")
    built_on = (m.gpu or {}).get("name")
    # a same_compute_capability set is built to move between models of its compute capability: no warning
    if builder.tuned_on_build_gpu and built_on and not v.same_gpu and gpu.compute_cap in m.targets \
            and not m.compatibility:
        v.warnings.append(
            f"built on {built_on}, this GPU is {gpu.name}: same compute capability {gpu.compute_cap}, so it "
            "loads, but NVIDIA advises against using a plan across GPU models (tactics are timed on the "
            "building GPU: slower, or errors); build on this GPU for the best result")
    return v


def stale_sources(s: EngineSet, models_dir: Path) -> list[str]:
    """Engines built from another checkpoint than the one now at their source path."""
    out = []
    for name, e in sorted(s.models.items()):
        src = models_dir / e.source if e.source else None
        want = e.sha256.get("source")
        if e.status == Status.OK and src is not None and want and src.is_file() and sha256_file(src) != want:
            out.append(f"model '{name}': the engine was built from another {e.source} than the one there now "
                       f"(sha256 {want[:12]}, now {sha256_file(src)[:12]}); rebuild with `engines run` so the "
                       "service runs the new checkpoint")
    return out


@dataclass
class Resolution:
    gpu: GpuFacts
    runtime: Runtime
    engines_dir: Path
    verdicts: list[Verdict]
    chosen: EngineSet | None = None
    files_checked: int = 0

    @property
    def verdict(self) -> Verdict | None:
        return next((v for v in self.verdicts if v.chosen), None)

    def why(self) -> str:
        v = self.verdict
        if v is None:
            return ""
        builder = builder_named(self.runtime.backend)
        what = "built for" if builder.needs_build_gpu else f"{builder.label} targets include"
        gpu = "built on this GPU model" if v.same_gpu else "compute capability match only"
        tier = level(self.chosen.manifest.compatibility) if self.chosen else None
        if not builder.needs_build_gpu:
            gpu = "built ahead of time for the listed compute capabilities"
        elif tier is not None and tier.key == "same_compute_capability":
            gpu = "hardware compatibility SAME_COMPUTE_CAPABILITY (any GPU of this compute capability)"
        elif v.portable:
            gpu = "portable tier (no exact set fits)"
        built = self.chosen.manifest.trt_version if self.chosen else self.runtime.version
        version = (f"{self.runtime.label} exactly" if built == self.runtime.version
                   else f"{self.runtime.label} loads a version-compatible plan built with {built}")
        return (f"{version}; {what} {self.gpu.sm}; {gpu}; "
                f"{self.files_checked} files match the manifest's sha256")

    def to_json(self) -> dict:
        v = self.verdict
        return {"ok": self.chosen is not None, "chosen": self.chosen.tag if self.chosen else None,
                "engine_dir": str(self.chosen.path.resolve()) if self.chosen else None,
                "why": self.why() or None, "warnings": v.warnings if v else [],
                "gpu": self.gpu.to_json(), "runtime": self.runtime.to_json(),
                "engines_dir": str(self.engines_dir), "sets": [x.to_json() for x in self.verdicts]}


def expected_models(config_path: Path | None) -> list[str] | None:
    """Model names models.yaml asks for (without the full schema check: keep resolve light)."""
    if config_path is None or not config_path.is_file():
        return None
    import yaml
    try:
        data = yaml.safe_load(config_path.read_text()) or {}
        return [str(m["name"]) for m in data.get("models") or [] if isinstance(m, dict) and "name" in m]
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return None   # `engines` commands that load the config report it properly


def resolve(engines_dir: Path, gpu: GpuFacts, runtime: Runtime, *, allow_demo: bool = False,
            allow_pending: bool = False, models: list[str] | None = None,
            pending_ok: str = "--allow-pending", sets: list[EngineSet] | None = None,
            check: Callable[[EngineSet], list[str]] | None = None) -> Resolution:
    """Judge every set, then hash-check the acceptable ones best first; the first intact one wins.

    ``sets`` and ``check`` let the registry (``engines pull``) apply the same rules to sets it
    has only the manifests of; their files are checked after the download instead."""
    sets, broken = scan_sets(engines_dir) if sets is None else (sets, [])
    check = check or EngineSet.check_files
    verdicts = [judge(s, gpu, runtime, allow_demo=allow_demo, allow_pending=allow_pending,
                      expected_models=models, pending_ok=pending_ok) for s in sets]
    res = Resolution(gpu, runtime, engines_dir, verdicts)
    order = sorted((i for i, v in enumerate(verdicts) if v.accepted),
                   key=lambda i: (not verdicts[i].portable, verdicts[i].same_gpu, not verdicts[i].warnings,
                                  verdicts[i].updated),
                   reverse=True)
    for i in order:
        v, s = verdicts[i], sets[i]
        problems = check(s)
        if problems:
            v.refuse("files", "files differ from the manifest: " + "; ".join(problems))
            continue
        v.chosen, res.chosen, res.files_checked = True, s, len(s.files())
        v.warnings += stale_sources(s, engines_dir.parent)
        break
    for i in order:
        if verdicts[i].accepted and not verdicts[i].chosen:
            verdicts[i].note = f"matches too; {res.chosen.tag if res.chosen else '?'} preferred"
    for b in broken:  # listed with the reason, never chosen
        v = Verdict(b.tag, b.path)
        v.refuse("corrupt", f"manifest.json is damaged: {b.reason}")
        verdicts.append(v)
    return res


def missing_tag(gpu: GpuFacts, runtime: Runtime) -> str:
    return make_tag(runtime.backend, runtime.version, [gpu.compute_cap])


def refusal(res: Resolution, config_arg: str = "", registry_ref: str | None = None,
            skipped: list[str] | None = None) -> PipelineError:
    """No set fits: the host's facts, every set and why, and the command that builds one.
    With ``registry_ref`` the sets judged were that registry's (``skipped``: its tags that
    could not be read)."""
    gpu, rt = res.gpu, res.runtime
    details = [f"host: {gpu.describe()} [facts from {gpu.source or 'unknown'}]",
               f"runtime: {rt.label} (from {rt.source})"]
    if not res.verdicts:
        details.append(f"no engine set in {registry_ref}" if registry_ref
                       else f"no engine set in {res.engines_dir} (folders with a manifest.json)")
    for v in res.verdicts:
        details.append(f"{v.tag}: refused: " + "; ".join(v.reasons))
    details += skipped or []
    # the nearest miss decides the next step: a set refused only for being unproven or demo
    near = [set(v.kinds) for v in res.verdicts if v.kinds]
    only = (lambda allowed: any(k and k <= allowed for k in near))
    builder = builder_named(rt.backend)
    cmd = builder.build_command(gpu, config_arg)
    want = missing_tag(gpu, rt)
    no_build = builder.no_build_fix(gpu)
    if no_build:
        fix = no_build
    elif only({"pending"}) or only({"pending", "demo"}) and not only({"demo"}):
        fix = (f"run `engines{config_arg} verify` on this GPU (in the builder container: "
               f"`{BUILDER_CMD} verify`), then resolve again; or pass --allow-pending to accept it unproven"
               + ("" if only({"pending"}) else "; it holds demo weights too (--allow-demo)"))
    elif only({"demo"}):
        fix = ("place the real checkpoints (models.yaml) and rebuild with "
               f"`{cmd}`, or pass --allow-demo to deploy the demo set on purpose")
    elif only({"driver", "demo", "pending"}) and any("driver" in k for k in near):
        # rebuilding with the same toolchain gives the same CUDA: the driver or the toolchain must move
        need = max(CUDA_MIN_DRIVER.values())
        fix = (f"upgrade this host's NVIDIA driver to R{need} or newer (CUDA 13 needs it; `nvidia-smi` shows the "
               f"driver), or rebuild with {builder.older_cuda_route}"
               + ("; the set also holds demo weights (--allow-demo)" if any("demo" in k for k in near) else ""))
    elif only({"files"}) or only({"corrupt"}) or only({"files", "corrupt"}):
        bad = [v.tag for v in res.verdicts if {"files", "corrupt"} & set(v.kinds)]
        fix = ("never edit files inside a set; rebuild what was altered or damaged: "
               + "; ".join(f"{tag} with `{rebuild_command(tag, config_arg)}`" for tag in bad))
    else:
        fix = builder.build_fix(want, gpu, rt.version, config_arg)
    if registry_ref:
        fix += f"; then `engines push {registry_ref}` from the host that built it"
    where = f" in {registry_ref}" if registry_ref else ""
    return NoMatchingSet(f"no engine set{where} fits {gpu.name} ({gpu.sm}) with {rt.label}", details=details,
                         fix=fix, resolution=res)


class NoMatchingSet(PipelineError):
    """Refusal; its JSON carries the host facts and every set's verdict."""

    def __init__(self, what: str, *, resolution: Resolution | None = None, **kwargs):
        super().__init__(what, **kwargs)
        self.resolution = resolution

    def to_json(self) -> dict:
        out = super().to_json()
        if self.resolution is not None:
            out.update(self.resolution.to_json())
            out["ok"] = False
        return out
