"""`engines fleet plan`: a Kubernetes build matrix, one ``batch/v1`` Job per cell of the GPU
list (TensorRT version x GPU type: each cell its own engine set).

A full-TensorRT engine is built and timed on the GPU type it will run on, with the TensorRT
version the service runs, so a fleet of T4 edge boxes, A10 servers and H100s on TensorRT 10
and 11 needs a build per (version, GPU type). The GPU list (schema and ``Cell``:
``pipeline.fleet.cells``) names them; each becomes a Job pinned to that GPU by NVIDIA GPU
Feature Discovery labels (``nvidia.com/gpu.product``, or ``nvidia.com/gpu.compute.major``/
``minor``), asking for one GPU, running that version's builder image: copy the models in,
``engines run --backend tensorrt``, ``engines verify`` on that GPU, ``engines push
<registry>``. Hosts then take their set with ``engines pull`` / ``engines resolve --from``.

Objects are ``kubernetes.client`` models serialised with ``ApiClient().sanitize_for_serialization``;
the client loads only when a plan is made, never at CLI start.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.fleet.cells import Cell, FleetFile, load_fleet  # noqa: F401  (plan's input)

GPU_RESOURCE = "nvidia.com/gpu"
BUILDER_HOME = "/home/engines"                   # Dockerfile.build: HOME
MODELS_DIR = "/workspace/models"                 # Dockerfile.build: ENGINES_CONFIG=/workspace/models/models.yaml
# Dockerfile.build: ENTRYPOINT ["/usr/local/bin/engines-entrypoint"] (docker/entrypoint.sh: the
# models owner's uid when started as root, then NGC's CUDA set-up, banner on stderr); the Job keeps
# it, as compose does, and runs a short bash script of `engines` steps through it (an absolute
# first argument runs that program instead of `engines`)
BUILDER_ENTRYPOINT = "/usr/local/bin/engines-entrypoint"
LABEL_PREFIX = "engines.pipeline"


def build_script(ff: FleetFile, cell: Cell) -> str:
    """What the builder container runs: its entrypoint (`engines`) three times, stopping at the first failure."""
    lines = ["set -euo pipefail"]
    if cell.trt:
        lines.append('have="$(python3 -c \'import tensorrt; print(tensorrt.__version__)\')"; '
                     'if [ "$have" != "$ENGINES_EXPECT_TRT" ]; then echo "this image carries TensorRT $have, the '
                     'GPU list says $ENGINES_EXPECT_TRT: fix trt: or the image" >&2; exit 3; fi')
    lines.append(f"engines run --backend {cell.backend}" + ("" if ff.allow_demo else " --no-demo"))
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
        labels[f"{LABEL_PREFIX}/gpu-product"] = cell.product
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
