"""The stage commands: parse options, call ``pipeline.api``, print. Registered by ``cli``."""
from __future__ import annotations

import click

from pipeline import api
from pipeline.cli import options
from pipeline.cli.context import Ctx, common_options, fail
from pipeline.cli.options import IntList
from pipeline.errors import PipelineError, UsageProblem
from pipeline.status import Status


def _load(ctx: Ctx):
    try:
        return ctx.config()
    except PipelineError as err:
        fail(ctx, err, code=2)


def _usage(ctx: Ctx, fn, *args, **kwargs):
    """Call a library function; a UsageProblem exits 2, other errors 1."""
    try:
        return fn(*args, **kwargs)
    except UsageProblem as err:
        fail(ctx, err, code=2)
    except PipelineError as err:
        fail(ctx, err)


@click.command("demo-models")
@common_options
@click.pass_obj
def demo_models_cmd(ctx: Ctx) -> None:
    """Write seeded demo checkpoints where models.yaml's sources are missing.

    Built from Ultralytics' bundled architectures (yolov8n, a 2-class hairnet yolov8n,
    yolov8n-pose) with a fixed seed; never overwrites an existing file. Everything built
    from them is marked as demo weights, and `engines resolve` refuses such sets unless
    --allow-demo is given.
    """
    from pipeline.stages.demo import demo_models
    cfg = _load(ctx)
    done = demo_models(cfg, log=ctx.progress)
    ctx.emit({"ok": True, "models": done})
    for d in done:
        ctx.echo(f"{d['model']}: {d['action']}")


@click.command("export")
@common_options
@options.MODEL
@options.KEEP_GOING
@options.FORCE
@options.TRUST
@options.PRECISION
@click.pass_obj
def export_cmd(ctx: Ctx, models, keep_going: bool, force: bool, trust: bool, precision) -> None:
    """Export checkpoints to ONNX (opset from models.yaml), simplified and checked.

    Writes models/onnx/<source path>.onnx, an FP16 twin (.fp16.onnx) and a record
    (.export.json) with I/O, simplification and parity against PyTorch on real images;
    for precision int8 also the INT8 twin (.int8.onnx, a Q/DQ ONNX) and its calibration
    record (.int8.json). Skipped when the checkpoint, options and tool versions are unchanged.
    """
    from pipeline.stages.export import check_passthrough
    cfg = _load(ctx)
    records, errors = _usage(ctx, api.export, cfg, models, keep_going, force, ctx.progress, trust, precision)
    passthrough, missing = check_passthrough(cfg) if not models else ([], [])
    errors += missing
    for p in passthrough:
        ctx.progress(f"{p['model']}: passthrough {p['file']} sha256 {p['sha256'][:12]}")
    ctx.emit({"ok": not errors, "exports": [r.to_json() for r in records], "passthrough": passthrough,
              "errors": [e.to_json() for e in errors]})
    if errors:
        fail(ctx, errors)


@click.command("clean")
@common_options
@click.option("--all", "everything", is_flag=True,
              help="Remove every generated ONNX file and engine set (damaged ones too), not only those built "
                   "from demo weights.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def clean_cmd(ctx: Ctx, everything: bool, yes: bool) -> None:
    """Remove what was built from demo weights (ONNX exports and engine sets), the
    leftovers of killed runs, and what a wrong source: path left behind.

    That is: exports of sources models.yaml no longer names, engine and plan files in a
    set that its manifest does not name, and demo weights written at a path models.yaml
    no longer names. Other checkpoints are never touched, nor (without --all) a set or
    export built from real weights, which a running pyt-api-prod may have mounted.
    """
    cfg = _load(ctx)
    plan = api.plan_clean(cfg, everything)
    kept = plan.kept
    if not plan.remove:
        ctx.echo("nothing to clean" + (f" (kept: {', '.join(kept)}; --all removes them)" if kept else ""))
        ctx.emit({"ok": True, "removed": [], "kept": kept})
        return
    if not yes and not ctx.json:
        click.confirm("Remove:\n  " + "\n  ".join(map(str, plan.remove)) + "\n?", abort=True)
    api.clean(cfg, plan, log=ctx.echo)
    if kept:
        ctx.echo(f"kept sets built from real weights: {', '.join(kept)} (--all removes them)")
    ctx.emit({"ok": True, "removed": [str(p) for p in plan.remove], "kept": kept})


def build_options(fn):
    """The options `build` and `run` share (applied in --help order)."""
    for opt in reversed((common_options, options.MODEL, options.BACKEND, options.TARGET, options.WORKSPACE,
                         options.PRECISION, options.GPU_FACTS, options.KEEP_GOING, options.FORCE, options.LOCK_TIMEOUT)):
        fn = opt(fn)
    return fn


@click.command("build")
@build_options
@click.pass_obj
def build_cmd(ctx: Ctx, models, backend, targets, workspace, precision, gpu_facts, keep_going, force,
              lock_timeout) -> None:
    """Build engines from the exported ONNX into models/engines/<tag>/.

    <tag> is trt-<version>-sm<cc> (full TensorRT) or trtrtx-<version>-sm<cc>_<cc>...
    (TensorRT for RTX). Each engine is gated by the onnx-level verification before it is
    published; unchanged models are skipped.
    """
    cfg = _load(ctx)
    be, gpus = _usage(ctx, api.choose_backend, backend, targets, gpu_facts, ctx.progress)
    summary, errors = _usage(ctx, api.build, cfg, models, be, gpus, workspace=workspace, precision=precision,
                             keep_going=keep_going, force=force, lock_timeout=lock_timeout, log=ctx.progress)
    ctx.emit({"ok": not errors, "build": summary, "errors": [e.to_json() for e in errors]})
    if errors:
        fail(ctx, errors)


@click.command("run")
@build_options
@click.option("--no-demo", is_flag=True,
              help="Fail on every missing checkpoint, the shipped default's too, instead of writing seeded "
                   "demo weights.")
@click.option("--demo", "demo_all", is_flag=True,
              help="Write seeded demo weights for every missing checkpoint, not only the shipped models.yaml's "
                   "(a trial run of your own models.yaml before the trained files are there).")
@options.TRUST
@click.pass_obj
def run_cmd(ctx: Ctx, models, backend, targets, workspace, precision, gpu_facts, keep_going, force,
            lock_timeout, no_demo, demo_all, trust) -> None:
    """All stages: demo weights for the shipped models.yaml's missing checkpoints, export,
    build, verify, publish.

    This is what `make engines` and the builder container run. Any other missing
    checkpoint is an error naming the nearest file (--demo writes demo weights for it).
    The set follows models.yaml: a model it no longer lists leaves the set. The engine
    level is verified where this machine runs the set's TensorRT on a targeted GPU. A
    second run with nothing changed does no work.
    """
    if no_demo and demo_all:
        fail(ctx, UsageProblem("--demo and --no-demo contradict each other",
                               fix="pass one of them: --demo writes demo weights for every missing checkpoint, "
                                   "--no-demo for none"), code=2)
    cfg = _load(ctx)
    res = _usage(ctx, api.run, cfg, models, backend=backend, targets=targets, workspace=workspace,
                 precision=precision, gpu_facts=gpu_facts, keep_going=keep_going, force=force,
                 demo="none" if no_demo else "all" if demo_all else "default",
                 lock_timeout=lock_timeout, trust=trust, log=ctx.progress)
    if res.build.get("set"):
        ctx.echo(f"engine set: {res.build.get('set')}")
    for name, state in res.build["models"].items():
        ctx.echo(f"  {name}: {state}")
    demo = api.demo_entries(res.set_dir)
    if demo:   # said on every run, cached ones too
        ctx.echo(f"  DEMO WEIGHTS in {', '.join(demo)}: seeded random weights (`engines demo-models`), not trained "
                 "models; resolve refuses the set unless --allow-demo. Put the real checkpoints at their paths in "
                 f"{ctx.config_path} (or remove those entries) and run again to build a set for production.")
    ctx.emit({"ok": res.ok, "exports": [{k: r[k] for k in ("model", "status", "files")} for r in res.exports],
              "build": res.build, "verified": res.verified, "demo": demo,
              "errors": [e.to_json() for e in res.errors]})
    if res.errors:
        fail(ctx, res.errors)


@click.command("list")
@common_options
@options.GPU_FACTS
@click.pass_obj
def list_cmd(ctx: Ctx, gpu_facts) -> None:
    """Show every engine set: tag, backend, version, targets, models, status, demo weights.

    Status is the manifest's verdict, the same one `engines resolve` uses: for this
    host's GPU where there is one (or --gpu-facts), else across every GPU the engines
    were verified on (ok, pending, mixed: passed on one GPU and failed on another,
    failed); a damaged manifest is listed as corrupt with the reason.
    """
    from pipeline.hardware import detect_gpus
    engines_dir = ctx.config_path.parent / "engines"
    try:
        gpus = detect_gpus(gpu_facts)
    except PipelineError as err:   # an unreadable --gpu-facts file is bad input
        fail(ctx, err, code=2)
    from pipeline.deploy.rules import expected_models  # light: no schema check; a bad file lists no names
    rows = api.list_report(engines_dir, gpus[0].name if gpus else None, expected_models(ctx.config_path))
    ctx.emit({"ok": True, "gpu": gpus[0].name if gpus else None, "sets": rows})
    if not rows:
        ctx.echo(f"no engine sets under {engines_dir} (run `make engines`)")
    for r in rows:
        if r["status"] == Status.CORRUPT:
            ctx.echo(f"{r['tag']}  CORRUPT: {r['reasons'][0]}")
            continue
        ctx.echo(f"{r['tag']}  {r['backend']} {r['version']}  targets {','.join(r['targets'] or [])}  "
                 f"status {r['status']}{'  DEMO WEIGHTS' if r['demo'] else ''}\n    models: {', '.join(r['models'])}")
        for why in r["reasons"]:
            ctx.echo(f"    {why}")
        if r["unlisted"]:
            ctx.echo(f"    not in {ctx.config_path.name}: {', '.join(r['unlisted'])} (never mounted by resolve; the next "
                     "`engines run` removes them from the set)")


@click.command("verify")
@common_options
@options.MODEL
@options.set_option("to verify. Default: the only set, else the one this machine's TensorRT and GPU can run, "
                    "else the one `current` points at.", envvar="ENGINE_SET")
@click.option("--benchmark", "do_bench", is_flag=True,
              help="Also benchmark each model: the engine (where it runs here) and PyTorch FP32/FP16/"
                   "CUDA-graph and ONNX Runtime baselines, engine-only and end-to-end views.")
@click.option("--iterations", type=click.IntRange(min=2), default=200, show_default=True,
              help="Timed iterations per benchmark row (after --warmup).")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True,
              help="Untimed iterations before each benchmark row.")
@click.option("--batch", "bench_batches", type=IntList(), default="1", show_default=True,
              help="Batch sizes to benchmark, e.g. 1,8 (a static engine runs only its own batch).")
@options.LOCK_TIMEOUT
@click.pass_obj
def verify_cmd(ctx: Ctx, models, set_tag, do_bench, iterations, warmup, bench_batches, lock_timeout) -> None:
    """Verify an engine set against the FP32 ONNX reference on ONNX Runtime.

    Re-checks the onnx level, and runs the engine level (the engine itself against the
    reference) where this machine has the set's TensorRT runtime and a GPU, recording the
    GPU it passed on. Writes report.md in the set; exits 1 if any level failed.
    """
    from pipeline.stages.verify import verify_set
    cfg = _load(ctx)
    s = _usage(ctx, api.select_set, cfg.engines_dir, set_tag)
    bench = {"iterations": iterations, "warmup": warmup, "batches": bench_batches} if do_bench else None
    manifest, errors = _usage(ctx, verify_set, cfg, s.path, names=models, log=ctx.progress, bench=bench,
                              lock_timeout=lock_timeout)
    report = (s.path / "report.md").read_text()
    ctx.emit({"ok": not errors, "set": s.tag, "report": report,
              "engines": {n: e.to_dict()["verification"] for n, e in manifest.engines.items()},
              "errors": [e.to_json() for e in errors]})
    ctx.echo(report)
    if errors:
        fail(ctx, errors)


COMMANDS = (demo_models_cmd, export_cmd, clean_cmd, build_cmd, run_cmd, list_cmd, verify_cmd)
