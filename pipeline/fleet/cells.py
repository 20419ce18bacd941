"""The GPU list of `engines fleet plan` and `engines fleet status`: one reader, one schema,
one ``Cell``.

A cell is one engine set to build: a GPU type (the GPU Feature Discovery product label, or a
compute capability) and a builder image with the TensorRT version it carries. The file names
cells one by one (``cells:``) and/or as a matrix: every builder image of ``builders:`` (one
per TensorRT version) on every GPU type of ``gpus:``::

    registry: registry.example.com/engines/yolo     # where `engines push` sends the sets
    namespace: engines                              # default: default
    models: {pvc: engines-models}                   # or {image: registry.example.com/models:2026-11, path: /models}
    registry_secret: engines-registry               # kubernetes.io/dockerconfigjson Secret -> ~/.docker/config.json
    builders:                                       # the TensorRT versions (rows of the matrix)
      - {image: registry.example.com/engines-builder:trt11, trt: "11.2.1.2"}
      - {image: registry.example.com/engines-builder:trt10, trt: "10.13.2.6"}
    gpus:                                           # the GPU types (columns)
      - {gpu: Tesla-T4}
      - {gpu: NVIDIA-A10}
      - {compute_cap: "9.0"}
    cells:                                          # single cells besides the matrix (optional)
      - {gpu: NVIDIA-L4, image: registry.example.com/engines-builder:trt11, trt: "11.2.1.2"}

`fleet status --gpus` reads the same file (each cell's runtime is ``tensorrt==<trt>``) or a
plain list of wanted cells (``[{gpu, runtime: BACKEND==VERSION, compute_cap?}]``).

Bytes to YAML with the checks a hand-written or generated file needs before anything walks
it: at most ``MAX_BYTES``, UTF-8 text, nesting at most ``MAX_DEPTH`` deep (PyYAML composes
nodes recursively: 50,000 nested ``[`` would end in a RecursionError), and each key once per
mapping (YAML would silently keep the last). Every problem is a ``PipelineError`` naming
the file, the entry (and line) and the next step.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.builders import TensorRT, builder_named
from pipeline.config import UniqueKeyLoader
from pipeline.errors import PipelineError
from pipeline.runtime import Runtime, parse_runtime

GFD_PRODUCT = "nvidia.com/gpu.product"          # GPU Feature Discovery labels (NVIDIA k8s-device-plugin)
GFD_CC_MAJOR = "nvidia.com/gpu.compute.major"
GFD_CC_MINOR = "nvidia.com/gpu.compute.minor"
BUILDER_UID = 10001                              # Dockerfile.build: useradd --uid 10001, USER 10001:10001
TOP_KEYS = {"registry", "namespace", "models", "registry_secret", "image_pull_secret", "cells", "builders", "gpus",
            "backoff_limit", "ttl_seconds_after_finished", "active_deadline_seconds", "allow_demo", "plain_http",
            "insecure", "work_size", "uid"}
GPU_KEYS = {"gpu", "compute_cap"}
BUILDER_KEYS = {"image", "trt", "tensorrt", "runtime"}
CELL_KEYS = GPU_KEYS | BUILDER_KEYS
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
FILE_EXAMPLE = ("registry: registry.example.com/engines/yolo\nmodels: {pvc: engines-models}\n"
                "builders:\n  - {image: registry.example.com/engines-builder:trt11, trt: '11.2.1.2'}\n"
                "  - {image: registry.example.com/engines-builder:trt10, trt: '10.13.2.6'}\n"
                "gpus:\n  - {gpu: Tesla-T4}\n  - {gpu: NVIDIA-A10}")
STATUS_FIX = ("one item per cell, e.g. `- {gpu: NVIDIA H100 80GB HBM3, runtime: tensorrt==10.13.3.9, "
              "compute_cap: '9.0'}` (compute_cap is optional when a set built on that GPU exists), or the "
              "`engines fleet plan` file (builders: x gpus:, with trt: on each builder)")


@dataclass(frozen=True)
class Cell:
    """One engine set to build or to find: a GPU type and a builder (image, TensorRT version)."""
    where: str                 # "cells[2] (line 9)" or "builders[1] x gpus[0]": for messages
    gpu: str | None            # the GPU name as written (nvidia-smi's or the product label)
    compute_cap: str | None    # "9.0"
    image: str | None          # the builder image (fleet plan needs it; fleet status does not)
    trt: str | None            # the TensorRT version the image carries, checked before building
    backend: str = TensorRT.name   # the runtime's builder (fleet status may ask for TensorRT for RTX cells)

    @property
    def product(self) -> str | None:
        """The nvidia.com/gpu.product label value of ``gpu``."""
        return gfd_product(self.gpu) if self.gpu else None

    @property
    def runtime(self) -> Runtime | None:
        return Runtime(self.backend, self.trt, self.where) if self.trt else None

    def node_selector(self) -> dict[str, str]:
        sel = {}
        if self.gpu:
            sel[GFD_PRODUCT] = self.product
        if self.compute_cap:
            major, minor = self.compute_cap.split(".")
            sel[GFD_CC_MAJOR], sel[GFD_CC_MINOR] = major, minor
        return sel

    @property
    def job_name(self) -> str:
        """DNS-1123, at most 63 characters (the Job controller copies it into a pod label),
        deterministic: a readable part plus a hash of the selector and the image."""
        what = self.product or f"sm{self.compute_cap.replace('.', '')}"
        version = self.trt or (self.image or "").rsplit("/", 1)[-1].split(":")[-1].split("@")[0]
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
    cells: list[Cell] = field(default_factory=list)   # the matrix, then the single cells


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


def _gpu_part(item: dict, where: str, path: Path) -> tuple[str | None, str | None]:
    gpu, cc = item.get("gpu"), item.get("compute_cap")
    if gpu is None and cc is None:
        raise _bad(path, f"{where}: names no GPU", "add `gpu:` (the nvidia.com/gpu.product label value, e.g. "
                   "Tesla-T4 or NVIDIA-H100-80GB-HBM3: `kubectl get nodes -L nvidia.com/gpu.product` lists them) "
                   "or `compute_cap: '8.6'`")
    if gpu is not None:
        if not isinstance(gpu, str) or not gpu.strip():
            raise _bad(path, f"{where}: `gpu: {gpu!r}` is not a GPU product name", "write e.g. gpu: Tesla-T4")
        gpu = " ".join(gpu.split())
        if len(gfd_product(gpu)) > 63 or not LABEL_VALUE.match(gfd_product(gpu)):
            raise _bad(path, f"{where}: `gpu: {gfd_product(gpu)}` cannot be a Kubernetes label value (at most 63 "
                       "letters, digits, '-', '_' or '.')", "copy the value from `kubectl get nodes -L "
                       "nvidia.com/gpu.product`")
    if cc is not None:
        cc = str(cc).strip()
        if not re.match(r"^\d{1,2}\.\d$", cc):
            raise _bad(path, f"{where}: `compute_cap: {cc}` is not a compute capability",
                       "write it quoted with its dot, e.g. compute_cap: '8.6' (nvidia-smi --query-gpu=compute_cap)")
    return gpu, cc


def _builder_part(item: dict, where: str, path: Path, need_image: bool) -> tuple[str | None, str | None, str]:
    """(image, trt version, backend) of a cell or a `builders:` entry."""
    image = _str(item, "image", path, where, required=need_image)
    trt = item.get("trt") or item.get("tensorrt")
    backend = TensorRT.name   # the fleet builds on each GPU type with the full TensorRT
    runtime = item.get("runtime")
    if runtime is not None:
        try:
            rt = parse_runtime(str(runtime), str(path))
        except PipelineError:
            rt = None
        # a builder that builds ahead of time needs no GPU of each type: no fleet of Jobs for it
        if rt is None or (need_image and not builder_named(rt.backend).needs_build_gpu):
            raise _bad(path, f"{where}: `runtime: {runtime}` is not a full-TensorRT runtime",
                       "write runtime: tensorrt==10.13.2.6 (the fleet builds with the full TensorRT), or use trt:")
        trt, backend = trt or rt.version, rt.backend
    if trt is not None:
        trt = str(trt).strip()
        if not re.match(r"^\d+(\.\d+){1,3}$", trt):
            raise _bad(path, f"{where}: `trt: {trt}` is not a TensorRT version",
                       "write the version the builder image carries, quoted, e.g. trt: '11.2.1.2' "
                       "(`engines docker image-info` reads it from the image label)")
    return image, trt, backend


def _mapping(item: Any, where: str, keys: set[str], path: Path, example: str) -> dict:
    if not isinstance(item, dict):
        raise _bad(path, f"{where} is not a mapping: {item!r}", f"write each entry as {example}")
    extra = sorted(set(item) - keys, key=str)
    if extra:
        raise _bad(path, f"{where}: unknown key(s) {', '.join(map(str, extra))}",
                   f"remove them; an entry here takes {', '.join(sorted(keys))}")
    return item


def _cell(where: str, item: Any, path: Path, need_image: bool = True) -> Cell:
    item = _mapping(item, where, CELL_KEYS, path, "{gpu: Tesla-T4, image: REGISTRY/engines-builder:TAG}")
    gpu, cc = _gpu_part(item, where, path)
    image, trt, backend = _builder_part(item, where, path, need_image)
    return Cell(where, gpu, cc, image, trt, backend)


def _where(key: str, i: int, lines: list[int]) -> str:
    return f"{key}[{i}]" + (f" (line {lines[i]})" if i < len(lines) else "")


def _entries(data: dict, key: str, path: Path) -> list:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise _bad(path, f"`{key}:` must be a non-empty list", f"write it like:\n{FILE_EXAMPLE}")
    return value


def read_matrix(text: str, data: dict, path: Path, need_image: bool = True) -> list[Cell]:
    """Every cell of the file: each builder of ``builders:`` on each GPU type of ``gpus:``, then
    ``cells:``; a cell named twice (same GPU and builder image) is refused."""
    builders, gpus, singles = (_entries(data, k, path) for k in ("builders", "gpus", "cells"))
    if bool(builders) != bool(gpus):
        have, lack = ("builders", "gpus") if builders else ("gpus", "builders")
        raise _bad(path, f"`{have}:` without `{lack}:`: the matrix builds every builder image on every GPU type",
                   f"add `{lack}:`; a complete file looks like:\n{FILE_EXAMPLE}")
    if not builders and not singles:
        raise _bad(path, "`cells:` must be a non-empty list (one entry per GPU type and builder image), or give "
                   "`builders:` and `gpus:` (the matrix)", f"write it like:\n{FILE_EXAMPLE}")
    out: list[Cell] = []
    b_lines, g_lines, c_lines = (_item_lines(text, k) for k in ("builders", "gpus", "cells"))
    rows = [(_where("builders", i, b_lines), _builder_part(
        _mapping(b, _where("builders", i, b_lines), BUILDER_KEYS, path, "{image: REGISTRY/engines-builder:TAG, trt: "
                 "'11.2.1.2'}"), _where("builders", i, b_lines), path, need_image)) for i, b in enumerate(builders)]
    cols = [(f"gpus[{i}]", _gpu_part(_mapping(g, _where("gpus", i, g_lines), GPU_KEYS, path, "{gpu: Tesla-T4}"),
                                     _where("gpus", i, g_lines), path)) for i, g in enumerate(gpus)]
    for b_where, (image, trt, backend) in rows:
        for g_where, (gpu, cc) in cols:
            out.append(Cell(f"{b_where.split(' ')[0]} x {g_where}", gpu, cc, image, trt, backend))
    out += [_cell(_where("cells", i, c_lines), item, path, need_image) for i, item in enumerate(singles)]
    seen: dict[tuple, Cell] = {}
    for c in out:
        key = (tuple(sorted(c.node_selector().items())), c.image, c.trt if not need_image else None)
        if key in seen:
            raise _bad(path, f"{c.where} repeats {seen[key].where} (same GPU and image)",
                       "remove one of them: each (GPU, builder image) pair is built once")
        seen[key] = c
    return out


def load_fleet(path: Path | str) -> FleetFile:
    """Read and check the GPU list; every error names the entry (and line) and the next step."""
    from pipeline.registry.client import REFERENCE_EXAMPLE, reference_problem  # no SDK loads with these
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
    ff.cells = read_matrix(text, data, path)
    return ff


def read_cells(path: Path | str) -> list[Cell]:
    """The cells `engines fleet status --gpus` wants: the plan's file (its matrix and cells, each
    with a ``trt:`` version) or a plain list of ``{gpu, runtime, compute_cap?}``."""
    path = Path(path)
    text, data = read_gpu_list(path)
    if isinstance(data, dict) and ({"builders", "gpus"} & set(data)):
        cells = read_matrix(text, data, path, need_image=False)
    else:
        items = data.get("cells") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise PipelineError("the GPU list is not a list of cells", file=path, fix=STATUS_FIX)
        lines = _item_lines(text, "cells") if isinstance(data, dict) else []
        cells = [_cell(_where("cells", i, lines), item, path, need_image=False) for i, item in enumerate(items)]
    for c in cells:   # each names a GPU (gpu: or compute_cap:, checked by the reader) and now a runtime
        if c.runtime is None:
            raise PipelineError(f"{c.where} needs `runtime` (or `tensorrt`/`trt`)", file=path, fix=STATUS_FIX)
    return cells


MAX_BYTES = 1 << 20        # a GPU list names a few dozen cells: a megabyte is far more than any needs
MAX_DEPTH = 32             # the deepest real list is 3 (top level, cells, a cell)
UTF8_FIX = ("save the GPU list as UTF-8 text (YAML or JSON), e.g. `iconv -f latin1 -t utf-8 FILE > NEW`; "
            "a binary file is not a GPU list")


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PipelineError(f"the GPU list is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} cannot be "
                            "decoded (a binary file, or one saved as latin-1 or another encoding)", file=path,
                            fix=UTF8_FIX) from None


def _check_depth(text: str, path: Path, loader) -> None:
    """Walk the parser's events (PyYAML's parser is a state machine, not recursive) and stop
    at the first collection nested deeper than MAX_DEPTH, before the recursive composer runs."""
    import yaml
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise PipelineError(f"the GPU list nests lists or mappings more than {MAX_DEPTH} deep (line "
                                    f"{event.start_mark.line + 1}, column {event.start_mark.column + 1})", file=path,
                                    fix="write the GPU list as a mapping with `cells:`, a list of flat "
                                        "{gpu: ..., image: ..., trt: ...} entries (or a plain list of cells)")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def read_gpu_list(path: Path | str) -> tuple[str, Any]:
    """(text, data) of the GPU list at ``path``; a PipelineError for anything that is no
    readable, sane YAML document."""
    import yaml
    path = Path(path)
    try:
        with open(path, "rb") as fd:
            raw = fd.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PipelineError(f"cannot read the GPU list ({exc.strerror or exc})", file=path,
                            fix="check the path and that this user may read it") from None
    if len(raw) > MAX_BYTES:
        raise PipelineError(f"the GPU list is larger than {MAX_BYTES >> 20} MiB", file=path,
                            fix="pass the GPU list itself (a few lines per cell), not another file")
    text = _decode(raw, path)
    loader = UniqueKeyLoader   # one YAML loader for every hand-written file: a key given twice is refused
    try:
        _check_depth(text, path, loader)
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise PipelineError(f"the GPU list is not valid YAML: {exc}", file=path,
                            fix="fix the YAML syntax at the line named (each key once per mapping)") from None
    except RecursionError:   # a backstop: the depth check should already have caught it
        raise PipelineError("the GPU list nests too deep to read", file=path,
                            fix="write the GPU list as a mapping with `cells:`, a list of flat entries") from None
    return text, data
