"""Engine sets: layout, tag, manifest, atomic publish and lookup.

A set lives in ``models/engines/<tag>/`` and mirrors the source layout
(``yolo/yolov8n.pt`` -> ``yolo/yolov8n.engine`` + ``yolo/yolov8n.plan``). Its
``manifest.json`` (schema below, version ``MANIFEST_SCHEMA``) is the contract with
``engines resolve`` and the production compose file.

Manifest (schema 1)::

    {"schema": 1, "tag": "trtrtx-1.7.1.116-sm86_89_120", "backend": "tensorrt-rtx",
     "trt_version": "1.7.1.116", "targets": ["8.6", "8.9", "12.0"],
     "gpu": {"name", "compute_cap", "driver", "cuda"} | null,   # where a GPU built it
     "demo": bool, "created": iso8601, "updated": iso8601,
     "engines": {"<model>": {
         "task", "source", "engine", "plan",                    # paths relative to the set
         "sha256": {"source", "onnx", "engine", "plan"},
         "options": {"precision", "imgsz", "batch": {min,opt,max}, "workspace_gib", "onnx"},
         "build_seconds", "status": "ok" | "failed", "error": str | null, "demo": bool,
         "cache_key", "reproduce": "engines build --model <m> ...",
         "verification": {"onnx": {"status": "passed"|"failed", ...figures},
                          "engine": {"status": "pending"|"passed"|"failed",
                                     "gpu", "driver", ...figures}}}},
     "passthrough": {"<name>": {"file", "sha256"}}}

A model whose status is ``failed`` has no files in the set (or keeps the previous good
ones, recorded under ``previous``); resolve refuses a set where any model is not ok.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .fsutil import lock_for, read_json, sha256_file, write_json_atomic
from .hardware import cc_tuple, sm_name

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
BACKENDS = ("tensorrt", "tensorrt-rtx")


def make_tag(backend: str, version: str, targets: list[str]) -> str:
    """``trt-10.13.3.9-sm90`` or ``trtrtx-1.7.1.116-sm86_89_120``."""
    prefix = {"tensorrt": "trt", "tensorrt-rtx": "trtrtx"}[backend]
    ccs = "_".join(sm_name(t)[2:] for t in sorted(targets, key=cc_tuple))
    return f"{prefix}-{version}-sm{ccs}"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class EngineSet:
    path: Path
    manifest: dict

    @property
    def tag(self) -> str:
        return self.manifest.get("tag", self.path.name)

    @property
    def models(self) -> dict:
        return self.manifest.get("engines", {})

    @property
    def demo(self) -> bool:
        return bool(self.manifest.get("demo"))

    def status(self) -> str:
        """ok, failed, or pending (engine-level verification not yet run on a GPU)."""
        engines = self.models.values()
        if not engines or any(e.get("status") != "ok" for e in engines):
            return "failed"
        levels = [e.get("verification", {}).get("engine", {}).get("status") for e in engines]
        if any(s == "failed" for s in levels):
            return "failed"
        if any(s != "passed" for s in levels):
            return "pending"
        return "ok"

    def files(self) -> dict[str, str]:
        """Every file the manifest vouches for: relative path -> sha256."""
        out: dict[str, str] = {}
        for e in self.models.values():
            if e.get("status") != "ok":
                continue
            for kind in ("engine", "plan"):
                if e.get(kind):
                    out[e[kind]] = e["sha256"][kind]
        for p in self.manifest.get("passthrough", {}).values():
            out[p["file"]] = p["sha256"]
        return out

    def check_files(self) -> list[str]:
        """Problems found comparing the files on disk with the manifest's sha256."""
        problems = []
        for rel, digest in self.files().items():
            f = self.path / rel
            if not f.is_file():
                problems.append(f"{rel}: missing")
            elif sha256_file(f) != digest:
                problems.append(f"{rel}: sha256 differs from the manifest (tampered or corrupt)")
        return problems


def load_set(path: Path) -> EngineSet | None:
    m = read_json(path / MANIFEST)
    return EngineSet(path, m) if isinstance(m, dict) else None


def list_sets(engines_dir: Path) -> list[EngineSet]:
    """Every published set under ``engines_dir`` (folders with a readable manifest)."""
    if not engines_dir.is_dir():
        return []
    sets = []
    for d in sorted(engines_dir.iterdir()):
        if d.is_dir() and not d.is_symlink() and not d.name.startswith("."):
            s = load_set(d)
            if s is not None:
                sets.append(s)
    return sets


def set_lock(set_dir: Path, timeout: float = -1):
    """Serialises two builders (or a builder and verify) on the same set."""
    return lock_for(set_dir, timeout=timeout)


def new_manifest(tag: str, backend: str, version: str, targets: list[str], gpu: dict | None) -> dict:
    return {"schema": MANIFEST_SCHEMA, "tag": tag, "backend": backend, "trt_version": version,
            "targets": sorted(targets, key=cc_tuple), "gpu": gpu, "demo": False, "created": now_iso(),
            "updated": now_iso(), "engines": {}, "passthrough": {}}


def write_manifest(set_dir: Path, manifest: dict) -> None:
    manifest["updated"] = now_iso()
    manifest["demo"] = any(e.get("demo") for e in manifest.get("engines", {}).values())
    write_json_atomic(set_dir / MANIFEST, manifest)


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
