"""The `engines` command line: a thin click layer over ``pipeline.api`` and the stages.

Every command is listed once, in ``COMMAND_MODULES`` below: one module per command or
group (``stages``, ``frames``, ``resolve``, ``registry``, ``fleet``, ``docker``). Shared options are
declared in ``options``, the context object and failures in ``context``; command modules
never import this file. Heavy imports (torch, ultralytics, TensorRT, docker, oras) happen
inside the commands that need them, so `engines resolve`, `engines list` and a fully
cached `engines run` start fast.
"""
from __future__ import annotations

import errno
import os

import click

from pipeline.cli import docker, fleet, frames, registry, resolve, stages, triton
from pipeline.cli.context import CONFIG_HELP, DEFAULT_CONFIG, JSON_HELP, Ctx, Failed, emit_usage_error, fail, json_asked
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
    def make_context(self, info_name, args, parent=None, **extra):
        words = list(args)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:   # the root's own options: no Ctx yet
            if json_asked(words):
                emit_usage_error(exc, None)
            raise

    def invoke(self, click_ctx: click.Context):
        # the subcommand's words, not yet parsed (click 8.2+ keeps the first in _protected_args)
        first = getattr(click_ctx, "_protected_args", None)
        words = [*(first if first is not None else click_ctx.protected_args), *click_ctx.args]
        try:
            return super().invoke(click_ctx)
        except click.UsageError as exc:   # a subcommand's options or variables, or an unknown command
            obj = click_ctx.obj if isinstance(click_ctx.obj, Ctx) else None
            if click_ctx.params.get("as_json") or json_asked(words, obj):
                emit_usage_error(exc, obj)
            raise
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
COMMAND_MODULES = (stages, frames, resolve, triton, registry, fleet, docker)
for _module in COMMAND_MODULES:
    for _cmd in _module.COMMANDS:
        cli.add_command(_cmd)


# ENGINES_* variables that no option reads but the pipeline, its containers or its scripts do
OTHER_ENV = {"ENGINES_AS_JSON", "ENGINES_CONFIG", "ENGINES_CONFIG_NAME", "ENGINES_IMAGE", "ENGINES_TIMING_CACHE",
             "ENGINES_MODELS_DIR", "ENGINES_MODELS_MOUNT", "ENGINES_REGISTRY", "ENGINES_REGISTRY_TIMEOUT",
             "ENGINES_EXPECT_TRT", "ENGINES_DOCKER_ROOT", "ENGINES_DOCKER_SOCK", "ENGINES_DOCKER_STORAGE",
             "ENGINES_DOCKER_HOST", "ENGINES_DOCKERD_STARTED"}


def _option_env(cmd: click.Command, prefix: str = "ENGINES"):
    """Name every option's environment variable after its spelling (``--trust-checkpoint`` of
    `run` -> ENGINES_RUN_TRUST_CHECKPOINT) and show it in --help. Also read, after it: the older
    name from click's parameter name where it differs (ENGINES_RUN_TRUST), and a shared name an
    option declares (ENGINES_LOCK_TIMEOUT, ENGINE_SET). Yields every name."""
    for p in cmd.params:
        if not isinstance(p, click.Option) or not p.name or not p.allow_from_autoenv:
            continue
        longest = max(p.opts, key=len).lstrip("-").replace("-", "_").upper()
        shared = [p.envvar] if isinstance(p.envvar, str) else list(p.envvar or [])
        names = list(dict.fromkeys([f"{prefix}_{longest}", f"{prefix}_{p.name.upper()}", *shared]))
        p.envvar = names if len(names) > 1 else names[0]
        p.show_envvar = True
        PRIMARY_ENV.add(names[0])
        yield from names
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _option_env(sub, f"{prefix}_{name.upper().replace('-', '_')}")


PRIMARY_ENV: set[str] = set()   # the name each option reads first (the one --help shows first)
OPTION_ENV = set(_option_env(cli))


def unknown_env(environ=os.environ) -> list[str]:
    """Warnings for ENGINES_* variables nothing reads (a misspelt ENGINES_RUN_TARGTS is not ignored in silence)."""
    known = OPTION_ENV | OTHER_ENV
    out = []
    for k in sorted(environ):
        if k.startswith("ENGINES_") and not k.startswith("ENGINES_TEST_") and k not in known:
            import difflib  # only when there is something to warn about
            near = difflib.get_close_matches(k, sorted(PRIMARY_ENV | OTHER_ENV), n=1)
            out.append(f"warning: {k} is not read by any `engines` option and is ignored"
                       + (f" (did you mean {near[0]}?)" if near else ""))
    return out


def main() -> None:
    os.environ.setdefault("YOLO_VERBOSE", "False")  # our own progress lines are enough
    for line in unknown_env():
        click.echo(line, err=True)
    # ENGINES_<COMMAND>_<OPTION> environment variables fill options (the compose files use them)
    cli(prog_name="engines", auto_envvar_prefix="ENGINES")
