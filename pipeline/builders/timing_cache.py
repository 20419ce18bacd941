"""Where the TensorRT timing cache lives, and its lock.

The builder container keeps the cache on a named volume (ENGINES_TIMING_CACHE) that
every run mounts, whoever runs it: compose and `engines docker run` pass the host
user's uid:gid. A lock file and an atomically replaced cache file belong to the uid
that created them, and the volume's folder is sticky (mode 1777), so a second uid can
neither open the first one's lock nor rename over its cache (`PermissionError ... lock
file`). Each uid therefore keeps its own subfolder, ``uid-<n>``; timings are per GPU
anyway, so nothing useful is lost.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.fsutil import lock_for


def cache_folder(base: Path | str) -> Path:
    """This uid's folder under the shared cache folder."""
    return Path(base) / f"uid-{os.getuid()}"


def _owner(path: Path) -> str:
    try:
        return f"uid {path.stat().st_uid}"
    except OSError:
        return "another uid"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the cache file's lock; a lock this uid may not open is named with its owner."""
    path = Path(path)
    lock_file = path.parent / f".{path.name}.lock"
    try:
        lock = lock_for(path)
        lock.acquire()
    except PermissionError as exc:
        raise PipelineError(
            f"cannot lock the TensorRT timing cache: the lock file belongs to {_owner(lock_file)}, "
            f"this build runs as uid {os.getuid()} ({exc.strerror})", file=lock_file,
            fix="run the builder as the uid that owns the cache, point ENGINES_TIMING_CACHE at a folder "
                "of your own, or delete the stale cache (`docker volume rm <checkout folder>_timing-cache`); "
                "builds keep a cache per uid under it") from None
    try:
        yield
    finally:
        lock.release()
