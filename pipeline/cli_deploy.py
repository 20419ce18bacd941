"""`engines resolve`: the deploy step (issue 5). Thin: the rules live in pipeline.deploy.

Starts fast: click, the manifest reader and (for the models list) pyyaml; no torch,
ultralytics or TensorRT, and the Docker SDK only for --image / --build-missing.
"""
from __future__ import annotations

from pathlib import Path

import click

from .cli_context import DEFAULT_CONFIG, Ctx, common_options, fail
from .errors import PipelineError

RESOLVE_HELP = """Pick the engine set that matches this host, prove it, and hand it over.

\b
Facts: the GPU (NVML, else nvidia-smi, or --gpu-facts FILE) and the TensorRT the
service runs (--runtime, else the label of --image, else the installed package).
\b
Choice: a TensorRT set needs the exact TensorRT version and this GPU's compute
capability; one built on the same GPU model wins, a match on compute capability
alone is taken with a warning. A TensorRT for RTX set needs the runtime's version
and this compute capability among its targets. Never chosen: a set with a failed
model or failed verification, missing models, files whose sha256 differ from the
manifest, or demo weights (unless --allow-demo).
\b
Engine-level verification (the engine run on a GPU against ONNX Runtime): without
--require, a set not yet verified on this GPU is chosen with a warning (it passed the
ONNX-level gate when it was built); with --require it is refused unless
--allow-pending, and a failure on this GPU is refused in both modes.
\b
Hand-over: the `current` symlink in the engines folder switches atomically (not with
--no-link); --write-env writes ENGINE_SET, ENGINE_DIR and the rest of what
docker-compose.prod.full.yml reads.
\b
Exit status: 0 a set was chosen and handed over; 1 no set fits (the message lists
the host's facts, every set and why it was refused, and the command that builds the
missing one) or the hand-over failed; 2 a usage error.
\b
Example: engines resolve --gpu-facts gpu.csv --runtime tensorrt==10.13.3.9 --no-link
"""


def _config_arg(ctx: Ctx) -> str:
    return "" if str(ctx.config_path) == DEFAULT_CONFIG else f" --config {ctx.config_path}"


def _check_runtime(_click_ctx, _param, value):
    if value is None:
        return None
    from .runtime import parse_runtime
    try:
        return parse_runtime(value).spec
    except PipelineError as err:
        raise click.BadParameter(f"{err.what}; {err.fix}") from None


def report_choice(ctx: Ctx, res, headline: str, link: str | None, also: str | None = None) -> None:
    """Every set's verdict, the choice, its warnings (stderr) and what was handed over."""
    _report(ctx, res)
    ctx.echo(headline)
    for w in res.verdict.warnings:
        ctx.echo(click.style("warning: ", fg="yellow", bold=True) + w, err=True)
    if also:
        ctx.echo(also)
    if link:
        ctx.echo(f"{link} -> {res.chosen.tag}")


def _report(ctx: Ctx, res) -> None:
    ctx.echo(res.gpu.describe() + (f"  [{res.gpu.source}]" if res.gpu.source else ""))
    ctx.echo(f"runtime: {res.runtime.label} (from {res.runtime.source})")
    if not res.verdicts:
        ctx.echo(f"no engine set in {res.engines_dir}")
    for v in res.verdicts:
        mark = "*" if v.chosen else ("+" if v.accepted else "-")
        text = "chosen" if v.chosen else (v.note or "acceptable") if v.accepted else "; ".join(v.reasons)
        ctx.echo(f"  {mark} {v.tag}: {text}")


@click.command("resolve", help=RESOLVE_HELP)
@common_options
@click.option("--runtime", metavar="BACKEND==VERSION", callback=_check_runtime,
              help="The runtime pyt-api-prod loads engines with: tensorrt==10.13.3.9 or tensorrt-rtx==1.7.1.116. "
                   "Default: the label of --image, else the tensorrt / tensorrt-rtx package installed here.")
@click.option("--gpu-facts", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="Saved GPU facts instead of asking NVML: the CSV of `nvidia-smi --query-gpu=index,name,uuid,"
                   "compute_cap,driver_version,memory.total,memory.free,pci.bus_id --format=csv`, or an NVML "
                   "JSON (name, cc, driver, mem_total, mem_free).")
@click.option("--gpu-index", type=click.IntRange(min=0), metavar="N",
              help="Which GPU the service uses on a multi-GPU host (nvidia-smi index). Default: the only GPU, "
                   "or the first when all are the same model.")
@click.option("--image", metavar="IMAGE",
              help="Service image to read the TensorRT version from (label org.engines.tensorrt.version); "
                   "needs Docker. Also written to the env file as PYT_API_IMAGE.")
@click.option("--allow-demo", is_flag=True,
              help="Accept a set built from demo weights (`engines demo-models`), for smoke tests.")
@click.option("--allow-pending", is_flag=True,
              help="With --require: accept a set whose engine-level verification has not yet passed on this GPU.")
@click.option("--require", is_flag=True,
              help="Production gate: the chosen set's engines must have passed engine-level verification on "
                   "this GPU (run `engines verify` here first). Used by `make deploy` and engines-check.")
@click.option("--write-env", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Write the choice for docker compose: ENGINE_SET, ENGINE_DIR, ENGINE_RUNTIME, ENGINE_GPU_INDEX, "
                   "ENGINES_MODELS_DIR (and PYT_API_IMAGE when known), e.g. .env.engines.")
@click.option("--write-mounts", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Write a compose override binding each engine and passthrough file of the chosen set "
                   "read-only into pyt-api-prod, from its manifest (e.g. docker-compose.engines.yml; `make "
                   "deploy` passes it as the second -f).")
@click.option("--no-link", is_flag=True,
              help="Leave the `current` symlink in the engines folder as it is (read-only mounts, dry runs).")
@click.option("--build-missing", is_flag=True,
              help="When no set fits, build it (TensorRT: the builder container through Docker; TensorRT for "
                   "RTX: a local `engines run --backend tensorrt-rtx --target smXY`), then resolve again.")
@click.option("--builder-image", metavar="IMAGE", envvar="ENGINES_IMAGE",
              help="Builder image for --build-missing (env ENGINES_IMAGE, as in docker-compose.build.yml; "
                   "default engines-builder:latest).")
@click.option("--set", "expect_set", metavar="TAG", envvar="ENGINE_SET",
              help="The set that must be chosen (env ENGINE_SET, as engines-check gets it): resolve fails "
                   "if the rules pick another, so the gate approves exactly the set that is mounted.")
@click.option("--from", "from_ref", metavar="REGISTRY/REPO",
              help="First pull the set this host gets from an OCI registry (as `engines pull`: chosen by these "
                   "rules from the manifests alone, every sha256 checked), then resolve as usual. If the registry "
                   "does not answer (ENGINES_REGISTRY_TIMEOUT seconds, default 60), the sets already here are "
                   "used, with a warning.")
@click.option("--plain-http", is_flag=True, help="With --from: HTTP, not HTTPS (a registry without TLS).")
@click.option("--insecure", is_flag=True, help="With --from: do not check the registry's TLS certificate.")
@click.pass_obj
def resolve_cmd(ctx: Ctx, runtime, gpu_facts, gpu_index, image, allow_demo, allow_pending, require,
                write_env, no_link, build_missing, builder_image, expect_set, from_ref=None, plain_http=False,
                insecure=False, write_mounts=None) -> None:
    from . import deploy, handover
    from .hardware import detect_gpus, pick_gpu
    from .runtime import find_runtime

    models_dir = ctx.config_path.parent
    engines_dir = models_dir / "engines"
    try:
        rt = find_runtime(runtime, image)
        gpu = pick_gpu(detect_gpus(gpu_facts), gpu_index)
        models = deploy.expected_models(ctx.config_path)
        kwargs = {"allow_demo": allow_demo, "allow_pending": allow_pending or not require, "models": models,
                  "pending_ok": "--allow-pending" if require else "without --require"}
        offline = None
        if from_ref:  # issue 11: the registry fills models/engines, then the local rules decide as always
            from .registry import RegistryUnreachable, Remote, pull
            remote = Remote(from_ref, plain_http=plain_http, insecure=insecure)
            try:
                pulled, _ = pull(remote, engines_dir, gpu, rt, tag=expect_set, allow_demo=allow_demo,
                                 allow_pending=kwargs["allow_pending"], models=models,
                                 pending_ok=kwargs["pending_ok"], on_line=lambda line: ctx.echo(line, err=True))
                ctx.echo(f"pulled {pulled.chosen.tag} from {from_ref}", err=True)
            except RegistryUnreachable as err:
                # a registry outage must not stop a restart whose set is already here (and
                # checked by sha256 below, as always); refused below if none fits
                offline = err
                ctx.echo(f"warning: {err.what}; choosing among the sets already in {engines_dir}", err=True)
        res = deploy.resolve(engines_dir, gpu, rt, **kwargs)
        if offline is not None and res.chosen is None and not build_missing:
            # the outage is the cause to report, with why each set already here was refused
            here = deploy.refusal(res, _config_arg(ctx))
            offline.details = [f"and no set already in {engines_dir} fits: {here.what}"] + list(here.details or [])
            raise offline
        built = False
        if res.chosen is None and build_missing:
            _report(ctx, res)
            ctx.echo(f"no set fits; building {deploy.missing_tag(gpu, rt)} (--build-missing)")
            code = deploy.build_missing(res, models_dir, builder_image,
                                  on_line=(lambda line: ctx.echo(str(line), err=True)),
                                  config_name=ctx.config_path.name)
            if code != 0:
                raise PipelineError(f"the build of {deploy.missing_tag(gpu, rt)} failed (exit status {code})",
                                    fix="read the builder's output above; fix and rerun")
            res, built = deploy.resolve(engines_dir, gpu, rt, **kwargs), True
        if res.chosen is None:
            raise deploy.refusal(res, _config_arg(ctx))
        if offline is not None and not built:
            res.verdict.warnings.append(f"the registry {from_ref} did not answer ({offline.what}); {res.chosen.tag} "
                                        "is the copy on this host, which may be older than the registry's")
        if expect_set and res.chosen.tag != expect_set:
            raise PipelineError(f"the rules choose {res.chosen.tag}, but {expect_set} is the set expected "
                                "(--set / ENGINE_SET)"
                                + (f"; the registry {from_ref} did not answer, so {expect_set} could not be "
                                   f"pulled ({offline.what})" if offline is not None else ""), file=engines_dir,
                                fix="run `make deploy` again so the env file names the set this host gets"
                                + (" (once the registry answers)" if offline is not None else ""))
        link = env = None
        if write_env is not None:
            values = handover.env_lines(res, models_dir, image, allow_demo=allow_demo,
                                      allow_pending=allow_pending)
            handover.write_env(write_env, values, res)
            env = str(write_env)
        if write_mounts is not None:  # the prod compose mounts, derived from the manifest (issue 10)
            from .compose_mounts import write_override
            ctx.echo(f"wrote {write_override(write_mounts, res.chosen)} (the set's mounts for pyt-api-prod)")
        if not no_link:
            link = str(handover.switch_current(engines_dir, res.chosen.tag))
    except PipelineError as err:
        fail(ctx, err)
    report_choice(ctx, res, f"chose {res.chosen.tag}: {res.why()}", link,
                  f"wrote {env} (ENGINE_SET={res.chosen.tag}, ENGINE_DIR={res.chosen.path.resolve()})" if env else None)
    out = res.to_json()
    out.update({"env_file": env, "link": link, "require": require})
    ctx.emit(out)


COMMANDS = (resolve_cmd,)
