"""`engines resolve --build-missing`: build the set this host lacks, as its builder says
(``Builder.missing_build``): a local `engines run` for a builder that needs no GPU of its
own kind, the builder container on this GPU for the full TensorRT. Kept apart from the
pure rules (``deploy.rules``), which only judge."""
from __future__ import annotations

import shlex
from pathlib import Path

from pipeline.builders import builder_named
from pipeline.deploy.rules import missing_tag, refusal
from pipeline.errors import PipelineError
from pipeline.runtime import BUILDER_CMD, DEFAULT_IMAGE


def build_missing(res, models_dir: Path, builder_image: str | None, on_line=print,
                  config_name: str = "models.yaml") -> int:
    """Build the set ``res`` (a refused rules.Resolution) lacks; returns the build's exit code."""
    gpu, rt = res.gpu, res.runtime
    builder = builder_named(rt.backend)
    if not builder.builds_for(gpu.compute_cap):
        raise refusal(res)
    how = builder.missing_build(gpu)
    if how.argv is not None:
        import subprocess
        import sys
        cmd = [sys.executable, "-m", "pipeline", "--config", str(models_dir / config_name), *how.argv]
        on_line("running: " + " ".join(shlex.quote(c) for c in cmd))
        return subprocess.call(cmd, stdout=sys.stderr)  # stdout stays ours (--json)
    try:
        from pipeline import docker_runner
    except ImportError as exc:
        raise PipelineError(f"cannot run the builder container ({exc})",
                            fix=f"build the set by hand: `{BUILDER_CMD}`") from None
    image = builder_image or DEFAULT_IMAGE
    label = docker_runner.image_trt_version(docker_runner.connect(), image)
    if label and label != rt.version:  # building would only produce a set resolve refuses
        major = rt.version.split(".")[0]
        raise PipelineError(f"the builder image {image} carries TensorRT {label}, the service runs {rt.version}",
                            fix=f"build the builder image of TensorRT {major} (`make image TRT={major}`: "
                                f"engines-builder:trt{major}; other releases: TRT_IMAGE/EXPECTED_TRT_VERSION in "
                                f"Dockerfile.build) and pass it with --builder-image engines-builder:trt{major}")
    args = ["--config", f"{docker_runner.CONTAINER_MODELS}/{config_name}", *how.container_args]
    on_line(f"building {missing_tag(gpu, rt)} in {image}: engines {' '.join(args)}")
    return docker_runner.run_builder(models_dir, image, args, gpu=True, on_line=on_line)
