"""`engines fleet`: engine sets across hosts. `fleet plan` writes the Kubernetes build matrix,
`fleet status` reads what a registry holds. Thin: the work is pipeline.fleet's; the
kubernetes and oras clients load only when a command runs.
"""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import options
from pipeline.cli.context import Ctx, common_options, fail
from pipeline.cli.options import REF_HELP
from pipeline.errors import PipelineError

FLEET_STATUS_HELP = """Table of the engine sets in a registry (tag, backend and version, compute capabilities,
GPU product, demo, verification) and, with --gpus, which wanted cells exist, are
missing or failed. Reads manifests and config blobs only.

REGISTRY/REPO: {ref}
""".format(ref=REF_HELP)


@click.group("fleet")
def fleet() -> None:
    """Engine sets across hosts: what the registry holds for which GPUs and TensorRT versions."""


GPUS_HELP = ("YAML or JSON list of the cells you need, one per (GPU product, runtime): "
             "[{gpu: NVIDIA H100 80GB HBM3, runtime: tensorrt==10.13.3.9, compute_cap: '9.0'}]; compute_cap is "
             "optional when a set built on that GPU exists. The `fleet plan` file serves too: its cells "
             "(builders: x gpus:, and cells:) with each trt: as the runtime.")


@fleet.command("status", help=FLEET_STATUS_HELP)
@common_options
@click.argument("ref", metavar="REGISTRY/REPO")
@click.option("--gpus", "gpus_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help=GPUS_HELP)
@options.registry_options
@click.pass_obj
def fleet_status_cmd(ctx: Ctx, ref, gpus_file, **values) -> None:
    from pipeline.fleet.status import cells, read_cells, rows
    from pipeline.registry.sets import remote_sets
    try:
        wanted = read_cells(gpus_file) if gpus_file else None
        sets, others = remote_sets(options.remote(ref, values))
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



PLAN_HELP = """Write one Kubernetes batch/v1 Job per cell of the GPU list: each TensorRT version's builder
image on each GPU type (builders: x gpus:), plus any single cells; each cell builds its own set.

Each Job is pinned to its GPU type by the NVIDIA GPU Feature Discovery labels
(nvidia.com/gpu.product, or nvidia.com/gpu.compute.major/minor), asks for
nvidia.com/gpu: 1, copies the models in (from a PVC or an init-container image), then
runs the builder image's `engines`: `run --backend tensorrt`, `verify` on that GPU, and
`push` to the registry the file names. Non-root (uid 10001, as Dockerfile.build), small
backoffLimit, ttlSecondsAfterFinished. Registry credentials: a docker-registry Secret
(`registry_secret:`) mounted as ~/.docker/config.json. docs/fleet.md shows the file.

Without --out the manifests go to stdout (`engines fleet plan --gpus gpus.yaml | kubectl apply -f -`).
"""


@fleet.command("plan", help=PLAN_HELP)
@common_options
@click.option("--gpus", "gpus_file", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="The GPU list (YAML): registry, models (pvc or image), registry_secret, namespace and the cells: "
                   "a matrix, every builder image of `builders:` (one per TensorRT version, e.g. {image: "
                   "REGISTRY/engines-builder:trt11, trt: '11.2.1.2'}) on every GPU type of `gpus:` (e.g. {gpu: "
                   "Tesla-T4}, {compute_cap: '9.0'}), and/or single `cells:` ({gpu: ..., image: ..., trt: ...}). "
                   "docs/fleet.md shows a file.")
@click.option("--out", "out", type=click.Path(), default=None, metavar="PATH",
              help="Write the Jobs here: a .yaml file (all Jobs, multi-document) or a folder (an existing one, or a "
                   "path ending in '/': one <job>.yaml each). Default: stdout.")
@click.option("--apply", "do_apply", is_flag=True,
              help="Also submit the Jobs to the cluster of the current kubeconfig context (a Job that already "
                   "exists is left as it is and reported).")
@click.option("--kubeconfig", default=None, envvar="KUBECONFIG", metavar="FILE",
              help="Kubeconfig for --apply (default: $KUBECONFIG, else ~/.kube/config).")
@click.option("--context", "kube_context", default=None, metavar="NAME",
              help="Kubeconfig context for --apply (default: the current one).")
@click.pass_obj
def plan_cmd(ctx: Ctx, gpus_file, out, do_apply, kubeconfig, kube_context) -> None:
    from pipeline.fleet import plan as fleet_plan
    try:
        ff = fleet_plan.load_fleet(gpus_file)
        jobs = fleet_plan.plan(ff)
        files = fleet_plan.write_plan(jobs, out) if out else []
    except PipelineError as err:
        fail(ctx, err, code=2)
    if out is None and not ctx.json:
        click.echo(fleet_plan.to_yaml(jobs), nl=False)
    for f in files:
        ctx.echo(f"wrote {f}", err=out is None)
    applied = []
    if do_apply:
        try:
            applied = fleet_plan.apply(jobs, ff.namespace, kubeconfig=kubeconfig, context=kube_context)
        except PipelineError as err:
            fail(ctx, err)
        for a in applied:
            ctx.echo(f"{a['result']}: job/{a['job']} -n {a['namespace']}", err=out is None)
    ctx.emit({"ok": True, "namespace": ff.namespace, "registry": ff.registry,
              "jobs": [{"name": j["metadata"]["name"], "node_selector": j["spec"]["template"]["spec"]["nodeSelector"],
                        "image": j["spec"]["template"]["spec"]["containers"][0]["image"]} for j in jobs],
              "files": [str(f) for f in files], "applied": applied, "manifests": jobs})


COMMANDS = (fleet,)
