"""`engines fleet plan`: a Kubernetes build matrix, one ``batch/v1`` Job per (GPU product, builder image).

A full-TensorRT engine is built and timed on the GPU type it will run on, so a fleet of
T4 edge boxes, A10/L4 servers and H100s needs a build on each. The GPU list (YAML) names
the cells; each becomes a Job pinned to that GPU by NVIDIA GPU Feature Discovery labels
(``nvidia.com/gpu.product``, or ``nvidia.com/gpu.compute.major``/``minor``), asking for
one GPU, running the builder image: copy the models in, ``engines run --backend
tensorrt``, ``engines verify`` on that GPU, ``engines push <registry>``. Hosts then take
their set with ``engines pull`` / ``engines resolve --from``.

GPU list::

    registry: registry.example.com/engines/yolo     # where `engines push` sends the sets
    namespace: engines                              # default: default
    models: {pvc: engines-models}                   # or {image: registry.example.com/models:2026-11, path: /models}
    registry_secret: engines-registry               # kubernetes.io/dockerconfigjson Secret -> ~/.docker/config.json
    cells:
      - {gpu: Tesla-T4, image: registry.example.com/engines-builder:25.08, trt: "10.13.2.6"}
      - {compute_cap: "9.0", image: registry.example.com/engines-builder:25.08}

Objects are ``kubernetes.client`` models serialised with ``ApiClient().sanitize_for_serialization``;
the client loads only when a plan is made, never at CLI start.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

GFD_PRODUCT = "nvidia.com/gpu.product"          # GPU Feature Discovery labels (NVIDIA k8s-device-plugin)
GFD_CC_MAJOR = "nvidia.com/gpu.compute.major"
GFD_CC_MINOR = "nvidia.com/gpu.compute.minor"
GPU_RESOURCE = "nvidia.com/gpu"
BUILDER_UID = 10001                              # Dockerfile.build: useradd --uid 10001, USER 10001:10001
BUILDER_HOME = "/home/engines"                   # Dockerfile.build: HOME
MODELS_DIR = "/workspace/models"                 # Dockerfile.build: ENGINES_CONFIG=/workspace/models/models.yaml
# Dockerfile.build: ENTRYPOINT ["/usr/local/bin/engines-entrypoint"] (docker/entrypoint.sh: the
# models owner's uid when started as root, then NGC's CUDA set-up, banner on stderr); the Job keeps
# it, as compose does, and runs a short bash script of `engines` steps through it (an absolute
# first argument runs that program instead of `engines`)
BUILDER_ENTRYPOINT = "/usr/local/bin/engines-entrypoint"
LABEL_PREFIX = "engines.pipeline"
TOP_KEYS = {"registry", "namespace", "models", "registry_secret", "image_pull_secret", "cells", "backoff_limit",
            "ttl_seconds_after_finished", "active_deadline_seconds", "allow_demo", "plain_http", "insecure",
            "work_size", "uid"}
CELL_KEYS = {"gpu", "compute_cap", "image", "trt", "tensorrt", "runtime"}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
FILE_EXAMPLE = ("registry: registry.example.com/engines/yolo\nmodels: {pvc: engines-models}\n"
                "cells:\n  - {gpu: Tesla-T4, image: registry.example.com/engines-builder:25.08, trt: '10.13.2.6'}")


@dataclass(frozen=True)
class Cell:
    """One build: a GPU type (product label or compute capability) and a builder image."""
    index: int
    line: int | None
    gpu: str | None            # the gpu.product label value, e.g. Tesla-T4, NVIDIA-H100-80GB-HBM3
    compute_cap: str | None    # "9.0"
    image: str
    trt: str | None            # the TensorRT version the image carries, checked before building

    @property
    def where(self) -> str:
        return f"cells[{self.index}]" + (f" (line {self.line})" if self.line else "")

    def node_selector(self) -> dict[str, str]:
        sel = {}
        if self.gpu:
            sel[GFD_PRODUCT] = self.gpu
        if self.compute_cap:
            major, minor = self.compute_cap.split(".")
            sel[GFD_CC_MAJOR], sel[GFD_CC_MINOR] = major, minor
        return sel

    @property
    def job_name(self) -> str:
        """DNS-1123, at most 63 characters (the Job controller copies it into a pod label),
        deterministic: a readable part plus a hash of the selector and the image."""
        what = self.gpu or f"sm{self.compute_cap.replace('.', '')}"
        version = self.trt or self.image.rsplit("/", 1)[-1].split(":")[-1].split("@")[0]
        digest = hashlib.sha256(repr((sorted(self.node_selector().items()), self.image)).encode()).hexdigest()[:8]
        readable = _slug(f"engines-{what}-trt{version}" if self.trt else f"engines-{what}-{version}")
        return f"{readable[:63 - 9].rstrip('-')}-{digest}"


@dataclass
class FleetFile:
    path: Path
    registry: str
    namespace: str = "default"
    pvc: str | None = None
    pvc_sub_path: str | None = None
    models_image: str | None = None
    models_path: str = "/models"
    registry_secret: str | None = None
    image_pull_secret: str | None = None
    backoff_limit: int = 1
    ttl_seconds_after_finished: int = 86400
    active_deadline_seconds: int = 4 * 3600
    allow_demo: bool = False
    plain_http: bool = False
    insecure: bool = False
    work_size: str = "20Gi"
    uid: int = BUILDER_UID
    cells: list[Cell] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")


def gfd_product(name: str) -> str:
    """nvidia-smi's name as GPU Feature Discovery publishes it: whitespace runs become '-'
    ("NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3", "Tesla T4" -> "Tesla-T4")."""
    return "-".join(str(name).split())


def _item_lines(text: str, key: str) -> list[int]:
    """1-based line of each item of the top-level list ``key`` (for error messages)."""
    import yaml
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for k, v in root.value:
        if getattr(k, "value", None) == key and isinstance(v, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in v.value]
    return []


def _bad(path: Path, what: str, fix: str) -> PipelineError:
    return PipelineError(what, file=path, fix=fix)


def _str(data: dict, key: str, path: Path, where: str, required: bool = False) -> str | None:
    v = data.get(key)
    if v is None:
        if required:
            raise _bad(path, f"{where}: missing `{key}`", f"add `{key}:`; a complete file looks like:\n{FILE_EXAMPLE}")
        return None
    if not isinstance(v, str) or not v.strip() or any(c.isspace() for c in v.strip()):
        raise _bad(path, f"{where}: `{key}` must be a single word (no spaces), found {v!r}",
                   f"write `{key}:` as a plain string, e.g. {key}: engines-models")
    return v.strip()


def _k8s_name(value: str | None, key: str, path: Path) -> str | None:
    if value is not None and (len(value) > 253 or not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", value)):
        raise _bad(path, f"`{key}: {value}` is not a valid Kubernetes object name",
                   "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit")
    return value


def _int(data: dict, key: str, default: int, path: Path, minimum: int) -> int:
    v = data.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _bad(path, f"`{key}: {v!r}` must be a whole number >= {minimum}", f"write e.g. {key}: {default}")
    return v


def _bool(data: dict, key: str, path: Path) -> bool:
    v = data.get(key, False)
    if not isinstance(v, bool):
        raise _bad(path, f"`{key}: {v!r}` must be true or false", f"write {key}: true or remove it")
    return v


def _cell(i: int, line: int | None, item: Any, path: Path) -> Cell:
    where = f"cells[{i}]" + (f" (line {line})" if line else "")
    if not isinstance(item, dict):
        raise _bad(path, f"{where} is not a mapping: {item!r}",
                   "write each cell as {gpu: Tesla-T4, image: REGISTRY/engines-builder:TAG}")
    extra = sorted(set(item) - CELL_KEYS)
    if extra:
        raise _bad(path, f"{where}: unknown key(s) {', '.join(map(str, extra))}",
                   f"remove them; a cell takes {', '.join(sorted(CELL_KEYS))}")
    gpu = item.get("gpu")
    cc = item.get("compute_cap")
    if gpu is None and cc is None:
        raise _bad(path, f"{where}: names no GPU", "add `gpu:` (the nvidia.com/gpu.product label value, e.g. "
                   "Tesla-T4 or NVIDIA-H100-80GB-HBM3: `kubectl get nodes -L nvidia.com/gpu.product` lists them) "
                   "or `compute_cap: '8.6'`")
    if gpu is not None:
        if not isinstance(gpu, str) or not gpu.strip():
            raise _bad(path, f"{where}: `gpu: {gpu!r}` is not a GPU product name", "write e.g. gpu: Tesla-T4")
        gpu = gfd_product(gpu)
        if len(gpu) > 63 or not LABEL_VALUE.match(gpu):
            raise _bad(path, f"{where}: `gpu: {gpu}` cannot be a Kubernetes label value (at most 63 letters, digits, "
                       "'-', '_' or '.')", "copy the value from `kubectl get nodes -L nvidia.com/gpu.product`")
    if cc is not None:
        cc = str(cc).strip()
        if not re.match(r"^\d{1,2}\.\d$", cc):
            raise _bad(path, f"{where}: `compute_cap: {cc}` is not a compute capability",
                       "write it quoted with its dot, e.g. compute_cap: '8.6' (nvidia-smi --query-gpu=compute_cap)")
    image = _str(item, "image", path, where, required=True)
    trt = item.get("trt") or item.get("tensorrt")
    runtime = item.get("runtime")
    if runtime is not None:
        m = re.match(r"^\s*(tensorrt|trt)\s*==\s*(\S+)\s*$", str(runtime))
        if not m:
            raise _bad(path, f"{where}: `runtime: {runtime}` is not a full-TensorRT runtime",
                       "write runtime: tensorrt==10.13.2.6 (the fleet builds with the full TensorRT), or use trt:")
        trt = trt or m.group(2)
    if trt is not None:
        trt = str(trt).strip()
        if not re.match(r"^\d+(\.\d+){1,3}$", trt):
            raise _bad(path, f"{where}: `trt: {trt}` is not a TensorRT version",
                       "write the version the builder image carries, quoted, e.g. trt: '10.13.2.6' "
                       "(`engines docker image-info` reads it from the image label)")
    return Cell(i, line, gpu, cc, image, trt)


def load_fleet(path: Path | str) -> FleetFile:
    """Read and check the GPU list; every error names the entry (and line) and the next step."""
    from pipeline.fleet.cells import read_gpu_list
    from pipeline.registry import REFERENCE_EXAMPLE, reference_problem  # no SDK loads with these
    path = Path(path)
    text, data = read_gpu_list(path)   # size, UTF-8, nesting depth, each key once (shared with fleet status)
    if not isinstance(data, dict):
        raise _bad(path, "the GPU list must be a mapping with `registry:`, `models:` and `cells:`",
                   f"write it like:\n{FILE_EXAMPLE}")
    extra = sorted(set(data) - TOP_KEYS)
    if extra:
        raise _bad(path, f"unknown key(s) {', '.join(map(str, extra))}",
                   f"remove them; the file takes {', '.join(sorted(TOP_KEYS))}")
    registry = _str(data, "registry", path, "(top level)", required=True)
    problem = reference_problem(registry)
    if problem:   # caught here, not after hours of building when `engines push` meets it
        raise _bad(path, f"`registry: {registry}` is not an OCI repository reference ({problem})",
                   f"write registry: as HOST[:PORT]/PATH with a lower-case path and no tag, e.g. {REFERENCE_EXAMPLE}")
    models = data.get("models")
    if not isinstance(models, dict) or not ({"pvc", "image"} & set(models)) or {"pvc", "image"} <= set(models):
        raise _bad(path, "`models:` must name either a PersistentVolumeClaim or an init-container image",
                   "write models: {pvc: CLAIM} (the models folder with models.yaml on a volume) or models: {image: "
                   "IMAGE, path: /models} (an image whose /models holds it; it needs sh and tar)")
    unknown = sorted(set(models) - {"pvc", "sub_path", "image", "path"})
    if unknown:
        raise _bad(path, f"models: unknown key(s) {', '.join(map(str, unknown))}",
                   "models takes pvc (+ sub_path) or image (+ path)")
    ff = FleetFile(path=path, registry=registry)
    ff.namespace = _k8s_name(_str(data, "namespace", path, "(top level)") or "default", "namespace", path)
    ff.pvc = _k8s_name(_str(models, "pvc", path, "models"), "models.pvc", path)
    ff.pvc_sub_path = _str(models, "sub_path", path, "models")
    ff.models_image = _str(models, "image", path, "models")
    ff.models_path = _str(models, "path", path, "models") or "/models"
    ff.registry_secret = _k8s_name(_str(data, "registry_secret", path, "(top level)"), "registry_secret", path)
    ff.image_pull_secret = _k8s_name(_str(data, "image_pull_secret", path, "(top level)"), "image_pull_secret", path)
    ff.backoff_limit = _int(data, "backoff_limit", 1, path, 0)
    ff.ttl_seconds_after_finished = _int(data, "ttl_seconds_after_finished", 86400, path, 0)
    ff.active_deadline_seconds = _int(data, "active_deadline_seconds", 4 * 3600, path, 60)
    ff.uid = _int(data, "uid", BUILDER_UID, path, 1)
    ff.allow_demo, ff.plain_http, ff.insecure = (_bool(data, k, path) for k in ("allow_demo", "plain_http", "insecure"))
    ws = data.get("work_size", "20Gi")
    if not isinstance(ws, str) or not re.match(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$", ws):
        raise _bad(path, f"`work_size: {ws!r}` is not a Kubernetes quantity", "write e.g. work_size: 20Gi")
    ff.work_size = ws
    cells = data.get("cells")
    if not isinstance(cells, list) or not cells:
        raise _bad(path, "`cells:` must be a non-empty list (one entry per GPU type and builder image)",
                   f"write it like:\n{FILE_EXAMPLE}")
    lines = _item_lines(text, "cells")
    seen: dict[str, Cell] = {}
    for i, item in enumerate(cells):
        c = _cell(i, lines[i] if i < len(lines) else None, item, path)
        if c.job_name in seen:
            raise _bad(path, f"{c.where} repeats {seen[c.job_name].where} (same GPU and image)",
                       "remove one of them: each (GPU, builder image) pair is built once")
        seen[c.job_name] = c
        ff.cells.append(c)
    return ff


def build_script(ff: FleetFile, cell: Cell) -> str:
    """What the builder container runs: its entrypoint (`engines`) three times, stopping at the first failure."""
    lines = ["set -euo pipefail"]
    if cell.trt:
        lines.append('have="$(python3 -c \'import tensorrt; print(tensorrt.__version__)\')"; '
                     'if [ "$have" != "$ENGINES_EXPECT_TRT" ]; then echo "this image carries TensorRT $have, the '
                     'GPU list says $ENGINES_EXPECT_TRT: fix trt: or the image" >&2; exit 3; fi')
    lines.append("engines run --backend tensorrt" + ("" if ff.allow_demo else " --no-demo"))
    lines.append("engines verify")
    flags = (" --plain-http" if ff.plain_http else "") + (" --insecure" if ff.insecure else "")
    lines.append(f'engines push{flags} "$ENGINES_REGISTRY"')
    return "\n".join(lines)


def make_job(ff: FleetFile, cell: Cell):
    """The V1Job for one cell (kubernetes.client models)."""
    from kubernetes import client as k
    labels = {"app.kubernetes.io/name": "engines-build", "app.kubernetes.io/managed-by": "engines-fleet",
              f"{LABEL_PREFIX}/cell": cell.job_name[-8:]}
    if cell.gpu:
        labels[f"{LABEL_PREFIX}/gpu-product"] = cell.gpu
    if cell.compute_cap:
        labels[f"{LABEL_PREFIX}/compute-cap"] = cell.compute_cap
    if cell.trt:
        labels[f"{LABEL_PREFIX}/tensorrt"] = cell.trt
    annotations = {f"{LABEL_PREFIX}/image": cell.image, f"{LABEL_PREFIX}/registry": ff.registry,
                   f"{LABEL_PREFIX}/gpu-list": f"{ff.path.name} {cell.where}"}
    work = k.V1VolumeMount(name="work", mount_path=MODELS_DIR)
    volumes = [k.V1Volume(name="work", empty_dir=k.V1EmptyDirVolumeSource(size_limit=ff.work_size)),
               # torch export and ONNX Runtime outgrow a container runtime's 64 MB /dev/shm
               k.V1Volume(name="shm", empty_dir=k.V1EmptyDirVolumeSource(medium="Memory", size_limit="2Gi"))]
    copy = "tar -C {src} --exclude=./engines -cf - . | tar -C " + MODELS_DIR + " -xf -"
    if ff.pvc:
        volumes.append(k.V1Volume(name="models-src", persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(
            claim_name=ff.pvc, read_only=True)))
        init = k.V1Container(
            name="models", image=cell.image, command=["/bin/bash", "-euo", "pipefail", "-c"],
            args=[copy.format(src="/models-src")],
            volume_mounts=[k.V1VolumeMount(name="models-src", mount_path="/models-src", read_only=True,
                                           sub_path=ff.pvc_sub_path), work],
            security_context=_container_security(k))
    else:
        init = k.V1Container(
            name="models", image=ff.models_image, command=["/bin/sh", "-euc"],
            args=[copy.format(src=ff.models_path)], volume_mounts=[work], security_context=_container_security(k))
    mounts = [work, k.V1VolumeMount(name="shm", mount_path="/dev/shm")]
    env = [k.V1EnvVar(name="ENGINES_REGISTRY", value=ff.registry),
           k.V1EnvVar(name="ENGINES_CONFIG", value=f"{MODELS_DIR}/models.yaml")]
    if cell.trt:
        env.append(k.V1EnvVar(name="ENGINES_EXPECT_TRT", value=cell.trt))
    if ff.registry_secret:
        # a kubernetes.io/dockerconfigjson Secret (`kubectl create secret docker-registry`): its
        # .dockerconfigjson key becomes ~/.docker/config.json, where `engines push` reads credentials
        volumes.append(k.V1Volume(name="registry-auth", secret=k.V1SecretVolumeSource(
            secret_name=ff.registry_secret, items=[k.V1KeyToPath(key=".dockerconfigjson", path="config.json")])))
        mounts.append(k.V1VolumeMount(name="registry-auth", mount_path=f"{BUILDER_HOME}/.docker", read_only=True))
        env.append(k.V1EnvVar(name="DOCKER_CONFIG", value=f"{BUILDER_HOME}/.docker"))
    builder = k.V1Container(
        name="build", image=cell.image, command=[BUILDER_ENTRYPOINT, "/bin/bash", "-c"], args=[build_script(ff, cell)],
        env=env,
        resources=k.V1ResourceRequirements(limits={GPU_RESOURCE: "1"}), volume_mounts=mounts,
        security_context=_container_security(k))
    pod = k.V1PodSpec(
        restart_policy="Never", node_selector=cell.node_selector(), init_containers=[init], containers=[builder],
        volumes=volumes,
        # GPU node pools are commonly tainted nvidia.com/gpu:NoSchedule
        tolerations=[k.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")],
        image_pull_secrets=[k.V1LocalObjectReference(name=ff.image_pull_secret)] if ff.image_pull_secret else None,
        security_context=k.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=ff.uid, run_as_group=ff.uid, fs_group=ff.uid,
            seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault")))
    return k.V1Job(
        api_version="batch/v1", kind="Job",
        metadata=k.V1ObjectMeta(name=cell.job_name, namespace=ff.namespace, labels=labels, annotations=annotations),
        spec=k.V1JobSpec(
            backoff_limit=ff.backoff_limit, ttl_seconds_after_finished=ff.ttl_seconds_after_finished,
            active_deadline_seconds=ff.active_deadline_seconds,
            template=k.V1PodTemplateSpec(metadata=k.V1ObjectMeta(labels=labels), spec=pod)))


def _container_security(k):
    return k.V1SecurityContext(allow_privilege_escalation=False, capabilities=k.V1Capabilities(drop=["ALL"]))


def plan(ff: FleetFile) -> list[dict]:
    """Every cell's Job as a plain dict (what kubectl and the validator read)."""
    from kubernetes.client import ApiClient
    api = ApiClient()
    return [api.sanitize_for_serialization(make_job(ff, c)) for c in ff.cells]


def _dumper():
    """safe_dump with multi-line strings (the build script) as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)
    Dumper.add_representer(str, text)
    return Dumper


def to_yaml(jobs: list[dict]) -> str:
    import yaml
    return yaml.dump_all(jobs, Dumper=_dumper(), sort_keys=False, default_flow_style=False, width=120)


def write_plan(jobs: list[dict], out: Path | str) -> list[Path]:
    """One multi-document file, or (``out`` an existing folder or ending in '/') one file per Job."""
    from pipeline.fsutil import write_bytes_atomic
    folder = str(out).endswith(("/", "\\"))   # Path() would drop the slash
    out = Path(out)
    if out.is_dir() or folder:
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for job in jobs:
            f = out / f"{job['metadata']['name']}.yaml"
            write_bytes_atomic(f, to_yaml([job]).encode())
            files.append(f)
        return files
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, to_yaml(jobs).encode())
    return [out]


def apply(jobs: list[dict], namespace: str, kubeconfig: str | None = None, context: str | None = None,
          timeout: float = 15) -> list[dict]:
    """Submit the Jobs with the Kubernetes client; per Job: created | exists. A cluster that
    cannot be reached or refuses is a PipelineError naming the server and the next step."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException
    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        raise PipelineError(f"no usable kubeconfig ({exc})", file=kubeconfig,
                            fix="point --kubeconfig (or $KUBECONFIG) at the cluster's config, check it with "
                                "`kubectl cluster-info`; or leave out --apply and `kubectl apply -f` the plan") from None
    cfg.retries = 1
    api = client.BatchV1Api(client.ApiClient(cfg))
    out = []
    for job in jobs:
        name = job["metadata"]["name"]
        try:
            api.create_namespaced_job(namespace, job, _request_timeout=timeout)
            out.append({"job": name, "namespace": namespace, "result": "created"})
        except ApiException as exc:
            if exc.status == 409:
                out.append({"job": name, "namespace": namespace, "result": "exists"})
                continue
            why = {401: "the credentials were refused", 403: "this user may not create Jobs there",
                   404: f"namespace {namespace} does not exist"}.get(exc.status, f"HTTP {exc.status} {exc.reason}")
            raise PipelineError(f"the cluster at {cfg.host} refused Job {name}: {why}",
                                details=[str(exc.body)[:300]] if exc.body else None,
                                fix=f"`kubectl auth can-i create jobs -n {namespace}`; create the namespace with "
                                    f"`kubectl create namespace {namespace}` if it is missing") from None
        except Exception as exc:  # noqa: BLE001  (urllib3 raises many connection errors: all mean unreachable)
            raise PipelineError(f"cannot reach the Kubernetes API at {cfg.host} ({type(exc).__name__}: "
                                f"{str(exc)[:200]})",
                                fix="check the cluster is up and this machine can reach it (`kubectl cluster-info`), "
                                    "or write the plan with --out and apply it from where the cluster is reachable "
                                    "(`kubectl apply -f`)") from None
    return out
