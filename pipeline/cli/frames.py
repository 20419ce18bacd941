"""`engines frames`: calibration frames from camera recordings (``pipeline.video_frames``)."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.context import Ctx, common_options, fail
from pipeline.errors import PipelineError


@click.command("frames")
@common_options
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder the frames are written to (created if missing), e.g. models/calib/line1: "
                   "then calibration: {images: calib/line1} in models.yaml.")
@click.option("--every", type=click.IntRange(min=1), default=30, show_default=True,
              help="Keep one frame in N (30: one a second of a 30 fps recording); spread frames over hours "
                   "and lighting rather than taking many from one minute.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Stop after this many frames in all (the calibration uses at most calibration: count, "
                   "512 by default).")
@click.pass_obj
def frames_cmd(ctx: Ctx, videos, out, every, limit) -> None:
    """Write every Nth frame of camera recordings as JPEG images for INT8 calibration.

    Frames are named <video>_<frame>.jpg, so running it again replaces them. Calibration
    images need no labels; for the accuracy gate's labelled set see docs/precision.md.
    """
    from pipeline.video_frames import extract_frames
    try:
        res = extract_frames(videos, out, every=every, limit=limit, log=ctx.progress)
    except PipelineError as err:
        fail(ctx, err)
    ctx.echo(f"{len(res.written)} frames in {res.out}")
    ctx.emit({"ok": True, **res.to_json()})


COMMANDS = (frames_cmd,)
