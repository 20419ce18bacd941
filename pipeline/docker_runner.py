"""Run the builder container through the Docker SDK (`engines docker run`).

The same image and mounts as `docker compose -f docker-compose.build.yml run builder`,
for scripts and for `engines resolve --build-missing`: find or build the image, run it
with one GPU, the models folder mounted read-write and the caller's uid:gid, stream its
log lines, return its exit code, and remove the container however the run ends.

`docker` is imported inside the functions so that importing this module stays cheap.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.runtime import DEFAULT_IMAGE, NVIDIA_TRT_LABEL, RTX_LABEL, TRT_LABEL, Runtime, parse_runtime  # noqa: F401

ROLE_LABEL = "org.engines.role"          # set on every container we start, to find strays
CONTAINER_MODELS = "/workspace/models"
DOCKERFILE = "Dockerfile.build"

TOOLKIT_FIX = (
    "install the NVIDIA Container Toolkit on this host and register it with Docker: "
    "`sudo apt-get install -y nvidia-container-toolkit && "
    "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker` "
    "(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html); "
    "check with `docker run --rm --gpus all <image> nvidia-smi`. "
    "Without a GPU, `--no-gpu` runs still build TensorRT for RTX sets (`engines docker run --no-gpu run "
    "--backend tensorrt-rtx --target sm89`), but not full TensorRT engines")


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def daemon_error(exc: BaseException) -> PipelineError:
    """Translate a docker-py failure into what failed and the next step."""
    explanation = str(getattr(exc, "explanation", None) or exc)  # the daemon's own words
    text = f"{exc} {explanation}"
    if "could not select device driver" in text:
        return PipelineError("Docker could not give the container a GPU: "
                             "no device driver answers for capabilities [[gpu]]",
                             details=[f"daemon: {explanation}"], fix=TOOLKIT_FIX)
    host = _docker_host()
    if "Permission denied" in text or isinstance(getattr(exc, "__context__", None), PermissionError):
        return PipelineError(f"permission denied on the Docker socket ({host})",
                             fix="add yourself to the docker group (`sudo usermod -aG docker $USER`, "
                                 "then log out and in), use rootless Docker, or run as root")
    if "Error while fetching server API version" in text or "Connection refused" in text \
            or "No such file or directory" in text:
        return PipelineError(f"cannot reach the Docker daemon at {host}",
                             details=[explanation],
                             fix="start Docker (`sudo systemctl start docker`; in CI "
                                 "`eval \"$(bash .ci/start-dockerd.sh .venv)\"`) or point DOCKER_HOST at "
                                 "a running daemon")
    return PipelineError(f"the Docker daemon refused the request: {explanation}",
                         fix="read the daemon's message above; `docker info` shows its state")


def connect():
    """A client for the daemon named by DOCKER_HOST (or the default socket), pinged."""
    import docker
    try:
        client = docker.from_env()
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        raise daemon_error(exc) from exc


def find_build_context(explicit: Path | str | None = None, dockerfile: str = DOCKERFILE) -> Path:
    """The folder holding the Dockerfile: `explicit`, else the current folder, else this checkout."""
    candidates = [Path(explicit)] if explicit else [Path.cwd(), Path(__file__).resolve().parents[1]]
    for ctx in candidates:
        if (ctx / dockerfile).is_file():
            return ctx
    raise PipelineError(f"no {dockerfile} to build the builder image from", file=candidates[0] / dockerfile,
                        fix="run from the repository root, pass --context, or build it with `make image`")


def ensure_image(client, image: str, build_context: Path | str | None = None,
                 dockerfile: str = DOCKERFILE, on_line: Callable[[str], None] | None = None,
                 buildargs: dict | None = None):
    """Return the local image; build it from `build_context` if given and missing, else pull it."""
    import docker
    try:
        return client.images.get(image)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.DockerException as exc:
        raise daemon_error(exc) from exc
    if build_context is not None:
        ctx = find_build_context(build_context, dockerfile)
        return _build(client, image, ctx, dockerfile, on_line or (lambda _l: None), buildargs or {})
    try:
        return client.images.pull(image)
    except docker.errors.DockerException as exc:
        raise PipelineError(f"image {image} is not on this host and cannot be pulled",
                            details=[str(getattr(exc, "explanation", None) or exc)],
                            fix="build it here (`make image`, or `engines docker run --build`), or "
                                "`docker login nvcr.io` / check the name and the network, then retry") from exc


def _build(client, image: str, ctx: Path, dockerfile: str, on_line, buildargs: dict):
    import docker
    on_line(f"building {image} from {ctx / dockerfile} (first build pulls the NGC base image)")
    step = ""
    try:
        for chunk in client.api.build(path=str(ctx), dockerfile=dockerfile, tag=image, rm=True,
                                      decode=True, buildargs=buildargs):
            if "error" in chunk:
                base = _from_image(step, ctx / dockerfile, buildargs)
                if base:
                    raise PipelineError(f"building image {image} failed: cannot pull the base image {base}",
                                        details=[chunk["error"].strip()], file=ctx / dockerfile,
                                        fix="`docker login nvcr.io` (an NGC API key as password) and check that "
                                            f"this host reaches the registry (`docker pull {base}`); or set "
                                            "TRT_IMAGE to an image that is here (`docker images`)")
                raise PipelineError(f"building image {image} failed: {chunk['error'].strip()}",
                                    file=ctx / dockerfile,
                                    fix="fix the failing step above; `make image` shows the same build")
            for line in chunk.get("stream", "").splitlines():
                if line.strip():
                    step = line if line.startswith("Step ") else step
                    on_line(line)
        return client.images.get(image)
    except docker.errors.DockerException as exc:
        raise daemon_error(exc) from exc


def runtime_from_labels(labels: dict | None) -> str | None:
    """The runtime image labels name: a bare full-TensorRT version, or ``tensorrt-rtx==X``."""
    labels = labels or {}
    for name in (TRT_LABEL, RTX_LABEL, NVIDIA_TRT_LABEL):
        value = str(labels.get(name) or "").strip().strip("\"'").strip()
        if value:
            return f"tensorrt-rtx=={value}" if name == RTX_LABEL and "==" not in value else value
    return None


def _from_image(step: str, dockerfile: Path, buildargs: dict) -> str | None:
    """The base image a failing `FROM` step names (build arguments and ARG defaults filled in)."""
    import re
    if " : FROM " not in step:
        return None
    name = step.split(" : FROM ", 1)[1].split()[0]
    try:
        defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dockerfile.read_text(), re.M))
    except OSError:
        defaults = {}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: buildargs.get(m.group(1)) or defaults.get(m.group(1), m.group(0)), name)


def image_trt_version(client, image: str) -> str | None:
    """The TensorRT the image was built with, read from its labels (nothing runs): ours, else
    TensorRT for RTX's as ``tensorrt-rtx==X``, else NVIDIA's ``com.nvidia.tensorrt.version``."""
    import docker
    try:
        return runtime_from_labels(client.images.get(image).labels)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as exc:
        raise daemon_error(exc) from exc


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Whole lines from a log stream whose chunks can split lines anywhere."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        *done, buf = buf.split(b"\n")
        for raw in done:
            yield raw.decode("utf-8", "replace").rstrip("\r")
    if buf:
        yield buf.decode("utf-8", "replace").rstrip("\r")


def _demuxed_lines(frames: Iterable[tuple[bytes | None, bytes | None]]) -> Iterator[tuple[bool, str]]:
    """(is_stdout, line) from a demultiplexed attach stream: whole lines, order kept per stream."""
    bufs = {True: b"", False: b""}
    for out, err in frames:
        for is_out, chunk in ((True, out), (False, err)):
            if not chunk:
                continue
            bufs[is_out] += chunk
            *done, bufs[is_out] = bufs[is_out].split(b"\n")
            for raw in done:
                yield is_out, raw.decode("utf-8", "replace").rstrip("\r")
    for is_out, rest in bufs.items():
        if rest:
            yield is_out, rest.decode("utf-8", "replace").rstrip("\r")


COMPOSE_FILE = "docker-compose.build.yml"


def compose_project(checkout: Path | str | None = None) -> str:
    """The compose project docker-compose.build.yml runs under: COMPOSE_PROJECT_NAME, else the name of
    the checkout's folder as compose normalises it (lower case, only a-z 0-9 _ -). One per checkout,
    so one user's `down --remove-orphans` never touches another checkout's builder."""
    import re
    explicit = os.environ.get("COMPOSE_PROJECT_NAME", "").strip()
    if explicit:
        return explicit
    if checkout is None:
        here = [Path.cwd(), Path(__file__).resolve().parents[1]]
        checkout = next((c for c in here if (c / COMPOSE_FILE).is_file()), here[-1])
    name = re.sub(r"[^a-z0-9_-]", "", Path(checkout).resolve().name.lower()).lstrip("_-")
    return name or "engines"


def timing_cache_volume(checkout: Path | str | None = None) -> str:
    """The compose run's timing-cache volume (``<project>_timing-cache``), shared with `engines docker run`."""
    return f"{compose_project(checkout)}_timing-cache"


def run_builder(models_dir: Path, image: str, args: list[str], gpu: bool = True,
                on_line: Callable[[str], None] = print, client=None, user: str | None = None,
                environment: dict | None = None, on_stdout: Callable[[str], None] | None = None) -> int:
    """Run `image` with `args` and return its exit code; the container never outlives the call.

    Log lines go to `on_line`; with `on_stdout`, the container's stdout lines go there instead
    (and only its stderr to `on_line`), so the inner command's stdout (`--json`) stays apart.

    The container is removed after success, failure, a daemon error and KeyboardInterrupt
    (including one raised by `on_line`), so Ctrl-C leaves nothing running on the GPU.
    """
    import docker
    models_dir = Path(models_dir).resolve()
    if not models_dir.is_dir():
        raise PipelineError("models folder not found", file=models_dir,
                            fix="pass --models-dir, or --config pointing at a models.yaml in that folder")
    client = client or connect()
    kwargs = {
        "command": list(args) or None,  # None keeps the image's CMD (`run`)
        "user": user or f"{os.getuid()}:{os.getgid()}",
        # the same mounts and shared memory as docker-compose.build.yml: the timing cache
        # lives in the named volume the compose run uses, so both share it
        "volumes": {str(models_dir): {"bind": CONTAINER_MODELS, "mode": "rw"},
                    timing_cache_volume(): {"bind": "/workspace/.cache/tensorrt", "mode": "rw"}},
        "shm_size": "2g",
        "init": True,  # docker-init as PID 1 forwards signals (compose: `init: true`)
        "working_dir": "/workspace", "environment": environment or {},
        "labels": {ROLE_LABEL: "builder"}, "detach": True,
    }
    if gpu:
        kwargs["device_requests"] = [docker.types.DeviceRequest(capabilities=[["gpu"]], count=1)]
    container = None
    try:
        container = client.containers.create(image, **kwargs)
        if on_stdout is None:
            container.start()
            for line in _lines(container.logs(stream=True, follow=True, stdout=True, stderr=True)):
                on_line(line)
        else:  # attached before the start (as `docker start -a`): the two streams apart, nothing missed
            frames = container.attach(stdout=True, stderr=True, stream=True, logs=False, demux=True)
            container.start()
            for is_out, line in _demuxed_lines(frames):
                (on_stdout if is_out else on_line)(line)
        return int(container.wait().get("StatusCode", 1))
    except docker.errors.ImageNotFound as exc:
        raise PipelineError(f"image {image} is not on this host",
                            fix="build it (`make image`, or `engines docker run --build`)") from exc
    except docker.errors.DockerException as exc:
        raise daemon_error(exc) from exc
    finally:
        if container is not None:
            _remove(container)


def _remove(container) -> None:
    import docker
    try:
        container.remove(force=True)  # force: also kills it when we leave early (Ctrl-C)
    except docker.errors.NotFound:
        pass


def image_runtime(image: str) -> Runtime:
    """The TensorRT version of a service image, from its label (nothing runs)."""
    try:
        version = image_trt_version(connect(), image)
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001  (no Docker SDK, no daemon: any failure means the same)
        raise PipelineError(f"cannot read the TensorRT version of image {image} ({exc})",
                            fix="start Docker, or pass `--runtime tensorrt==X`") from None
    if not version:
        raise PipelineError(f"image {image} is not here or has no label {TRT_LABEL} "
                            "(nor org.engines.tensorrt-rtx.version, com.nvidia.tensorrt.version)",
                            fix=f"`docker pull {image}`, or pass `--runtime tensorrt==X` (the TensorRT the "
                                "image runs: `python -c 'import tensorrt; print(tensorrt.__version__)'` in it)")
    return parse_runtime(version, f"image {image}") if "==" in str(version) \
        else Runtime("tensorrt", str(version).strip(), f"label {TRT_LABEL} of image {image}")
