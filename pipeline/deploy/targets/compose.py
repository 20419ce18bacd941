"""Target ``mounts``: the compose override binding the chosen set's files into pyt-api-prod
(the mounts themselves are pipeline.deploy.compose_mounts)."""
from __future__ import annotations

from pathlib import Path

from pipeline.deploy.compose_mounts import write_override
from pipeline.deploy.targets.base import Target


class ComposeMounts(Target):
    name = "mounts"
    help = ("Write a compose override binding each engine and passthrough file of the chosen set read-only into "
            "pyt-api-prod, from its manifest (e.g. docker-compose.engines.yml; `make deploy` passes it as the "
            "second -f).")

    def write(self, pick, dest: Path) -> Path:
        return write_override(dest, pick.sets[0], pick.models)

    def summary(self, pick, dest: Path) -> str:
        return f"wrote {dest} (the set's mounts for pyt-api-prod)"


COMPOSE_MOUNTS = ComposeMounts()
