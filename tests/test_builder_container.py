"""The builder container as operators run it (issue 9), parts that need no Docker daemon:
the timing cache shared by several uids, the Dockerfile's build-time checks, the compose
files' variables and the driver a CUDA 13 set needs.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]


def _as_uid(uid: int, fn) -> str:
    """Run fn() in a child process as uid:uid; return what it returned, or the error it raised."""
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
    import pipeline.fsutil  # noqa: F401  imported here: the child uids may not read the interpreter's files
    import pipeline.stages.build  # noqa: F401
    import pipeline.timing_cache  # noqa: F401
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
    from pipeline.fsutil import atomic_path
    from pipeline.timing_cache import locked
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
    from pipeline.timing_cache import locked
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
