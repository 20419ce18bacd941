"""Export stage: .pt -> ONNX (opset from models.yaml, >= 12), simplified with onnxsim,
checked, plus an FP16 twin for strongly typed builds, with measured parity.

Outputs per model, mirroring the source layout under ``models/onnx/`` (names:
``stages.records.OnnxFiles``): the FP32 ONNX, its FP16 twin (FP16 weights and math, FP32
I/O) and the record (cache key, I/O, simplification, parity). The record is written last,
so its presence with matching hashes means the export is complete. ``export_all`` returns
``ExportRecord`` objects, which the build and verification take as they are.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path

from pipeline.checkpoint import Trust, as_trust, check_pin, gate, refused_by_loader
from pipeline.config import Config, ModelSpec
from pipeline.errors import PipelineError
from pipeline.fsutil import (
    SCRATCH_PREFIXES,
    atomic_path,
    check_writable,
    owner_state,
    pid_alive,
    read_json,
    sha256_file,
    sha256_files,
    sha256_json,
    write_json_atomic,
)
from pipeline.stages.records import ExportRecord, OnnxFiles

EXPORT_VERSION = 2  # bump when the export procedure changes: invalidates every cache entry
# (2: checkpoints are scanned and loaded safely; exports cached before that are redone)
TEMP_PREFIX = ".export-"  # work folders: .export-<pid>-<random>/ beside the outputs, with an owner file
TEMP_OWNER = "owner"
FOREIGN_TEMP_AGE_S = 24 * 3600  # a folder from another host (or with no owner) is stale after this
UNOWNED_TEMP_AGE_S = 3600       # a scratch folder or temp file from before owners were in names
TOOL_PACKAGES = ("torch", "ultralytics", "onnx", "onnxsim", "onnxruntime", "onnxconverter-common")


@cache   # once a process: reading package metadata costs about 10 ms a package
def _tool_versions() -> tuple[tuple[str, str], ...]:
    out = {}
    for pkg in TOOL_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return tuple(out.items())


def tool_versions() -> dict[str, str]:
    """Versions from package metadata: no import of torch or ultralytics."""
    return dict(_tool_versions())


def onnx_paths(cfg: Config, spec: ModelSpec) -> dict[str, Path]:
    """The export's own files by kind (fp32, fp16, record); names: ``OnnxFiles``."""
    f = OnnxFiles.of(cfg, spec)
    return {"fp32": f.fp32, "fp16": f.fp16, "record": f.record}


def onnx_file(cfg: Config, spec: ModelSpec, kind: str) -> Path:
    """The ONNX an engine is built from: fp32, fp16, or int8 (the Q/DQ twin of stages.quantize)."""
    return OnnxFiles.of(cfg, spec).onnx(kind)


def check_source(spec: ModelSpec, config: Path | None = None) -> None:
    """Cheap checks before the cache is consulted: present (else the nearest file is named) and not empty."""
    src = spec.source_path
    if not src.is_file():
        from pipeline.stages.demo import missing_checkpoint
        raise missing_checkpoint(spec.name, src, config or spec.root / "models.yaml")
    if src.stat().st_size == 0:
        raise PipelineError("checkpoint is an empty file", model=spec.name, file=src,
                            fix="copy the checkpoint again from where it was trained")


def check_archive(spec: ModelSpec) -> None:
    """The whole-file CRC check, on a cache miss only (a changed file misses the cache)."""
    src = spec.source_path
    problem = _archive_problem(src)
    if problem:
        raise PipelineError(f"checkpoint is not a readable PyTorch file (truncated or corrupt?): {problem}",
                            model=spec.name, file=src,
                            fix="copy the checkpoint again; its size and sha256 should match the original")


def _archive_problem(path: Path) -> str | None:
    """torch.save writes a zip archive (a bare pickle before torch 1.6); check it is whole."""
    import zipfile
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"\x80\x02":  # legacy pickle format: nothing cheap to check
        return None
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        return f"member {bad} fails its CRC" if bad else None
    except (zipfile.BadZipFile, OSError) as exc:
        return str(exc)


def cache_key(spec: ModelSpec, source_sha: str | None = None) -> str:
    return sha256_json({"source": source_sha or sha256_file(spec.source_path), "options": spec.export_options(),
                        "tools": tool_versions(), "export_version": EXPORT_VERSION})


def cached_record(cfg: Config, spec: ModelSpec, key: str | None = None,
                  digests: dict[Path, str] | None = None) -> ExportRecord | None:
    """The previous record if it is still valid for these inputs (``key``: this export's
    cache key, when the caller already has it), else None. Hashes both ONNX files (``digests``:
    those the caller hashed already)."""
    files = OnnxFiles.of(cfg, spec)
    rec = read_json(files.record)
    if not rec or rec.get("cache_key") != (key or cache_key(spec)):
        return None
    for kind in ("fp32", "fp16"):
        f = files.onnx(kind)
        if not f.is_file() or ((digests or {}).get(f) or sha256_file(f)) != rec["sha256"].get(kind):
            return None
    return ExportRecord.parse(spec, files, rec)


def prehash(cfg: Config, specs: list[ModelSpec], onnx: bool = True) -> dict[Path, str]:
    """sha256 of every checkpoint (and, with ``onnx``, exported ONNX) of ``specs`` that exists, a
    few at a time: hashlib lets go of the GIL, so a cached run hashes on every core. Each file is
    hashed once a run: the export's checks take their digests from here. A file that cannot be
    read is left out (the export then says why, naming its model)."""
    kinds = ("fp32", "fp16") if onnx else ()
    paths = [p for s in specs for p in (s.source_path, *(OnnxFiles.of(cfg, s).onnx(k) for k in kinds))
             if p.is_file()]
    return {p: d for p, d in zip(paths, sha256_files(paths)) if d}


def _load_checked(spec: ModelSpec, trusted: bool, checkpoint: Path):
    """Load the gated copy with Ultralytics, mapping its failures to errors people can act on
    (they name the user's file, ``spec.source_path``)."""
    from pipeline.backends.torch import load_yolo
    from pipeline.checkpoint import TRUST_FIX
    src = spec.source_path
    try:
        model = load_yolo(checkpoint)
    except Exception as exc:  # torch/pickle/ultralytics raise many types for a bad file
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not trusted and refused_by_loader(exc):
            raise PipelineError(f"checkpoint needs unsafe loading: the safe loader refused it ({text})",
                                model=spec.name, file=src, fix=TRUST_FIX) from None
        if any(s in text.lower() for s in ("zip", "eof", "truncat", "unpickl", "magic", "archive")):
            what = f"checkpoint is not a readable PyTorch file (truncated or corrupt?): {text}"
            fix = "copy the checkpoint again; its size should match the original"
        else:
            what = f"checkpoint is not an Ultralytics YOLO model: {text}"
            fix = "give the .pt that Ultralytics training wrote (weights/best.pt)"
        raise PipelineError(what, model=spec.name, file=src, fix=fix) from None
    if getattr(model, "task", None) != spec.task:
        raise PipelineError(
            f"checkpoint is a '{model.task}' model but models.yaml declares task '{spec.task}'",
            model=spec.name, file=src,
            fix=f"set task: {model.task} if supported, or point source: at a {spec.task} checkpoint")
    return model


def _simplify(model_proto, record: dict, test_shape: list[int] | None = None):
    """onnxsim with its own numeric check; keep the unsimplified model if it fails.
    ``test_shape`` gives the check a concrete input for dynamic (batch) exports."""
    import contextlib
    import io

    import onnxsim
    try:
        with contextlib.redirect_stdout(io.StringIO()):   # its "Checking 0/1..." is not our progress
            simplified, ok = onnxsim.simplify(
                model_proto, check_n=1,
                test_input_shapes={"images": test_shape} if test_shape else None)
    except Exception as exc:  # onnxsim raises RuntimeError/ValueError/onnx errors
        record["simplify"] = {"applied": False, "reason": f"{type(exc).__name__}: {exc}"[:500]}
        return model_proto
    if not ok:
        record["simplify"] = {"applied": False, "reason": "onnxsim's numeric check failed"}
        return model_proto
    record["simplify"] = {"applied": True, "nodes_before": len(model_proto.graph.node),
                          "nodes_after": len(simplified.graph.node)}
    return simplified


def _io(model_proto) -> dict:
    from onnx import helper
    def spec(v):
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name}
    return {"inputs": [spec(v) for v in model_proto.graph.input],
            "outputs": [spec(v) for v in model_proto.graph.output]}


def to_fp16(model_proto):
    """FP16 weights and math, FP32 inputs and outputs (what strongly typed TensorRT builds)."""
    import warnings

    import onnx
    from onnxconverter_common import float16
    with warnings.catch_warnings():   # one UserWarning per weight below FP16's range: the twin is checked anyway
        warnings.filterwarnings("ignore", category=UserWarning, module="onnxconverter_common")
        fp16 = float16.convert_float_to_float16(model_proto, keep_io_types=True)
    # The converter turns every float tensor into float16 but leaves Cast(to=FLOAT) nodes
    # alone; dynamic exports compute anchors through such Casts, and the checker then
    # rejects the model. Point those Casts at FLOAT16, as the tensors they feed now are.
    types = {v.name: v.type.tensor_type.elem_type for v in fp16.graph.value_info}
    for node in fp16.graph.node:
        if node.op_type == "Cast" and types.get(node.output[0]) == onnx.TensorProto.FLOAT16:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
    return fp16


def _age(p: Path) -> float:
    try:
        return time.time() - p.lstat().st_mtime
    except OSError:
        return 0.0


def _stale_by_owner_file(d: Path) -> bool:
    """An export work folder (``.export-<pid>-*``): its owner file says host and pid."""
    try:
        host, pid = (d / TEMP_OWNER).read_text().split()
        if host == socket.gethostname():
            return not pid_alive(int(pid))
    except (OSError, ValueError):
        pass
    return _age(d) > FOREIGN_TEMP_AGE_S


def _stale_by_name(p: Path) -> bool:
    """A scratch folder or atomic temporary whose name carries its owner (fsutil.owner_tag)."""
    state = owner_state(p.name)
    if state == "dead":
        return True
    if state == "alive":
        return False
    # another host (a container shares the models folder) or a name from before owners were
    # written: its process cannot be checked from here, so only an old one counts as left over
    return _age(p) > (FOREIGN_TEMP_AGE_S if state == "foreign" else UNOWNED_TEMP_AGE_S)


def stale_temp_dirs(onnx_dir: Path) -> list[Path]:
    """Temporaries left under ``onnx_dir`` by a run that was killed (its process is gone): export
    work folders (each holds a checkpoint copy), INT8 calibration and accuracy-validation scratch
    folders, and the half-written files of atomic writes (``.<name>.<owner>.*.tmp*``). One of
    another host, or without an owner, counts only once it is old (FOREIGN_TEMP_AGE_S,
    UNOWNED_TEMP_AGE_S)."""
    if not onnx_dir.is_dir():
        return []
    stale = []
    for p in sorted(onnx_dir.rglob(".*")):
        if any(parent in stale for parent in p.parents):
            continue
        if p.is_dir() and p.name.startswith(TEMP_PREFIX):
            if _stale_by_owner_file(p):
                stale.append(p)
        elif p.is_dir() and p.name.startswith(SCRATCH_PREFIXES):
            if _stale_by_name(p):
                stale.append(p)
        elif p.is_file() and ".tmp" in p.name and p.name.count(".") >= 3 and _stale_by_name(p):
            stale.append(p)
    return stale


def remove_stale_temp_dirs(onnx_dir: Path, log: Callable[[str], None] = lambda m: None) -> list[Path]:
    removed = []
    for d in stale_temp_dirs(onnx_dir):
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
        else:
            d.unlink(missing_ok=True)
        if not d.exists():
            removed.append(d)
            log(f"removed {d} (left by a run that was killed)")
    return removed


def export_model(cfg: Config, spec: ModelSpec, force: bool = False,
                 log: Callable[[str], None] = lambda m: None, trust: Trust | bool = False,
                 digests: dict[Path, str] | None = None) -> ExportRecord:
    """Export one model; returns its record (``status`` ``cached`` or ``exported``).

    ``trust``: load the checkpoint even when it needs more than the safe-load allow-list, if
    the trust covers this file's digest (checkpoint.Trust: --trust-checkpoint, digests from the
    variable, or ``trust: true`` with the model's sha256 pin). ``digests``: files already hashed
    this run (``prehash``)."""
    check_source(spec, cfg.path)
    paths = onnx_paths(cfg, spec)
    why = check_writable(paths["fp32"].parent)
    if why:
        raise PipelineError(f"output folder is not writable: {why}", model=spec.name,
                            file=paths["fp32"].parent,
                            fix="fix its permissions or pass --config pointing at a writable copy")
    digests = digests or {}
    source_sha = digests.get(spec.source_path) or sha256_file(spec.source_path)  # once: pin, cache key, record
    check_pin(spec.name, spec.source_path, spec.sha256, source_sha)
    trusted = as_trust(trust).covers(source_sha, spec.trust, spec.sha256)
    key = cache_key(spec, source_sha)
    rec = None if force else cached_record(cfg, spec, key, digests)
    if rec and (trusted or not rec.trusted):  # an export made under trust needs it still
        # the record is keyed by source path: a model renamed in models.yaml keeps its export
        return rec
    check_archive(spec)
    check_export_disk(spec, paths["fp32"].parent)
    if "torch" not in sys.modules:   # the first export of a process: seconds of silence otherwise
        log(f"{spec.name}: the checkpoint changed or is new: loading PyTorch and Ultralytics to export it "
            "(a few seconds)")
    # what is scanned and loaded is a private copy of exactly the bytes hashed, pinned and keyed
    # above (checkpoint.gate): a file swapped after the check is never read
    with gate(spec.name, spec.source_path, expected_sha256=source_sha, trusted=trusted, log=log) as decision:
        return _export_loaded(cfg, spec, paths, key, source_sha, decision.trusted, decision.record(), log,
                              checkpoint=decision.path)


def _export_loaded(cfg: Config, spec: ModelSpec, paths: dict, key: str, source_sha: str, trusted: bool,
                   trust_info: dict, log: Callable[[str], None], checkpoint: Path) -> ExportRecord:

    import onnx

    from pipeline.stages.parity import measure_parity

    t0 = time.perf_counter()
    yolo = _load_checked(spec, trusted, checkpoint)
    record: dict = {"model": spec.name, "source": spec.source, "task": spec.task,
                    "cache_key": key, "sha256": {"source": source_sha},
                    "trusted": trusted, "unsafe_globals": trust_info["unsafe_globals"],
                    "sha256_pinned": bool(spec.sha256),
                    "options": spec.export_options(), "tools": tool_versions(),
                    "demo": bool(getattr(yolo, "ckpt", {}) and yolo.ckpt.get("demo_weights"))}
    log(f"{spec.name}: exporting {spec.source} (opset {spec.opset}, imgsz {spec.imgsz})")
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=paths["fp32"].parent) as tmp:
        (Path(tmp) / TEMP_OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
        tmp_pt = Path(tmp) / Path(spec.source).name
        shutil.copyfile(checkpoint, tmp_pt)  # Ultralytics writes beside its input; never re-read the user's path
        out = _ultralytics_export(spec, tmp_pt, record, log)
        proto = onnx.load(out)
        meta = {p.key: p.value for p in proto.metadata_props}
        proto = _simplify(proto, record, [spec.batch.opt, 3, spec.imgsz, spec.imgsz])
        # onnxsim keeps metadata_props today; restore them in case a version does not.
        if {p.key for p in proto.metadata_props} != set(meta):
            del proto.metadata_props[:]
            onnx.helper.set_model_props(proto, meta)
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as exc:
            raise PipelineError(f"onnx.checker rejected the export: {exc}", model=spec.name,
                                file=paths["fp32"], fix="report this with the checkpoint") from None
        record["opset"] = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        record["io"] = _io(proto)
        record["metadata"] = {k: meta.get(k) for k in METADATA_KEYS if k in meta}
        fp16 = to_fp16(proto)
        onnx.checker.check_model(fp16, full_check=True)
        fp32_bytes, fp16_bytes = proto.SerializeToString(), fp16.SerializeToString()

        record["parity"] = measure_parity(spec, tmp_pt, {"fp32": fp32_bytes, "fp16": fp16_bytes}, record)
        record["seconds"] = round(time.perf_counter() - t0, 2)
        if not record["parity"]["passed"]:
            raise PipelineError(
                "export parity check failed: the ONNX disagrees with the PyTorch checkpoint",
                model=spec.name, file=spec.source_path, details=record["parity"]["reasons"],
                fix="nothing was written; rerun with --force after upgrading ultralytics/onnx, "
                    "or loosen verify: thresholds in models.yaml if the figures are acceptable")
        for kind, data in (("fp32", fp32_bytes), ("fp16", fp16_bytes)):
            with atomic_path(paths[kind]) as t:
                t.write_bytes(data)
            record["sha256"][kind] = sha256_file(paths[kind])
    record["files"] = {k: str(v.relative_to(cfg.root)) for k, v in paths.items()}
    write_json_atomic(paths["record"], record)
    return ExportRecord.parse(spec, OnnxFiles.of(cfg, spec), record, status="exported")


# Ultralytics' ONNX metadata kept in the record (and written into the .engine header): what its
# own reader needs to post-process an engine (end2end selects the NMS-free decoding, head names RT-DETR).
METADATA_KEYS = ("task", "names", "stride", "imgsz", "kpt_shape", "batch", "end2end", "head", "args", "channels")
_NEEDS_OPSET = re.compile(r"requires opset>=(\d+)")


def _ultralytics_export(spec: ModelSpec, checkpoint: Path, record: dict, log: Callable[[str], None]) -> str:
    """Ultralytics' ONNX export at the configured opset; a model that needs a later one (RT-DETR: 16)
    gets the lowest that Ultralytics names, with a line saying why (recorded as ``opset_raised``)."""
    from pipeline.backends.torch import load_yolo
    extra = {} if spec.nms is None else {"nms": spec.nms}
    opset = spec.opset
    for _ in range(2):
        try:
            return load_yolo(checkpoint).export(
                format="onnx", opset=opset, simplify=False, imgsz=spec.imgsz,
                dynamic=spec.batch.dynamic, batch=spec.batch.opt if not spec.batch.dynamic else 1,
                device="cpu", verbose=False, **extra)
        except Exception as exc:
            need = _NEEDS_OPSET.search(str(exc))
            if need and int(need.group(1)) > opset:
                opset = int(need.group(1))
                record["opset_raised"] = {"configured": spec.opset, "used": opset, "why": str(exc)[:300]}
                log(f"{spec.name}: this model needs ONNX opset {opset} or later (Ultralytics: \"{exc}\"); exporting at "
                    f"opset {opset} instead of {spec.opset} (set opset: {opset} in models.yaml to say so)")
                continue
            raise PipelineError(f"Ultralytics export failed: {type(exc).__name__}: {exc}",
                                model=spec.name, file=spec.source_path,
                                fix="check that the checkpoint loads with `yolo predict model=...`") from None
    raise AssertionError("unreachable")


# What an export writes, per byte of checkpoint (yolov8n, 6.5 MB .pt, measured): the work copy of the
# checkpoint (1.0), Ultralytics' raw ONNX in the work folder (2.0), the simplified FP32 ONNX (2.0) and
# its FP16 twin (1.0): about 6x at the peak, before the work folder goes. 7x leaves a margin.
EXPORT_DISK_FACTOR = 7


def check_export_disk(spec: ModelSpec, out_dir: Path) -> None:
    need = spec.source_path.stat().st_size * EXPORT_DISK_FACTOR
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise not_enough_disk(spec, out_dir, need, free)


def not_enough_disk(spec: ModelSpec, out_dir: Path, need: int | None, free: int | None) -> PipelineError:
    figures = (f": about {need >> 20} MiB needed (checkpoint copy, FP32 and FP16 ONNX), {free >> 20} MiB free"
               if need is not None and free is not None else "")
    return PipelineError(f"not enough disk for the export{figures} on the disk that holds {out_dir}",
                         model=spec.name, file=out_dir,
                         fix=f"free space on that disk (`df -h {out_dir}`; `make clean` removes demo outputs), or "
                             "point --config at a models folder on a disk with room; nothing was left half-written")


def _export_guarded(cfg: Config, spec: ModelSpec, force: bool, log, trust: Trust | bool = False,
                    digests: dict[Path, str] | None = None) -> ExportRecord:
    """export_model with anything unexpected turned into an error naming model and file."""
    import errno
    paths = onnx_paths(cfg, spec)
    before = {k: (paths[k].stat().st_mtime_ns if paths[k].exists() else None) for k in ("fp32", "fp16")}
    try:
        return export_model(cfg, spec, force=force, log=log, trust=trust, digests=digests)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # the record is written last: ONNX files this attempt wrote without one are removed
        for k, stamp in before.items():
            if paths[k].exists() and paths[k].stat().st_mtime_ns != stamp:
                paths[k].unlink()
        free = shutil.disk_usage(paths["fp32"].parent).free
        raise not_enough_disk(spec, paths["fp32"].parent, spec.source_path.stat().st_size * EXPORT_DISK_FACTOR,
                              free) from None
    except PipelineError:
        raise
    except Exception as exc:  # onnx, onnxsim, onnxconverter-common, ONNX Runtime raise many types
        raise PipelineError(f"export failed: {type(exc).__name__}: {str(exc)[:400]}", model=spec.name,
                            file=spec.source_path,
                            fix="rerun with --force; if it persists, report the message with the checkpoint") from exc


def export_all(cfg: Config, specs: list[ModelSpec], keep_going: bool = False, force: bool = False,
               log: Callable[[str], None] = lambda m: None,
               trust: Trust | bool = False) -> tuple[list[ExportRecord], list[PipelineError]]:
    """Export ``specs`` (their precision already resolved: each record carries its spec)."""
    records, errors = [], []
    remove_stale_temp_dirs(cfg.onnx_dir, log)
    digests = prehash(cfg, specs, onnx=not force)
    for spec in specs:
        try:
            rec = _export_guarded(cfg, spec, force, log, trust, digests)
            log(f"{spec.name}: {rec.status} -> {rec.data['files']['fp32']}")
            records.append(rec)
        except PipelineError as err:
            errors.append(err)
            if not keep_going:
                break
    return records, errors


def check_passthrough(cfg: Config) -> tuple[list[dict], list[PipelineError]]:
    """Passthrough models (the XGBoost hand-wash classifier) are only checked and hashed:
    nothing here imports xgboost or reads the file's contents."""
    found, errors = [], []
    for p in cfg.passthrough:
        if not p.source_path.is_file() or p.source_path.stat().st_size == 0:
            errors.append(PipelineError("passthrough model is missing or empty", model=p.name, file=p.source_path,
                                        fix="copy the trained file there, or run `engines demo-models` "
                                            "for a stand-in"))
            continue
        digest = sha256_file(p.source_path)
        try:
            check_pin(p.name, p.source_path, p.sha256, digest)
        except PipelineError as err:
            errors.append(err)
            continue
        found.append({"model": p.name, "file": p.source, "sha256": digest})
    return found, errors
