"""Write requirements.lock: every package the pipeline needs, pinned to the version installed in
this venv (`make lock`). Run with the venv's python after `make install`.

The closure starts at pyproject.toml's dependencies and all its extras and follows each installed
package's own requirements, markers evaluated for Python 3.11 and 3.12 (the builder image's
Python), so what only one of them needs is pinned too. Both `make install` and Dockerfile.build
install with `-c requirements.lock` (pip's constraints): each installs only what it needs (the
image no test tools), and every package it does install has the locked version.

    python .ci/lock.py > requirements.lock     (make lock)
    python .ci/lock.py --check                 exit 1 when requirements.lock differs
"""
from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYTHONS = ("3.11", "3.12")
# tensorrt-stubs: installed by the Makefile on its own, pinned there (--no-deps)
OUTSIDE = {"tensorrt-stubs", "engine-pipeline",
           # build tooling, not pinned: the NGC base may carry them from apt (pip cannot replace those)
           "pip", "setuptools", "wheel"}


def _wanted(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    for py in PYTHONS:
        env = {**default_environment(), "python_version": py, "python_full_version": f"{py}.0"}
        for extra in extras or {""}:
            if req.marker.evaluate({**env, "extra": extra}):
                return True
    return False


def closure() -> tuple[dict[str, str], list[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [(Requirement(r), set()) for r in project["dependencies"]]
    todo += [(Requirement(r), set()) for extra in project.get("optional-dependencies", {}).values() for r in extra]
    pinned: dict[str, str] = {}
    missing: list[str] = []
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req, _ = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen or name in OUTSIDE:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            missing.append(str(req))
            continue
        pinned[name] = dist.version
        for sub in dist.requires or []:
            r = Requirement(sub)
            if _wanted(r, set(req.extras)):
                todo.append((r, set()))
    return pinned, missing


def render() -> str:
    pinned, missing = closure()
    head = ["# requirements.lock: every package engine-pipeline needs (pyproject.toml, all extras), pinned.",
            "# Written by `make lock` (.ci/lock.py) from the installed .venv; do not edit by hand.",
            "# Used as pip constraints (-c) by `make install` and Dockerfile.build."]
    if missing:
        head.append("# not installed here, so not pinned: " + ", ".join(sorted(missing)))
    return "\n".join(head + [f"{n}=={v}" for n, v in sorted(pinned.items())]) + "\n"


if __name__ == "__main__":
    text = render()
    if sys.argv[1:] == ["--check"]:
        current = (REPO / "requirements.lock").read_text() if (REPO / "requirements.lock").exists() else ""
        if current != text:
            print("requirements.lock is not what `make lock` writes from this .venv: run `make lock`", file=sys.stderr)
            sys.exit(1)
        sys.exit(0)
    sys.stdout.write(text)
