"""`engines triton DIR`: a Triton model repository from the engine sets (issue 24).

Thin: choosing the sets is pipeline.deploy.pick.serve, writing the repository the Triton
deploy target (pipeline.deploy.targets.triton).
"""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import options
from pipeline.cli.context import Ctx, common_options, fail
from pipeline.errors import PipelineError, UsageProblem

TRITON_HELP = """Write a Triton Inference Server model repository into DIR from the engine sets.

\b
One Triton model per YOLO model: DIR/<model>/config.pbtxt (platform tensorrt_plan, the
tensors, batch profile and output layout the set records, Ultralytics' metadata for
YOLO("http://HOST:8000/<model>")) and DIR/<model>/<version>/<set>.plan, the raw plans
(Triton cannot read the .engine header). cc_model_filenames maps every compute
capability a set was built for to that set's plan, so sets for sm86, sm89 and sm90 of
one TensorRT version make one model with three plans.
\b
Sets: every set in the engines folder (pulled ones included) that passed, of one
TensorRT version (--runtime, else the only one there is), or those --set names. Left
out: failed, tampered and demo sets (--allow-demo takes demo ones).
\b
DIR: new, empty, or written by this command before; each write adds a version folder,
switches config.pbtxt to it and removes the older one. A DIR holding files this command
did not write is refused. DIR/engines-repository.json records the source sets and the
sha256 of every file; DIR/README.md names what is not served (the passthrough models).
\b
Exit status: 0 written; 1 refused (the message says why and what to do); 2 a usage error.
\b
Example: engines triton triton-repo --runtime tensorrt==10.13.3.9
"""


@click.command("triton", help=TRITON_HELP)
@common_options
@click.argument("dest", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--runtime", metavar="BACKEND==VERSION",
              help="The TensorRT of the Triton server (its image's release notes name it), e.g. tensorrt==10.13.3.9: "
                   "only sets built with it are served. Default: the only version among the sets.")
@click.option("--set", "tags", multiple=True, metavar="TAG",
              help="Serve exactly this set (a tag from `engines list`); repeat for several. Default: every set that "
                   "fits.")
@options.policy_options
@click.pass_obj
def triton_cmd(ctx: Ctx, dest: Path, runtime: str | None, tags: tuple[str, ...], **values) -> None:
    from pipeline.deploy import pick
    from pipeline.deploy.targets import TRITON
    try:
        chosen = pick.serve(ctx.config_path, dest, options.policy(values), runtime=runtime, tags=tags,
                            on_line=lambda line: ctx.echo(line, err=True))
    except PipelineError as err:   # a set that does not exist is a usage error (exit 2)
        fail(ctx, err, code=2 if isinstance(err, UsageProblem) else 1)
    ctx.echo(TRITON.summary(chosen, dest))
    ctx.emit({"repository": str(dest), "sets": [s.tag for s in chosen.sets], "left_out": chosen.refused,
              "record": str(dest / "engines-repository.json")})


COMMANDS = (triton_cmd,)
