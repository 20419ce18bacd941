"""`engines resolve`: the deploy step (issue 5). Thin: the rules live in pipeline.deploy.rules.

Starts fast: click, the manifest reader and (for the models list) pyyaml; no torch,
ultralytics or TensorRT, and the Docker SDK only for --image / --build-missing.
"""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import options
from pipeline.cli.context import DEFAULT_CONFIG, Ctx, common_options, fail
from pipeline.deploy.targets import TARGETS
from pipeline.errors import PipelineError

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
docker-compose.prod.full.yml reads, --write-mounts the compose mounts, --write-triton
a Triton model repository of the chosen set (one --write-<target> per deploy target).
\b
Exit status: 0 a set was chosen and handed over; 1 no set fits (the message lists
the host's facts, every set and why it was refused, and the command that builds the
missing one) or the hand-over failed; 2 a usage error.
\b
Example: engines resolve --gpu-facts gpu.csv --runtime tensorrt==10.13.3.9 --no-link
"""


def target_options(f):
    """--write-<name> for each deploy target in pipeline.deploy.targets.TARGETS (one list)."""
    for t in reversed(TARGETS):
        f = click.option(t.option, f"write_{t.name}", metavar=t.metavar, help=t.help,
                         type=click.Path(dir_okay=t.is_dir, file_okay=not t.is_dir, path_type=Path))(f)
    return f


def config_arg(ctx: Ctx) -> str:
    return "" if str(ctx.config_path) == DEFAULT_CONFIG else f" --config {ctx.config_path}"


def report_choice(ctx: Ctx, res, headline: str, link, also: str | None = None) -> None:
    """Every set's verdict, the choice, its warnings (stderr) and what was handed over."""
    report_sets(ctx, res)
    ctx.echo(headline)
    for w in res.verdict.warnings:
        ctx.echo(click.style("warning: ", fg="yellow", bold=True) + w, err=True)
    if also:
        ctx.echo(also)
    if link:
        ctx.echo(f"{link} -> {res.chosen.tag}")


def report_sets(ctx: Ctx, res) -> None:
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
@options.host_options
@options.policy_options
@target_options
@click.option("--no-link", is_flag=True,
              help="Leave the `current` symlink in the engines folder as it is (read-only mounts, dry runs).")
@click.option("--build-missing", is_flag=True,
              help="When no set fits, build it (TensorRT: the builder container through Docker; TensorRT for "
                   "RTX: a local `engines run --backend tensorrt-rtx --target smXY`), then resolve again.")
@click.option("--builder-image", metavar="IMAGE", envvar="ENGINES_IMAGE",
              help="Builder image for --build-missing (env ENGINES_IMAGE, as in docker-compose.build.yml; "
                   "default engines-builder:latest).")
@options.set_option("that must be chosen: resolve fails if the rules pick another, so the gate approves exactly "
                    "the set that is mounted (engines-check gets it from the env file).", envvar="ENGINE_SET")
@click.option("--from", "from_ref", metavar="REGISTRY/REPO",
              help="First pull the set this host gets from an OCI registry (as `engines pull`: chosen by these "
                   "rules from the manifests alone, every sha256 checked), then resolve as usual. If the registry "
                   "does not answer (ENGINES_REGISTRY_TIMEOUT seconds, default 60), or another process holds the "
                   "set's lock past --lock-timeout, the sets already here are used, with a warning. "
                   "--plain-http / --insecure apply to it.")
@options.registry_options
@options.LOCK_TIMEOUT
@click.pass_obj
def resolve_cmd(ctx: Ctx, **values) -> None:
    from pipeline.deploy import pick
    from_ref = values.pop("from_ref")
    try:
        host, policy = options.host_query(values), options.policy(values)
        from_remote = options.remote(from_ref, values) if from_ref else None
        writes = [(t, values[f"write_{t.name}"]) for t in TARGETS if values[f"write_{t.name}"] is not None]
        chosen = pick.resolve(ctx.config_path, host, policy, from_remote=from_remote, expect_set=values["set_tag"],
                              build_missing=values["build_missing"], builder_image=values["builder_image"],
                              targets=writes, link=not values["no_link"], image_for_env=host.image,
                              on_line=lambda line: ctx.echo(str(line), err=True), config_arg=config_arg(ctx),
                              lock_timeout=values["lock_timeout"], on_wait=ctx.progress)
    except PipelineError as err:
        fail(ctx, err)
    res = chosen.resolution
    env = str(chosen.env_file) if chosen.env_file else None
    wrote = [t.summary(chosen, dest) for t, dest in writes]
    report_choice(ctx, res, f"chose {res.chosen.tag}: {res.why()}", chosen.link, "\n".join(wrote) or None)
    out = res.to_json()
    out.update({"env_file": env, "link": str(chosen.link) if chosen.link else None, "require": policy.require,
                "written": {name: str(path) for name, path in chosen.written.items()}})
    ctx.emit(out)


COMMANDS = (resolve_cmd,)
