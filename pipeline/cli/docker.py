"""`engines docker …`: the builder container through the Docker SDK.

`engines docker run` is what `docker compose -f docker-compose.build.yml run builder`
does, without needing compose: the models folder beside --config is mounted at
/workspace/models and the container's exit code becomes ours.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import click

from pipeline.cli.context import Ctx, common_options, fail
from pipeline.errors import PipelineError

# Host variables forwarded into the container, so `ENGINES_RUN_MODELS=human engines docker run`
# means what it means outside. ENGINES_CONFIG is rewritten to the in-container path.
_NOT_FORWARDED = {"ENGINES_CONFIG", "ENGINES_IMAGE", "ENGINES_TIMING_CACHE"}  # host paths/settings


def _forwarded_env(config_name: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k.startswith("ENGINES_") and k not in _NOT_FORWARDED}
    from pipeline.docker_runner import CONTAINER_MODELS
    env["ENGINES_CONFIG"] = f"{CONTAINER_MODELS}/{config_name}"
    return env


def _build_context(explicit: Path | None) -> Path | None:
    """Where to build from if the image is missing; None (pull instead) when no checkout is near."""
    from pipeline.docker_runner import find_build_context
    try:
        return find_build_context(explicit)
    except PipelineError:
        if explicit:
            raise
        return None


@click.group("docker")
def docker_group() -> None:
    """Run the pipeline inside the NGC TensorRT builder image (needs Docker).

    On a GPU host this needs the NVIDIA Container Toolkit; `make image` or
    `engines docker run --build` builds the image from Dockerfile.build.
    """


image_option = click.option(
    "--image", default=lambda: os.environ.get("ENGINES_IMAGE", "engines-builder:latest"),
    show_default="$ENGINES_IMAGE or engines-builder:latest",
    help="Builder image (tag or id).")


# the build args docker-compose.build.yml passes from the environment (tests/test_builder_container.py)
BUILD_ARGS = ("TRT_IMAGE", "EXPECTED_TRT_VERSION", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST")
_STAMPED = re.compile(r"\[\s*\d+(?:\.\d+)?s\] ")  # the stamp of pipeline.cli.context's log lines


@docker_group.command("run", context_settings={"ignore_unknown_options": True,
                                               "allow_interspersed_args": False})
@image_option
@click.option("--gpu/--no-gpu", default=True, show_default=True,
              help="Reserve one GPU for the container. --no-gpu suits commands that need none, among them "
                   "TensorRT for RTX builds (`run --backend tensorrt-rtx --target sm89`); full TensorRT needs the GPU.")
@click.option("--build/--no-build", default=True, show_default=True,
              help="Build the image from Dockerfile.build when it is not on this host "
                   "(--no-build: try to pull it instead).")
@click.option("--context", "build_context", type=click.Path(file_okay=False, path_type=Path),
              help="Build context holding Dockerfile.build (default: the current folder, "
                   "else the checkout this package runs from).")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder mounted read-write at /workspace/models (default: the folder of --config).")
@click.option("--user", help="uid:gid the container runs as (default: yours, so outputs stay yours).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def docker_run(ctx: Ctx, image: str, gpu: bool, build: bool, build_context: Path | None,
               models_dir: Path | None, user: str | None, args: tuple[str, ...]) -> None:
    """Run `engines ARGS...` in the builder container (default ARGS: `run`, all stages).

    Example: engines docker run run --model human
    """
    from pipeline import docker_runner as dr

    models_dir = models_dir or ctx.config_path.resolve().parent
    started = time.monotonic()
    stdout = ctx._out or sys.stdout  # the real stdout (with --json, sys.stdout is stderr meanwhile)

    def show(line: str) -> None:  # our progress and the container's stderr: stamped, on stderr
        # a line of the inner `engines` carries its own stamp (`[   1.2s] ...`): not a second one
        click.echo(line if _STAMPED.match(line) else f"[{time.monotonic() - started:6.0f}s] {line}", err=True)

    def forward(line: str) -> None:  # the container's stdout: ours, as it came
        click.echo(line, file=stdout)

    try:
        client = dr.connect()
        context = _build_context(build_context) if build else None
        # the same build args compose passes (docker-compose.build.yml), so both build alike
        buildargs = {k: os.environ[k] for k in BUILD_ARGS if os.environ.get(k)}
        dr.ensure_image(client, image, build_context=context, on_line=show, buildargs=buildargs)
        trt = dr.image_trt_version(client, image)
        ctx.echo(f"image {image} (TensorRT {trt or 'unknown'}), models {models_dir}, "
                 f"gpu {'on' if gpu else 'off'}", err=True)
        env = _forwarded_env(ctx.config_path.name)
        if ctx.json:
            env["ENGINES_AS_JSON"] = "1"  # `engines --json docker run ...`: the inner command's JSON
        code = dr.run_builder(models_dir, image, list(args), gpu=gpu, on_line=show, client=client,
                              user=user, environment=env, on_stdout=forward)
    except PipelineError as err:
        fail(ctx, err)
    except KeyboardInterrupt:
        click.echo("interrupted: the container was stopped and removed", err=True)
        raise click.exceptions.Exit(130) from None
    seconds = round(time.monotonic() - started, 1)
    # stdout is the inner command's (with --json its one document); ours goes to stderr
    click.echo(f"container exited with code {code} after {seconds}s", err=True)
    raise click.exceptions.Exit(code)


@docker_group.command("image-info")
@common_options
@image_option
@click.pass_obj
def docker_image_info(ctx: Ctx, image: str) -> None:
    """Show the builder image's TensorRT version (from its label; nothing runs)."""
    import docker
    from pipeline import docker_runner as dr

    try:
        client = dr.connect()
        try:
            img = client.images.get(image)
        except docker.errors.ImageNotFound:
            raise PipelineError(f"image {image} is not on this host",
                                fix="build it with `make image` or `engines docker run --build`") from None
    except PipelineError as err:
        fail(ctx, err)
    labels = img.labels or {}
    info = {"image": image, "id": img.short_id, "tensorrt": dr.runtime_from_labels(labels),
            "base_tensorrt": labels.get(dr.NVIDIA_TRT_LABEL),  # NVIDIA's label, inherited from the base
            "created": img.attrs.get("Created")}
    if ctx.json:
        ctx.emit({"ok": True, **info})
    else:
        for key, value in info.items():
            click.echo(f"{key:13} {value if value is not None else '(no label)'}")


COMMANDS = (docker_group,)
