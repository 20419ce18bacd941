"""The production compose mounts, derived from the chosen set's manifest (issue 10).

`engines resolve --write-mounts docker-compose.engines.yml` writes a compose override
that binds each engine and passthrough file of the set read-only where the service
looks for it: the set mirrors the source layout, so ``<set>/yolo/yolov8n.engine`` lands
at ``$PYT_API_MODELS/yolo/yolov8n.engine``, next to its checkpoint's path. `make deploy`
passes it as a second ``-f`` after docker-compose.prod.full.yml, so the model list lives
only in models.yaml and the manifest, never restated in a compose file.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.engine_set import EngineSet, now_iso
from pipeline.errors import PipelineError
from pipeline.fsutil import write_bytes_atomic
from pipeline.status import Status

SERVICE = "pyt-api-prod"
TARGET_ROOT = "${PYT_API_MODELS:-/app/models}"
SOURCE_ROOT = "${ENGINE_DIR:?run engines resolve --write-env .env.engines first}"


def mounted_files(s: EngineSet, models: list[str] | None = None) -> list[str]:
    """Paths, relative to the set, the service reads: each built engine and each passthrough
    file; with ``models`` (models.yaml's names) only their engines, never one models.yaml no
    longer lists."""
    # paths were checked to stay inside the set when the manifest was read (pipeline.manifest)
    rels = [e.engine for n, e in s.models.items() if e.status == Status.OK and (models is None or n in models)]
    rels += [p.file for p in s.manifest.passthrough.values()]
    return sorted(dict.fromkeys(rels))


def _escape(text: str) -> str:
    return text.replace("$", "$$")  # a literal $ in a path must not start a compose variable


def override(s: EngineSet, models: list[str] | None = None) -> dict:
    volumes = [{"type": "bind", "source": f"{SOURCE_ROOT}/{_escape(rel)}", "target": f"{TARGET_ROOT}/{_escape(rel)}",
                "read_only": True, "bind": {"create_host_path": False}}  # a missing file stops `up`
               for rel in mounted_files(s, models)]
    return {"services": {SERVICE: {"volumes": volumes}}}


def write_override(path: Path, s: EngineSet, models: list[str] | None = None) -> Path:
    """Write the override (JSON is YAML, so no YAML writer is needed) atomically."""
    head = (f"# written by `engines resolve` at {now_iso()} for {s.tag} from its manifest.json;\n"
            "# the second -f of `docker compose -f docker-compose.prod.full.yml -f <this file>`\n")
    try:
        write_bytes_atomic(path, (head + json.dumps(override(s, models), indent=2) + "\n").encode())
    except OSError as exc:
        raise PipelineError(f"cannot write the compose mounts ({exc.strerror or exc})", file=path,
                            fix="pass --write-mounts with a writable path") from None
    return path
