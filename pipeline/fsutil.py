"""Atomic writes, hashing and locks: every stage writes through these."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# --- scratch: every temporary a stage leaves beside its outputs names its owner ---------------------
# ``<host hash>-<pid>``: a process killed with -9 runs no cleanup, so the next run and `engines clean`
# remove what a dead process of this host left (a live one's, or another host's, is not touched).
_OWNER_RE = r"([0-9a-f]{8})-(\d+)"
INT8_SCRATCH = ".int8-"          # calibration and quantizer scratch (stages.quantize)
ACCURACY_SCRATCH = ".accuracy-"  # the validator's private dataset layout and outputs (checks.accuracy)
SCRATCH_PREFIXES = (INT8_SCRATCH, ACCURACY_SCRATCH)


def owner_tag() -> str:
    import socket
    import zlib
    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFFFFFF:08x}-{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user
        return True
    return True


def owner_state(name: str) -> str:
    """``dead`` (a process of this host that is gone), ``alive``, ``foreign`` (another host: cannot
    be checked from here) or ``unknown`` (no owner in the name) for a scratch file or folder name."""
    import re
    m = re.search(_OWNER_RE, name)
    if not m:
        return "unknown"
    if m.group(1) != owner_tag().split("-")[0]:
        return "foreign"
    return "alive" if pid_alive(int(m.group(2))) else "dead"


@contextlib.contextmanager
def scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A work folder ``<prefix><owner>-<random>`` in ``parent`` (beside the outputs, so a kill's
    leftover is found there), removed on the way out."""
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{owner_tag()}-", dir=parent) as tmp:
        yield Path(tmp)


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> list[str | None]:
    """sha256 of each file, a few at a time (hashlib lets go of the GIL, so every core hashes);
    None for a file that cannot be read (the caller says why, naming it). Plain threads: the
    executor of concurrent.futures imports logging and queue, more than it saves `engines resolve`."""
    out: list[str | None] = [None] * len(paths)
    todo = iter(range(len(paths)))

    def work() -> None:
        for i in todo:   # a shared iterator: each index is taken once (next() holds the GIL)
            try:
                out[i] = sha256_file(paths[i])
            except OSError:
                pass
    n = min(4, os.cpu_count() or 1, len(paths))
    if n < 2:
        work()
        return out
    import threading
    threads = [threading.Thread(target=work, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def sha256_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def atomic_path(dest: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it over ``dest`` only on success.

    The temp file lives in the same folder so the final ``os.replace`` is atomic; on any
    exception (Ctrl-C included) it is removed and ``dest`` keeps its previous content.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{owner_tag()}.", suffix=".tmp" + suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; published files are shared
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(dest: Path | str, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(dest: Path | str, obj: object) -> None:
    write_bytes_atomic(dest, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path | str) -> dict | None:
    """A JSON object from ``path``; None when the file is missing, not UTF-8 JSON, or not
    an object (a damaged record is treated as no record: the stage that needs it redoes it)."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def lock_for(path: Path | str, timeout: float = -1):
    """A lock file beside ``path`` (``.<name>.lock``), shared by every process (a
    ``filelock.FileLock``, imported here: `engines resolve` and `list` never lock)."""
    from filelock import FileLock
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.parent / f".{path.name}.lock"), timeout=timeout)


def check_writable(folder: Path) -> str | None:
    """Return a reason if ``folder`` (created if missing) cannot be written, else None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
        return None
    except OSError as exc:
        return f"{exc.strerror or exc}"
