"""Handing the chosen set over to docker compose: the env file and the `current` link.

Both are written atomically; the env file's quoting is the one compose understands.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.engine_set import now_iso
from pipeline.errors import PipelineError
from pipeline.fsutil import write_bytes_atomic


def _env_value(v: str) -> str:
    """Compose env-file quoting: single quotes, a quote inside escaped as \\' (shlex's
    '"'"' form is not understood by compose)."""
    return v if re.match(r"^[A-Za-z0-9_./:=+-]*$", v) else "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def env_lines(res, models_dir: Path, image: str | None = None, *, allow_demo: bool = False,
              allow_pending: bool = False) -> dict[str, str]:
    s, gpu, rt = res.chosen, res.gpu, res.runtime
    assert s is not None
    env = {"ENGINE_SET": s.tag, "ENGINE_DIR": str(s.path.resolve()), "ENGINE_RUNTIME": rt.spec,
           "ENGINE_BACKEND": rt.backend, "ENGINE_TRT_VERSION": rt.version,
           "ENGINE_GPU_INDEX": str(gpu.index), "ENGINE_GPU_NAME": gpu.name,
           "ENGINE_COMPUTE_CAP": gpu.compute_cap, "ENGINES_MODELS_DIR": str(models_dir.resolve())}
    service_image = image or os.environ.get("PYT_API_IMAGE")
    if service_image:
        env["PYT_API_IMAGE"] = service_image
    # engines-check runs as this user (it rewrites manifest.json) and repeats this
    # resolve with the same allowances (click reads ENGINES_RESOLVE_<OPTION>)
    env["UID"], env["GID"] = str(os.getuid()), str(os.getgid())
    if allow_demo:
        env["ENGINES_RESOLVE_ALLOW_DEMO"] = "1"
    if allow_pending:
        env["ENGINES_RESOLVE_ALLOW_PENDING"] = "1"
    return env


def write_env(path: Path, env: dict[str, str], res) -> None:
    head = (f"# written by `engines resolve` at {now_iso()}: {res.gpu.name} ({res.gpu.sm}), "
            f"{res.runtime.label}\n# read by docker-compose.prod.full.yml (--env-file); do not edit by hand\n")
    body = "".join(f"{k}={_env_value(v)}\n" for k, v in env.items())
    try:
        write_bytes_atomic(path, (head + body).encode())
    except OSError as exc:
        raise PipelineError(f"cannot write the env file ({exc.strerror or exc})", file=path,
                            fix="pass --write-env with a writable path") from None


def switch_current(engines_dir: Path, tag: str) -> Path:
    """Point ``<engines_dir>/current`` at ``tag`` atomically (relative link: valid in containers)."""
    link = engines_dir / "current"
    if (link.exists() or link.is_symlink()) and not link.is_symlink():
        raise PipelineError("models/engines/current is a real file or folder, not a symlink", file=link,
                            fix="move it out of the way (resolve manages this link), then resolve again")
    tmp = engines_dir / f".current.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(tag, tmp)
        os.replace(tmp, link)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PipelineError(f"cannot switch the current link ({exc.strerror or exc})", file=link,
                            fix="make models/engines writable, or pass --no-link") from None
    return link
