"""The `engines` command line: a thin click layer over ``pipeline.api`` and the stages.

Every command is listed once, in ``COMMAND_MODULES`` below: one module per command or
group (``stages``, ``resolve``, ``registry``, ``fleet``, ``docker``). Shared options are
declared in ``options``, the context object and failures in ``context``; command modules
never import this file. Heavy imports (torch, ultralytics, TensorRT, docker, oras) happen
inside the commands that need them, so `engines resolve`, `engines list` and a fully
cached `engines run` start fast.
"""
from __future__ import annotations

import errno
import os

import click

from pipeline.cli import docker, fleet, registry, resolve, stages
from pipeline.cli.context import CONFIG_HELP, DEFAULT_CONFIG, JSON_HELP, Ctx, Failed, fail
from pipeline.errors import PipelineError, UsageProblem

__all__ = ["DEFAULT_CONFIG", "Ctx", "cli", "fail", "main"]


def os_error(exc: OSError) -> PipelineError:
    """A file-system failure as a paragraph with the next step (no traceback)."""
    where = exc.filename or "?"
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return PipelineError(f"the disk is full while writing {where}", file=where,
                             fix=f"free space on the disk that holds {where} (`df -h {os.path.dirname(str(where)) or '.'}`)"
                                 ", or point --config at a models folder on a disk with room; what was already "
                                 "published is untouched")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "is on a read-only file system" if exc.errno == errno.EROFS else "is not writable by you"
        return PipelineError(f"{where} {why} ({exc.strerror})", file=where,
                             fix="make that folder writable for this user (the builder container runs as your "
                                 "uid), or pass --config pointing at a writable copy of the models folder")
    return PipelineError(f"{exc.strerror or exc} ({where})", file=where,
                         fix="check the path and its permissions, then run the command again")


class EnginesGroup(click.Group):
    def invoke(self, click_ctx: click.Context):
        try:
            return super().invoke(click_ctx)
        except OSError as exc:  # read-only folders, full disks: a paragraph, not a traceback
            obj = click_ctx.obj if isinstance(click_ctx.obj, Ctx) else Ctx(DEFAULT_CONFIG, False)
            raise Failed(obj, [os_error(exc)]) from None
        except PipelineError as err:  # a command that forgot to catch one: still a paragraph
            obj = click_ctx.obj if isinstance(click_ctx.obj, Ctx) else Ctx(DEFAULT_CONFIG, False)
            raise Failed(obj, [err], 2 if isinstance(err, UsageProblem) else 1) from None


@click.group(cls=EnginesGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config", default=DEFAULT_CONFIG, show_default=True, envvar="ENGINES_CONFIG",
              help=CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def cli(click_ctx: click.Context, config: str, as_json: bool) -> None:
    """Build, verify, tag and deploy TensorRT engines for the pyt-api-prod YOLO models.

    Stages: export (.pt -> ONNX), build (ONNX -> engine), verify (engine vs ONNX Runtime),
    then `resolve` picks the engine set matching a host before the API starts.
    --config and --json may also follow the command (`engines verify --json`).
    """
    click_ctx.obj = Ctx(config, as_json)
    click_ctx.call_on_close(click_ctx.obj.restore)


# the one list of commands, in the order `engines --help` shows them
COMMAND_MODULES = (stages, resolve, registry, fleet, docker)
for _module in COMMAND_MODULES:
    for _cmd in _module.COMMANDS:
        cli.add_command(_cmd)


def main() -> None:
    os.environ.setdefault("YOLO_VERBOSE", "False")  # our own progress lines are enough
    # ENGINES_<OPTION> environment variables fill options (the compose files use them)
    cli(prog_name="engines", auto_envvar_prefix="ENGINES")
