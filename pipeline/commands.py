"""Registers every subcommand on `pipeline.cli.cli`."""
from __future__ import annotations

from .cli import cli  # noqa: F401
