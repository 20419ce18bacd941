"""The deploy-target interface: one signature, ``write(pick, dest)``.

A target hands a pick (what resolve chose, or the sets ``engines triton`` serves) over to
whatever runs the engines: an env file for docker compose, the compose mounts, a Triton
model repository. Adding one is a module with a ``Target`` subclass and one entry in
``targets.TARGETS``; `engines resolve` grows its ``--write-<name>`` option from that entry.

What a target may read from the pick (``pipeline.deploy.pick.Pick``): ``sets`` (the
engine sets it hands over, best first), ``resolution`` (the host's GPU and runtime; None
when no host was asked, as for ``engines triton``), ``models_dir``, ``models`` (the names
models.yaml lists, or None), ``policy`` and ``image``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class Target(ABC):
    name: str          # the key in Pick.written and in --json; resolve's option is --write-<name>
    metavar: str = "PATH"
    is_dir: bool = False   # the destination is a folder (else a file)
    help: str = ""     # resolve's --write-<name> help

    @property
    def option(self) -> str:
        return f"--write-{self.name}"

    @abstractmethod
    def write(self, pick, dest: Path) -> Path:
        """Write ``dest`` atomically from ``pick``; raise PipelineError (what, file, next step)
        and leave what was there before when it cannot."""

    @abstractmethod
    def summary(self, pick, dest: Path) -> str:
        """One line for the console: what was written where."""

    def __repr__(self) -> str:
        return f"<target {self.name}>"
