"""The `engines` command line: a thin click layer over the stages.

Heavy imports (torch, ultralytics, TensorRT) happen inside the commands that need them,
so `engines resolve`, `engines list` and a fully cached `engines run` start fast.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from .errors import PipelineError

DEFAULT_CONFIG = "models/models.yaml"


class Ctx:
    def __init__(self, config: str, as_json: bool):
        self.config_path = Path(config)
        self.json = as_json
        self._out = None
        self._t0 = time.perf_counter()
        if as_json:
            # Libraries (Ultralytics) print progress to stdout; with --json stdout carries
            # exactly one JSON document, so Python-level prints go to stderr meanwhile.
            self._out = sys.stdout
            sys.stdout = sys.stderr

    def config(self):
        from .config import load_config
        return load_config(self.config_path)

    def echo(self, msg: str = "", err: bool = False) -> None:
        """Human progress: silent with --json (machine output owns stdout)."""
        if not self.json:
            click.echo(msg, err=err)

    def progress(self, msg: str) -> None:
        """A stage's progress line, stamped with seconds since the command started (on
        stderr with --json, so long runs stay visible without touching the JSON)."""
        line = f"[{time.perf_counter() - self._t0:6.1f}s] {msg}"
        click.echo(line, err=self.json)

    def emit(self, obj: dict) -> None:
        if self.json:
            self._out.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
            self._out.flush()
            self._emitted = True


def fail(ctx: Ctx, err: PipelineError | list, code: int = 1):
    errors = err if isinstance(err, list) else [err]
    if ctx.json and not getattr(ctx, "_emitted", False):
        ctx.emit({"ok": False, "errors": [e.to_json() for e in errors]})
    for e in errors:
        click.echo(click.style("error: ", fg="red", bold=True) + e.render(), err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config", default=DEFAULT_CONFIG, show_default=True, envvar="ENGINES_CONFIG",
              help="models.yaml describing what to build; output folders (onnx/, engines/) sit beside it.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document on stdout instead of human progress.")
@click.pass_context
def cli(click_ctx: click.Context, config: str, as_json: bool) -> None:
    """Build, verify, tag and deploy TensorRT engines for the pyt-api-prod YOLO models.

    Stages: export (.pt -> ONNX), build (ONNX -> engine), verify (engine vs ONNX Runtime),
    then `resolve` picks the engine set matching a host before the API starts.
    """
    click_ctx.obj = Ctx(config, as_json)


def main() -> None:
    os.environ.setdefault("YOLO_VERBOSE", "False")  # our own progress lines are enough
    from . import commands  # noqa: F401  (registers the commands on `cli`)
    # ENGINES_<OPTION> environment variables fill options (the compose files use them)
    cli(prog_name="engines", auto_envvar_prefix="ENGINES")
