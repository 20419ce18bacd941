"""The stage commands, registered on `pipeline.cli.cli`."""
from __future__ import annotations

import shutil
from pathlib import Path

import click

from .cli import Ctx, cli, fail
from .engine_set import list_sets
from .errors import PipelineError

MODEL_OPT = click.option("--model", "-m", "models", multiple=True, metavar="NAME",
                         help="Only this model (repeatable). Default: every model in models.yaml.")
KEEP_GOING_OPT = click.option("--keep-going", is_flag=True,
                              help="Carry on with the other models after one fails (exit is still 1).")
FORCE_OPT = click.option("--force", is_flag=True, help="Redo the work even when the cache says it is current.")
TRUST_OPT = click.option("--trust-checkpoint", "trust", is_flag=True,
                         help="Load checkpoints that need unsafe (full pickle) loading, which can run code in "
                              "the file; only for files whose origin you trust. Recorded in the manifest.")


def _load(ctx: Ctx):
    try:
        return ctx.config()
    except PipelineError as err:
        fail(ctx, err, code=2)


@cli.command("demo-models")
@click.pass_obj
def demo_models_cmd(ctx: Ctx) -> None:
    """Write seeded demo checkpoints where models.yaml's sources are missing.

    Built from Ultralytics' bundled architectures (yolov8n, a 2-class hairnet yolov8n,
    yolov8n-pose) with a fixed seed; never overwrites an existing file. Everything built
    from them is marked as demo weights, and `engines resolve` refuses such sets unless
    --allow-demo is given.
    """
    from .demo import demo_models
    cfg = _load(ctx)
    done = demo_models(cfg, log=ctx.progress)
    ctx.emit({"ok": True, "models": done})
    for d in done:
        ctx.echo(f"{d['model']}: {d['action']}")


def run_export(ctx: Ctx, cfg, names, keep_going: bool, force: bool, trust: bool = False):
    from .stages.export import export_all
    try:
        specs = cfg.select(names)
    except PipelineError as err:
        fail(ctx, err, code=2)
    records, errors = export_all(cfg, specs, keep_going=keep_going, force=force, log=ctx.progress, trust=trust)
    return records, errors


@cli.command("export")
@MODEL_OPT
@KEEP_GOING_OPT
@FORCE_OPT
@TRUST_OPT
@click.pass_obj
def export_cmd(ctx: Ctx, models, keep_going: bool, force: bool, trust: bool) -> None:
    """Export checkpoints to ONNX (opset from models.yaml), simplified and checked.

    Writes models/onnx/<source path>.onnx, an FP16 twin (.fp16.onnx) and a record
    (.export.json) with I/O, simplification and parity against PyTorch on real images.
    Skipped when the checkpoint, options and tool versions are unchanged.
    """
    from .stages.export import check_passthrough
    cfg = _load(ctx)
    records, errors = run_export(ctx, cfg, models, keep_going, force, trust)
    passthrough, missing = check_passthrough(cfg) if not models else ([], [])
    errors += missing
    for p in passthrough:
        ctx.progress(f"{p['model']}: passthrough {p['file']} sha256 {p['sha256'][:12]}")
    ctx.emit({"ok": not errors, "exports": records, "passthrough": passthrough,
              "errors": [e.to_json() for e in errors]})
    if errors:
        fail(ctx, errors)


@cli.command("clean")
@click.option("--all", "everything", is_flag=True,
              help="Remove every generated ONNX file and engine set, not only those built from demo weights.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def clean_cmd(ctx: Ctx, everything: bool, yes: bool) -> None:
    """Remove what was built from demo weights (ONNX exports and engine sets).

    Checkpoints are never touched, nor (without --all) a set or export built from real
    weights, which a running pyt-api-prod may have mounted.
    """
    from .fsutil import read_json
    cfg = _load(ctx)
    sets = list_sets(cfg.engines_dir)
    targets: list[Path] = [s.path for s in sets if everything or s.demo]
    from .stages.export import stale_temp_dirs
    targets += stale_temp_dirs(cfg.onnx_dir)  # left by killed exports: each holds a checkpoint copy
    if cfg.onnx_dir.is_dir():
        for rec_path in cfg.onnx_dir.rglob("*.export.json"):
            rec = read_json(rec_path) or {}
            if everything or rec.get("demo"):
                stem = str(rec_path)[: -len(".export.json")]
                targets += [p for p in (Path(stem + ".onnx"), Path(stem + ".fp16.onnx"), rec_path) if p.exists()]
    kept = [s.tag for s in sets if s.path not in targets]
    if not targets:
        ctx.echo("nothing to clean" + (f" (kept real sets: {', '.join(kept)}; --all removes them)" if kept else ""))
        ctx.emit({"ok": True, "removed": [], "kept": kept})
        return
    if not yes and not ctx.json:
        click.confirm("Remove:\n  " + "\n  ".join(map(str, targets)) + "\n?", abort=True)
    for p in targets:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
        ctx.echo(f"removed {p}")
    current = cfg.engines_dir / "current"
    if current.is_symlink() and not current.exists():
        current.unlink()
    if kept:
        ctx.echo(f"kept sets built from real weights: {', '.join(kept)} (--all removes them)")
    ctx.emit({"ok": True, "removed": [str(p) for p in targets], "kept": kept})


BACKEND_OPT = click.option(
    "--backend", type=click.Choice(["auto", "tensorrt", "tensorrt-rtx"]), default="auto", show_default=True,
    help="auto: the full TensorRT when it imports and a GPU is present, else TensorRT for RTX.")
TARGET_OPT = click.option(
    "--target", "targets", default=None, metavar="SM,...",
    help="TensorRT for RTX only: compute capabilities to build for, e.g. sm86,sm89,sm120 "
         "(default: every one it supports). The full TensorRT builds for the GPU it runs on.")
WORKSPACE_OPT = click.option(
    "--workspace", type=float, default=None, metavar="GIB",
    help="Builder workspace limit in GiB, overriding models.yaml; checked against the GPU's free "
         "memory. Default: let TensorRT decide.")
PRECISION_OPT = click.option(
    "--precision", type=click.Choice(["fp16", "fp32"]), default=None,
    help="Build every selected model at this precision, overriding models.yaml.")
GPU_FACTS_OPT = click.option(
    "--gpu-facts", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Saved `nvidia-smi --query-gpu=...` CSV or NVML JSON used instead of asking the driver "
         "(for checks on a machine without the GPU).")


def build_options(fn):
    """The options `build` and `run` share (applied in --help order)."""
    for opt in reversed((MODEL_OPT, BACKEND_OPT, TARGET_OPT, WORKSPACE_OPT, PRECISION_OPT, GPU_FACTS_OPT,
                         KEEP_GOING_OPT, FORCE_OPT)):
        fn = opt(fn)
    return fn


def _backend(ctx: Ctx, name: str, targets: str | None, gpu_facts: Path | None):
    from .backends.trt_backends import choose_backend, parse_target
    from .hardware import detect_gpus
    try:
        tlist = [parse_target(t) for t in targets.split(",")] if targets else None
    except ValueError as exc:
        fail(ctx, PipelineError(f"unknown target {exc}", fix="write targets like sm86,sm89,sm120"), code=2)
    gpus = detect_gpus(gpu_facts)
    try:
        return choose_backend(name, tlist, gpus, log=ctx.progress), gpus
    except PipelineError as err:
        fail(ctx, err, code=2)


def run_build(ctx: Ctx, cfg, names, backend, gpus, workspace, keep_going, force, precision=None):
    import dataclasses

    from .stages.build import build_all
    try:
        specs = cfg.select(names)
    except PipelineError as err:
        fail(ctx, err, code=2)
    if precision:
        specs = [dataclasses.replace(s, precision=precision) for s in specs]
    try:
        return build_all(cfg, specs, backend, gpus, workspace=workspace,
                         keep_going=keep_going, force=force, log=ctx.progress)
    except PipelineError as err:
        return {"models": {}}, [err]


@cli.command("build")
@build_options
@click.pass_obj
def build_cmd(ctx: Ctx, models, backend, targets, workspace, precision, gpu_facts, keep_going, force) -> None:
    """Build engines from the exported ONNX into models/engines/<tag>/.

    <tag> is trt-<version>-sm<cc> (full TensorRT) or trtrtx-<version>-sm<cc>_<cc>...
    (TensorRT for RTX). Each engine is gated by the onnx-level verification before it is
    published; unchanged models are skipped.
    """
    cfg = _load(ctx)
    be, gpus = _backend(ctx, backend, targets, gpu_facts)
    summary, errors = run_build(ctx, cfg, models, be, gpus, workspace, keep_going, force, precision)
    ctx.emit({"ok": not errors, "build": summary, "errors": [e.to_json() for e in errors]})
    if errors:
        fail(ctx, errors)


@cli.command("run")
@build_options
@click.option("--no-demo", is_flag=True,
              help="Fail on missing checkpoints instead of writing seeded demo weights.")
@TRUST_OPT
@click.pass_obj
def run_cmd(ctx: Ctx, models, backend, targets, workspace, precision, gpu_facts, keep_going, force,
            no_demo, trust) -> None:
    """All stages: demo weights where checkpoints are missing, export, build, verify, publish.

    This is what `make engines` and the builder container run. A second run with nothing
    changed does no work.
    """
    cfg = _load(ctx)
    try:
        cfg.select(models)  # a misspelt --model fails before any work
    except PipelineError as err:
        fail(ctx, err, code=2)
    if not no_demo and any(not m.source_path.exists() for m in cfg.models):
        from .demo import demo_models
        demo_models(cfg, log=ctx.progress)
    records, errors = run_export(ctx, cfg, models, keep_going, force, trust)
    exported = [r["model"] for r in records]
    summary: dict = {"models": {}}
    if exported:
        be, gpus = _backend(ctx, backend, targets, gpu_facts)
        summary, build_errors = run_build(ctx, cfg, exported, be, gpus, workspace, keep_going, force, precision)
        errors += build_errors
        ctx.echo(f"engine set: {summary.get('set')}")
        for name, state in summary["models"].items():
            ctx.echo(f"  {name}: {state}")
    ctx.emit({"ok": not errors, "exports": [{k: r[k] for k in ("model", "status", "files")} for r in records],
              "build": summary, "errors": [e.to_json() for e in errors]})
    if errors:
        fail(ctx, errors)


@cli.command("list")
@click.pass_obj
def list_cmd(ctx: Ctx) -> None:
    """Show every engine set: tag, backend, version, targets, models, status, demo weights."""
    cfg_path = ctx.config_path
    sets = list_sets(cfg_path.parent / "engines")
    rows = [{"tag": s.tag, "backend": s.manifest.get("backend"), "version": s.manifest.get("trt_version"),
             "targets": s.manifest.get("targets"), "models": sorted(s.models), "status": s.status(),
             "demo": s.demo, "path": str(s.path)} for s in sets]
    ctx.emit({"ok": True, "sets": rows})
    if not rows:
        ctx.echo(f"no engine sets under {cfg_path.parent / 'engines'} (run `make engines`)")
    for r in rows:
        ctx.echo(f"{r['tag']}  {r['backend']} {r['version']}  targets {','.join(r['targets'] or [])}  "
                 f"status {r['status']}{'  DEMO WEIGHTS' if r['demo'] else ''}\n    models: {', '.join(r['models'])}")


from . import cli_deploy, cli_docker  # noqa: E402,F401  (register resolve and docker)


def _set_for_this_host(sets) -> str | None:
    """The one set this machine can run (its TensorRT at the set's version, its GPU among
    the targets), or the one built by the TensorRT installed here when there is no GPU."""
    from .hardware import detect_gpus
    from .stages.verify import cannot_run_here
    gpus = detect_gpus()
    fits = [s.tag for s in sets
            if cannot_run_here(s.manifest, gpus) in (None, "no GPU on this machine")]
    return fits[0] if len(fits) == 1 else None


@cli.command("verify")
@MODEL_OPT
@click.option("--set", "set_tag", default=None, envvar="ENGINE_SET", metavar="TAG",
              help="Engine set to verify (a tag from `engines list`). Default: $ENGINE_SET, else the only "
                   "set, else the one set this machine's TensorRT and GPU can run, else models/engines/current.")
@click.option("--benchmark", "do_bench", is_flag=True,
              help="Also benchmark each model: the engine (where it runs here) and PyTorch FP32/FP16/"
                   "CUDA-graph and ONNX Runtime baselines, engine-only and end-to-end views.")
@click.option("--iterations", type=click.IntRange(min=2), default=200, show_default=True,
              help="Timed iterations per benchmark row (after --warmup).")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True,
              help="Untimed iterations before each benchmark row.")
@click.option("--batch", "bench_batches", default="1", show_default=True, metavar="N,...",
              help="Batch sizes to benchmark, e.g. 1,8 (a static engine runs only its own batch).")
@click.pass_obj
def verify_cmd(ctx: Ctx, models, set_tag, do_bench, iterations, warmup, bench_batches) -> None:
    """Verify an engine set against the FP32 ONNX reference on ONNX Runtime.

    Re-checks the onnx level, and runs the engine level (the engine itself against the
    reference) where this machine has the set's TensorRT runtime and a GPU, recording the
    GPU it passed on. Writes report.md in the set; exits 1 if any level failed.
    """

    from .stages.verify import verify_set
    cfg = _load(ctx)
    all_sets = list_sets(cfg.engines_dir)
    sets = {s.tag: s.path for s in all_sets}
    current = cfg.engines_dir / "current"
    if set_tag is None and len(sets) == 1:
        set_tag = next(iter(sets))
    if set_tag is None and len(sets) > 1:  # the set this machine can run beats the deployed link
        set_tag = _set_for_this_host(all_sets)
    if set_tag is None and current.is_symlink():
        set_tag = current.resolve().name
    if not sets:
        fail(ctx, PipelineError("no engine sets to verify", file=cfg.engines_dir,
                                fix="build one first: make engines (or engines run)"), code=2)
    if set_tag not in sets:
        fail(ctx, PipelineError(f"engine set {set_tag!r} not found" if set_tag else
                                "several engine sets, and none is this host's alone", file=cfg.engines_dir,
                                fix=f"pass --set with one of: {', '.join(sets) or '(none: run make engines)'}"),
             code=2)
    try:
        bench = None
        if do_bench:
            bench = {"iterations": iterations, "warmup": warmup,
                     "batches": [int(b) for b in bench_batches.split(",") if b.strip()]}
        manifest, errors = verify_set(cfg, sets[set_tag], names=models, log=ctx.progress, bench=bench)
    except PipelineError as err:
        fail(ctx, err)
    ctx.emit({"ok": not errors, "set": set_tag, "report": (sets[set_tag] / "report.md").read_text(),
              "engines": {n: e["verification"] for n, e in manifest["engines"].items()},
              "errors": [e.to_json() for e in errors]})
    ctx.echo((sets[set_tag] / "report.md").read_text())
    if errors:
        fail(ctx, errors)
