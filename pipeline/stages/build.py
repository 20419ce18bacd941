"""Build stage: ONNX -> TensorRT engine sets, checked before and verified after.

Per model: pre-build checks (workspace vs free GPU memory, fast FP16, disk room), build
into ``models/engines/.staging/``, the ``onnx`` verification level as a gate, then the
set is published: the next generation of ``models/engines/<tag>/`` is assembled beside it
and swapped in with one atomic rename, under the set's lock. A model whose inputs,
options, backend version and targets are unchanged is skipped without importing TensorRT.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import engine_set as es
from pipeline.builders import builder_named
from pipeline.config import Config, ModelSpec
from pipeline.engine_file import engine_bytes, metadata_from_onnx
from pipeline.errors import PipelineError
from pipeline.fsutil import check_writable, sha256_file, sha256_json, write_bytes_atomic
from pipeline.hardware import sm_name
from pipeline.manifest import EngineLevel, EngineRecord, SetManifest, engine_io
from pipeline.stages.export import cached_record, onnx_paths
from pipeline.stages.export import onnx_file as export_onnx_file
from pipeline.stages.records import ExportRecord
from pipeline.status import Status
from pipeline.tasks import output_layout

GIB = 1 << 30


# The quantizer and the verifier load numpy, ONNX Runtime and the checks: only when a build
# needs them, so a cached `engines build` / `engines run` stays fast (module objects, so tests
# can patch their functions).
def _quantize():
    from pipeline.stages import quantize
    return quantize


def _verify():
    from pipeline.stages import verify
    return verify
BUILD_VERSION = 1  # bump when the build procedure changes


def build_options(spec: ModelSpec, backend, workspace_gib: float | None) -> dict:
    int8 = spec.precision == "int8"
    strongly = True if int8 else backend.strongly_typed  # may import TensorRT: only called on a cache miss
    fp16 = spec.precision == "fp16"
    onnx = "int8" if int8 else "fp16" if (fp16 and strongly) else "fp32"
    return {"precision": spec.precision, "imgsz": spec.imgsz, "batch": spec.batch.to_json(),
            "workspace_gib": workspace_gib, "onnx": onnx,
            "fp16_flag": bool(fp16 and not strongly), "strongly_typed": strongly, **_portable(backend)}


def int8_refusal(backend) -> str | None:
    """Why this backend cannot build a Q/DQ ONNX strongly typed (None: it can): its builder says."""
    return builder_named(backend.name).int8_refusal(backend.version())


def _portable(backend) -> dict:
    """The portable-tier options, present only when asked for (older cache keys stay valid)."""
    out = {}
    if getattr(backend, "compatibility", None):
        out["compatibility"] = backend.compatibility
    if getattr(backend, "version_compatible", False):
        out["version_compatible"] = True
    return out


def _set_tier(manifest: SetManifest) -> None:
    """The set's portable tier, as resolve and verify read it, derived from its engines: a
    flag holds only when every engine in the set was built with it (a set rebuilt without
    ``version_compatible`` must not keep claiming it)."""
    built = [e.options for e in manifest.engines.values() if e.status == Status.OK]
    manifest.extra.pop("compatibility", None)
    manifest.extra.pop("version_compatible", None)
    tiers = {o.get("compatibility") for o in built}
    if len(tiers) == 1 and isinstance(next(iter(tiers)), str):
        manifest.extra["compatibility"] = next(iter(tiers))
    if built and all(o.get("version_compatible") is True for o in built):
        manifest.extra["version_compatible"] = True


def cache_key(record: ExportRecord, spec: ModelSpec, workspace_gib: float | None, backend) -> str:
    """Everything a build depends on, computed without importing TensorRT: both ONNX
    hashes (which one is built follows from the backend version, also in the key)."""
    # the accuracy gate is not an input of the engine: a change to its data or max_drop re-judges
    # the published engine (verify.accuracy_current), it never rebuilds it
    twin = [record.int8["sha256"]] if spec.precision == "int8" and record.int8 else []
    return sha256_json({"onnx": [record.sha256["fp32"], record.sha256["fp16"], *twin],
                        "precision": spec.precision, "imgsz": spec.imgsz, "batch": spec.batch.to_json(),
                        "workspace_gib": workspace_gib, "backend": backend.name,
                        "version": backend.version(), "targets": backend.targets,
                        "gpu": getattr(backend.gpu, "name", None), "build_version": BUILD_VERSION,
                        **_portable(backend)})


def check_layout(spec: ModelSpec, backend, onnx_file: Path) -> None:
    """Refuse an output layout the builder cannot build (NMS in the graph on TensorRT for RTX)."""
    if spec.nms is True and not builder_named(backend.name).builds_nms:
        raise PipelineError(f"nms: true puts NMS inside the engine, and {backend.name} cannot build NMS "
                            "(TensorRT for RTX has no NMS layer, NVIDIA/TensorRT-RTX#32)", model=spec.name,
                            file=onnx_file, fix="set nms: false for YOLO26/YOLOv10 (the NMS-free head needs no NMS), "
                            "remove nms: for raw outputs with NMS on the host, or build with the full TensorRT "
                            "(make engines-docker)")


def check_int8(spec: ModelSpec, backend, onnx_file: Path) -> None:
    """Refuse INT8 where it cannot be built (before anything is calibrated)."""
    from pipeline.hardware import has_int8
    why = int8_refusal(backend)
    if why:
        raise PipelineError(why, model=spec.name, file=onnx_file,
                            fix="build INT8 in a builder image with TensorRT 10.12 or newer (TRT_IMAGE in "
                                "Dockerfile.build), use --backend tensorrt-rtx, or set precision: fp16 for this model")
    for cc in backend.targets:
        if not has_int8(cc):
            raise PipelineError(f"INT8 requested but compute capability {cc} has no INT8 support",
                                model=spec.name, file=onnx_file,
                                fix="set precision: fp16 (or fp32) for this model, or build for a GPU of "
                                    "compute capability 6.1 or newer")


def pre_build_checks(spec: ModelSpec, backend, workspace_gib: float | None, gpus: list,
                     onnx_file: Path, out_dir: Path, fp32_onnx: Path | None = None) -> None:
    """Refuse builds that would fail late: memory, FP16 support, disk room."""
    from pipeline.hardware import free_memory_gib, has_fast_fp16
    target_gpu = backend.gpu or (gpus[0] if gpus else None)
    if workspace_gib is not None and target_gpu is not None:
        free = free_memory_gib(target_gpu)
        if free is not None and workspace_gib > free:
            raise PipelineError(
                f"workspace {workspace_gib:g} GiB exceeds the {free:.1f} GiB free on "
                f"{target_gpu.name} (GPU {target_gpu.index})", model=spec.name, file=spec.root / "models.yaml",
                fix=f"set workspace: {max(int(free * 0.8), 1)} (or less) in models.yaml or pass "
                    "--workspace, or free GPU memory")
    if spec.precision == "int8":
        check_int8(spec, backend, onnx_file)
    if spec.precision == "fp16":
        for cc in backend.targets:
            if not has_fast_fp16(cc):
                raise PipelineError(
                    f"FP16 requested but compute capability {cc} has no fast FP16",
                    model=spec.name, file=onnx_file,
                    fix="set precision: fp32 for this model, or build for a newer GPU")
    why = check_writable(out_dir)
    if why:
        raise PipelineError(f"engine folder is not writable: {why}", model=spec.name, file=out_dir,
                            fix="fix its permissions (the container runs as your uid) or pass "
                                "--config pointing at a writable copy")
    need = disk_needed(fp32_onnx or onnx_file, spec.precision, backend)
    free_disk = shutil.disk_usage(out_dir).free
    if free_disk < need:
        raise PipelineError(f"not enough disk for the engine: about {need >> 20} MiB needed (engine + plan), "
                            f"{free_disk >> 20} MiB free on the disk that holds {out_dir}",
                            model=spec.name, file=out_dir,
                            fix=f"free space on that disk (`df -h {out_dir}`; `make clean` removes demo outputs), "
                                "or point --config at a models folder on a disk with room")


# Engine size / FP32 ONNX size, measured on the demo set (TensorRT for RTX 1.7, 640, yolov8n): FP16
# 0.84 (six targets), INT8 0.99 (one target; the Q/DQ ONNX is a quarter of the FP32 one, the engine
# is not), FP32 1.24. Extra targets add about 60 kB each. The plan is the same bytes again.
ENGINE_PER_FP32_ONNX = {"fp16": 0.9, "int8": 1.05, "fp32": 1.3}
DISK_MARGIN = 1.05
TIMING_CACHE_BYTES = 4 << 20   # the full TensorRT's timing cache grows by a few MiB at most per build


def disk_needed(fp32_onnx: Path, precision: str, backend) -> int:
    """Bytes a build writes: the .engine and the .plan (the same plan twice), 5 % margin, and
    room for the timing cache where the backend keeps one (not TensorRT for RTX)."""
    engine = fp32_onnx.stat().st_size * ENGINE_PER_FP32_ONNX.get(precision, 1.3) + 60_000 * len(backend.targets)
    cache = TIMING_CACHE_BYTES if builder_named(backend.name).timing_cache else 0
    return int(2 * engine * DISK_MARGIN) + cache


def timing_cache_path(cfg: Config, backend) -> Path:
    gpu = getattr(backend.gpu, "name", None) or "aot-" + "_".join(backend.targets)
    cuda = getattr(backend.gpu, "cuda", None) or "none"
    slug = "".join(c if c.isalnum() or c in ".-_" else "_" for c in f"{backend.name}-{backend.version()}-{gpu}-cuda{cuda}")
    # The builder container keeps it on a volume (ENGINES_TIMING_CACHE); see docker-compose.build.yml
    folder = Path(os.environ.get("ENGINES_TIMING_CACHE") or cfg.engines_dir / ".cache")
    from pipeline.builders.timing_cache import cache_folder  # one folder per uid: a shared volume serves several users
    return cache_folder(folder) / f"{slug}.timing"


def _build_one(cfg: Config, spec: ModelSpec, backend, record: ExportRecord, options: dict, staging: Path,
               gpus: list, log) -> tuple[EngineRecord, dict[str, Path]]:
    """Build and gate one engine into ``staging``; returns its manifest entry and its staged files."""
    from pipeline.builders.build_plan import BuildRequest, build_plan
    from pipeline.stages.verify import verify_onnx_level

    paths = onnx_paths(cfg, spec)
    onnx_file = export_onnx_file(cfg, spec, options["onnx"])
    pre_build_checks(spec, backend, options["workspace_gib"], gpus, onnx_file, staging, paths["fp32"])
    trt = backend.module()
    req = BuildRequest(model=spec.name, onnx=onnx_file, use_fp16_flag=options["fp16_flag"],
                       strongly_typed=options["strongly_typed"], imgsz=spec.imgsz, batch=options["batch"],
                       workspace_bytes=int(options["workspace_gib"] * GIB) if options["workspace_gib"] else None,
                       # only a builder that keeps a timing cache gets one (TensorRT for RTX ignores it)
                       timing_cache=timing_cache_path(cfg, backend) if backend.timing_cache else None,
                       targets=backend.target_enums(trt),
                       compatibility=backend.compatibility, version_compatible=backend.version_compatible)
    log(f"{spec.name}: building {onnx_file.name} with {backend.name} {backend.version()} "
        f"for {', '.join(sm_name(t) for t in backend.targets)}")
    t0 = time.perf_counter()
    plan = build_plan(trt, req)
    seconds = round(time.perf_counter() - t0, 2)

    import onnx
    props = {p.key: p.value for p in onnx.load(str(paths["fp32"]), load_external_data=False).metadata_props}
    meta = metadata_from_onnx(props)
    meta["batch"] = spec.batch.max
    meta["engine_pipeline"] = {"backend": backend.name, "trt_version": backend.version(),
                               "targets": backend.targets, "precision": spec.precision,
                               **_portable(backend),
                               "batch": spec.batch.to_json(), "demo": record.get("demo", False)}
    stem = Path(spec.stem)
    files = {"engine": staging / f"{stem}.engine", "plan": staging / f"{stem}.plan"}
    files["engine"].parent.mkdir(parents=True, exist_ok=True)
    files["engine"].write_bytes(engine_bytes(plan, meta))
    files["plan"].write_bytes(plan)

    log(f"{spec.name}: built in {seconds}s; verifying the {options['onnx']} ONNX it was built from")
    onnx_level = verify_onnx_level(spec, record, paths["fp32"], onnx_file, spec.precision, log=log)
    entry = EngineRecord(
        task=spec.task, source=spec.source, engine=f"{stem}.engine", plan=f"{stem}.plan",
        sha256={"source": record["sha256"]["source"],
                "onnx": record["int8"]["sha256"] if options["onnx"] == "int8" else record["sha256"][options["onnx"]]},
        options=options, demo=record.get("demo", False),
        engine_level=EngineLevel(note="run `engines verify` on a target GPU"),
        # the tensors and output layout, so a pulled set describes itself (a Triton config needs them)
        io=engine_io(record["io"], output_layout(record)) if record.get("io") else None,
        extra={"built_from": str(onnx_file.relative_to(cfg.root)), "gpu": _gpu_json(backend),
               "build_seconds": seconds, "engine_bytes": files["engine"].stat().st_size,
               "trusted_checkpoint": record.get("trusted", False),
               **({"int8": _quantize().provenance(record["int8"])} if options["onnx"] == "int8" else {}),
               "reproduce": backend.reproduce(spec.name)})
    entry.judge_onnx(onnx_level)   # the build gate: status and error follow the onnx level
    return entry, files


def has_attention(onnx_file: Path) -> bool:
    """Whether the graph multiplies two activations (attention), not an activation by weights."""
    import onnx
    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return any(n.op_type == "MatMul" and not (set(n.input) & consts) for n in graph.node)


def drop_unbuildable_targets(cfg: Config, specs: list[ModelSpec], backend, log: Callable[[str], None]) -> None:
    """Targets some model cannot be built for leave the set (a line says which and why); with --target
    given, or when no target would be left, the build is refused before anything is built."""
    drop: dict[str, list[str]] = {}
    for spec in specs:
        fp32 = onnx_paths(cfg, spec)["fp32"]
        if spec.precision == "fp16" or not fp32.is_file():
            continue
        for target, why in backend.unbuildable(spec.precision, has_attention(fp32)).items():
            drop.setdefault(target, []).append(f"{spec.name}: {why}")
    if not drop:
        return
    keep = [t for t in backend.targets if t not in drop]
    if getattr(backend, "explicit_targets", False) or not keep:
        first = next(iter(drop.values()))[0]
        raise PipelineError(f"cannot build for {', '.join(sm_name(t) for t in drop)}: {first}",
                            model=first.split(":")[0], details=[r for rs in drop.values() for r in rs],
                            fix="set precision: fp16 for these models, or build without "
                                f"{', '.join(sm_name(t) for t in drop)} "
                                f"(--target {','.join(sm_name(t) for t in keep) or '...'})")
    for target, reasons in drop.items():
        log(f"{sm_name(target)} left out of this set: {'; '.join(reasons)} (set precision: fp16 for "
            f"{', '.join(r.split(':')[0] for r in reasons)} to keep {sm_name(target)})")
    backend.targets = keep


def build_all(cfg: Config, records: Sequence[ExportRecord | ModelSpec], backend, gpus: list,
              workspace: float | None = None, keep_going: bool = False, force: bool = False,
              log: Callable[[str], None] = lambda m: None,
              lock_timeout: float | None = None) -> tuple[dict, list[PipelineError]]:
    """Build the exported models into the backend's set; returns (summary, errors).

    ``records``: the export's records as the export returned them (each carries its spec, precision
    resolved); a bare ModelSpec is looked up in the export cache (``engines build`` on its own)."""
    backend.configure(cfg.compatibility, cfg.version_compatible)   # refuses what this backend cannot build
    specs = [r.spec if isinstance(r, ExportRecord) else r for r in records]
    drop_unbuildable_targets(cfg, specs, backend, log)
    tag = es.make_tag(backend.name, backend.version(), backend.targets, backend.compatibility)
    from pipeline.manifest import TAG_RE
    if not TAG_RE.fullmatch(tag):   # a set that could not be read back is never built
        raise PipelineError(f"{backend.name} reports version {backend.version()!r}, which cannot name an engine set "
                            f"({tag!r}: letters, digits, '.', '_', '-')",
                            fix=f"install a released {backend.name} package (a plain version such as 10.13.3.9)")
    set_dir = cfg.engines_dir / tag
    errors: list[PipelineError] = []
    summary: dict = {"tag": tag, "set": str(set_dir), "backend": backend.name,
                     "version": backend.version(), "targets": backend.targets, "models": {}}
    why = check_writable(cfg.engines_dir)
    if why:
        raise PipelineError(f"engines folder is not writable: {why}", file=cfg.engines_dir,
                            fix="fix its permissions or pass --config pointing at a writable copy")
    missing = [p for p in cfg.passthrough if not p.source_path.is_file()]
    if missing:  # checked first: a set is complete on its own or not published at all
        from pipeline.stages.demo import missing_checkpoint
        raise missing_checkpoint(missing[0].name, missing[0].source_path, cfg.path, what="passthrough model")
    from pipeline.checkpoint import check_pin
    for p in cfg.passthrough:  # a pinned passthrough that changed is never published
        if p.sha256:
            check_pin(p.name, p.source_path, p.sha256, sha256_file(p.source_path))
    staging_root = cfg.engines_dir / ".staging"
    with es.set_lock(set_dir, timeout=lock_timeout, log=log):
        for leftover in staging_root.glob(f"{tag}.*"):  # from a killed build; we hold the lock
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            old = es.load_set(set_dir)
        except es.ManifestError as err:  # damaged: rebuilt whole below, replacing the folder
            log(f"warning: {err.what}; building {tag} anew")
            old = None
        manifest = old.manifest if old else es.new_manifest(
            tag, backend.name, backend.version(), backend.targets, _gpu_json(backend))
        files_ok = old is not None and not old.check_files()
        staging = staging_root / f"{tag}.{os.getpid()}.{int(time.time() * 1000)}"
        staged: dict = {}
        try:
            for item in records:
                spec = item.spec if isinstance(item, ExportRecord) else item
                try:
                    record = item if isinstance(item, ExportRecord) else cached_record(cfg, spec)
                    if record is None:
                        raise PipelineError("no current ONNX export for this checkpoint",
                                            model=spec.name, file=onnx_paths(cfg, spec)["fp32"],
                                            fix="run `engines export` first (or `engines run`)")
                    check_layout(spec, backend, record.files.fp32)
                    if spec.precision == "int8":   # refused before calibrating, then calibrated (or cached)
                        check_int8(spec, backend, record.files.int8)
                        if record.int8 is None:   # the export of this run calibrated it already
                            record.int8 = _quantize().ensure_twin(cfg, spec, record, log=log)
                    ws = workspace if workspace is not None else spec.workspace
                    key = cache_key(record, spec, ws, backend)
                    prev = manifest.engines.get(spec.name)
                    # files_ok covers the ok entries; a re-judged failed one keeps its files too
                    if not force and prev and prev.get("cache_key") == key and files_ok \
                            and (prev.status == Status.OK or es.entry_intact(set_dir, prev)):
                        same = prev.onnx_level.get("thresholds") == spec.thresholds(spec.precision) \
                            and (spec.accuracy is None and not prev.onnx_level.get("accuracy")
                                 or _verify().accuracy_current(spec, record, prev.onnx_level))
                        if same and prev.status != Status.OK:
                            pass  # judged failed under these thresholds: build again (below)
                        elif same:
                            summary["models"][spec.name] = "cached"
                            log(f"{spec.name}: up to date in {tag}")
                            continue
                        else:  # same engine, other verify: thresholds or accuracy: data: judge it again
                            log(f"{spec.name}: verify thresholds or accuracy data changed; re-verifying the onnx level")
                            entry = _reverify(cfg, spec, prev, record, log)
                            staged[spec.name] = (entry, {})
                            summary["models"][spec.name] = "re-verified"
                            _accuracy_summary(summary, spec, entry)
                            _gate_error(errors, spec, entry, rejudged=changed_keys(spec, prev, entry))
                            continue
                    entry, files = _build_guarded(cfg, spec, backend, record, build_options(spec, backend, ws),
                                                  staging / "engines", gpus, log)
                    entry.extra["cache_key"] = key
                    _accuracy_summary(summary, spec, entry)
                    _gate_error(errors, spec, entry)
                    staged[spec.name] = (entry, files)
                    summary["models"][spec.name] = entry.status if entry.status != Status.OK else "built"
                except PipelineError as err:
                    errors.append(err)
                    summary["models"][spec.name] = "error"
                    if not keep_going:
                        break
            for names in dropped_entries(cfg, manifest).values():   # said before anything is published
                for name in names:
                    log(f"{name}: no longer in {cfg.path.name}; removing it from {tag}")
                    summary["models"][name] = "removed"
            _publish(cfg, set_dir, old is not None, files_ok, manifest, staged, staging, backend)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return summary, errors


def changed_keys(spec: ModelSpec, prev: EngineRecord, now: EngineRecord) -> list[str]:
    """The models.yaml keys whose change made a published engine be judged again."""
    keys = []
    if prev.onnx_level.get("thresholds") != spec.thresholds(spec.precision):
        keys.append("verify: thresholds")
    old = (prev.onnx_level.get("accuracy") or {}).get("signature") or {}
    new = (now.onnx_level.get("accuracy") or {}).get("signature") or {}
    if old != new:
        if not old or not new:
            keys.append("accuracy:")
        else:
            keys += [{"max_drop": f"accuracy: max_drop: {spec.precision}", "data": "accuracy: data",
                      "split": "accuracy: split"}.get(k, f"accuracy: {k}")
                     for k in ("max_drop", "data", "split", "version") if old.get(k) != new.get(k)]
    return keys or ["verify: thresholds"]


def _accuracy_summary(summary: dict, spec: ModelSpec, entry: EngineRecord) -> None:
    """The accuracy gate's verdict for --json: reference, candidate, drop, limit and the key."""
    acc = entry.onnx_level.get("accuracy")
    if not acc:
        return
    metric = acc["metric"]
    summary.setdefault("accuracy", {})[spec.name] = {
        "metric": metric, "reference": acc["reference"].get(metric), "candidate": acc["candidate"].get(metric),
        "drop": acc["drop_map50_95"], "limit": acc["max_drop"], "limit_key": f"accuracy.max_drop.{spec.precision}",
        "passed": not any(r.startswith("accuracy:") for r in entry.onnx_level.get("reasons", [])),
        "data": acc.get("data")}


def _gate_error(errors: list, spec: ModelSpec, entry: EngineRecord, rejudged: list[str] | None = None) -> None:
    if entry.status != Status.OK:
        errors.append(PipelineError(
            f"the published engine fails the onnx-level verification under the changed {' and '.join(rejudged)} "
            "in models.yaml; it is marked failed, so resolve refuses it" if rejudged else
            f"{spec.precision.upper()} engine failed verification and was not published", model=spec.name,
            file=entry.get("built_from"), details=(entry.error or "").split("; "),
            fix=_verify().gate_fix(spec.precision, entry.error or "")))


def _reverify(cfg: Config, spec: ModelSpec, prev: EngineRecord, record: dict, log=lambda m: None) -> EngineRecord:
    """The published engine judged again at the onnx level (thresholds or accuracy: changed)."""
    import copy

    from pipeline.stages.verify import verify_onnx_level
    paths = onnx_paths(cfg, spec)
    entry = copy.deepcopy(prev)
    built_from = export_onnx_file(cfg, spec, prev.options.get("onnx", "fp32"))
    try:
        level = verify_onnx_level(spec, record, paths["fp32"], built_from, spec.precision, log=log)
    except PipelineError:
        raise
    except Exception as exc:  # ONNX Runtime and onnx raise many types: a paragraph, the set unchanged
        raise PipelineError(f"re-verifying the onnx level failed: {type(exc).__name__}: {exc}"[:500],
                            model=spec.name, file=built_from,
                            fix="re-export with `engines export --force --model " + spec.name + "`, then "
                                "`engines run` again") from exc
    entry.judge_onnx(level)
    return entry


def build_cuda(backend) -> str | None:
    """The CUDA the engines were built against: NGC images set CUDA_VERSION; the PyPI
    TensorRT wheels name their CUDA major in the distribution (tensorrt-rtx-cu13-...)."""
    import re

    from pipeline.runtime import installed_version
    if os.environ.get("CUDA_VERSION"):
        return os.environ["CUDA_VERSION"]
    found = installed_version(backend.name)
    m = re.search(r"-cu(\d+)", found[1]) if found else None
    return f"{m.group(1)}.0" if m else None


def _gpu_json(backend) -> dict | None:
    gpu = backend.gpu
    if gpu is None:
        return None
    return {k: getattr(gpu, k, None) for k in ("name", "compute_cap", "driver", "cuda", "uuid")}


def _build_guarded(cfg, spec, backend, record, options, staging, gpus, log) -> dict:
    """_build_one with anything unexpected turned into an error naming model and file."""
    try:
        return _build_one(cfg, spec, backend, record, options, staging, gpus, log)
    except PipelineError:
        raise
    except Exception as exc:  # TensorRT, ONNX Runtime and onnx raise many types
        onnx_file = export_onnx_file(cfg, spec, options["onnx"])
        raise PipelineError(f"build failed: {type(exc).__name__}: {exc}", model=spec.name, file=onnx_file,
                            fix="rerun with --force; if it persists, re-export with `engines export --force` "
                                "and report the message") from exc


def dropped_entries(cfg: Config, manifest: SetManifest) -> dict[str, list[str]]:
    """Manifest entries models.yaml no longer lists: {"models": [...], "passthrough": [...]}."""
    models = {s.name for s in cfg.models}
    passthrough = {p.name for p in cfg.passthrough}
    return {"models": sorted(n for n in manifest.engines if n not in models),
            "passthrough": sorted(n for n in manifest.passthrough if n not in passthrough)}


def _publish(cfg: Config, set_dir: Path, exists: bool, files_ok: bool, manifest: SetManifest, staged: dict,
             staging: Path, backend) -> None:
    """Assemble the next generation of the set beside it (hard links of the current
    files, the engines that passed, the passthrough files, manifest and report), then
    swap it in with one rename. A failed engine keeps the previous good entry and files,
    recording the attempt. Nothing is published when no engine passed."""
    from pipeline.manifest import PassthroughRecord
    from pipeline.stages.demo import is_demo_passthrough
    installs: dict[str, dict[str, Path]] = {}
    for name, (entry, files) in staged.items():
        prev = manifest.engines.get(name)
        kept = prev is not None and (prev.status == Status.OK or es.entry_intact(set_dir, prev))
        if entry.status != Status.OK and kept and files:
            # a failed rebuild: the previous engine stays with its files and verdict (a good one, or
            # one a re-judgement failed, which `engines verify` may restore), the attempt is recorded
            prev.extra["last_attempt"] = {"status": entry.status, "error": entry.error,
                                          "verification": {"onnx": entry.onnx_level}, "cache_key": entry.get("cache_key")}
            continue
        manifest.engines[name] = entry
        if entry.status == Status.OK and files:      # a failed engine's files are never published
            installs[name] = files
    # the set is what models.yaml says: a model or passthrough it no longer lists leaves the set
    # (renamed ones too: a new name is a new entry), its files with it (issue 26)
    removed = dropped_entries(cfg, manifest)
    for name in removed["models"]:
        del manifest.engines[name]
    gone_passthrough = [manifest.passthrough.pop(name).file for name in removed["passthrough"]]
    if not exists and not any(e.status == Status.OK for e in manifest.engines.values()):
        return  # nothing passed: no set is created (the errors carry the figures)
    new_passthrough = []
    for p in cfg.passthrough:
        digest = sha256_file(p.source_path)
        known = manifest.passthrough.get(p.name)
        if known is None or known.sha256 != digest or not files_ok:
            manifest.passthrough[p.name] = PassthroughRecord(p.source, digest, is_demo_passthrough(p.source_path))
            new_passthrough.append(p)
    orphans = es.unlisted_files(set_dir, manifest) if exists else []
    orphans += [f for f in gone_passthrough if f not in es.referenced_files(manifest)]
    if not staged and not new_passthrough and not removed["models"] and not removed["passthrough"] and not orphans:
        return
    gen = staging / "set"
    if exists:
        es.clone_tree(set_dir, gen)
        for rel in orphans:   # engines of removed models, or of a source: path since corrected
            (gen / rel).unlink(missing_ok=True)
    # Files already in `gen` are hard links into the live set: replace directory entries
    # (os.replace, install_file), never write into them, or the live set changes too.
    for name, files in installs.items():
        entry = manifest.engines[name]
        for kind, staged_file in files.items():
            dest = gen / getattr(entry, kind)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged_file, dest)
            entry.sha256[kind] = sha256_file(dest)
    for p in new_passthrough:
        es.install_file(p.source_path, gen, p.source)
    if backend.gpu is not None:
        manifest.gpu = _gpu_json(backend)  # the GPU the newest engines were built on
    cuda = build_cuda(backend)
    if cuda:
        manifest.extra["cuda"] = cuda  # resolve checks the host driver against it
    _set_tier(manifest)
    es.write_manifest(gen, manifest)
    write_bytes_atomic(gen / es.REPORT, _verify().render_report(manifest).encode())
    es.swap_in(gen, set_dir)
