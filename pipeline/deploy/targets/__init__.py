"""Deploy targets: one interface (``base.Target``: ``write(pick, dest)``), one list.

`engines resolve` offers ``--write-<name>`` for each entry; `engines triton` writes ``TRITON``
from several sets. Adding a target: a module here with a ``Target`` subclass, one entry below,
its tests in tests/deploy/ (docs/architecture.md, "Adding a deploy target").
"""
from __future__ import annotations

from pipeline.deploy.targets.base import Target
from pipeline.deploy.targets.compose import COMPOSE_MOUNTS
from pipeline.deploy.targets.env_file import ENV_FILE
from pipeline.deploy.targets.triton import TRITON

TARGETS: tuple[Target, ...] = (ENV_FILE, COMPOSE_MOUNTS, TRITON)

__all__ = ["TARGETS", "Target", "ENV_FILE", "COMPOSE_MOUNTS", "TRITON"]
