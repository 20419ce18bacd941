"""What every `engines` command shares: the context object, failures as click
exceptions, the options that also work after the subcommand, and parameter types.

Command modules import from here (never from ``cli``), and ``cli`` registers them, so
the import graph has no circle.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from pipeline.errors import PipelineError

DEFAULT_CONFIG = "models/models.yaml"


class Ctx:
    def __init__(self, config: str, as_json: bool):
        self.config_path = Path(config)
        self.json = False
        self._out = None
        self._emitted = False
        self._t0 = time.perf_counter()
        if as_json:
            self.set_json()

    def set_json(self) -> None:
        if self.json:
            return
        # Libraries (Ultralytics) print progress to stdout; with --json stdout carries
        # exactly one JSON document, so Python-level prints go to stderr meanwhile.
        self.json = True
        self._out = sys.stdout
        sys.stdout = sys.stderr

    def restore(self) -> None:
        if self._out is not None:
            sys.stdout = self._out

    def config(self):
        from pipeline.config import load_config
        return load_config(self.config_path)

    def echo(self, msg: str = "", err: bool = False) -> None:
        """Human progress: silent with --json (machine output owns stdout)."""
        if not self.json:
            click.echo(msg, err=err)

    def progress(self, msg: str) -> None:
        """A stage's progress line, stamped with seconds since the command started (on
        stderr with --json, so long runs stay visible without touching the JSON)."""
        click.echo(f"[{time.perf_counter() - self._t0:6.1f}s] {msg}", err=self.json)

    def emit(self, obj: dict) -> None:
        if self.json:
            self._out.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
            self._out.flush()
            self._emitted = True


class Failed(click.ClickException):
    """One or more PipelineErrors, rendered as paragraphs on stderr (and as JSON on
    stdout with --json when the command emitted nothing yet). Exit 1, or 2 for usage."""

    def __init__(self, ctx: Ctx, errors: list[PipelineError], code: int = 1):
        super().__init__("; ".join(e.what for e in errors))
        self.exit_code = code
        self.errors = errors
        if ctx.json and not ctx._emitted:
            ctx.emit({"ok": False, "errors": [e.to_json() for e in errors]})

    def show(self, file=None) -> None:
        for e in self.errors:
            click.echo(click.style("error: ", fg="red", bold=True) + e.render(), err=True)


def json_asked(args: list[str], obj: Ctx | None = None) -> bool:
    """Whether --json was asked for, also when click refused the command line before reading it."""
    import os
    if obj is not None and obj.json:
        return True
    words = args[:args.index("--")] if "--" in args else args
    return "--json" in words or os.environ.get("ENGINES_AS_JSON", "").strip().lower() in ("1", "true", "yes", "on")


def emit_usage_error(exc: click.UsageError, obj: Ctx | None) -> None:
    """Under --json, a usage error (a refused option, variable or command) as the one JSON document
    on stdout; click still prints its own message on stderr and exits 2."""
    from pipeline.errors import UsageProblem
    cmd = exc.ctx.command_path if exc.ctx is not None else "engines"
    err = UsageProblem(exc.format_message(), fix=f"see `{cmd} --help` for the accepted values")
    doc = {"ok": False, "errors": [err.to_json()]}
    if obj is not None and obj.json:
        if not obj._emitted:
            obj.emit(doc)
        return
    out = obj._out if obj is not None and obj._out is not None else sys.stdout
    out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    out.flush()
    if obj is not None:
        obj._emitted = True


def fail(ctx: Ctx, err: PipelineError | list, code: int = 1):
    raise Failed(ctx, err if isinstance(err, list) else [err], code)


def _set_config(click_ctx: click.Context, _param, value):
    if value is not None and click_ctx.obj is not None:
        click_ctx.obj.config_path = Path(value)


def _set_json(click_ctx: click.Context, _param, value):
    if value and click_ctx.obj is not None:
        click_ctx.obj.set_json()


CONFIG_HELP = "models.yaml describing what to build; output folders (onnx/, engines/) sit beside it."
JSON_HELP = "Print one JSON document on stdout instead of human progress."


def common_options(fn):
    """--config and --json after the subcommand too (`engines verify --json`)."""
    fn = click.option("--json", "_json", is_flag=True, expose_value=False, callback=_set_json, is_eager=True,
                      allow_from_autoenv=False, help=JSON_HELP)(fn)
    fn = click.option("--config", "_config", default=None, expose_value=False, callback=_set_config,
                      is_eager=True, allow_from_autoenv=False, metavar="PATH",
                      help=CONFIG_HELP + " Same as the option before the command.")(fn)
    return fn
