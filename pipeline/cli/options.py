"""Every option that more than one command takes, declared once.

A group of options is a decorator plus, where the values make a library object, one
function that builds it (``host_query``, ``policy``, ``remote``), in the manner of
Polygraphy's argument groups. Commands import what they take from here.
"""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.builders import NAMES as BUILDER_NAMES
from pipeline.config import PRECISIONS, workspace_problem
from pipeline.errors import PipelineError


def _tokens(value) -> list[str]:
    """`a, b,,c` -> ['a', 'b', 'c']: the comma lists of --batch and --target."""
    return [tok.strip() for tok in str(value).split(",") if tok.strip()]


class IntList(click.ParamType):
    """`1,8` -> [1, 8] (positive integers)."""
    name = "N,..."

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        out = []
        for tok in _tokens(value):
            if not tok.isdigit() or int(tok) < 1:
                self.fail(f"{tok!r} is not a positive whole number (write e.g. 1,8)", param, ctx)
            out.append(int(tok))
        if not out:
            self.fail("give at least one number, e.g. 1 or 1,8", param, ctx)
        return out


class Targets(click.ParamType):
    """`sm86,sm89,sm120` -> ['8.6', '8.9', '12.0']."""
    name = "SM,..."

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        from pipeline.builders.choose import parse_target
        out = []
        for tok in _tokens(value):
            try:
                out.append(parse_target(tok))
            except ValueError:
                self.fail(f"unknown target {tok.strip()!r}: write targets like sm86,sm89,sm120", param, ctx)
        return out or None


def _check_runtime(_click_ctx, _param, value):
    if value is None:
        return None
    from pipeline.runtime import parse_runtime
    try:
        return parse_runtime(value).spec
    except PipelineError as err:
        raise click.BadParameter(f"{err.what}; {err.fix}") from None


def _stack(*opts):
    """Apply options in --help order."""
    def deco(fn):
        for opt in reversed(opts):
            fn = opt(fn)
        return fn
    return deco


GPU_FACTS = click.option(
    "--gpu-facts", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, metavar="FILE",
    help="Saved GPU facts used instead of asking the driver (for checks on a machine without that GPU): the CSV of "
         "`nvidia-smi --query-gpu=index,name,uuid,compute_cap,driver_version,memory.total,memory.free,pci.bus_id "
         "--format=csv`, or an NVML JSON (name, cc, driver, mem_total, mem_free).")

# -- the stage commands (export, build, run, verify) ------------------------------------------------
MODEL = click.option("--model", "-m", "models", multiple=True, metavar="NAME",
                         help="Only this model (repeatable). Default: every model in models.yaml.")
KEEP_GOING = click.option("--keep-going", is_flag=True,
                              help="Carry on with the other models after one fails (exit is still 1).")
FORCE = click.option("--force", is_flag=True, help="Redo the work even when the cache says it is current.")
TRUST_DIGESTS = "engines.trust_digests"


class TrustOption(click.Option):
    """--trust-checkpoint: a flag on the command line (the files as this run hashes them); from its
    variable, the sha256 digests of the files it trusts. A variable outlives the run, so a bare
    1/true there (trust whatever file is at the path later) is refused (checkpoint.Trust)."""

    def value_from_envvar(self, ctx):
        raw = self.resolve_envvar_value(ctx)
        if raw is None or raw.strip().lower() in ("0", "false", "no", "off", "n", "f"):
            return None
        from pipeline.checkpoint import parse_trust_digests
        try:
            ctx.meta[TRUST_DIGESTS] = parse_trust_digests(raw)
        except ValueError as exc:
            raise click.BadParameter(f"{exc}{_from_env(ctx, self)}", ctx=ctx, param=self) from None
        return None


def _trust_value(click_ctx, _param, value):
    from pipeline.checkpoint import Trust
    return Trust(flag=bool(value), digests=click_ctx.meta.pop(TRUST_DIGESTS, frozenset()))


TRUST = click.option(
    "--trust-checkpoint", "trust", cls=TrustOption, is_flag=True, callback=_trust_value,
    help="Load checkpoints that need unsafe (full pickle) loading, which can run code in the file; only for files "
         "whose origin you trust. Binds to each file's sha256 as this run reads it: the export record and the "
         "manifest keep it, and a file changed later is refused until trusted again. Its variable names the files "
         "instead: sha256:<digest>[,...] (`sha256sum FILE`; a bare 1 or true is refused). trust: true in "
         "models.yaml needs the model's sha256: pin and trusts that digest only (docs/security.md).")
BACKEND = click.option(
    "--backend", type=click.Choice(["auto", *BUILDER_NAMES]), default="auto", show_default=True,
    help="auto: the full TensorRT when it imports and a GPU is present, else TensorRT for RTX.")
TARGET = click.option(
    "--target", "targets", type=Targets(), default=None,
    help="TensorRT for RTX only: compute capabilities to build for, e.g. sm86,sm89,sm120 "
         "(default: every one it supports). The full TensorRT builds for the GPU it runs on.")
class Workspace(click.ParamType):
    """GiB > 0, finite: the same check models.yaml's workspace: gets (config.workspace_problem)."""
    name = "GIB"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            number = value
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                number = str(value)
        why = workspace_problem(number)
        if why:
            self.fail(f"{why}{_from_env(ctx, param)} (write e.g. 4, or leave it out to let TensorRT decide)",
                      param, ctx)
        return float(number)


def _from_env(click_ctx, param) -> str:
    """` (from ENGINES_RUN_WORKSPACE)` when the value came from a variable: the user may not see it."""
    import os
    if click_ctx is None or param is None:
        return ""
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
    used = next((n for n in names if os.environ.get(n) not in (None, "")), None)
    return f" (from {used})" if used and click_ctx.get_parameter_source(param.name) in (
        None, click.core.ParameterSource.ENVIRONMENT) else ""


WORKSPACE = click.option(
    "--workspace", type=Workspace(), default=None, metavar="GIB",
    help="Builder workspace limit in GiB, overriding models.yaml; checked against the GPU's free "
         "memory. Default: let TensorRT decide.")
PRECISION = click.option(
    "--precision", type=click.Choice(list(PRECISIONS)), default=None,
    help="Treat every selected model as this precision, overriding models.yaml. int8: export writes the INT8 "
         "twin (a Q/DQ ONNX calibrated on models.yaml's calibration: images; docs/precision.md), build and run "
         "build from it.")


# -- the host's facts and the choice policy (resolve, pull) ---------------------------------------
host_options = _stack(
    click.option("--runtime", metavar="BACKEND==VERSION", callback=_check_runtime,
                 help="The runtime pyt-api-prod loads engines with: tensorrt==10.13.3.9 or tensorrt-rtx==1.7.1.116. "
                      "Default: the label of --image, else the tensorrt / tensorrt-rtx package installed here."),
    GPU_FACTS,
    click.option("--gpu-index", type=click.IntRange(min=0), metavar="N",
                 help="Which GPU the service uses on a multi-GPU host (nvidia-smi index). Default: the only GPU, "
                      "or the first when all are the same model."),
    click.option("--image", metavar="IMAGE",
                 help="Service image to read the TensorRT version from (label org.engines.tensorrt.version); "
                      "needs Docker. Also written to the env file as PYT_API_IMAGE."),
)
policy_options = _stack(
    click.option("--allow-demo", is_flag=True,
                 help="Accept a set built from demo weights (`engines demo-models`), for smoke tests."),
    click.option("--allow-pending", is_flag=True,
                 help="With --require: accept a set whose engine-level verification has not yet passed on this GPU."),
    click.option("--require", is_flag=True,
                 help="Production gate: the chosen set's engines must have passed engine-level verification on "
                      "this GPU (run `engines verify` here first). Used by `make deploy` and engines-check."),
)


def host_query(values: dict):
    """Pop the host options out of a command's keyword arguments."""
    from pipeline.deploy.pick import HostQuery
    return HostQuery(runtime=values.pop("runtime"), image=values.pop("image"), gpu_facts=values.pop("gpu_facts"),
                     gpu_index=values.pop("gpu_index"))


def policy(values: dict):
    from pipeline.deploy.pick import Policy
    return Policy(allow_demo=values.pop("allow_demo"), require=values.pop("require"),
                  allow_pending=values.pop("allow_pending"))


# -- registries (push, pull, resolve --from, fleet status) ----------------------------------------
REF_HELP = ("the repository, e.g. 127.0.0.1:5000/engines or ghcr.io/acme/engines. Credentials come from the Docker "
            "config (~/.docker/config.json, or $DOCKER_CONFIG/config.json) as `docker login` / `oras login` "
            "write it. A registry silent for ENGINES_REGISTRY_TIMEOUT seconds (default 60) is given up.")
registry_options = _stack(
    click.option("--plain-http", is_flag=True,
                 help="Talk HTTP, not HTTPS, to the registry (a test registry on 127.0.0.1, a private one "
                      "without TLS)."),
    click.option("--insecure", is_flag=True,
                 help="HTTPS without checking the registry's certificate (self-signed certificates)."),
)


def remote(ref: str, values: dict):
    """Pop the registry options and make the Remote for ``ref``."""
    from pipeline.registry.client import Remote
    return Remote(ref, plain_http=values.pop("plain_http"), insecure=values.pop("insecure"))


# -- waiting on another process (build, run, verify, pull, resolve --from) --------------------------
LOCK_TIMEOUT_ENV = "ENGINES_LOCK_TIMEOUT"


def _check_lock_timeout(click_ctx, param, value):
    if value is None or value == "":
        return None
    import math
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        import os
        source = click_ctx.get_parameter_source(param.name)
        names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
        used = next((n for n in names if os.environ.get(n) not in (None, "")), LOCK_TIMEOUT_ENV)
        where = f" (from {used})" if source is click.core.ParameterSource.ENVIRONMENT else ""
        raise click.BadParameter(f"{value!r}{where} is not a number of seconds >= 0 (e.g. 120)")
    return seconds


LOCK_TIMEOUT = click.option(   # env: ENGINES_<COMMAND>_LOCK_TIMEOUT, then ENGINES_LOCK_TIMEOUT for all
    "--lock-timeout", "lock_timeout", default=None, metavar="SECONDS", envvar=LOCK_TIMEOUT_ENV,
    callback=_check_lock_timeout,
    help="How long to wait when another process holds the engine set's lock (building, verifying or pulling "
         "it); the wait is announced with that process's pid. Default: as long as it takes. "
         f"Env {LOCK_TIMEOUT_ENV}.")


# -- which engine set ------------------------------------------------------------------------------
def set_option(role: str, envvar: str | None = None, name: str = "set_tag"):
    """--set TAG: the one engine set a command is about; ``role`` says what this command does with it
    (``name``: the parameter, which also names its ENGINES_<COMMAND>_<NAME> variable)."""
    return click.option("--set", name, default=None, metavar="TAG", envvar=envvar,
                        help=f"The engine set (a tag from `engines list`) {role}"
                             + (f" Env {envvar}." if envvar else ""))
