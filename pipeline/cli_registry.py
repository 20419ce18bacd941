"""`engines push`, `engines pull` and `engines fleet status`: engine sets in an OCI registry.

Thin: the artifact layout and the transfer rules live in pipeline.registry; the choice of
a set is pipeline.deploy's (the rules of `engines resolve`). The oras SDK loads only here.
"""
from __future__ import annotations

from pathlib import Path

import click

from .cli_context import Ctx, common_options, fail
from .cli_deploy import _check_runtime, report_choice
from .errors import PipelineError


def registry_options(fn):
    """--plain-http / --insecure, shared by every registry command."""
    fn = click.option("--insecure", is_flag=True,
                      help="HTTPS without checking the registry's certificate (self-signed certificates).")(fn)
    return click.option("--plain-http", is_flag=True,
                        help="Talk HTTP, not HTTPS, to the registry (a test registry on 127.0.0.1, a private one "
                             "without TLS).")(fn)


REF_HELP = ("the repository, e.g. 127.0.0.1:5000/engines or ghcr.io/acme/engines. Credentials come from the Docker "
            "config (~/.docker/config.json, or $DOCKER_CONFIG/config.json) as `docker login` / `oras login` "
            "write it. A registry silent for ENGINES_REGISTRY_TIMEOUT seconds (default 60) is given up.")


PUSH_HELP = """Upload a complete engine set to an OCI registry as one artifact tagged with the set tag.

REGISTRY/REPO: {ref}

The set's manifest.json is the config blob, each file one layer titled with its path in
the set; annotations carry backend, TensorRT version, compute capabilities, GPU product,
CUDA version, driver, demo flag and verification status (README "Registry"). Blobs the
registry already has are not sent: pushing an unchanged set again uploads nothing.
The files are checked against the manifest's sha256 first; an altered set is refused.
""".format(ref=REF_HELP)

PULL_HELP = """Pick the engine set for this host from a registry, download it, verify it, switch `current`.

REGISTRY/REPO: {ref}

The choice follows `engines resolve` exactly and reads only manifests: no engine is
downloaded before a set matches. The chosen set is staged in models/engines/.staging/,
every layer digest and every sha256 of its manifest.json is checked, and only then does
it replace models/engines/<tag>/ in one step and `current` switch to it. A tampered or
missing blob, or an interrupted download, leaves models/engines/ as it was.
Use `engines resolve --from REGISTRY/REPO` to pull and hand over (env file, --require) in one go.
""".format(ref=REF_HELP)

FLEET_STATUS_HELP = """Table of the engine sets in a registry (tag, backend and version, compute capabilities,
GPU product, demo, verification) and, with --gpus, which wanted cells exist, are
missing or failed. Reads manifests and config blobs only.

REGISTRY/REPO: {ref}
""".format(ref=REF_HELP)


def _remote(ref: str, plain_http: bool, insecure: bool):
    from .registry import Remote
    return Remote(ref, plain_http=plain_http, insecure=insecure)


def _local_set(engines_dir: Path, tag: str | None):
    from .engine_set import list_sets, load_set
    if tag:
        s = load_set(engines_dir / tag)
        if s is None:
            raise PipelineError(f"no engine set {tag} here", file=engines_dir / tag,
                                fix="`engines list` shows the sets; pass one with --set TAG")
        return s
    current = engines_dir / "current"
    if current.is_symlink() and (s := load_set(current.resolve())) is not None:
        return s
    sets = list_sets(engines_dir)
    if len(sets) == 1:
        return sets[0]
    names = ", ".join(s.tag for s in sets) or "none"
    raise PipelineError(f"which set to push? {engines_dir} has no `current` link and holds {len(sets)} sets "
                        f"({names})", fix="pass --set TAG")


@click.command("push", help=PUSH_HELP)
@common_options
@click.argument("ref", metavar="REGISTRY/REPO")
@click.option("--set", "tag", metavar="TAG",
              help="The set to push (a folder of models/engines). Default: the one `current` points at, else the "
                   "only set.")
@registry_options
@click.pass_obj
def push_cmd(ctx: Ctx, ref, tag, plain_http, insecure) -> None:
    from .registry import push
    engines_dir = ctx.config_path.parent / "engines"
    try:
        s = _local_set(engines_dir, tag)
        remote = _remote(ref, plain_http, insecure)
        out = push(s, remote, on_line=ctx.progress if not ctx.json else (lambda m: None))
    except PipelineError as err:
        fail(ctx, err)
    if out["uploaded"] or out["tag_changed"]:
        ctx.echo(f"pushed {out['ref']} ({out['digest']}): {len(out['uploaded'])} blobs uploaded "
                 f"({out['uploaded_bytes'] / 2**20:.1f} MiB), {len(out['already_there'])} already there")
    else:
        ctx.echo(f"{out['ref']} is up to date ({out['digest']}): nothing uploaded")
    ctx.emit(out)


def resolve_like_options(fn):
    for opt in reversed([
        click.option("--runtime", metavar="BACKEND==VERSION", callback=_check_runtime,
                     help="The runtime the service loads engines with (tensorrt==10.13.3.9); default as for "
                          "`engines resolve`."),
        click.option("--gpu-facts", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
                     help="Saved GPU facts instead of asking NVML (as for `engines resolve`)."),
        click.option("--gpu-index", type=click.IntRange(min=0), metavar="N", help="Which GPU the service uses."),
        click.option("--image", metavar="IMAGE", help="Service image to read the TensorRT version from."),
        click.option("--allow-demo", is_flag=True, help="Accept a set built from demo weights."),
        click.option("--require", is_flag=True,
                     help="Refuse a set whose engine-level verification has not passed on this GPU."),
        click.option("--allow-pending", is_flag=True, help="With --require: accept it unproven anyway."),
    ]):
        fn = opt(fn)
    return fn


@click.command("pull", help=PULL_HELP)
@common_options
@click.argument("ref", metavar="REGISTRY/REPO")
@click.option("--set", "tag", metavar="TAG", help="Consider only this tag (it must still fit this host).")
@click.option("--no-link", is_flag=True, help="Leave the `current` symlink as it is.")
@resolve_like_options
@registry_options
@click.pass_obj
def pull_cmd(ctx: Ctx, ref, tag, no_link, runtime, gpu_facts, gpu_index, image, allow_demo, require,
             allow_pending, plain_http, insecure) -> None:
    from . import deploy
    from .handover import switch_current
    from .hardware import detect_gpus, pick_gpu
    from .registry import pull
    from .runtime import find_runtime
    engines_dir = ctx.config_path.parent / "engines"
    try:
        rt = find_runtime(runtime, image)
        gpu = pick_gpu(detect_gpus(gpu_facts), gpu_index)
        res, downloaded = pull(_remote(ref, plain_http, insecure), engines_dir, gpu, rt, tag=tag,
                               allow_demo=allow_demo, allow_pending=allow_pending or not require,
                               models=deploy.expected_models(ctx.config_path),
                               pending_ok="--allow-pending" if require else "without --require",
                               on_line=ctx.progress if not ctx.json else (lambda m: None))
        link = None if no_link else str(switch_current(engines_dir, res.chosen.tag))
    except PipelineError as err:
        fail(ctx, err)
    report_choice(ctx, res, f"{'pulled' if downloaded else 'already here:'} {res.chosen.tag} from {ref}: {res.why()}",
                  link)
    ctx.emit({**res.to_json(), "registry": ref, "downloaded": downloaded, "link": link})


@click.group("fleet")
def fleet() -> None:
    """Engine sets across hosts: what the registry holds for which GPUs and TensorRT versions."""


GPUS_HELP = ("YAML or JSON list of the cells you need, one per (GPU product, runtime): "
             "[{gpu: NVIDIA H100 80GB HBM3, runtime: tensorrt==10.13.3.9, compute_cap: '9.0'}]; compute_cap is "
             "optional when a set built on that GPU exists.")


@fleet.command("status", help=FLEET_STATUS_HELP)
@common_options
@click.argument("ref", metavar="REGISTRY/REPO")
@click.option("--gpus", "gpus_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help=GPUS_HELP)
@registry_options
@click.pass_obj
def fleet_status_cmd(ctx: Ctx, ref, gpus_file, plain_http, insecure) -> None:
    from .fleet_status import cells, read_cells, rows
    try:
        wanted = read_cells(gpus_file) if gpus_file else None
        sets, others = _remote(ref, plain_http, insecure).sets()
        table, cell_rows = rows(sets), (cells(sets, wanted) if wanted is not None else None)
    except PipelineError as err:
        fail(ctx, err)
    if not ctx.json:
        _print_table(["tag", "backend", "compute caps", "GPU product", "demo", "verification", "updated"],
                     [[r["tag"], f"{r['backend']} {r['version']}", ",".join(r["compute_caps"]), r["gpu"] or "-",
                       "yes" if r["demo"] else "no", r["verification"], r["updated"]] for r in table])
        for line in others:
            ctx.echo(f"  (skipped {line})")
        if cell_rows is not None:
            ctx.echo("")
            _print_table(["GPU", "runtime", "cell", "set", "why"],
                         [[c["gpu"], c["runtime"], c["status"], c["tag"] or "-", c["why"]] for c in cell_rows])
    ctx.emit({"ok": True, "registry": ref, "sets": table, "cells": cell_rows, "skipped": others})


def _print_table(head: list[str], body: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    for row in [head, *body]:
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


COMMANDS = (push_cmd, pull_cmd, fleet)
