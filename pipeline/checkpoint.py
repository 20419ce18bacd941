"""Checkpoint trust: the sha256 pin, the safe-load allow-list and the trust decision.

A ``.pt`` is a pickle, and unpickling runs whatever callables the file names. By default
a checkpoint is loaded with ``torch.load(weights_only=True)`` (Ultralytics' safe-load mode)
and only after a scan of the globals its pickle references finds nothing outside the
allow-list below: layer classes (``torch.nn`` and ``ultralytics.nn``), Ultralytics' model
and loss classes, and plain data holders. Nothing that can run code (builtins such as
``eval`` or ``getattr``, ``os``, ``subprocess``, ...) is ever on it. A checkpoint that needs
more is refused, naming the global, unless the user trusts that file's digest (``Trust``:
``--trust-checkpoint``, a digest in ``ENGINES_*_TRUST_CHECKPOINT``, or ``trust: true`` with a
``sha256:`` pin in models.yaml); the export record and the manifest say so.

Ultralytics' auto-install of missing modules (``YOLO_AUTOINSTALL``) is switched off for
the whole process as soon as ``pipeline`` is imported.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pkgutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError

AUTOINSTALL_ENV = "YOLO_AUTOINSTALL"  # read once by ultralytics.utils at import (env_bool)
SAFE_LOAD_ENV = "ULTRALYTICS_SAFE_LOAD"  # likewise: Ultralytics' weights_only loading for every checkpoint
TRUST_FIX = ("if you trust where this file came from, rerun with --trust-checkpoint (this file, as hashed by that "
             "run) or set trust: true with its sha256: pin on the model in models.yaml; otherwise get the "
             "checkpoint again from its trainer")
# Packages whose nn.Module classes may be rebuilt from a checkpoint.
LAYER_PACKAGES = ("torch.nn.modules", "ultralytics.nn.modules")
# Modules whose own classes Ultralytics pickles with a model (model classes, loss helpers).
CLASS_MODULES = ("ultralytics.nn.tasks", "ultralytics.utils.loss", "ultralytics.utils.tal")
# Never on the allow-list, whatever a derivation finds: these can run code or touch the system.
FORBIDDEN_MODULES = ("builtins", "os", "posix", "nt", "sys", "subprocess", "importlib", "runpy", "shutil",
                     "pickle", "marshal", "types", "functools", "operator", "ctypes", "code", "codeop",
                     "socket", "io", "pty", "multiprocessing", "threading", "signal", "webbrowser")


def harden_environment() -> None:
    """Switch Ultralytics' auto-install off (``pip install`` of whatever a checkpoint or an
    export names) and its safe-load mode on, for every load in this process (the export
    stage's own loads go through ``loading``), also when ultralytics was imported first."""
    os.environ[AUTOINSTALL_ENV] = "False"
    os.environ[SAFE_LOAD_ENV] = "1"
    for name, attr, value in (("ultralytics.utils", "AUTOINSTALL", False),
                              ("ultralytics.utils.checks", "AUTOINSTALL", False),
                              ("ultralytics.utils", "SAFE_LOAD", True), ("ultralytics.nn.tasks", "SAFE_LOAD", True)):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, attr):
            setattr(mod, attr, value)


# --- trust, bound to digests ------------------------------------------------------------------

TRUST_WORDS = ("1", "true", "yes", "on", "y", "t")   # what a boolean variable would say


@dataclass(frozen=True)
class Trust:
    """The user's trust in checkpoints that need unsafe loading; every form names the file by digest
    (docs/security.md), never by path, so a file swapped in later is not trusted with it:

    - ``flag`` (``--trust-checkpoint``): the files as this run hashes them; the export record keeps
      that digest, and a later run without the flag reuses the export only for that digest;
    - ``digests`` (``ENGINES_<COMMAND>_TRUST_CHECKPOINT=<sha256>[,<sha256>...]``): exactly those files;
      a variable outlives the run, so it must say which files;
    - ``trust: true`` in models.yaml needs the model's ``sha256:`` pin (config.py), and covers that digest.
    """
    flag: bool = False
    digests: frozenset[str] = frozenset()

    def covers(self, actual: str, model_trust: bool = False, pinned: str | None = None) -> bool:
        return self.flag or actual in self.digests or (model_trust and pinned is not None and pinned == actual)

    def __bool__(self) -> bool:
        return self.flag or bool(self.digests)


def as_trust(value: Trust | bool | None) -> Trust:
    """A library caller's ``trust=True`` is the flag (this run's files); a Trust is kept."""
    return value if isinstance(value, Trust) else Trust(flag=bool(value))


def parse_trust_digests(text: str) -> frozenset[str]:
    """``sha256:<hex>,<hex> ...`` -> the digests; ValueError (a sentence) for anything else,
    including a bare true/1/yes, which would trust whatever file sits at the path later."""
    tokens = [t for t in text.replace(",", " ").split() if t]
    if len(tokens) == 1 and tokens[0].lower() in TRUST_WORDS:
        raise ValueError(f"{text!r} would trust whatever file is at the checkpoint's path on every later run; "
                         "this variable names the files it trusts: give their sha256 digests "
                         "(`sha256sum FILE`), comma-separated, e.g. sha256:<64 hex digits>")
    out = set()
    for tok in tokens:
        hexd = tok.lower().removeprefix("sha256:")
        if len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
            raise ValueError(f"{tok!r} is not a sha256 digest (64 hex digits, as `sha256sum FILE` prints)")
        out.add(hexd)
    return frozenset(out)


# --- sha256 pin ------------------------------------------------------------------------------

def check_pin(name: str, path: Path, expected: str | None, actual: str) -> None:
    """Refuse a file whose sha256 is not the one pinned in models.yaml (torch-free)."""
    if expected and actual != expected:
        raise PipelineError(
            f"sha256 pin mismatch: models.yaml pins {expected}, the file has {actual}; nothing was loaded",
            model=name, file=path,
            fix="put the pinned file back, or if this file is the one you mean to ship, update sha256: in "
                "models.yaml to the digest above")


# --- the allow-list ----------------------------------------------------------------------------

def _is_forbidden(obj: object) -> bool:
    mod = getattr(obj, "__module__", "") or ""
    return mod.split(".")[0] in FORBIDDEN_MODULES or not isinstance(obj, type)


def _classes_of(module, base: type | None) -> dict[str, type]:
    out = {}
    for attr, obj in vars(module).items():
        if isinstance(obj, type) and obj.__module__ == module.__name__ and not attr.startswith("_") \
                and (base is None or issubclass(obj, base)):
            out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return out


@functools.lru_cache(maxsize=1)
def allowed_globals() -> dict[str, object]:
    """``"module.Name" -> object`` a safe load may rebuild, derived from the installed
    torch and ultralytics (so it follows their versions), never a callable that runs code."""
    import numpy as np
    from torch import nn
    from ultralytics.utils import IterableSimpleNamespace

    allow: dict[str, object] = {}
    for pkg_name in LAYER_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__, prefix=pkg_name + "."):
            allow.update(_classes_of(importlib.import_module(info.name), nn.Module))
    for mod_name in CLASS_MODULES:
        mod = importlib.import_module(mod_name)
        allow.update(_classes_of(mod, nn.Module if mod_name.endswith("tasks") else None))
    # Data holders: training arguments (also under the pre-8.0.44 module path), numpy
    # scalars and dtypes in training metrics, and paths.
    allow["ultralytics.utils.IterableSimpleNamespace"] = IterableSimpleNamespace
    allow["ultralytics.yolo.utils.IterableSimpleNamespace"] = IterableSimpleNamespace
    allow["numpy.dtype"] = np.dtype
    allow.update({f"numpy.dtypes.{c.__name__}": c for c in vars(np.dtypes).values()
                  if isinstance(c, type) and issubclass(c, np.dtype)})
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allow[f"{mod}.scalar"] = np.float64(0).__reduce__()[0]  # numpy's scalar rebuild (checked below)
    import pathlib
    for mod in ("pathlib", "pathlib._local"):
        for cls in ("PosixPath", "WindowsPath", "PurePosixPath"):
            allow[f"{mod}.{cls}"] = type(pathlib.Path())  # a pickled path of either OS, as Ultralytics maps it
    safe = {}
    for name, obj in allow.items():
        if name.endswith("multiarray.scalar"):
            # numpy's C scalar constructor: rebuilds a number from a dtype and bytes
            if getattr(obj, "__name__", "") == "scalar" and getattr(obj, "__module__", "").startswith("numpy"):
                safe[name] = obj
            continue
        if not _is_forbidden(obj):
            safe[name] = obj
    return safe


# Globals that Ultralytics' own safe loader replaces by a restricted stand-in (never the
# real builtin): ``builtins.getattr`` in pose and YOLO11 checkpoints, limited there to
# attributes of nn.Module and Enum classes.
def _ultralytics_stand_ins() -> set[str]:
    from ultralytics.nn import tasks
    registry = tasks._SafeLoad._build() if hasattr(tasks, "_SafeLoad") else {}
    out = set()
    for name, obj in registry.items():
        if name.startswith("builtins.") and getattr(obj, "__module__", "") == "ultralytics.nn.tasks" \
                and obj is not getattr(__import__("builtins"), name.split(".", 1)[1], None):
            out.add(name)
    return out


def referenced_globals(path: Path) -> list[str]:
    """Globals the checkpoint's pickle names beyond torch's own safe set (torch reads the
    opcodes; nothing in the file runs). Raises ValueError for a non-zip (legacy) file."""
    import torch
    return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))


UNSCANNABLE = "(a pickle the scan cannot read: {why})"   # an entry of scan()'s refused list, not a global


def scan(name: str, path: Path) -> tuple[list[str], list[str]]:
    """(globals the checkpoint needs, those outside the allow-list). A pickle the scan cannot
    read (the legacy format, or opcodes outside torch's safe subset, as in a hand-written
    protocol-0 ``data.pkl``) cannot be proven safe: it needs unsafe loading like a refused global."""
    import pickle
    try:
        needed = referenced_globals(path)
    except ValueError:
        return [], ["(legacy pickle format: cannot be scanned)"]
    except pickle.UnpicklingError as exc:
        return [], [UNSCANNABLE.format(why=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)]
    allowed = allowed_globals()
    stand_ins = _ultralytics_stand_ins()
    return needed, [g for g in needed if g not in allowed and g not in stand_ins]


def check_loadable(name: str, path: Path, trusted: bool) -> dict:
    """The trust decision for one checkpoint, before it is loaded; returns what the export
    record keeps. Refuses (PipelineError) a checkpoint needing unsafe loading unless trusted."""
    needed, refused = scan(name, path)
    if refused and not trusted:
        unreadable = [r for r in refused if r.startswith("(")]
        if unreadable:
            raise PipelineError(
                "checkpoint needs unsafe loading: the safe-load scan cannot read its pickle (written by an old "
                "torch, by hand, or with a pickle protocol torch.save does not use), so nothing proves it refers "
                "only to layer, model and data classes; it was not loaded",
                model=name, file=path, details=[r.strip("()") for r in unreadable], fix=TRUST_FIX)
        raise PipelineError(
            f"checkpoint needs unsafe loading: its pickle refers to {', '.join(refused)}, which is not on the "
            "safe-load allow-list (layer, model and data classes only); it was not loaded",
            model=name, file=path, fix=TRUST_FIX)
    return {"trusted": bool(trusted), "unsafe_globals": refused, "globals": needed}


@contextlib.contextmanager
def loading(trusted: bool, needed: list[str] | tuple[str, ...] = ()) -> Iterator[None]:
    """Every Ultralytics checkpoint load inside runs in its safe mode (``weights_only``
    with the allow-list), unless ``trusted``; auto-install stays off either way.

    ``needed``: the globals ``scan`` found; only those are registered with torch (its
    restricted unpickler slows down with every registered global)."""
    harden_environment()
    import torch
    from ultralytics.nn import tasks
    from ultralytics.utils import patches
    harden_environment()
    if not trusted:
        allowed = allowed_globals()
        entries = [(allowed[n], n) for n in needed if n in allowed]
        if entries:
            torch.serialization.add_safe_globals(entries)
    real_torch_load = tasks.torch_load
    had_flag = hasattr(tasks, "SAFE_LOAD")
    saved_flag = getattr(tasks, "SAFE_LOAD", None)

    def forced(*args, **kwargs):  # belt and braces for a version without the safe-load flag
        if not trusted:
            kwargs["weights_only"] = True
        return patches.torch_load(*args, **kwargs)

    tasks.torch_load = forced
    if had_flag:
        tasks.SAFE_LOAD = not trusted
    try:
        yield
    finally:
        tasks.torch_load = real_torch_load
        if had_flag:
            tasks.SAFE_LOAD = saved_flag


def refused_by_loader(exc: BaseException) -> bool:
    """Whether a load failure is the safe loader refusing a global (not a damaged file)."""
    import pickle
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen)
        if isinstance(seen, pickle.UnpicklingError) or "Unsupported global" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# --- the gate every checkpoint load goes through ------------------------------------------------

@dataclass(frozen=True)
class TrustDecision:
    """What ``gate`` decided for one checkpoint: the file to load (``path``, a private copy
    whose bytes are the ones hashed and scanned), its sha256, and the trust for that digest."""
    name: str
    source: Path          # the file the user named
    path: Path            # what to load: the private copy (never the source, which may change again)
    sha256: str
    trusted: bool
    globals: list[str]
    unsafe_globals: list[str]

    def record(self) -> dict:
        """What an export record keeps of the decision."""
        return {"trusted": self.trusted, "unsafe_globals": self.unsafe_globals, "globals": self.globals}


def _copy_hashing(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` and return the sha256 of exactly the bytes written."""
    import hashlib
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for block in iter(lambda: fin.read(1 << 20), b""):
            h.update(block)
            fout.write(block)
    return h.hexdigest()


def changed_since_export(name: str, path: Path, expected: str, actual: str) -> PipelineError:
    return PipelineError(
        f"checkpoint changed since it was exported: the export record has sha256 {expected}, the file now has "
        f"{actual}; it was not loaded (the trust and checks of the export belong to the old file)",
        model=name, file=path,
        fix="rerun `engines run` to re-export the model from this file (it is scanned again; "
            "--trust-checkpoint only if you trust the new file), or put the exported file back")


@contextlib.contextmanager
def gate(name: str, path: Path, *, expected_sha256: str | None, trusted: bool,
         log=None) -> Iterator[TrustDecision]:
    """The one way to load a checkpoint: inside the block, load ``decision.path`` (safe mode
    unless ``decision.trusted``; auto-install off).

    1. the file is copied to a private folder and hashed as it is copied, so what is checked
       is what is loaded (a file swapped after the check is never read);
    2. digest: with ``expected_sha256`` (the export record's), a different file is refused,
       naming both digests, and never loaded on the old record's trust;
    3. scan: the globals its pickle names against the allow-list (``check_loadable``);
    4. trust: ``trusted`` (the user's flag, or the record's for exactly that digest) admits
       what the scan refused; otherwise it is refused before loading."""
    import tempfile
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="engines-checkpoint-") as tmp:
        private = Path(tmp) / path.name
        try:
            actual = _copy_hashing(path, private)
        except OSError as exc:
            raise PipelineError(f"cannot read the checkpoint ({exc.strerror or exc})", model=name, file=path,
                                fix="check that the file exists and this user may read it") from None
        if expected_sha256 is not None and actual != expected_sha256:
            raise changed_since_export(name, path, expected_sha256, actual)
        try:
            info = check_loadable(name, private, trusted)
        except PipelineError as err:   # the scan read the private copy: name the user's file
            raise PipelineError(err.what.replace(str(private), str(path)), model=err.model or name, file=path,
                                fix=err.fix, details=err.details) from None
        decision = TrustDecision(name, path, private, actual, bool(trusted), info["globals"], info["unsafe_globals"])
        if decision.trusted and log is not None:
            log(f"{name}: loading {path.name} (sha256 {actual[:12]}…) as trusted (unsafe pickle loading"
                + (f"; it refers to {', '.join(decision.unsafe_globals)})" if decision.unsafe_globals else ")"))
        with loading(decision.trusted, decision.globals):
            yield decision


def load_error(name: str, path: Path, exc: BaseException, trusted: bool) -> PipelineError:
    """A failure of a gated load as an error for people (never a raw TypeError / UnpicklingError)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not trusted and refused_by_loader(exc):
        return PipelineError(f"checkpoint needs unsafe loading: the safe loader refused it ({text})",
                             model=name, file=path, fix=TRUST_FIX)
    return PipelineError(f"checkpoint could not be loaded: {type(exc).__name__}: {text}", model=name, file=path,
                         fix="check that the checkpoint loads with `yolo predict model=...`; if it is the file "
                             "you exported, rerun `engines run` to export it again")
