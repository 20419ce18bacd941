"""The pipeline as a library: what the `engines` commands do, callable from tests and
other programs. Functions return results and raise ``PipelineError``; they print
nothing (progress goes to ``log``). The click layer (``pipeline.cli``) only parses and prints.

run, export, build (stages), verify (``pipeline.stages.verify.verify_set``), resolve and
pull (``pipeline.deploy.pick``, with ``HostQuery`` and ``Policy``), push, list_report,
select_set, plan_clean and clean.
"""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Config
from pipeline.engine_set import BrokenSet, EngineSet, scan_sets
from pipeline.errors import ConfigError, PipelineError, UsageProblem
from pipeline.status import Status

if TYPE_CHECKING:   # loaded on first use (see __getattr__ below)
    from pipeline.deploy.pick import HostQuery, Pick, Policy, pull, resolve  # noqa: F401
    from pipeline.stages.records import ExportRecord

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def select(cfg: Config, names) -> list:
    """The models named (all when none); a misspelt name is a usage problem."""
    try:
        return cfg.select(names)
    except ConfigError as err:
        raise UsageProblem(err.what, file=err.file, fix=err.fix) from None


def choose_backend(name: str = "auto", targets: list[str] | None = None, gpu_facts: Path | None = None,
                   log: Log = _quiet):
    """(backend, gpus) for --backend/--target, saying why on ``log``."""
    from pipeline.builders.choose import choose_backend as _choose
    from pipeline.hardware import detect_gpus
    gpus = detect_gpus(gpu_facts)
    try:
        return _choose(name, targets, gpus, log=log), gpus
    except PipelineError as err:
        raise UsageProblem(err.what, file=err.file, fix=err.fix) from None


def export(cfg: Config, names=(), keep_going: bool = False, force: bool = False,
           log: Log = _quiet, trust: bool = False, precision: str | None = None,
           specs: list | None = None) -> tuple[list[ExportRecord], list[PipelineError]]:
    """Checkpoints -> ONNX (FP32 and its FP16 twin), and the INT8 twin for models at precision
    int8 (``precision`` overrides models.yaml); ``trust`` allows checkpoints that need unsafe
    (pickle) loading. ``specs``: the models already selected, precision resolved (``run``).
    Returns the records (``ExportRecord``: each carries its spec) for the build."""
    from pipeline.stages.export import export_all
    specs = specs if specs is not None else resolve_specs(cfg, names, precision)
    records, errors = export_all(cfg, specs, keep_going=keep_going, force=force, log=log, trust=trust)
    failed = set()
    for rec in records:
        if rec.spec.precision != "int8" or (errors and not keep_going):
            continue
        from pipeline.stages import quantize  # numpy and ONNX Runtime: only for INT8 models
        try:
            rec.int8 = quantize.ensure_twin(cfg, rec.spec, rec, force=force, log=log)
        except PipelineError as err:
            errors.append(err)
            failed.add(rec.model)
            if not keep_going:
                break
    # a model whose INT8 twin failed is not handed on to the build (its error is said once)
    return [r for r in records if r.model not in failed], errors


def resolve_specs(cfg: Config, names, precision: str | None) -> list:
    """The models named (all when none) with ``--precision`` applied: resolved once a command."""
    specs = select(cfg, names)
    return [dataclasses.replace(s, precision=precision) for s in specs] if precision else specs


def build(cfg: Config, names, backend, gpus: list, *, workspace: float | None = None, precision: str | None = None,
          keep_going: bool = False, force: bool = False, lock_timeout: float | None = None,
          log: Log = _quiet, records: list | None = None) -> tuple[dict, list[PipelineError]]:
    """Build into the backend's set: ``records`` (what ``export`` returned), else the cached
    exports of the models named."""
    from pipeline.stages.build import build_all
    todo = records if records is not None else resolve_specs(cfg, names, precision)
    try:
        return build_all(cfg, todo, backend, gpus, workspace=workspace, keep_going=keep_going, force=force,
                         log=log, lock_timeout=lock_timeout)
    except PipelineError as err:
        return {"models": {}}, [err]


@dataclass
class RunResult:
    exports: list[ExportRecord] = field(default_factory=list)
    build: dict = field(default_factory=lambda: {"models": {}})
    verified: list[str] = field(default_factory=list)
    errors: list[PipelineError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def set_dir(self) -> Path | None:
        """The engine set this run built into; None when it stopped before the build."""
        return Path(self.build["set"]) if self.build.get("set") else None


def run(cfg: Config, names=(), *, backend: str = "auto", targets: list[str] | None = None,
        workspace: float | None = None, precision: str | None = None, gpu_facts: Path | None = None,
        keep_going: bool = False, force: bool = False, demo: bool | str = True, lock_timeout: float | None = None,
        trust: bool = False, log: Log = _quiet) -> RunResult:
    """Every stage: demo weights where checkpoints are missing, export, build (onnx-level
    gate), then the engine level where this host can run the set and it is not yet
    proven here; a second run with nothing changed does no work.

    ``demo``: True (or "default") writes demo weights only for a missing checkpoint of the
    embedded default (the shipped models.yaml's sources, ``stages.demo.DEFAULT_SOURCES``); any
    other missing checkpoint is an error naming the nearest file. "all" writes them for every
    missing checkpoint (``--demo``), False none (``--no-demo``)."""
    specs = resolve_specs(cfg, names, precision)  # a misspelt --model fails before any work
    mode = {True: "default", False: "none"}.get(demo, demo)
    if mode not in ("default", "all", "none"):
        raise ValueError(f"demo must be True, False, 'default', 'all' or 'none', not {demo!r}")
    if mode != "none" and _missing_demo_weights(cfg, everything=mode == "all"):
        from pipeline.stages.demo import demo_models
        log("writing demo weights where checkpoints are missing (loads PyTorch and Ultralytics: a few seconds)")
        demo_models(cfg, log=log, default_only=mode == "default")
    res = RunResult()
    # one record per model from here on: the build and the engine level take them as they are
    res.exports, res.errors = export(cfg, keep_going=keep_going, force=force, log=log, trust=trust, specs=specs)
    exported = [r.model for r in res.exports]
    if not exported:
        return res
    be, gpus = choose_backend(backend, targets, gpu_facts, log)
    res.build, build_errors = build(cfg, (), be, gpus, workspace=workspace, keep_going=keep_going, force=force,
                                    lock_timeout=lock_timeout, log=log, records=res.exports)
    res.errors += build_errors
    set_dir = res.set_dir
    if set_dir is not None and (set_dir / "manifest.json").is_file():
        from pipeline.engine_set import read_manifest
        todo = to_verify_here(read_manifest(set_dir), gpus, exported)
        if todo:
            from pipeline.stages.verify import verify_set
            log(f"engine level on {gpus[0].name}: verifying {', '.join(todo)}")
            # the onnx level of what this build just built or found current is not judged again
            gated = {n for n, state in res.build["models"].items() if state in ("built", "cached", "re-verified")}
            _, verify_errors = verify_set(cfg, set_dir, names=todo, log=log, lock_timeout=lock_timeout, gpus=gpus,
                                          records={r.model: r for r in res.exports}, gated=gated)
            res.verified, res.errors = todo, res.errors + verify_errors
    return res


def _missing_demo_weights(cfg: Config, everything: bool) -> bool:
    """Whether some checkpoint is missing that demo weights may stand in for."""
    from pipeline.stages.demo import is_embedded_default
    return any(not m.source_path.exists() and (everything or is_embedded_default(m.source, m.task))
               for m in cfg.models) or any(not p.source_path.exists() and (everything or is_embedded_default(p.source))
                                           for p in cfg.passthrough)


def demo_entries(set_dir: Path | None) -> list[str]:
    """The models and passthrough files of the set a run built into that hold demo weights
    (empty where it holds none or cannot be read)."""
    from pipeline.engine_set import load_set
    if set_dir is None:
        return []
    try:
        s = load_set(set_dir)
    except PipelineError:
        return []
    if s is None:
        return []
    return sorted(n for n, e in s.models.items() if e.demo) + sorted(
        n for n, p in s.manifest.passthrough.items() if p.demo)


def to_verify_here(manifest, gpus: list, names) -> list[str]:
    """Models whose engine level this host can run but has not passed here yet (a
    failure here is retried: its cause may be fixed)."""
    from pipeline.runtime import cannot_run_here
    if cannot_run_here(manifest, gpus) is not None:
        return []
    return [n for n in names if n in manifest.engines and manifest.engines[n].status == Status.OK
            and manifest.engines[n].engine_level.verdict(gpus[0].name)[0] != Status.PASSED]


# -- sets -----------------------------------------------------------------------------------
def list_report(engines_dir: Path, gpu_name: str | None = None, listed: list[str] | None = None) -> list[dict]:
    """A row per set folder, damaged ones included; status is the manifest's verdict (for
    ``gpu_name`` when given, else across every GPU the engines ran on). With ``listed``
    (models.yaml's model names), ``unlisted`` names the set's models it no longer lists."""
    sets, broken = scan_sets(engines_dir)
    rows = []
    for s in sets:
        v = s.manifest.verdict(gpu_name)
        rows.append({"tag": s.tag, "backend": s.manifest.backend, "version": s.manifest.trt_version,
                     "targets": s.manifest.targets, "models": sorted(s.models), "status": v.status,
                     "reasons": v.reasons, "pending": v.pending, "demo": s.demo, "path": str(s.path),
                     "unlisted": sorted(set(s.models) - set(listed)) if listed is not None else []})
    for b in broken:
        rows.append({"tag": b.tag, "backend": None, "version": None, "targets": [], "models": [],
                     "status": Status.CORRUPT, "reasons": [b.reason], "pending": [], "demo": False, "path": str(b.path),
                     "unlisted": []})
    return sorted(rows, key=lambda r: r["tag"])


def select_set(engines_dir: Path, set_tag: str | None, gpus: list | None = None) -> EngineSet:
    """The set a command (verify, push) works on: ``set_tag``, else the only set, else the
    one set this machine's TensorRT and GPU can run, else the `current` link."""
    from pipeline.engine_set import read_manifest
    sets, broken = scan_sets(engines_dir)
    by_tag = {s.tag: s for s in sets}
    if set_tag is None and len(by_tag) == 1:
        set_tag = next(iter(by_tag))
    if set_tag is None and len(by_tag) > 1:  # the set this machine can run beats the deployed link
        from pipeline.hardware import detect_gpus
        from pipeline.stages.verify import cannot_run_here
        gpus = detect_gpus() if gpus is None else gpus
        fits = [s.tag for s in sets if cannot_run_here(s.manifest, gpus) in (None, "no GPU on this machine")]
        set_tag = fits[0] if len(fits) == 1 else None
    current = engines_dir / "current"
    if set_tag is None and current.is_symlink():
        set_tag = current.resolve().name
    if not sets and not broken:
        raise UsageProblem("no engine sets", file=engines_dir, fix="build one first: make engines (or engines run)")
    damaged = {b.tag: b for b in broken}
    if set_tag in damaged:
        read_manifest(damaged[set_tag].path)  # raises the full reason
    if set_tag not in by_tag:
        raise UsageProblem(f"engine set {set_tag!r} not found" if set_tag else
                           "several engine sets, and none is this host's alone", file=engines_dir,
                           fix=f"pass --set with one of: {', '.join(by_tag) or '(none: run make engines)'}")
    return by_tag[set_tag]


def push(engines_dir: Path, ref: str, tag: str | None = None, *, plain_http: bool = False, insecure: bool = False,
         log: Log = _quiet) -> dict:
    """`engines push`: the set ``tag`` (default: as ``select_set``) to the registry repository ``ref``."""
    from pipeline.registry import client, sets
    remote = client.Remote(ref, plain_http=plain_http, insecure=insecure)
    return sets.push(select_set(engines_dir, tag), remote, on_line=log)


# resolve and pull live in deploy.pick; they are part of this face, loaded on first use so that
# the stage commands (a cached `engines run`) do not import the deploy and registry code
_DEPLOY = {"HostQuery", "Pick", "Policy", "pull", "resolve"}


def __getattr__(name: str):
    if name in _DEPLOY:
        from pipeline.deploy import pick
        return getattr(pick, name)
    if name == "Remote":   # a registry repository, for pull and resolve(from_remote=)
        from pipeline.registry.client import Remote
        return Remote
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- clean ----------------------------------------------------------------------------------
@dataclass
class CleanPlan:
    remove: list[Path]
    kept: list[str]                  # real sets left in place (without --all)


def plan_clean(cfg: Config, everything: bool = False) -> CleanPlan:
    """What `engines clean` removes: demo-built sets and exports (every set and export,
    damaged sets included, with ``everything``), the work folders of killed exports
    (each holds a checkpoint copy), and what a wrong ``source:`` left (issue 26): exports of
    sources models.yaml no longer names, the demo checkpoint written at such a path (only
    while its sha256 is the one exported), and engine/plan files a kept set's manifest does
    not name."""
    from pipeline.engine_set import unlisted_files
    from pipeline.fsutil import read_json, sha256_file
    from pipeline.stages.export import stale_temp_dirs
    from pipeline.stages.records import RECORD_SUFFIX, OnnxFiles
    sets, broken = scan_sets(cfg.engines_dir)
    remove: list[Path] = [s.path for s in sets if everything or s.demo] + [b.path for b in broken if everything]
    remove += [s.path / rel for s in sets if s.path not in remove for rel in unlisted_files(s.path, s.manifest)]
    remove += stale_temp_dirs(cfg.onnx_dir)
    listed = {Path(m.source).as_posix() for m in cfg.models}
    if cfg.onnx_dir.is_dir():
        for rec_path in cfg.onnx_dir.rglob(f"*{RECORD_SUFFIX}"):
            rec = read_json(rec_path) or {}
            source = rec.get("source")
            unlisted = isinstance(source, str) and Path(source).as_posix() not in listed
            if everything or rec.get("demo") or unlisted:
                remove += [p for p in OnnxFiles.of_record(rec_path).every() if p.exists()]
            if unlisted and rec.get("demo"):   # demo weights written at a path models.yaml no longer names
                pt = cfg.root / source
                if pt.is_file() and pt.resolve().is_relative_to(cfg.root.resolve()) \
                        and sha256_file(pt) == (rec.get("sha256") or {}).get("source"):
                    remove.append(pt)
    kept = [s.tag for s in sets if s.path not in remove] + [b.tag for b in broken if b.path not in remove]
    return CleanPlan(remove, kept)


def clean(cfg: Config, plan: CleanPlan, log: Log = _quiet) -> None:
    for p in plan.remove:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
        log(f"removed {p}")
    current = cfg.engines_dir / "current"
    if current.is_symlink() and not current.exists():
        current.unlink()


__all__ = ["BrokenSet", "CleanPlan", "HostQuery", "Pick", "Policy", "RunResult", "build", "choose_backend", "clean",
           "export", "list_report", "plan_clean", "pull", "push", "resolve", "run", "select", "select_set",
           "to_verify_here"]
