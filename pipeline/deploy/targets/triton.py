"""Target ``triton``: a Triton model repository from engine sets of one TensorRT version (issue 24).

One Triton model per YOLO model: ``<model>/config.pbtxt`` (pipeline.deploy.targets.triton_config)
and ``<model>/<version>/<set tag>.plan``, the raw plans (Triton cannot read Ultralytics'
``.engine`` header), with ``cc_model_filenames`` mapping every compute capability a set was
built for to that set's plan. ``engines-repository.json`` records the source sets and the
sha256 of every file written; ``README.md`` says what is served and what is not.

A write is atomic per model: the plans go into a new version folder (staged, then renamed),
then ``config.pbtxt`` switches to it, then the older versions go. The record is written
before the switch (listing old and new files) and after it, so an interrupted write leaves
only files the writer knows. A folder holding anything else is refused, never overwritten.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.deploy.targets.base import Target
from pipeline.deploy.targets.triton_config import TritonModel, render
from pipeline.engine_file import read_engine
from pipeline.engine_set import EngineSet, now_iso
from pipeline.errors import PipelineError
from pipeline.fsutil import sha256_file, write_bytes_atomic
from pipeline.hardware import cc_tuple
from pipeline.status import Status

RECORD = "engines-repository.json"
README = "README.md"
STAGING = ".staging-"      # <model>/.staging-<version>: a version folder being written
RECORD_SCHEMA = 1
# Triton's backend for tree models (XGBoost, LightGBM, scikit-learn, cuML): the Forest Inference
# Library backend, triton-inference-server/fil_backend. It reads XGBoost's own model files
# (model_type xgboost, xgboost_json, xgboost_ubj), not a joblib pickle.
PASSTHROUGH_BACKEND = "fil"


@dataclass
class Planned:
    """A Triton model and the files its version folder gets: name -> (source file, sha256)."""
    model: TritonModel
    task: str | None
    files: dict[str, tuple[Path, str]] = field(default_factory=dict)
    sources: dict[str, dict] = field(default_factory=dict)   # set tag -> {"plan", "sha256", "targets"}


def _refuse(what: str, *, model: str | None = None, file=None, details=(), fix: str) -> PipelineError:
    return PipelineError(what, model=model, file=file, details=list(details), fix=fix)


def check_one_version(sets: list[EngineSet]) -> None:
    """Triton's TensorRT backend loads the plans of its own TensorRT version only: one version per repository."""
    versions = sorted({(s.manifest.backend, s.manifest.trt_version) for s in sets})
    if len(versions) > 1:
        raise _refuse(
            "the engine sets hold different TensorRT versions, and one Triton model carries plans of one "
            "TensorRT version (the server's TensorRT backend loads only plans of its own version)",
            details=[f"{s.tag}: {s.manifest.backend} {s.manifest.trt_version}" for s in sets],
            fix="choose one version: `engines triton DIR --runtime BACKEND==VERSION` (the TensorRT of your Triton "
                "image), or name the sets with --set TAG")


def plan(sets: list[EngineSet], models: list[str] | None = None) -> list[Planned]:
    """One Triton model per YOLO model across ``sets`` (of one TensorRT version): refused when
    the sets disagree on the model's weights, tensors or batch profile, or two sets claim
    the same compute capability."""
    if not sets:
        raise _refuse("no engine set to write a Triton repository from", fix="run `engines list` to see the sets")
    check_one_version(sets)
    out: dict[str, Planned] = {}
    first: dict[str, tuple[EngineSet, object]] = {}
    for s in sorted(sets, key=lambda s: s.tag):
        for name, e in sorted(s.models.items()):
            if e.status != Status.OK or (models is not None and name not in models):
                continue   # a model models.yaml no longer lists is never served
            if not e.plan:
                raise _refuse(f"set {s.tag} has no raw plan for this model (Triton cannot read the .engine header)",
                              model=name, file=s.path / "manifest.json",
                              fix=f"rebuild it: `engines build --force --model {name}`")
            if e.io is None:
                raise _refuse(f"set {s.tag} records no input/output tensors for this model (built before sets "
                              "recorded them), and a Triton config needs their names, shapes and dtypes",
                              model=name, file=s.path / "manifest.json",
                              fix=f"rebuild it: `engines build --force --model {name}`, then write the "
                                  "repository again")
            if name not in out:
                meta, _plan = read_engine(s.path / e.engine)
                out[name] = Planned(TritonModel(name, e.io, e.options.get("batch") or {}, meta), e.task)
                first[name] = (s, e)
            else:
                _same_model(name, *first[name], s, e)
            p = out[name]
            fname = f"{s.tag}.plan"
            p.files[fname] = (s.path / e.plan, e.sha256["plan"])
            p.sources[s.tag] = {"plan": e.plan, "sha256": e.sha256["plan"], "targets": list(s.manifest.targets),
                                "compatibility": s.manifest.compatibility}
            if s.manifest.compatibility:   # a portable set runs on more than its listed targets
                if p.model.default_file:
                    raise _refuse(f"two portable sets hold this model ({p.model.default_file[:-5]} and {s.tag}); "
                                  "Triton has one default plan per model", model=name,
                                  fix="name the sets to serve with --set TAG")
                p.model.default_file = fname
            for cc in s.manifest.targets:
                other = p.model.cc_files.get(cc)
                if other:
                    raise _refuse(f"compute capability {cc} is covered by two sets, {other[:-5]} and {s.tag}; "
                                  "cc_model_filenames maps each compute capability to one plan", model=name,
                                  fix="name the sets to serve with --set TAG")
                p.model.cc_files[cc] = fname
    if not out:
        raise _refuse("the chosen sets hold no built engine to serve", details=[s.tag for s in sets],
                      fix="run `engines list` to see each set's models")
    return [out[n] for n in sorted(out)]


def _same_model(name: str, s1: EngineSet, e1, s2: EngineSet, e2) -> None:
    """Plans of one Triton model must be the same model: same weights, tensors and batch profile."""
    for what, a, b in (("checkpoint sha256", e1.sha256.get("source"), e2.sha256.get("source")),
                       ("input/output tensors", e1.io, e2.io),
                       ("batch profile", e1.options.get("batch"), e2.options.get("batch")),
                       ("precision", e1.options.get("precision"), e2.options.get("precision"))):
        if a != b:
            raise _refuse(f"sets {s1.tag} and {s2.tag} hold different versions of this model ({what}: {a} vs {b}); "
                          "one Triton model serves one model on every GPU", model=name,
                          fix="rebuild the older set from the same models.yaml and checkpoints (`engines run`), or "
                              "name the sets to serve with --set TAG")


# -- the folder -----------------------------------------------------------------------------------
def _read_record(dest: Path) -> dict | None:
    f = dest / RECORD
    if not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text())
        if not isinstance(rec, dict) or not isinstance(rec.get("files"), dict):
            raise ValueError("no files")
        return rec
    except (OSError, ValueError) as exc:
        raise _refuse(f"{RECORD} cannot be read ({exc}), so nothing in the folder can be told apart from files "
                      "`engines triton` did not write", file=f,
                      fix="write the repository into a new folder, or remove this one") from None


def check_folder(dest: Path) -> dict[str, str]:
    """The files of a repository this writer wrote at ``dest`` (relative path -> sha256; empty
    for a new or empty folder); refuses a file it did not write or one changed since."""
    if dest.exists() and not dest.is_dir():
        raise _refuse("the Triton repository path is a file, not a folder", file=dest,
                      fix="pass a folder (new or written by `engines triton`)")
    if not dest.exists():
        return {}
    rec = _read_record(dest)
    known = {**(rec or {}).get("previous", {}), **(rec or {}).get("files", {})}
    also = (rec or {}).get("previous", {})
    foreign, changed, present = [], [], {}
    for p in sorted(dest.rglob("*")):
        rel = p.relative_to(dest).as_posix()
        if rel == RECORD or any(part.startswith(STAGING) for part in p.relative_to(dest).parts[1:2]):
            continue   # the record itself; a staging folder of an interrupted write (removed below)
        if p.is_dir() and not p.is_symlink():
            continue
        if rel not in known:
            foreign.append(rel)
            continue
        present[rel] = sha256_file(p)
        if present[rel] not in {rec["files"].get(rel), also.get(rel)}:
            changed.append(rel)
    if foreign or changed:
        raise _refuse(
            "the folder holds files `engines triton` did not write" + (" or changed since" if changed else ""),
            file=dest, details=[f"not written by it: {r}" for r in foreign[:10]]
            + [f"changed since it was written: {r}" for r in changed[:10]]
            + ([f"... and {len(foreign) + len(changed) - 20} more"] if len(foreign) + len(changed) > 20 else []),
            fix="write the repository into a new or empty folder, or move those files out (the writer replaces only "
                f"what its {RECORD} lists, and never a file it did not write)")
    return present


def _next_version(dest: Path) -> int:
    seen = [0]
    if dest.is_dir():
        seen += [int(v.name) for m in dest.iterdir() if m.is_dir() for v in m.iterdir() if v.name.isdigit()]
    return max(seen) + 1


def _record(sets: list[EngineSet], planned: list[Planned], version: int, files: dict, previous: dict | None,
            not_served: dict) -> bytes:
    rec = {"schema": RECORD_SCHEMA, "writer": "engines triton", "written": now_iso(), "version": version,
           "sets": [{"tag": s.tag, "backend": s.manifest.backend, "trt_version": s.manifest.trt_version,
                     "targets": list(s.manifest.targets), "compatibility": s.manifest.compatibility,
                     "manifest_sha256": sha256_file(s.path / "manifest.json")} for s in sets],
           "models": {p.model.name: {"task": p.task, "version": version, "sources": p.sources,
                                     "cc_model_filenames": p.model.cc_files,
                                     "default_model_filename": p.model.default_file,
                                     "output_layout": p.model.io["layout"]} for p in planned},
           "not_served": not_served, "files": files}
    if previous:
        rec["previous"] = previous   # only while a write is under way
    return (json.dumps(rec, indent=2, sort_keys=True) + "\n").encode()


def not_served(sets: list[EngineSet]) -> dict:
    """The passthrough models (the hand-wash XGBoost classifier): shipped with the sets, not TensorRT."""
    out = {}
    for s in sets:
        for name, p in s.manifest.passthrough.items():
            out.setdefault(name, {"file": p.file, "sha256": p.sha256, "triton_backend": PASSTHROUGH_BACKEND})
    return out


def readme(sets: list[EngineSet], planned: list[Planned], version: int, skipped: dict) -> str:
    m = sets[0].manifest
    rows = []
    for p in planned:
        ccs = ", ".join(f"{cc} -> {f}" for cc, f in sorted(p.model.cc_files.items(), key=lambda kv: cc_tuple(kv[0])))
        if p.model.default_file:
            ccs += f"; any other it covers -> {p.model.default_file}"
        rows.append(f"| {p.model.name} | {p.task} | {version} | {p.model.io['layout']} | {ccs} |")
    lines = [
        "# Triton model repository",
        "",
        f"Written by `engines triton` at {now_iso()} from the engine sets {', '.join(s.tag for s in sets)} "
        f"({m.backend} {m.trt_version}). Do not edit: the next write refuses a folder holding files it did not "
        f"write; `{RECORD}` records the source sets and every file's sha256.",
        "",
        f"The plans run only on a Triton whose TensorRT is {m.backend} {m.trt_version}, and only on GPUs of the "
        "compute capabilities listed (`cc_model_filenames` keys on compute capability, not on GPU model).",
        "",
        "| model | task | version | output layout | compute capability -> plan |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Start: `tritonserver --model-repository=/models` (this folder mounted at /models, with a GPU); "
        "client: `YOLO(\"http://HOST:8000/<model>\", task=\"<task>\")` (docs/deploy.md, \"Triton\").",
    ]
    if skipped:
        lines += ["", "## Not served by this repository", ""]
        for name, p in sorted(skipped.items()):
            lines.append(f"- `{name}` (`{p['file']}`): not a TensorRT engine. Triton would serve it with its FIL "
                         f"backend (`backend: \"{PASSTHROUGH_BACKEND}\"`, triton-inference-server/fil_backend), "
                         "which reads XGBoost's own model files (`model_type: xgboost_json`), not a joblib pickle: "
                         "save the booster with `save_model(\"model.json\")` first.")
    return "\n".join(lines) + "\n"


def write_repository(dest: Path, sets: list[EngineSet], planned: list[Planned]) -> Path:
    dest = Path(dest)
    old_files = check_folder(dest)   # what is there now, every file one this writer wrote
    version = _next_version(dest)
    skipped = not_served(sets)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob(f"*/{STAGING}*"):   # an interrupted write's
            shutil.rmtree(stale, ignore_errors=True)
        new_files: dict[str, str] = {}
        staged: list[tuple[Path, Path]] = []
        for p in planned:
            stage = dest / p.model.name / f"{STAGING}{version}"
            stage.mkdir(parents=True)
            for fname, (src, digest) in p.files.items():
                shutil.copyfile(src, stage / fname)
                if sha256_file(stage / fname) != digest:   # the repository's plan is the set's, byte for byte
                    raise _refuse(f"{src.name} does not match the sha256 its set's manifest records (changed or "
                                  "corrupt)", model=p.model.name, file=src,
                                  fix="run `engines list` (it names damaged sets); rebuild or pull the set again")
                new_files[f"{p.model.name}/{version}/{fname}"] = digest
            staged.append((stage, dest / p.model.name / str(version)))
        texts = {f"{p.model.name}/config.pbtxt": render(p.model).encode() for p in planned}
        texts[README] = readme(sets, planned, version, skipped).encode()
        for rel, data in texts.items():
            new_files[rel] = hashlib.sha256(data).hexdigest()
        # what may be on disk until the switch is done: the old files and the new ones
        write_bytes_atomic(dest / RECORD, _record(sets, planned, version, new_files, old_files, skipped))
        for stage, final in staged:
            stage.rename(final)
        for rel, data in texts.items():   # the switch: each config now names the new version's plans
            write_bytes_atomic(dest / rel, data)
        for rel in sorted(set(old_files) - set(new_files)):   # older versions, models no longer served
            (dest / rel).unlink(missing_ok=True)
        for d in sorted((p for p in dest.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
        write_bytes_atomic(dest / RECORD, _record(sets, planned, version, new_files, None, skipped))
    except OSError as exc:
        raise _refuse(f"cannot write the Triton repository ({exc.strerror or exc})", file=dest,
                      fix="make the folder writable (or free disk space) and run again: the files written so far "
                          "are recorded and replaced by the next write") from None
    finally:
        for stale in dest.glob(f"*/{STAGING}*"):
            shutil.rmtree(stale, ignore_errors=True)
    return dest


class TritonRepository(Target):
    name = "triton"
    metavar = "DIR"
    is_dir = True
    help = ("Write a Triton model repository (config.pbtxt and the raw plan per model) for the chosen set, into "
            "a new folder or one `engines triton` wrote; `engines triton DIR` serves several sets of one TensorRT "
            "version at once.")

    def write(self, pick, dest: Path) -> Path:
        return write_repository(dest, pick.sets, plan(pick.sets, pick.models))

    def summary(self, pick, dest: Path) -> str:
        rec = json.loads((dest / RECORD).read_text())
        return (f"wrote {dest} (Triton model repository, version {rec['version']}: "
                f"{', '.join(sorted(rec['models']))} from {', '.join(s['tag'] for s in rec['sets'])})")


TRITON = TritonRepository()
