"""Verification: every engine proven against the FP32 ONNX reference on ONNX Runtime.

Two levels per engine: ``onnx`` (the ONNX it was built from, e.g. the FP16 twin,
against the FP32 reference: always possible, the build gate everywhere) and ``engine``
(the engine itself on a GPU; ``pending`` where it cannot run on this machine).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline import tasks
from pipeline.backends.base import Runner
from pipeline.backends.onnxruntime import OnnxRuntimeRunner
from pipeline.checks import accuracy
from pipeline.checks.images import UnreadableImage, batches, reference_images
from pipeline.checks.suite import run_checks
from pipeline.config import ModelSpec
from pipeline.engine_set import now_iso
from pipeline.errors import PipelineError
from pipeline.hardware import sm_name
from pipeline.runtime import cannot_run_here  # noqa: F401  (verify's name for it, kept)
from pipeline.stages.records import ExportRecord, OnnxFiles
from pipeline.status import Status


def gate_fix(precision: str, reasons: str) -> str:
    """The next step for an engine its gate refused, by what refused it."""
    if precision == "fp32" and "accuracy:" in reasons:
        return ("an FP32 engine should score as its FP32 ONNX: check the engine on this GPU (`engines verify`) and "
                "the labelled data, or raise accuracy: max_drop: {fp32: ...} if the difference is acceptable")
    if precision == "int8":
        return ("give calibration: more (a few hundred) and better images, frames like the cameras' "
                "(calibration: {images: DIR}), try method: max if you set entropy, or build this model with "
                "precision: fp16; the figures are in manifest.json (docs/precision.md)")
    if "accuracy:" in reasons:
        return ("build this model with precision: fp32, or raise accuracy: max_drop in models.yaml if the drop is "
                "acceptable; the figures are in manifest.json")
    return ("inspect the figures in manifest.json; try precision: fp32 or loosen verify: thresholds in "
            "models.yaml if the figures are acceptable (the next `engines run` judges it again)")


def compare_runners(spec: ModelSpec, record: dict, reference: Runner, candidate: Runner,
                    precision: str, batch: int) -> dict:
    """Run both runners on the reference images and every check of checks.suite over their outputs."""
    thr = spec.thresholds(precision)
    try:
        feeds = batches(reference_images(spec.verify_images), spec.imgsz, batch)
    except UnreadableImage as err:   # the same paragraph, naming the model
        raise UnreadableImage(err.what, model=spec.name, file=err.file, fix=err.fix) from None
    refs = [reference.infer({"images": x}) for x in feeds]
    outs = [candidate.infer({"images": x}) for x in feeds]
    # FP16 is judged on the task's figures plus cosine/mean error; see config.DEFAULT_VERIFY.
    figures, reasons = run_checks(record, refs, outs, thr)
    return {"status": Status.PASSED if not reasons else Status.FAILED, "precision": precision,
            **figures, "reasons": reasons, "thresholds": thr, "images": len(feeds) * batch, "at": now_iso()}


def verify_onnx_level(spec: ModelSpec, record: dict, reference_onnx: Path, built_from: Path,
                      precision: str, log=lambda m: None) -> dict:
    batch = spec.batch.opt
    with OnnxRuntimeRunner(reference_onnx) as ref, OnnxRuntimeRunner(built_from) as cand:
        level = compare_runners(spec, record, ref, cand, precision, batch)
    if spec.accuracy is not None:
        add_accuracy(level, spec, record, reference_onnx, built_from, precision, log=log)
    return level


def model_names(record: dict) -> tuple[dict, list | None]:
    """(class names, kpt_shape) from the export record's metadata."""
    return tasks.model_names(record.get("metadata", {}))


def add_accuracy(level: dict, spec: ModelSpec, record: dict, reference_onnx: Path, candidate: Path,
                 precision: str, device: str = "cpu", log=lambda m: None) -> None:
    """mAP of the reference and the candidate on the user's labelled data; a drop above
    max_drop fails the level. Figures are cached beside the reference ONNX. Says on ``log``
    that it runs (seconds to minutes) and its verdict."""
    acc = spec.accuracy
    names, kpt = model_names(record)
    cache = OnnxFiles.of_fp32(reference_onnx).accuracy
    log(f"{spec.name}: accuracy gate: {tasks.TASKS[spec.task].metric_label} of the FP32 reference and the {precision} "
        f"candidate on {acc.data} "
        f"(split {acc.split}; {'ONNX Runtime on the CPU' if device == 'cpu' else f'GPU {device}'}, cached per file)")
    with accuracy.scratch(reference_onnx) as tmp:
        data_yaml, digest = accuracy.prepare(acc, spec.name, spec.task, names, kpt, Path(tmp))
        measure = dict(task=spec.task, data_yaml=data_yaml, digest=digest, imgsz=spec.imgsz, work=Path(tmp),
                       model=spec.name, data_file=acc.data)
        ref = accuracy.cached_measure(cache, reference_onnx, **measure)
        if not ref[accuracy.gated_metric(ref)]:
            raise PipelineError(f"the FP32 reference scores 0 on the labelled data ({accuracy.metric_label(ref)} 0), "
                                "so no drop can be measured", model=spec.name, file=acc.data,
                                fix="check that the labels belong to these images and to this model's classes "
                                    "(the same data should give a real mAP with `yolo val`)")
        cand = ref if candidate == reference_onnx else accuracy.cached_measure(cache, candidate, device=device,
                                                                              **measure)
    max_drop = acc.max_drop.get(precision, 0.0)
    drop, reasons = accuracy.judge(ref, cand, precision, max_drop)
    level["accuracy"] = {"data": str(acc.data), "split": acc.split, "digest": digest, "reference": ref,
                         "candidate": cand, "metric": accuracy.gated_metric(ref), "drop_map50_95": drop,
                         "max_drop": max_drop, "signature": accuracy.signature(acc, precision, digest)}
    log(accuracy_line(spec.name, level["accuracy"], precision, passed=not reasons))
    if reasons:
        level["reasons"] = level["reasons"] + reasons
        level["status"] = Status.FAILED


def accuracy_line(name: str, acc: dict, precision: str, passed: bool) -> str:
    """The gate's verdict in one line: reference, candidate, drop and the limit with its key."""
    metric = acc["metric"]
    what = accuracy.metric_label(acc["reference"])
    return (f"{name}: accuracy gate {'passed' if passed else 'FAILED'}: {what} {acc['reference'][metric]:.2f} (FP32 "
            f"reference) -> {acc['candidate'].get(metric, 0.0):.2f} ({precision}), drop {acc['drop_map50_95']:.2f} "
            f"points, limit {acc['max_drop']:g} (accuracy: max_drop: {precision})")


def accuracy_current(spec: ModelSpec, record: dict, level: dict) -> bool:
    """Whether an onnx-level result still answers models.yaml's accuracy: (the data, its split
    and this precision's max_drop unchanged; no gate then and none now also counts)."""
    had = (level or {}).get("accuracy")
    if spec.accuracy is None:
        return had is None
    if had is None:
        return False
    names, kpt = model_names(record)
    digest = accuracy.data_digest(spec.accuracy, spec.name, spec.task, names, kpt)
    return had.get("signature") == accuracy.signature(spec.accuracy, spec.precision, digest)


def engine_runtime(manifest, gpus: list):
    """The TensorRT module that runs this set's engines here, or (None, why)."""
    from pipeline.builders import builder_named
    from pipeline.builders.base import import_real
    why = cannot_run_here(manifest, gpus)
    if why:
        return None, why
    mod, why = import_real(builder_named(manifest.backend).module_name)
    return (mod, None) if mod is not None else (None, why)


def _built_from(cfg, spec, entry, record: ExportRecord | None = None) -> tuple[Path, dict]:
    """The ONNX this engine was built from, checked by hash, and its export record. ``record``:
    the one this run's export handed on (its hashes are this run's: nothing is hashed again)."""
    from pipeline.fsutil import read_json, sha256_file
    files = OnnxFiles.of(cfg, spec)
    kind = entry.options.get("onnx") or "fp32"
    built_from = files.onnx(kind)
    if record is not None:
        if record.onnx_sha256(kind) != entry.sha256.get("onnx"):
            raise PipelineError("the ONNX export changed since this engine was built", model=spec.name,
                                file=built_from, fix="rebuild the engine with `engines build` (or `engines run`)")
        return built_from, record
    record = read_json(files.record)
    if record is None or not built_from.is_file() or not files.fp32.is_file():
        raise PipelineError("the ONNX files this engine was built from are not here", model=spec.name,
                            file=built_from, fix="verify where the set was built (models/onnx/ is needed as "
                                                 "the reference), or rebuild here with `engines run`")
    if sha256_file(built_from) != entry.sha256.get("onnx"):
        raise PipelineError("the ONNX export changed since this engine was built", model=spec.name,
                            file=built_from, fix="rebuild the engine with `engines build` (or `engines run`)")
    return built_from, record


def verify_set(cfg, set_dir: Path, names=None, log=lambda m: None, bench: dict | None = None,
               lock_timeout: float | None = None, *, gpus: list | None = None,
               records: dict[str, ExportRecord] | None = None, gated=()) -> tuple:
    """Re-check the onnx level and run the engine level where this machine can; records the
    result (with the GPU it passed on) in the manifest and writes report.md.

    ``gpus``: this host's GPUs as the caller found them (``--gpu-facts``), else detected here.
    ``records``: the export records of this run by model; ``gated``: models whose onnx level
    this run's build judged moments ago (not judged again)."""
    from pipeline import engine_set as es
    from pipeline.fsutil import write_bytes_atomic
    from pipeline.hardware import detect_gpus
    records = records or {}
    errors = []
    with es.set_lock(set_dir, timeout=lock_timeout, log=log):
        s = es.EngineSet(set_dir, es.read_manifest(set_dir))
        problems = s.check_files()
        if problems:
            raise PipelineError("engine set files do not match the manifest", file=set_dir, details=problems,
                                fix=f"never edit files inside a set; rebuild this one: `{es.rebuild_command(s.tag)}`")
        gpus = detect_gpus() if gpus is None else gpus
        trt, why = engine_runtime(s.manifest, gpus)
        specs = {m.name: m for m in cfg.models}
        for name, entry in s.models.items():
            if names and name not in names or name not in specs:
                continue
            # an engine marked failed by an onnx-level re-judgement keeps its files: judge it again
            rejudged = (entry.status == Status.FAILED and entry.onnx_status == Status.FAILED
                        and es.entry_intact(set_dir, entry))
            if entry.status != Status.OK and not rejudged:
                continue
            try:
                _verify_entry(specs[name], entry, cfg, set_dir, trt, why, gpus, bench, log,
                              record=records.get(name), gated=name in gated)
            except PipelineError as err:
                errors.append(err)
                continue
            failed = [("onnx", entry.onnx_level)] if entry.onnx_status == Status.FAILED else []
            if entry.engine_level.status == Status.FAILED:
                failed += [("engine", r.extra) for r in entry.engine_level.runs if r.status == Status.FAILED]
            for lvl, figures in failed:
                reasons = figures.get("reasons", [])
                errors.append(PipelineError(f"{lvl}-level verification failed", model=name,
                                            file=set_dir / entry.engine, details=reasons,
                                            fix=gate_fix(spec_precision(specs[name], entry), "; ".join(reasons))))
        es.write_manifest(set_dir, s.manifest)
        write_bytes_atomic(set_dir / es.REPORT, render_report(s.manifest).encode())
    return s.manifest, errors


def _verify_entry(spec, entry, cfg, set_dir: Path, trt, why, gpus, bench, log, record: ExportRecord | None = None,
                  gated: bool = False) -> None:
    from pipeline.manifest import VerificationRun
    name = spec.name
    built_from, record = _built_from(cfg, spec, entry, record)
    fp32 = OnnxFiles.of(cfg, spec).fp32
    # the entry's status follows, so a failure is not forgotten by the next `engines run`
    # judged at the precision the engine was built with (a --precision override at build time
    # is in its options), not models.yaml's
    precision = spec_precision(spec, entry)
    if precision != spec.precision:
        spec = dataclasses.replace(spec, precision=precision)
    # gated: this run's build judged the onnx level under these thresholds moments ago
    dropped = [] if gated else entry.judge_onnx(verify_onnx_level(spec, record, fp32, built_from, precision, log=log))
    level = entry.engine_level
    if dropped:
        log(f"{name}: verify thresholds changed; the engine-level runs on {', '.join(dropped)} no longer count")
    if trt is None:
        level.note = (f"{level.note}; " if dropped else "") + \
            f"engine level pending: {why}; run `engines verify` on a target GPU"
        log(f"{name}: onnx level {entry.onnx_status}; engine level pending ({why})")
    else:
        from pipeline.backends.tensorrt_runner import TensorRTRunner
        with OnnxRuntimeRunner(fp32) as ref, TensorRTRunner(set_dir / entry.engine, trt, name) as eng:
            io_problems = eng.check_io(record["io"])
            run = compare_runners(spec, record, ref, eng, spec.precision, spec.batch.opt)
        if io_problems:
            run["status"], run["reasons"] = Status.FAILED, run["reasons"] + io_problems
        gpu = gpus[0]
        if spec.accuracy is not None:   # the engine itself on this GPU (never run here: no full TensorRT)
            add_accuracy(run, spec, record, fp32, set_dir / entry.engine, spec.precision, device=str(gpu.index),
                         log=log)
        status, at = run.pop("status"), run.pop("at", None)
        level.record(VerificationRun(status, gpu.name, gpu.compute_cap, gpu.driver, at, extra=run))
        log(f"{name}: engine level {status} on {gpu.name}")
    if bench is not None:
        entry.extra["benchmark"] = _benchmark(spec, record, fp32, set_dir / entry.engine, trt, bench, log)


def _benchmark(spec, record, onnx_fp32: Path, engine: Path, trt, bench: dict, log) -> dict:
    from pipeline.stages.bench import benchmark_model, speedup_summary
    log(f"{spec.name}: benchmarking ({bench['iterations']} iterations, batch {bench['batches']})")
    from contextlib import nullcontext
    if trt is not None:
        from pipeline.backends.tensorrt_runner import TensorRTRunner
    with TensorRTRunner(engine, trt, spec.name) if trt is not None else nullcontext() as runner:
        rows = benchmark_model(spec, record, spec.source_path, onnx_fp32, engine_runner=runner,
                               batches_=tuple(bench["batches"]), iterations=bench["iterations"],
                               warmup=bench["warmup"])
    out = {"rows": rows, "summary": speedup_summary(rows).get(spec.name, {}), "engine_ran": trt is not None,
           "at": now_iso()}
    if trt is not None and spec.precision == "int8" and out["summary"].get("engine_fps"):
        fp16 = _fp16_engine_fps(spec, record, onnx_fp32, trt, out["summary"]["batch"], bench, log)
        out["int8_vs_fp16"] = int8_advice(out["summary"]["engine_fps"], fp16)
        log(f"{spec.name}: {out['int8_vs_fp16']['note']}")
    return out


# INT8 is often not faster than FP16 for nano-sized YOLOs (NVIDIA/TensorRT#585, #3762): it is
# recommended only where it measured at least this much faster on the GPU it was verified on.
INT8_MIN_SPEEDUP = 1.10


def int8_advice(int8_fps: float, fp16_fps: float | None) -> dict:
    """The verdict on INT8 against FP16 on this GPU, as the report and `verify` say it."""
    if not fp16_fps:
        return {"int8_fps": int8_fps, "fp16_fps": None, "ratio": None, "recommend": "int8",
                "note": "INT8 speed not compared with FP16 (the FP16 engine could not be timed here)"}
    ratio = int8_fps / fp16_fps
    if ratio >= INT8_MIN_SPEEDUP:
        note = f"INT8 is {ratio:.2f}x the speed of FP16 here ({int8_fps:.0f} vs {fp16_fps:.0f} img/s)"
        rec = "int8"
    else:
        note = (f"INT8 is not at least {INT8_MIN_SPEEDUP - 1:.0%} faster than FP16 on this GPU ({int8_fps:.0f} vs "
                f"{fp16_fps:.0f} img/s, {ratio:.2f}x): use precision: fp16 for this model (same speed class, "
                "less accuracy risk)")
        rec = "fp16"
    return {"int8_fps": int8_fps, "fp16_fps": fp16_fps, "ratio": round(ratio, 3), "recommend": rec, "note": note}


def _fp16_engine_fps(spec, record, onnx_fp32: Path, trt, batch: int, bench: dict, log) -> float | None:
    """Build the model's FP16 twin with the same TensorRT on this GPU and time it, engine view,
    the way the INT8 engine was timed. Written for the full TensorRT on a GPU; never run on
    the machines of this project (none runs a TensorRT engine)."""
    import tempfile

    from pipeline.backends.tensorrt_runner import TensorRTRunner
    from pipeline.builders.build_plan import BuildRequest, build_plan
    from pipeline.checks.timing import measure
    fp16_onnx = OnnxFiles.of_fp32(onnx_fp32).fp16
    strongly = not hasattr(trt.BuilderFlag, "FP16")
    req = BuildRequest(model=spec.name, onnx=fp16_onnx if strongly else onnx_fp32, use_fp16_flag=not strongly,
                       strongly_typed=strongly, imgsz=spec.imgsz, batch=spec.batch.to_json(), workspace_bytes=None,
                       timing_cache=None)
    try:
        plan = build_plan(trt, req)
    except Exception as exc:   # noqa: BLE001  (a comparison, not a gate: say why and go on)
        log(f"{spec.name}: could not build the FP16 engine to compare INT8 with ({exc})")
        return None
    with tempfile.TemporaryDirectory(prefix=".fp16-bench-") as tmp:
        plan_file = Path(tmp) / "fp16.plan"
        plan_file.write_bytes(plan)
        with TensorRTRunner(plan_file, trt, spec.name) as runner:
            x = batches(reference_images(spec.verify_images), spec.imgsz, batch)[0]
            fig = measure(runner.prepare(x), batch=batch, warmup=bench["warmup"], iterations=bench["iterations"],
                          timer=runner.timer(), gpu_events=True)
    return fig["images_per_s"]


def spec_precision(spec, entry) -> str:
    return str((entry.options or {}).get("precision") or spec.precision)


def render_report(manifest) -> str:
    """report.md: verdict and figures per model (benchmarks appear where measured)."""
    lines = [f"# Engine set {manifest.tag}", "",
             f"backend {manifest.backend} {manifest.trt_version}, targets "
             f"{', '.join(sm_name(t) for t in manifest.targets)}"
             + ("  \n**DEMO WEIGHTS: not for production**" if manifest.demo else ""), "",
             "| model | precision | onnx level | match rate | mean IoU | mean score delta | engine MiB | build s "
             "| engine level |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, e in sorted(manifest.engines.items()):
        o = e.onnx_level
        d = o.get("detections", {})
        status, why = e.engine_level.verdict(None)
        size = e.get("engine_bytes")
        size_mib = f"{size / 2**20:.1f}" if size else "-"
        lines.append(f"| {name} | {e.options.get('precision')} | {o.get('status')} | {d.get('match_rate', 0):.3f} | "
                     f"{d.get('mean_iou', 0):.3f} | {d.get('mean_score_delta', 0):.4f} | {size_mib} | "
                     f"{e.get('build_seconds', '-')} | {status}{'' if status == 'pending' else ' (' + why + ')'} |")
    accuracy_rows = [(n, e) for n, e in sorted(manifest.engines.items()) if e.onnx_level.get("accuracy")]
    if accuracy_rows:
        lines += ["", "## Accuracy (the task's metric on the labelled data in models.yaml's accuracy:)", "",
                  "| model | precision | metric | reference | candidate | drop (points) | max drop | also |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for n, e in accuracy_rows:
            a = e.onnx_level["accuracy"]
            r, c = a["reference"], a["candidate"]
            key = accuracy.gated_metric(r)
            lines.append(f"| {n} | {e.options.get('precision')} | {accuracy.metric_label(r)} | {r[key]:.2f} | "
                         f"{c.get(key, 0.0):.2f} | {a['drop_map50_95']:.2f} | {a['max_drop']:g} | "
                         f"{accuracy.detail(c)} |")
    int8 = [n for n, e in sorted(manifest.engines.items()) if e.options.get("precision") == "int8"]
    if int8:
        lines += ["", "INT8 (" + ", ".join(int8) + "): Q/DQ ONNX calibrated with "
                  + "; ".join(f"{n}: {e.get('int8', {}).get('calibration_images', '?')} images, "
                              f"{e.get('int8', {}).get('method', '?')}" for n, e in sorted(manifest.engines.items())
                              if n in int8)
                  + ". INT8 is recommended only where `engines verify --benchmark` measured it at least 10 % "
                    "faster than FP16 on the GPU."]
    demo_pt = sorted(n for n, p in manifest.passthrough.items() if p.demo)
    if demo_pt:
        lines += ["", f"Passthrough {', '.join(demo_pt)}: **demo stand-in**, not the real model."]
    benched = {n: e.get("benchmark") for n, e in sorted(manifest.engines.items()) if e.get("benchmark")}
    if benched:
        from pipeline.checks.timing import table
        lines += ["", "## Speed", "", "| model | batch | PyTorch img/s (best mode) | engine img/s | speed-up |",
                  "| --- | --- | --- | --- | --- |"]
        for n, b in benched.items():
            s = b["summary"]
            eng = f"{s['engine_fps']:.0f}" if s.get("engine_fps") else "not run here"
            sp = f"{s['speedup']:.2f}x" if s.get("speedup") else "-"
            lines.append(f"| {n} | {s.get('batch')} | {s.get('torch_fps', 0):.0f} | {eng} | {sp} |")
        for n, b in benched.items():
            if b.get("int8_vs_fp16"):
                lines.append(f"\n{n}: {b['int8_vs_fp16']['note']}")
        lines += ["", table([r for b in benched.values() for r in b["rows"]])]
    return "\n".join(lines) + "\n"
