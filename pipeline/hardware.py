"""GPU facts: name, compute capability, driver and memory, without CUDA, torch or TensorRT.

Sources, first that answers wins (``detect_gpus``):

1. a saved file (``--gpu-facts FILE``): the CSV of
   ``nvidia-smi --query-gpu=index,name,uuid,compute_cap,driver_version,memory.total,memory.free,pci.bus_id --format=csv``
   (with or without header/units), or a JSON of NVML facts as in ``../shared/gpu-facts/*/nvml.json``;
2. NVML through ``pynvml`` (package ``nvidia-ml-py``), imported only here and optional;
3. running the nvidia-smi query above;
4. nothing: an empty list (the caller says what to do).

``nvidia-smi -q -x`` and the plain ``nvidia-smi`` table do not carry the compute
capability, so a file in those formats is refused with the command to save instead.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.errors import PipelineError

QUERY_FIELDS = ("index", "name", "uuid", "compute_cap", "driver_version", "memory.total",
                "memory.free", "pci.bus_id")
QUERY_CMD = ["nvidia-smi", "--query-gpu=" + ",".join(QUERY_FIELDS), "--format=csv"]
QUERY_TEXT = " ".join(QUERY_CMD)
_MISSING = {"", "n/a", "[n/a]", "not supported", "[not supported]", "[unknown error]", "unknown"}


@dataclass(frozen=True)
class GpuFacts:
    index: int
    name: str
    uuid: str | None
    compute_cap: str                 # "9.0"
    driver: str | None
    memory_total_mib: int | None
    memory_free_mib: int | None
    pci_bus_id: str | None
    cuda: str | None = None          # CUDA version the driver supports, "13.0"
    source: str | None = None        # where the facts came from, for messages

    @property
    def sm(self) -> str:
        """'9.0' -> 'sm90'."""
        return sm_name(self.compute_cap)

    def describe(self) -> str:
        mem = f", {self.memory_free_mib} MiB free of {self.memory_total_mib} MiB" \
            if self.memory_free_mib is not None and self.memory_total_mib is not None else ""
        driver = f", driver {self.driver}" if self.driver else ""
        return f"GPU {self.index}: {self.name} (compute capability {self.compute_cap}, {self.sm}){driver}{mem}"

    def to_json(self) -> dict:
        return asdict(self)


def _clean(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return None if text.lower() in _MISSING else text


def _mib(value: object) -> int | None:
    text = _clean(value)
    if text is None:
        return None
    m = re.match(r"^([\d.]+)\s*(MiB|GiB)?$", text, re.IGNORECASE)
    if not m:
        return None
    n = float(m.group(1))
    return int(n * 1024) if (m.group(2) or "").lower() == "gib" else int(n)


def _norm_cc(value: object, where: str) -> str:
    text = _clean(value)
    if text is None or not re.match(r"^\d+\.\d+$", text):
        raise PipelineError(
            f"no compute capability in the GPU facts (read {text!r})", file=where,
            fix=f"save the facts with `{QUERY_TEXT} > gpu.csv` (driver 510 or newer reports compute_cap)")
    major, minor = text.split(".")
    return f"{int(major)}.{int(minor)}"


def parse_query_csv(text: str, where: str = "nvidia-smi") -> list[GpuFacts]:
    """Rows of the nvidia-smi query; header names may carry units (``memory.total [MiB]``)."""
    rows = [r for r in csv.reader(io.StringIO(text), skipinitialspace=True) if r and any(c.strip() for c in r)]
    if not rows:
        return []
    first = [c.strip() for c in rows[0]]
    if first and first[0].lower().startswith("index"):
        header = [re.sub(r"\s*\[.*\]$", "", c).strip().lower() for c in first]
        rows = rows[1:]
    else:                                   # --format=csv,noheader: the query's own order
        header = list(QUERY_FIELDS)
    missing = {"index", "name", "compute_cap"} - set(header)
    if missing:
        raise PipelineError(f"GPU facts CSV lacks the column(s) {', '.join(sorted(missing))}", file=where,
                            fix=f"save it with `{QUERY_TEXT} > gpu.csv`")
    gpus = []
    for lineno, row in enumerate(rows, start=2):
        rec = dict(zip(header, (c.strip() for c in row)))
        try:
            index = int(rec["index"])
        except ValueError:
            raise PipelineError(f"line {lineno}: GPU index {rec['index']!r} is not a number", file=where,
                                fix=f"save it with `{QUERY_TEXT} > gpu.csv`") from None
        gpus.append(GpuFacts(
            index=index, name=_clean(rec.get("name")) or "unknown GPU", uuid=_clean(rec.get("uuid")),
            compute_cap=_norm_cc(rec.get("compute_cap"), where), driver=_clean(rec.get("driver_version")),
            memory_total_mib=_mib(rec.get("memory.total")), memory_free_mib=_mib(rec.get("memory.free")),
            pci_bus_id=_clean(rec.get("pci.bus_id")), source=where))
    return gpus


def _cuda_from_int(v: object) -> str | None:
    """NVML's 13000 -> '13.0'."""
    if isinstance(v, int) and v > 0:
        return f"{v // 1000}.{(v % 1000) // 10}"
    return _clean(v)


def _json_index(value: object, entry: int, where: str) -> int:
    """A GPU index from JSON: a non-negative whole number (or its digits as a string)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise PipelineError(f"GPU facts JSON entry {entry}: GPU index {value!r} is not a whole number", file=where,
                        fix="write the NVML index (0, 1, ...) or leave the index out to number the GPUs in order")


def parse_nvml_json(text: str, where: str) -> list[GpuFacts]:
    """``{"name", "cc": [9, 0], "driver", "cuda_driver_version", "mem_total", "mem_free", "uuid"}``
    (bytes), one object or a list of them."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"GPU facts file is not valid JSON ({exc})", file=where,
                            fix=f"save the CSV of `{QUERY_TEXT}` instead") from None
    items = data if isinstance(data, list) else data.get("gpus", [data]) if isinstance(data, dict) else []
    gpus = []
    for i, d in enumerate(items):
        if not isinstance(d, dict) or "name" not in d:
            raise PipelineError(f"GPU facts JSON entry {i} has no 'name'", file=where,
                                fix=f"save the CSV of `{QUERY_TEXT}` instead")
        cc = d.get("cc", d.get("compute_cap"))
        cc_text = ".".join(str(x) for x in cc) if isinstance(cc, (list, tuple)) else cc
        to_mib = (lambda b: int(b) // (1024 * 1024) if isinstance(b, int) else None)
        gpus.append(GpuFacts(
            index=_json_index(d.get("index", i), i, where), name=str(d["name"]), uuid=_clean(d.get("uuid")),
            compute_cap=_norm_cc(cc_text, where), driver=_clean(d.get("driver")),
            memory_total_mib=to_mib(d.get("mem_total")), memory_free_mib=to_mib(d.get("mem_free")),
            pci_bus_id=_clean(d.get("pci_bus_id")), cuda=_cuda_from_int(d.get("cuda_driver_version")),
            source=where))
    return gpus


def read_facts_file(path: Path) -> list[GpuFacts]:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PipelineError(f"cannot read the GPU facts file ({exc.strerror or exc})", file=where,
                            fix=f"save one with `{QUERY_TEXT} > gpu.csv` on the target host") from None
    head = text.lstrip()[:200]
    if head.startswith(("{", "[")):
        return parse_nvml_json(text, where)
    if head.startswith("<") or "NVIDIA-SMI" in head or "NVSMI LOG" in head:
        raise PipelineError(
            "this GPU facts file is `nvidia-smi` / `nvidia-smi -q` output, which does not record the "
            "compute capability", file=where, fix=f"save `{QUERY_TEXT} > gpu.csv` and pass that file")
    gpus = parse_query_csv(text, where)
    if not gpus:
        raise PipelineError("the GPU facts file lists no GPU", file=where,
                            fix=f"save it with `{QUERY_TEXT} > gpu.csv` on a host with a GPU")
    return gpus


def _from_nvml() -> list[GpuFacts] | None:
    try:
        import pynvml  # nvidia-ml-py: optional, and light (ctypes only)
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, OSError):  # no driver, no GPU
        return None

    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    try:
        driver = text(pynvml.nvmlSystemGetDriverVersion())
        try:
            cuda = _cuda_from_int(pynvml.nvmlSystemGetCudaDriverVersion())
        except pynvml.NVMLError:
            cuda = None
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            try:
                bus = text(pynvml.nvmlDeviceGetPciInfo(h).busId)
            except pynvml.NVMLError:
                bus = None
            gpus.append(GpuFacts(
                index=i, name=text(pynvml.nvmlDeviceGetName(h)), uuid=text(pynvml.nvmlDeviceGetUUID(h)),
                compute_cap=f"{major}.{minor}", driver=driver, memory_total_mib=int(mem.total) // 2**20,
                memory_free_mib=int(mem.free) // 2**20, pci_bus_id=bus, cuda=cuda, source="NVML"))
        return gpus
    except pynvml.NVMLError:
        return None   # a half-answering driver: nvidia-smi gets its chance
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _from_nvidia_smi() -> list[GpuFacts]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, *QUERY_CMD[1:]], check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    try:
        return parse_query_csv(out.stdout, "nvidia-smi")
    except PipelineError:
        return []


def detect_gpus(gpu_facts: Path | None = None) -> list[GpuFacts]:
    """Every GPU of this host (or of the saved facts file), in NVML/nvidia-smi index order."""
    if gpu_facts is not None:
        return read_facts_file(Path(gpu_facts))
    gpus = _from_nvml()
    if gpus:
        return gpus
    return _from_nvidia_smi()


def pick_gpu(gpus: list[GpuFacts], index: int | None = None) -> GpuFacts:
    """The GPU at ``index``; without one, the only GPU, or the first when all are alike."""
    if not gpus:
        raise PipelineError(
            "no NVIDIA GPU found (NVML and nvidia-smi answered nothing)",
            fix="run on the GPU host (in Docker: give the container the GPU, `gpus: all`), or pass "
                f"`--gpu-facts FILE` saved there with `{QUERY_TEXT} > gpu.csv`")
    listing = [g.describe() for g in gpus]
    if index is None:
        kinds = {(g.name, g.compute_cap) for g in gpus}
        if len(kinds) > 1:
            raise PipelineError("this host has different GPUs; say which one the service uses",
                                details=listing, fix="pass `--gpu-index N`")
        return gpus[0]
    for g in gpus:
        if g.index == index:
            return g
    raise PipelineError(f"there is no GPU with index {index}", details=listing,
                        fix=f"pass one of --gpu-index {', '.join(str(g.index) for g in gpus)}")


def cc_tuple(compute_cap: str) -> tuple[int, int]:
    """'8.6' -> (8, 6): orders compute capabilities numerically ('12.0' after '8.9')."""
    major, minor = compute_cap.split(".")
    return int(major), int(minor)


def sm_name(compute_cap: str) -> str:
    """'9.0' -> 'sm90', '12.0' -> 'sm120' (the spelling of tags and --target)."""
    major, minor = compute_cap.split(".")
    return f"sm{major}{minor}"


def has_fast_fp16(compute_cap: str) -> bool:
    """True where FP16 arithmetic runs at full (or double) rate.

    NVIDIA CUDA C++ Programming Guide, "Arithmetic Instructions", table "Throughput of
    Native Arithmetic Instructions (Number of Results per Clock Cycle per Multiprocessor)",
    row "16-bit floating-point add, multiply, multiply-add": 5.3 -> 256, 6.0 -> 128,
    6.1 -> 2, 6.2 -> 256, 7.x and later -> 128 or more (and tensor cores from Volta, 7.0).
    So Pascal consumer parts (6.1: GTX 10xx, P4/P40) run FP16 at 1/64 of the FP32 rate,
    while P100 (6.0) and the Jetson TX1/TX2 (5.3/6.2) are fast. TensorRT's own
    ``builder.platform_has_fast_fp16`` is the authority where TensorRT is loaded.
    """
    cc = cc_tuple(compute_cap)
    return cc >= (7, 0) or cc in {(5, 3), (6, 0), (6, 2)}


def has_int8(compute_cap: str) -> bool:
    """True where INT8 math exists: the dp4a instruction from compute capability 6.1 (CUDA C++
    Programming Guide, "Arithmetic Instructions"), INT8 tensor cores from 7.2/7.5. TensorRT's
    support matrix lists INT8 for compute capability 6.1 and newer."""
    return cc_tuple(compute_cap) >= (6, 1)


def free_memory_gib(gpu: GpuFacts) -> float | None:
    """Free device memory in GiB, or None where the facts do not say (Jetson, N/A)."""
    return None if gpu.memory_free_mib is None else gpu.memory_free_mib / 1024.0

