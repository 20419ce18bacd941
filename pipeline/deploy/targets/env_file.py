"""Target ``env``: the env file docker-compose.prod.full.yml reads (ENGINE_SET, ENGINE_DIR, ...)."""
from __future__ import annotations

from pathlib import Path

from pipeline.deploy import handover
from pipeline.deploy.targets.base import Target
from pipeline.errors import PipelineError


class EnvFile(Target):
    name = "env"
    help = ("Write the choice for docker compose: ENGINE_SET, ENGINE_DIR, ENGINE_RUNTIME, ENGINE_GPU_INDEX, "
            "ENGINES_MODELS_DIR (and PYT_API_IMAGE when known), e.g. .env.engines.")

    def write(self, pick, dest: Path) -> Path:
        res = pick.resolution
        if res is None:   # the env file names the host's GPU and runtime: only resolve knows them
            raise PipelineError("the env file needs the host's GPU and runtime, which only `engines resolve` "
                                "reads", file=dest, fix="write it with `engines resolve --write-env PATH`")
        values = handover.env_lines(res, pick.models_dir, pick.image, allow_demo=pick.policy.allow_demo,
                                    allow_pending=pick.policy.allow_pending)
        handover.write_env(dest, values, res)
        return dest

    def summary(self, pick, dest: Path) -> str:
        s = pick.sets[0]
        return f"wrote {dest} (ENGINE_SET={s.tag}, ENGINE_DIR={s.path.resolve()})"


ENV_FILE = EnvFile()
