"""`engines push` and `engines pull`: engine sets in an OCI registry.

Thin: the artifact layout and the transfer are pipeline.registry's; which set a host gets
is pipeline.deploy's (the rules of `engines resolve`). The oras SDK loads only when a
command runs.
"""
from __future__ import annotations

import click

from pipeline import api
from pipeline.cli import options
from pipeline.cli.context import Ctx, common_options, fail
from pipeline.cli.options import REF_HELP
from pipeline.cli.resolve import config_arg, report_choice
from pipeline.errors import PipelineError

PUSH_HELP = """Upload a complete engine set to an OCI registry as one artifact tagged with the set tag.

REGISTRY/REPO: {ref}

The set's manifest.json is the config blob, each file one layer titled with its path in
the set; annotations carry backend, TensorRT version, compute capabilities, GPU product,
CUDA version, driver, demo flag and verification status (docs/fleet.md "Registry"). Blobs the
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


@click.command("push", help=PUSH_HELP)
@common_options
@click.argument("ref", metavar="REGISTRY/REPO")
@options.set_option("to push. Default: the only set, else the one this machine's TensorRT and GPU can run, else "
                    "the one `current` points at.", name="tag")
@options.registry_options
@click.pass_obj
def push_cmd(ctx: Ctx, ref, tag, **values) -> None:
    try:
        out = api.push(ctx.config_path.parent / "engines", ref, tag, plain_http=values["plain_http"],
                       insecure=values["insecure"], log=ctx.progress if not ctx.json else (lambda m: None))
    except PipelineError as err:
        fail(ctx, err)
    if out["uploaded"] or out["tag_changed"]:
        ctx.echo(f"pushed {out['ref']} ({out['digest']}): {len(out['uploaded'])} blobs uploaded "
                 f"({out['uploaded_bytes'] / 2**20:.1f} MiB), {len(out['already_there'])} already there")
    else:
        ctx.echo(f"{out['ref']} is up to date ({out['digest']}): nothing uploaded")
    ctx.emit(out)


@click.command("pull", help=PULL_HELP)
@common_options
@click.argument("ref", metavar="REGISTRY/REPO")
@options.set_option("to consider, alone (it must still fit this host).", name="tag")
@click.option("--no-link", is_flag=True, help="Leave the `current` symlink as it is.")
@options.host_options
@options.policy_options
@options.registry_options
@options.LOCK_TIMEOUT
@click.pass_obj
def pull_cmd(ctx: Ctx, ref, tag, no_link, lock_timeout, **values) -> None:
    from pipeline.deploy import pick
    try:
        got = pick.pull(ctx.config_path, options.remote(ref, values), options.host_query(values),
                        options.policy(values), tag=tag, link=not no_link,
                        on_line=ctx.progress if not ctx.json else (lambda m: None), config_arg=config_arg(ctx),
                        lock_timeout=lock_timeout, on_wait=ctx.progress)   # a wait is shown even with --json
    except PipelineError as err:
        fail(ctx, err)
    res, link = got.resolution, str(got.link) if got.link else None
    report_choice(ctx, res, f"{'pulled' if got.downloaded else 'already here:'} {res.chosen.tag} from {ref}: "
                            f"{res.why()}", link)
    ctx.emit({**res.to_json(), "registry": ref, "downloaded": got.downloaded, "link": link})


COMMANDS = (push_cmd, pull_cmd)
