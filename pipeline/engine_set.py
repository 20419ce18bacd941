"""Engine sets: layout, tag, lookup, lock and atomic publish.

A set lives in ``models/engines/<tag>/`` and mirrors the source layout
(``yolo/yolov8n.pt`` -> ``yolo/yolov8n.engine`` + ``yolo/yolov8n.plan``). Its
``manifest.json`` (typed records and verdicts: ``pipeline.manifest``) is the contract
with ``engines resolve``, the registry and the production compose file; this module is
the only one that reads or writes that file.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.builders import builder_for_tag, builder_named
from pipeline.errors import PipelineError
from pipeline.fsutil import lock_for, sha256_file, sha256_files, write_json_atomic
from pipeline.manifest import BACKENDS, ManifestError, SetManifest  # noqa: F401  (BACKENDS: the builders' list)
from pipeline.runtime import BUILDER_CMD

MANIFEST = "manifest.json"
REPORT = "report.md"
SET_FILES = (MANIFEST, REPORT)   # names a set owns at its top level


def make_tag(backend: str, version: str, targets: list[str], compatibility: str | None = None) -> str:
    """``trt-10.13.3.9-sm90``, ``trtrtx-1.7.1.116-sm86_89_120``; for the portable tiers
    ``trt-10.13.3.9-sm80plus`` (``compatibility: ampere_plus``, any GPU of compute capability 8.0 or
    newer) and ``trt-11.2.1.2-sm86cc`` (``same_compute_capability``, any GPU of compute capability 8.6).
    The builder owns its prefix (pipeline.builders)."""
    return builder_named(backend).tag(version, targets, compatibility)


def rebuild_command(tag: str, config_arg: str = "") -> str:
    """The command that builds the set ``tag`` again, read from the tag alone (so it also
    works for a set whose manifest is damaged): its builder's, from the tag's GPU part."""
    found = builder_for_tag(tag)
    m = re.fullmatch(r"sm(\d+(?:_\d+)*)", found[1]) if found else None
    if found:
        return found[0].rebuild_command(m.group(1) if m else None, config_arg)
    return f"{BUILDER_CMD} run --force   (on a GPU of the set's type)"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class EngineSet:
    path: Path
    manifest: SetManifest

    @property
    def tag(self) -> str:
        return self.manifest.tag

    @property
    def models(self) -> dict:
        return self.manifest.engines

    @property
    def demo(self) -> bool:
        return self.manifest.demo

    def status(self, gpu_name: str | None = None) -> str:
        return self.manifest.status(gpu_name)

    def files(self) -> dict[str, str]:
        return self.manifest.files()

    def check_files(self) -> list[str]:
        """Problems found comparing the files on disk with the manifest's sha256."""
        problems = []
        files = self.files()
        present = [rel for rel in files if (self.path / rel).is_file()]
        found = dict(zip(present, sha256_files([self.path / rel for rel in present])))
        for rel, digest in files.items():
            if rel not in found:
                problems.append(f"{rel}: missing")
            elif found[rel] != digest:
                problems.append(f"{rel}: sha256 differs from the manifest (tampered or corrupt)")
        return problems


def entry_intact(set_dir: Path, entry) -> bool:
    """The entry's engine and plan are in the set as its manifest says (also for an entry
    marked failed by a re-judgement, whose files stay in place)."""
    return all(entry.sha256.get(k) and (set_dir / getattr(entry, k)).is_file()
               and sha256_file(set_dir / getattr(entry, k)) == entry.sha256[k] for k in ("engine", "plan"))


ENGINE_SUFFIXES = (".engine", ".plan")


def referenced_files(manifest: SetManifest) -> set[str]:
    """Every path the manifest names: each entry's engine and plan (a failed entry's too: a
    re-judged one keeps its files) and each passthrough file."""
    refs = {getattr(e, k) for e in manifest.engines.values() for k in ("engine", "plan") if getattr(e, k, None)}
    return refs | {p.file for p in manifest.passthrough.values()}


def unlisted_files(set_dir: Path, manifest: SetManifest) -> list[str]:
    """Engine and plan files in the set that its manifest does not name (a model since
    removed from models.yaml, or a ``source:`` path since corrected), relative to the set."""
    if not set_dir.is_dir():
        return []
    refs = referenced_files(manifest)
    return sorted(rel for f in set_dir.rglob("*")
                  if f.suffix in ENGINE_SUFFIXES and f.is_file() and not f.name.startswith(".")
                  and (rel := f.relative_to(set_dir).as_posix()) not in refs)


@dataclass
class BrokenSet:
    """A folder with a manifest.json that cannot be used, and why (listed, never chosen)."""
    path: Path
    reason: str

    @property
    def tag(self) -> str:
        return self.path.name


def read_manifest(path: Path) -> SetManifest:
    """Parse and check ``path/manifest.json``; ManifestError says what is wrong."""
    import json
    f = path / MANIFEST
    try:
        data = json.loads(f.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ManifestError("no manifest.json: not an engine set", file=path,
                            fix="run `engines list` to see the sets, or `make engines`") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest.json is not valid JSON ({exc})", file=f,
                            fix=f"the set is damaged: rebuild it (`{rebuild_command(path.resolve().name)}`) or "
                                "remove the folder") from None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest.json ({exc.strerror or exc})", file=f,
                            fix="check the folder's permissions") from None
    try:
        m = SetManifest.from_dict(data)
    except ManifestError as err:   # re-raised as a new error that names the file (never edited)
        raise ManifestError(err.what, file=err.file or f, details=err.details,
                            fix=err.fix or f"the set is damaged: rebuild it (`{rebuild_command(path.resolve().name)}`) "
                                           "or remove the folder") from None
    name = path.resolve().name   # through the `current` link to the folder itself
    if m.tag != name:   # a copied or renamed folder: its manifest vouches for another set
        twin = path.resolve().parent / m.tag
        raise ManifestError(f"the folder is named {name} but its manifest.json is for set {m.tag} (copied or "
                            "renamed by hand)", file=f,
                            fix=f"remove this folder: {m.tag}/ is here already" if twin.exists() else
                            f"rename the folder back to {m.tag}/, or remove it and rebuild (`engines run --force`)")
    return m


def load_set(path: Path) -> EngineSet | None:
    """The set at ``path``, or None when it has no manifest; raises on a damaged one."""
    if not (path / MANIFEST).exists():
        return None
    return EngineSet(path, read_manifest(path))


def scan_sets(engines_dir: Path) -> tuple[list[EngineSet], list[BrokenSet]]:
    """Every set folder under ``engines_dir``: the usable ones and the damaged ones."""
    if not engines_dir.is_dir():
        return [], []
    sets, broken = [], []
    for d in sorted(engines_dir.iterdir()):
        if d.is_dir() and not d.is_symlink() and not d.name.startswith(".") and (d / MANIFEST).exists():
            try:
                sets.append(EngineSet(d, read_manifest(d)))
            except ManifestError as err:
                broken.append(BrokenSet(d, err.what))
    return sets, broken


def list_sets(engines_dir: Path) -> list[EngineSet]:
    """Every usable published set under ``engines_dir``."""
    return scan_sets(engines_dir)[0]


class LockTimeout(PipelineError):
    """Another process held a set's lock for longer than the timeout: ``resolve --from`` may
    fall back on the sets already on disk, as on a registry outage."""


def set_lock(set_dir: Path, timeout: float | None = None, log: Callable[[str], None] | None = None):
    """Serialises two builders (or a builder and verify) on the same set. Waiting on
    another process says so (with its pid); ``timeout`` seconds (None: forever) bound it."""
    import contextlib

    from filelock import Timeout

    @contextlib.contextmanager
    def held():
        lock = lock_for(set_dir, timeout=0)
        # the holder's pid, beside the lock (filelock truncates the lock file itself on every try)
        holder = set_dir.parent / f".{set_dir.name}.holder.lock"
        t0 = time.monotonic()
        try:
            lock.acquire(timeout=0)
        except Timeout:
            try:
                pid = holder.read_text().strip() or "?"
            except OSError:
                pid = "?"
            if log:
                log(f"waiting for the lock on {set_dir.name}: process {pid} is building, verifying or pulling it"
                    + (f" (at most {timeout:g}s)" if timeout is not None else ""))
            try:
                lock.acquire(timeout=-1 if timeout is None else max(timeout - (time.monotonic() - t0), 0))
            except Timeout:
                raise LockTimeout(f"another process (pid {pid}) holds the lock on engine set {set_dir.name} "
                                  f"for more than {timeout:g}s", file=lock.lock_file,
                                  fix=f"wait for it to finish (`ps -p {pid}`), or raise --lock-timeout "
                                      "(ENGINES_LOCK_TIMEOUT)") from None
        try:   # atomic: a waiter reads the old pid or ours, never an empty file
            tmp = holder.with_name(f"{holder.name}.{os.getpid()}.tmp")
            tmp.write_text(str(os.getpid()))
            os.replace(tmp, holder)
        except OSError:
            pass
        try:
            yield lock
        finally:
            try:   # before the release: a pid there always names a live holder or none
                holder.unlink(missing_ok=True)
            except OSError:
                pass
            lock.release()
    return held()


def new_manifest(tag: str, backend: str, version: str, targets: list[str], gpu: dict | None) -> SetManifest:
    from pipeline.manifest import new_manifest as _new
    return _new(tag, backend, version, targets, gpu, now_iso())


def write_manifest(set_dir: Path, manifest: SetManifest) -> None:
    manifest.updated = now_iso()
    write_json_atomic(set_dir / MANIFEST, manifest.to_dict())


def install_file(src: Path, set_dir: Path, rel: str) -> str:
    """Copy ``src`` into the set at ``rel`` atomically; return its sha256."""
    dest = set_dir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.tmp"
    try:
        shutil.copyfile(src, tmp)
        digest = sha256_file(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest


def clone_tree(src: Path, dst: Path) -> None:
    """Copy a published set by hard links (published files are never modified in place,
    so sharing inodes is safe); falls back to a copy across filesystems."""
    for f in src.rglob("*"):
        if f.is_dir() or f.name.startswith("."):
            continue
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_in(new_dir: Path, set_dir: Path) -> None:
    """Replace ``set_dir`` with the complete ``new_dir`` in one step: readers see the old
    set or the new one, never a mix. The old generation ends up at ``new_dir`` (caller
    removes it)."""
    if not set_dir.exists():
        os.rename(new_dir, set_dir)
    elif not _rename_exchange(new_dir, set_dir):  # non-Linux: a short window, still no mix
        old = new_dir.with_name(new_dir.name + ".old")
        os.rename(set_dir, old)
        os.rename(new_dir, set_dir)
        os.rename(old, new_dir)
