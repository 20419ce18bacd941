"""The engine-set manifest as typed, versioned records, and every verdict drawn from it.

``manifest.json`` is the contract between build, verify, list, resolve and the registry.
This module is its only reader and writer of fields: ``SetManifest.from_dict`` checks
the schema version, the field types and that every path stays inside the set, and the
verdicts ("did this set pass on this GPU", "what is its status", "can this host run
it") are methods here, so ``engines list``, ``verify``, ``resolve`` and ``build`` cannot
disagree.

Schema 1 (``SCHEMA``)::

    {"schema": 1, "tag", "backend": "tensorrt"|"tensorrt-rtx", "trt_version", "targets": ["8.6", ...],
     "gpu": {"name", "compute_cap", "driver", "cuda", "uuid"} | null,    # where a GPU built it
     "demo": bool, "created", "updated",
     "engines": {"<model>": {"task", "source", "engine", "plan", "built_from", "gpu",
                             "sha256": {"source", "onnx", "engine", "plan"},
                             "options": {...}, "build_seconds", "status": "ok"|"failed", "error",
                             "demo", "cache_key", "reproduce", "last_attempt", "benchmark",
                             "io": {"inputs": [{"name", "shape", "dtype"}], "outputs": [...], "layout"},
                             "verification": {"onnx": {"status", ...figures},
                                              "engine": {"status", "runs": [{"status", "gpu_name",
                                                         "compute_cap", "driver", "at", ...}], "note"}}}},
     "passthrough": {"<name>": {"file", "sha256", "demo"}}}

Unknown keys are kept as they are (``extra``) so a newer writer's additions survive an
older reader's rewrite of the verification result.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pipeline.builders import NAMES as BACKENDS  # the builders' one list
from pipeline.builders import builder_named
from pipeline.builders.compat import level
from pipeline.errors import PipelineError
from pipeline.status import Status

SCHEMA = 1
# Set status words (``engines list``), worst first.
FAILED, MIXED, PENDING, OK = Status.FAILED, Status.MIXED, Status.PENDING, Status.OK
# A tag names a folder under models/engines and a registry tag (OCI: [A-Za-z0-9_][A-Za-z0-9._-]{0,127});
# "current" is the handover link, never a set.
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RESERVED_TAGS = ("current",)


class ManifestError(PipelineError):
    """manifest.json is unreadable, of an unknown schema, or vouches for a path outside its set."""


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - {"extra"}


def _split(cls, data: dict) -> tuple[dict, dict]:
    known = _fields(cls)
    return {k: v for k, v in data.items() if k in known}, {k: v for k, v in data.items() if k not in known}


def _to_dict(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        if f.name == "extra":
            continue
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            v = v.to_dict()
        elif isinstance(v, dict) and v and all(dataclasses.is_dataclass(x) for x in v.values()):
            v = {k: x.to_dict() for k, x in v.items()}
        elif isinstance(v, list) and v and all(dataclasses.is_dataclass(x) for x in v):
            v = [x.to_dict() for x in v]
        out[f.name] = v
    out.update(obj.extra)
    return out


def safe_relpath(rel: object, where: str) -> str:
    """A path the manifest vouches for must be relative and stay inside the set."""
    if not isinstance(rel, str) or not rel:
        raise ManifestError(f"{where}: expected a relative path, found {rel!r}")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or "\\" in rel:
        raise ManifestError(f"{where}: path {rel!r} leaves the set (absolute or '..')",
                            fix="never use this set: it was tampered with; rebuild it with `engines run --force`")
    return rel


def _expect(value, types, where: str):
    if not isinstance(value, types):
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise ManifestError(f"{where}: expected {names}, found {type(value).__name__} {value!r}"[:200])
    return value


@dataclass
class VerificationRun:
    """One engine-level run: the engine on one GPU against the ONNX reference."""
    status: str
    gpu_name: str | None = None
    compute_cap: str | None = None
    driver: str | None = None
    at: str | None = None
    extra: dict = field(default_factory=dict)     # figures: tensors, detections, reasons...

    @classmethod
    def from_dict(cls, d: dict, where: str) -> VerificationRun:
        _expect(d, dict, where)
        known, extra = _split(cls, d)
        known.setdefault("status", Status.PENDING)
        _expect(known["status"], str, f"{where}.status")
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        return _to_dict(self)


@dataclass
class EngineLevel:
    """Engine-level verification: the runs, one per GPU model it ran on."""
    status: str = Status.PENDING
    runs: list[VerificationRun] = field(default_factory=list)
    note: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None, where: str) -> EngineLevel:
        d = _expect(d or {}, dict, where)
        known, extra = _split(cls, d)
        runs = [VerificationRun.from_dict(r, f"{where}.runs[{i}]")
                for i, r in enumerate(_expect(known.pop("runs", None) or [], list, f"{where}.runs"))]
        level = cls(**known, runs=runs, extra=extra)
        if not runs and level.status in (Status.PASSED, Status.FAILED) and (extra.get("gpu") or extra.get("gpu_name")):
            # an early writer recorded one flat run instead of a list
            level.runs = [VerificationRun(level.status, extra.get("gpu") or extra.get("gpu_name"),
                                          extra.get("compute_cap"), extra.get("driver"), extra.get("at"))]
        return level

    def to_dict(self) -> dict:
        return _to_dict(self)

    def record(self, run: VerificationRun) -> None:
        """Keep the newest run per GPU model; the summary status follows the runs."""
        self.runs = [r for r in self.runs if r.gpu_name != run.gpu_name] + [run]
        self.status = FAILED if any(r.status == Status.FAILED for r in self.runs) else Status.PASSED
        self.note = None

    def drop_stale(self, thresholds: dict | None) -> list[str]:
        """Forget the runs judged under other ``verify:`` thresholds than ``thresholds``
        (they prove nothing now: the GPU must run again); returns their GPU names."""
        stale = [r for r in self.runs if thresholds is not None
                 and r.extra.get("thresholds") not in (None, thresholds)]
        if stale:
            self.runs = [r for r in self.runs if r not in stale]
            names = sorted({str(r.gpu_name) for r in stale})
            self.status = (FAILED if any(r.status == Status.FAILED for r in self.runs) else Status.PASSED) if self.runs \
                else Status.PENDING
            self.note = (f"verify: thresholds changed since the runs on {', '.join(names)}; run `engines verify` "
                         "on a target GPU again")
            return names
        return []

    def verdict(self, gpu_name: str | None) -> tuple[str, str]:
        """(passed|failed|pending, why) for one GPU model; with ``gpu_name`` None, across
        every GPU it ran on (passed only where it passed everywhere it ran)."""
        if gpu_name is not None:
            mine = [r for r in self.runs if r.gpu_name == gpu_name]
            if any(r.status == Status.FAILED for r in mine):
                bad = [r for r in mine if r.status == Status.FAILED][-1]
                return Status.FAILED, f"failed on {gpu_name} (driver {bad.driver or '?'})"
            if mine:  # what matters is this GPU model; a failure on another does not carry over
                return Status.PASSED, f"passed on {gpu_name} (driver {mine[-1].driver or '?'})"
            others = sorted({str(r.gpu_name) for r in self.runs if r.status == Status.PASSED})
            if others:
                return Status.PENDING, f"passed on {', '.join(others)} but not yet on {gpu_name}"
            failed_on = sorted({str(r.gpu_name) for r in self.runs if r.status == Status.FAILED})
            if failed_on:
                return Status.PENDING, f"failed on {', '.join(failed_on)}, not yet run on {gpu_name}"
            return Status.PENDING, "not yet run on a GPU"
        passed = sorted({str(r.gpu_name) for r in self.runs if r.status == Status.PASSED})
        failed = sorted({str(r.gpu_name) for r in self.runs if r.status == Status.FAILED})
        if failed and passed:
            return MIXED, f"passed on {', '.join(passed)}; failed on {', '.join(failed)}"
        if failed:
            return Status.FAILED, f"failed on {', '.join(failed)}"
        if passed:
            return Status.PASSED, f"passed on {', '.join(passed)}"
        return Status.PENDING, "not yet run on a GPU"


# The output layouts a YOLO head exports (DESIGN.md, "Model families"; decoded by pipeline.tasks.decode):
# raw one-to-many predictions that need NMS ((batch, 4+nc[+extra], anchors)), NMS-free rows
# ((batch, max_det, 6[+extra]) = x1, y1, x2, y2, score, class), RT-DETR's rows ((batch, 300, 6),
# boxes cx, cy, w, h in 0..1) or class probabilities ((batch, nc)).
LAYOUTS = ("one-to-many", "end2end", "rtdetr", "probabilities")


def engine_io(io: dict, layout: str) -> dict:
    """The manifest's ``io`` record: the export's tensors plus the output layout (pipeline.tasks.output_layout)."""
    return {"inputs": io["inputs"], "outputs": io["outputs"], "layout": layout}


def check_io(io: object, where: str) -> dict:
    """``io``: {"inputs": [tensor], "outputs": [tensor], "layout"}; a tensor is {"name", "shape":
    [int or a dimension's name], "dtype"} (what stages/export.py records)."""
    _expect(io, dict, where)
    for side in ("inputs", "outputs"):
        tensors = _expect(io.get(side), list, f"{where}.{side}")
        for i, t in enumerate(tensors):
            _expect(t, dict, f"{where}.{side}[{i}]")
            _expect(t.get("name"), str, f"{where}.{side}[{i}].name")
            _expect(t.get("dtype"), str, f"{where}.{side}[{i}].dtype")
            for j, d in enumerate(_expect(t.get("shape"), list, f"{where}.{side}[{i}].shape")):
                _expect(d, (int, str), f"{where}.{side}[{i}].shape[{j}]")
    if io.get("layout") not in LAYOUTS:
        raise ManifestError(f"{where}.layout: {io.get('layout')!r} is not one of {', '.join(LAYOUTS)}"[:200])
    return io


@dataclass
class EngineRecord:
    """One model's engine in a set."""
    task: str | None = None
    source: str | None = None
    engine: str | None = None
    plan: str | None = None
    sha256: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    status: str = Status.OK
    error: str | None = None
    demo: bool = False
    onnx_level: dict = field(default_factory=dict)     # figures of the onnx-level gate
    engine_level: EngineLevel = field(default_factory=EngineLevel)
    verification_extra: dict = field(default_factory=dict)  # a newer writer's other levels, kept as they are
    io: dict | None = None     # inputs/outputs (name, shape, dtype) and the output layout; None in older sets
    extra: dict = field(default_factory=dict)          # built_from, gpu, cache_key, reproduce, benchmark...

    @classmethod
    def from_dict(cls, d: dict, where: str) -> EngineRecord:
        _expect(d, dict, where)
        d = dict(d)
        ver = _expect(d.pop("verification", None) or {}, dict, f"{where}.verification")
        known, extra = _split(cls, d)
        for key in ("onnx_level", "engine_level", "verification_extra"):
            known.pop(key, None)
        rec = cls(**known, extra=extra,
                  verification_extra={k: v for k, v in ver.items() if k not in ("onnx", "engine")},
                  onnx_level=_expect(ver.get("onnx") or {}, dict, f"{where}.verification.onnx"),
                  engine_level=EngineLevel.from_dict(ver.get("engine"), f"{where}.verification.engine"))
        _expect(rec.status, str, f"{where}.status")
        _expect(rec.sha256, dict, f"{where}.sha256")
        _expect(rec.options, dict, f"{where}.options")
        _expect(rec.demo, bool, f"{where}.demo")
        for key in ("task", "source", "error"):
            _expect(getattr(rec, key), (str, type(None)), f"{where}.{key}")
        if rec.io is not None:
            check_io(rec.io, f"{where}.io")
        for key, value in (_expect(extra.get("gpu"), (dict, type(None)), f"{where}.gpu") or {}).items():
            _expect(value, (str, int, float, type(None)), f"{where}.gpu.{key}")
        _expect(extra.get("built_from"), (str, type(None)), f"{where}.built_from")
        for kind, digest in rec.sha256.items():
            _expect(digest, (str, type(None)), f"{where}.sha256.{kind}")
        for kind in ("engine", "plan"):   # a failed entry's files are judged again: its paths are checked too
            if rec.status == Status.OK or getattr(rec, kind) is not None:
                safe_relpath(getattr(rec, kind), f"{where}.{kind}")
            if rec.status == Status.OK:
                _expect(rec.sha256.get(kind), str, f"{where}.sha256.{kind}")
        return rec

    def to_dict(self) -> dict:
        out = _to_dict(self)
        out.pop("onnx_level"), out.pop("engine_level"), out.pop("verification_extra")
        if out.get("io") is None:
            out.pop("io", None)   # an entry of an older set stays as it was written
        out["verification"] = {**self.verification_extra, "onnx": self.onnx_level,
                               "engine": self.engine_level.to_dict()}
        return out

    @property
    def onnx_status(self) -> str | None:
        return self.onnx_level.get("status")

    def judge_onnx(self, level: dict) -> list[str]:
        """Record an onnx-level result (the build gate, a re-judgement, `engines verify`): it
        decides the entry's status, and engine-level runs judged under other thresholds stop
        counting. Returns the GPUs whose runs were dropped."""
        self.onnx_level = level
        passed = level.get("status") == Status.PASSED
        self.status, self.error = (Status.OK, None) if passed else (Status.FAILED, "; ".join(level.get("reasons") or []))
        return self.engine_level.drop_stale(level.get("thresholds"))

    def get(self, key: str, default: Any = None) -> Any:
        """Fields kept as they are (``extra``): built_from, gpu, cache_key, benchmark..."""
        return self.extra.get(key, default)

    def problems(self, gpu_name: str | None) -> tuple[list[str], str | None]:
        """(reasons this engine is refused, why its engine level is pending or None)."""
        if self.onnx_status == Status.FAILED:
            return ["ONNX-level verification failed" + (f": {self.error}" if self.error else "")], None
        if self.status != Status.OK:
            return [f"did not build: {self.error or self.status}"], None
        status, why = self.engine_level.verdict(gpu_name)
        if status in (Status.FAILED, MIXED):
            return [f"engine-level verification {why}"], None
        return [], (why if status == Status.PENDING else None)


@dataclass
class PassthroughRecord:
    file: str
    sha256: str
    demo: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> PassthroughRecord:
        _expect(d, dict, where)
        known, extra = _split(cls, d)
        rec = cls(**{"file": None, "sha256": None, **known}, extra=extra)
        safe_relpath(rec.file, f"{where}.file")
        _expect(rec.sha256, str, f"{where}.sha256")
        return rec

    def to_dict(self) -> dict:
        return _to_dict(self)


@dataclass
class SetVerdict:
    """What a set is worth on one GPU model (or, with no GPU named, across all)."""
    status: str                       # ok | pending | mixed | failed
    reasons: list[str]                # failures, per model
    missing: list[str]                # models models.yaml lists that the set lacks
    pending: list[str]                # models whose engine level is not yet proven, with why

    @property
    def failed(self) -> bool:
        return bool(self.reasons or self.missing)


@dataclass
class SetManifest:
    tag: str
    backend: str
    trt_version: str
    targets: list[str]
    gpu: dict | None = None
    created: str | None = None
    updated: str | None = None
    engines: dict[str, EngineRecord] = field(default_factory=dict)
    passthrough: dict[str, PassthroughRecord] = field(default_factory=dict)
    schema: int = SCHEMA
    extra: dict = field(default_factory=dict)

    # -- reading and writing -------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: object, where: str = "manifest.json") -> SetManifest:
        _expect(d, dict, where)
        schema = d.get("schema")
        if schema != SCHEMA:
            raise ManifestError(f"{where}: unknown manifest schema {schema!r} (this pipeline reads schema {SCHEMA})",
                                fix="use the pipeline version that wrote this set, or rebuild the set with this "
                                    "one (`engines run --force`)")
        known, extra = _split(cls, d)
        extra.pop("demo", None)  # derived, never trusted from the file
        for key in ("tag", "backend", "trt_version"):
            _expect(known.get(key), str, f"{where}.{key}")
        if not TAG_RE.fullmatch(known["tag"]) or known["tag"] in RESERVED_TAGS:
            raise ManifestError(f"{where}.tag: {known['tag']!r} is not a set tag (letters, digits, '.', '_', '-'; "
                                "not 'current')"[:300],
                                fix="never use this set: it was tampered with; rebuild it with `engines run --force`")
        if known["backend"] not in BACKENDS:
            raise ManifestError(f"{where}.backend: unknown backend {known['backend']!r} (known: {', '.join(BACKENDS)})")
        targets = _expect(known.get("targets"), list, f"{where}.targets")
        for i, t in enumerate(targets):
            _expect(t, str, f"{where}.targets[{i}]")
        if known.get("gpu") is not None:
            _expect(known["gpu"], dict, f"{where}.gpu")
            for key, value in known["gpu"].items():
                _expect(value, (str, int, float, type(None)), f"{where}.gpu.{key}")
        if not re.fullmatch(r"\d[A-Za-z0-9.+_-]*", known["trt_version"]):
            raise ManifestError(f"{where}.trt_version: {known['trt_version']!r} is not a version"[:200])
        for key in ("cuda", "compatibility"):
            _expect(extra.get(key), (str, type(None)), f"{where}.{key}")
        _expect(extra.get("version_compatible", False), bool, f"{where}.version_compatible")
        engines = _expect(known.pop("engines", None) or {}, dict, f"{where}.engines")
        passthrough = _expect(known.pop("passthrough", None) or {}, dict, f"{where}.passthrough")
        return cls(**known, extra=extra,
                   engines={str(n): EngineRecord.from_dict(e, f"{where}.engines.{n}") for n, e in engines.items()},
                   passthrough={str(n): PassthroughRecord.from_dict(p, f"{where}.passthrough.{n}")
                                for n, p in passthrough.items()})

    def to_dict(self) -> dict:
        out = _to_dict(self)
        out["demo"] = self.demo
        return out

    # -- facts ---------------------------------------------------------------------------
    @property
    def demo(self) -> bool:
        """Demo weights anywhere, passthrough stand-ins included."""
        return any(e.demo for e in self.engines.values()) or any(p.demo for p in self.passthrough.values())

    def files(self) -> dict[str, str]:
        """Every file the manifest vouches for: relative path -> sha256."""
        out: dict[str, str] = {}
        for e in self.engines.values():
            if e.status == Status.OK:
                for kind in ("engine", "plan"):
                    out[getattr(e, kind)] = e.sha256[kind]
        for p in self.passthrough.values():
            out[p.file] = p.sha256
        return out

    # -- verdicts ------------------------------------------------------------------------
    def verdict(self, gpu_name: str | None = None, expected_models: list[str] | None = None) -> SetVerdict:
        """The one judgement of a set's engines: build, onnx level and engine level on
        ``gpu_name`` (None: across every GPU it ran on). Used by list, resolve and build."""
        reasons: list[str] = []
        pending: list[str] = []
        mixed = hard = False   # hard: a failure that no GPU passed (it outranks "mixed")
        if not self.engines:
            reasons.append("the manifest lists no engine")
            hard = True
        for name, e in sorted(self.engines.items()):
            bad, why = e.problems(gpu_name)
            reasons += [f"model '{name}'{'' if r.startswith('did not') else ':'} {r}" for r in bad]
            if why:
                pending.append(f"'{name}' ({why})")
            if bad:
                is_mixed = gpu_name is None and e.onnx_status != Status.FAILED and e.status == Status.OK \
                    and e.engine_level.verdict(None)[0] == MIXED
                mixed, hard = mixed or is_mixed, hard or not is_mixed
        missing = [f"has no engine for model '{name}' (models.yaml lists it)"
                   for name in expected_models or [] if name not in self.engines]
        status = FAILED if hard or missing else MIXED if mixed else PENDING if pending else OK
        return SetVerdict(status, reasons, missing, pending)

    def status(self, gpu_name: str | None = None) -> str:
        return self.verdict(gpu_name).status

    def cannot_run_here(self, installed_version: str | None, gpus: list) -> str | None:
        """Why this machine cannot run the set's engines (None if it can): a runtime that loads
        the set (its exact version, or for a version-compatible set what its builder allows),
        and a GPU whose compute capability it targets."""
        if installed_version is None:
            return f"{self.backend} is not installed here"
        if not builder_named(self.backend).runtime_loads(self.trt_version, installed_version, self.version_compatible):
            return f"this machine has {self.backend} {installed_version}, the set needs {self.trt_version}"
        if not gpus:
            return "no GPU on this machine"
        if not self.runs_on(gpus[0].compute_cap):
            lv = level(self.compatibility)
            if lv is not None:
                return f"{gpus[0].name} is {gpus[0].sm}; the set's portable tier covers {lv.covers}"
            return f"{gpus[0].name} is {gpus[0].sm}, not one of the set's targets ({', '.join(self.targets)})"
        return None

    # -- portable tier (``compatibility`` and ``version_compatible``, kept in ``extra``) --
    @property
    def compatibility(self) -> str | None:
        """The hardware compatibility level of a portable set ("ampere_plus", "same_compute_capability"), else None."""
        return self.extra.get("compatibility") or None

    @property
    def version_compatible(self) -> bool:
        return bool(self.extra.get("version_compatible"))

    def runs_on(self, compute_cap: str) -> bool:
        """A GPU of this compute capability can load the engines: one of the targets, or what
        the set's hardware compatibility level covers (pipeline.builders.compat)."""
        lv = level(self.compatibility)
        return lv.runs_on(self.targets, compute_cap) if lv else compute_cap in self.targets

    def built_on_same_gpu(self, gpu_name: str) -> bool:
        """Every engine was built on this GPU model (a set can be extended on another)."""
        names = {(e.get("gpu") or {}).get("name") for e in self.engines.values() if e.get("gpu")}
        built_on = (self.gpu or {}).get("name")
        return bool(built_on) and built_on == gpu_name and names <= {gpu_name}


def new_manifest(tag: str, backend: str, version: str, targets: list[str], gpu: dict | None, now: str) -> SetManifest:
    from pipeline.hardware import cc_tuple
    return SetManifest(tag=tag, backend=backend, trt_version=version, targets=sorted(targets, key=cc_tuple),
                       gpu=gpu, created=now, updated=now)
