"""`engines fleet plan`: the Kubernetes build matrix (thin: the plan is pipeline.fleet's).

``register(fleet_group)`` attaches the command to the `fleet` group that
``cli_registry`` defines (with `fleet status`); the kubernetes client loads only when
the command runs.
"""
from __future__ import annotations

from pathlib import Path

import click

from .cli_context import Ctx, common_options, fail
from .errors import PipelineError

PLAN_HELP = """Write one Kubernetes batch/v1 Job per cell of the GPU list (GPU product x builder image).

Each Job is pinned to its GPU type by the NVIDIA GPU Feature Discovery labels
(nvidia.com/gpu.product, or nvidia.com/gpu.compute.major/minor), asks for
nvidia.com/gpu: 1, copies the models in (from a PVC or an init-container image), then
runs the builder image's `engines`: `run --backend tensorrt`, `verify` on that GPU, and
`push` to the registry the file names. Non-root (uid 10001, as Dockerfile.build), small
backoffLimit, ttlSecondsAfterFinished. Registry credentials: a docker-registry Secret
(`registry_secret:`) mounted as ~/.docker/config.json. README "Fleet" shows the file.

Without --out the manifests go to stdout (`engines fleet plan --gpus gpus.yaml | kubectl apply -f -`).
"""


@click.command("plan", help=PLAN_HELP)
@common_options
@click.option("--gpus", "gpus_file", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="The GPU list (YAML): registry, models (pvc or image), registry_secret, namespace and the cells, "
                   "e.g. [{gpu: Tesla-T4, image: REGISTRY/engines-builder:25.08, trt: '10.13.2.6'}, "
                   "{compute_cap: '9.0', image: ...}].")
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
    from . import fleet
    try:
        ff = fleet.load_fleet(gpus_file)
        jobs = fleet.plan(ff)
        files = fleet.write_plan(jobs, out) if out else []
    except PipelineError as err:
        fail(ctx, err, code=2)
    if out is None and not ctx.json:
        click.echo(fleet.to_yaml(jobs), nl=False)
    for f in files:
        ctx.echo(f"wrote {f}", err=out is None)
    applied = []
    if do_apply:
        try:
            applied = fleet.apply(jobs, ff.namespace, kubeconfig=kubeconfig, context=kube_context)
        except PipelineError as err:
            fail(ctx, err)
        for a in applied:
            ctx.echo(f"{a['result']}: job/{a['job']} -n {a['namespace']}", err=out is None)
    ctx.emit({"ok": True, "namespace": ff.namespace, "registry": ff.registry,
              "jobs": [{"name": j["metadata"]["name"], "node_selector": j["spec"]["template"]["spec"]["nodeSelector"],
                        "image": j["spec"]["template"]["spec"]["containers"][0]["image"]} for j in jobs],
              "files": [str(f) for f in files], "applied": applied, "manifests": jobs})


def register(fleet_group: click.Group) -> None:
    """Attach `plan` to the `fleet` group (cli_registry's, beside `fleet status`)."""
    fleet_group.add_command(plan_cmd)
