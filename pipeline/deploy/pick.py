"""`engines resolve` and `engines pull` as one library call each.

The host's facts (GPU, TensorRT runtime), one policy with one set of defaults, the
registry (pull, or fall back on the sets already here when it does not answer), the
build of a missing set, and the hand-over: the deploy targets asked for (env file, compose
mounts, Triton repository: pipeline.deploy.targets) and the `current` link. ``serve`` picks
the sets a Triton repository holds (`engines triton`). The CLI parses options into a
``HostQuery`` and a ``Policy`` and calls ``resolve``, ``pull`` or ``serve``; tests drive the
same calls without click.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.deploy import handover, missing, rules
from pipeline.deploy.targets import COMPOSE_MOUNTS, ENV_FILE, TRITON, Target
from pipeline.engine_set import EngineSet, LockTimeout, load_set, scan_sets
from pipeline.errors import PipelineError, UsageProblem
from pipeline.hardware import GpuFacts, detect_gpus, pick_gpu
from pipeline.registry.client import RegistryUnreachable, Remote
from pipeline.registry.sets import fetch, remote_sets
from pipeline.runtime import Runtime, installed_runtime, parse_runtime
from pipeline.status import Status


def find_runtime(runtime: str | None, image: str | None) -> Runtime:
    """The TensorRT the service runs: --runtime, else the label of its image, else the package here."""
    if runtime:
        return parse_runtime(runtime)
    image = image or os.environ.get("PYT_API_IMAGE")  # the service image make deploy starts
    if image:
        from pipeline.docker_runner import image_runtime  # the Docker SDK loads only here
        return image_runtime(image)
    found = installed_runtime()
    if found is None:
        raise PipelineError(
            "cannot tell which TensorRT the service will run: no --runtime, no --image, and neither "
            "tensorrt nor tensorrt-rtx is installed here",
            fix="pass `--runtime tensorrt==X` (or `tensorrt-rtx==Y`), or `--image <service image>`")
    return found


@dataclass(frozen=True)
class HostQuery:
    """Where the host's facts come from (each None: ask the machine)."""
    runtime: str | None = None        # BACKEND==VERSION
    image: str | None = None          # service image whose label names its TensorRT
    gpu_facts: Path | None = None     # saved nvidia-smi CSV or NVML JSON
    gpu_index: int | None = None

    def facts(self) -> tuple[GpuFacts, Runtime]:
        return pick_gpu(detect_gpus(self.gpu_facts), self.gpu_index), find_runtime(self.runtime, self.image)


@dataclass(frozen=True)
class Policy:
    """What a set may be and still be chosen; the same defaults for resolve and pull.

    Engine-level verification not yet run on this GPU is accepted with a warning unless
    ``require``; with ``require`` only ``allow_pending`` accepts it."""
    allow_demo: bool = False
    require: bool = False
    allow_pending: bool = False

    @property
    def accept_pending(self) -> bool:
        return self.allow_pending or not self.require

    @property
    def pending_ok(self) -> str:   # how a warning names the allowance
        return "--allow-pending" if self.require else "without --require"

    def judge_kwargs(self, models: list[str] | None) -> dict:
        return {"allow_demo": self.allow_demo, "allow_pending": self.accept_pending, "models": models,
                "pending_ok": self.pending_ok}


@dataclass
class Pick:
    """What resolve, pull or serve chose and handed over: what a deploy target writes from."""
    resolution: rules.Resolution | None   # None: no host was asked (serve)
    pulled_from: str | None = None    # registry the set came from (None: it was here)
    downloaded: bool = False
    offline: PipelineError | None = None   # the registry outage (or the set lock another process held) that made
    #                                        resolve use local sets
    built: bool = False
    link: Path | None = None
    models_dir: Path | None = None
    models: list[str] | None = None        # what models.yaml lists (None: unknown)
    policy: Policy = field(default_factory=Policy)
    image: str | None = None               # the service image, for the env file
    selected: list[EngineSet] = field(default_factory=list)   # serve's sets (resolve: the chosen one)
    refused: dict[str, str] = field(default_factory=dict)     # serve: set tag -> why it was left out
    written: dict[str, Path] = field(default_factory=dict)    # target name -> what it wrote

    @property
    def chosen(self):
        return self.resolution.chosen if self.resolution else None

    @property
    def sets(self) -> list[EngineSet]:
        """The sets a deploy target hands over."""
        return self.selected or ([self.chosen] if self.chosen is not None else [])

    @property
    def env_file(self) -> Path | None:
        return self.written.get(ENV_FILE.name)

    @property
    def mounts_file(self) -> Path | None:
        return self.written.get(COMPOSE_MOUNTS.name)

    def write(self, targets: Sequence[tuple[Target, Path]]) -> None:
        """Hand the pick over to each (target, destination), in order."""
        for target, dest in targets:
            self.written[target.name] = target.write(self, Path(dest))

    def to_json(self) -> dict:
        out = self.resolution.to_json() if self.resolution else {"sets": [s.tag for s in self.sets]}
        out.update({"env_file": str(self.env_file) if self.env_file else None,
                    "link": str(self.link) if self.link else None,
                    "mounts_file": str(self.mounts_file) if self.mounts_file else None,
                    "written": {k: str(v) for k, v in self.written.items()}})
        return out


def _quiet(_line: str) -> None:
    return None


def choose_remote(remote: Remote, engines_dir: Path, gpu: GpuFacts, rt: Runtime, policy: Policy,
                  models: list[str] | None, tag: str | None = None, config_arg: str = "") -> rules.Resolution:
    """The rules of resolve over the registry's manifests (no layer is downloaded yet)."""
    sets, skipped = remote_sets(remote, [tag] if tag else None)
    res = rules.resolve(engines_dir, gpu, rt, sets=sets, check=lambda _s: [], **policy.judge_kwargs(models))
    if res.chosen is None:
        raise rules.refusal(res, config_arg, registry_ref=remote.ref, skipped=skipped)
    return res


def pull(config_path: Path, remote: Remote, host: HostQuery = HostQuery(), policy: Policy = Policy(), *,
         tag: str | None = None, link: bool = True, on_line: Callable[[str], None] = _quiet,
         config_arg: str = "", lock_timeout: float | None = None,
         on_wait: Callable[[str], None] | None = None) -> Pick:
    """`engines pull`: choose among the registry's sets by the rules of resolve, download
    the chosen one (every digest checked), switch `current` unless ``link`` is False.
    Waiting for another process's lock on the set is announced through ``on_wait`` (default
    ``on_line``) and ends after ``lock_timeout`` seconds (None: no limit) with LockTimeout."""
    engines_dir = config_path.parent / "engines"
    gpu, rt = host.facts()
    res = choose_remote(remote, engines_dir, gpu, rt, policy, rules.expected_models(config_path), tag, config_arg)
    pick = _fetch(remote, res, engines_dir, on_line, lock_timeout, on_wait)
    if link:
        pick.link = handover.switch_current(engines_dir, res.chosen.tag)
    return pick


def _fetch(remote: Remote, res: rules.Resolution, engines_dir: Path, on_line,
           lock_timeout: float | None = None, on_wait=None) -> Pick:
    path, downloaded = fetch(remote, res.chosen, engines_dir, on_line, lock_timeout=lock_timeout, on_wait=on_wait)
    res.chosen = load_set(path)
    res.files_checked = len(res.chosen.files())
    return Pick(res, pulled_from=remote.ref, downloaded=downloaded)


def resolve(config_path: Path, host: HostQuery = HostQuery(), policy: Policy = Policy(), *,
            from_remote: Remote | None = None, expect_set: str | None = None,
            build_missing: bool = False, builder_image: str | None = None,
            targets: Sequence[tuple[Target, Path]] = (), link: bool = True, image_for_env: str | None = None,
            on_line: Callable[[str], None] = _quiet, config_arg: str = "", lock_timeout: float | None = None,
            on_wait: Callable[[str], None] | None = None) -> Pick:
    """`engines resolve`: (pull from ``from_remote``,) choose the set for this host, (build
    it when missing,) check it is ``expect_set``, and hand it over to each (target,
    destination) of ``targets`` (pipeline.deploy.targets). A pull that cannot have
    the set's lock within ``lock_timeout`` seconds falls back on the sets already here, as on
    a registry outage (the wait announced through ``on_wait``, default ``on_line``)."""
    models_dir = config_path.parent
    engines_dir = models_dir / "engines"
    gpu, rt = host.facts()
    models = rules.expected_models(config_path)
    offline = None
    pulled_from, downloaded = None, False
    if from_remote is not None:   # the registry fills models/engines; the local rules decide as always
        try:
            res = choose_remote(from_remote, engines_dir, gpu, rt, policy, models, expect_set, config_arg)
            downloaded = _fetch(from_remote, res, engines_dir, on_line, lock_timeout, on_wait).downloaded
            pulled_from = from_remote.ref
            on_line(f"pulled {res.chosen.tag} from {from_remote.ref}" if downloaded
                    else f"{res.chosen.tag} from {from_remote.ref} is already here, identical")
        except (RegistryUnreachable, LockTimeout) as err:
            # an outage, or another process holding the set's lock past --lock-timeout, must not
            # stop a restart whose set is already here (checked by sha256 below, as always);
            # refused below if none fits
            offline = err
            (on_wait or on_line)(f"warning: {err.what}; choosing among the sets already in {engines_dir}")
    res = rules.resolve(engines_dir, gpu, rt, **policy.judge_kwargs(models))
    if offline is not None and res.chosen is None and not build_missing:
        # the outage is the cause to report, with why each set already here was refused
        here = rules.refusal(res, config_arg)
        raise type(offline)(
            offline.what, details=[f"and no set already in {engines_dir} fits: {here.what}", *here.details],
            file=offline.file, fix=offline.fix) from offline
    built = False
    if res.chosen is None and build_missing:
        want = rules.missing_tag(gpu, rt)
        on_line(f"no set fits; building {want} (--build-missing)")
        code = missing.build_missing(res, models_dir, builder_image, on_line=on_line, config_name=config_path.name)
        if code != 0:
            raise PipelineError(f"the build of {want} failed (exit status {code})",
                                fix="read the builder's output above; fix and rerun")
        res, built = rules.resolve(engines_dir, gpu, rt, **policy.judge_kwargs(models)), True
    if res.chosen is None:
        raise rules.refusal(res, config_arg)
    locked = isinstance(offline, LockTimeout)
    if offline is not None and not built:
        res.verdict.warnings.append((f"the pull from {from_remote.ref} did not run ({offline.what})" if locked else
                                     f"the registry {from_remote.ref} did not answer ({offline.what})")
                                    + f"; {res.chosen.tag} is the copy on this host, which may be older than the "
                                    "registry's")
    if expect_set and res.chosen.tag != expect_set:
        why = (f"; {'the set lock could not be had' if locked else f'the registry {from_remote.ref} did not answer'}"
               f", so {expect_set} could not be pulled ({offline.what})" if offline is not None else "")
        raise PipelineError(f"the rules choose {res.chosen.tag}, but {expect_set} is the set expected "
                            f"(--set / ENGINE_SET){why}", file=engines_dir,
                            fix="run `make deploy` again so the env file names the set this host gets"
                            + (" (once the registry answers)" if offline is not None else ""))
    unlisted = sorted(set(res.chosen.models) - set(models)) if models is not None else []
    if unlisted:   # left by a run before models.yaml changed: never deployed (the next run removes them)
        res.verdict.warnings.append(f"the set holds {', '.join(unlisted)}, which {config_path.name} no longer "
                                    "lists: not mounted; the next `engines run` removes them from the set")
    pick = Pick(res, pulled_from=pulled_from, downloaded=downloaded, offline=offline, built=built,
                models_dir=models_dir, models=models, policy=policy, image=image_for_env)
    pick.write(targets)
    if link:
        pick.link = handover.switch_current(engines_dir, res.chosen.tag)
    return pick


def _unservable(s: EngineSet, policy: Policy, models: list[str] | None) -> str | None:
    """Why ``s`` cannot go into a serving repository (None: it can); resolve's policy, no host GPU."""
    v = s.manifest.verdict(None, models)
    if v.failed or v.status == Status.MIXED:
        return "; ".join(v.reasons + v.missing)
    served = [e for n, e in s.models.items() if models is None or n in models]   # the passthrough is not served
    if any(e.demo for e in served) and not policy.allow_demo:
        return "built from demo weights (`engines demo-models`); --allow-demo accepts it for a smoke test"
    if v.pending and not policy.accept_pending:
        return f"engine-level verification not yet passed ({'; '.join(v.pending)}); {policy.pending_ok} accepts it"
    problems = s.check_files()
    if problems:
        return "files differ from its manifest: " + "; ".join(problems[:3])
    return None


def serve(config_path: Path, dest: Path, policy: Policy = Policy(), *, runtime: str | None = None,
          tags: Sequence[str] = (), on_line: Callable[[str], None] = _quiet) -> Pick:
    """`engines triton`: write a Triton model repository at ``dest`` from the sets in the engines
    folder (pulled ones included) that one Triton server can load: every acceptable set of one
    TensorRT version (``runtime``, else the only version there is), or the sets ``tags`` names.
    Demo, failed and tampered sets are left out (named in ``Pick.refused``); a named one is refused."""
    models_dir = config_path.parent
    engines_dir = models_dir / "engines"
    models = rules.expected_models(config_path)
    found, broken = scan_sets(engines_dir)
    refused = {b.tag: f"unreadable: {b.reason}" for b in broken}
    by_tag = {s.tag: s for s in found}
    unknown = [t for t in tags if t not in by_tag]
    if unknown:
        raise UsageProblem(f"no engine set {', '.join(unknown)} in {engines_dir}", file=engines_dir,
                           fix="run `engines list` for the sets here (or `engines pull` one)")
    want = parse_runtime(runtime) if runtime else None
    chosen = []
    for s in [by_tag[t] for t in dict.fromkeys(tags)] or found:
        why = (f"built with {s.manifest.backend} {s.manifest.trt_version}, not {want.backend} {want.version} "
               "(--runtime)" if want and (s.manifest.backend, s.manifest.trt_version) != (want.backend, want.version)
               else _unservable(s, policy, models))
        if why and s.tag in tags:
            raise PipelineError(f"set {s.tag} cannot be served: {why}", file=s.path,
                                fix="leave it out (--set names the sets to serve), or fix it as the reason says")
        if why:
            refused[s.tag] = why
            on_line(f"  - {s.tag}: left out: {why}")
        else:
            chosen.append(s)
    if not chosen:
        raise PipelineError(f"no engine set in {engines_dir} can be served by Triton",
                            details=[f"{t}: {why}" for t, why in sorted(refused.items())] or ["the folder holds no set"],
                            file=engines_dir,
                            fix="build one (`engines run`) or pull one (`engines pull`); for a smoke test with demo "
                                "weights pass --allow-demo")
    pick = Pick(None, models_dir=models_dir, models=models, policy=policy, selected=chosen, refused=refused)
    pick.write([(TRITON, dest)])
    return pick
