"""hardware: GPU facts from NVML, nvidia-smi and recorded fact files (the lent machines' copies in
tests/data/gpu-facts), without CUDA, torch or TensorRT; the GPU a command uses; fast FP16."""
from __future__ import annotations

import sys
import types

import pytest

from pipeline.errors import PipelineError
from pipeline.hardware import GpuFacts, detect_gpus, free_memory_gib, has_fast_fp16, parse_query_csv, pick_gpu
from tests.deploy.test_resolve import FACT_FILES, FACTS, H100, H200, gpu


@pytest.mark.parametrize("name", sorted(FACT_FILES))
def test_fact_files_parse(name):
    gpus = detect_gpus(FACTS / name)
    want_name, want_cc = FACT_FILES[name]
    assert gpus and all(g.name == want_name and g.compute_cap == want_cc for g in gpus)
    assert gpus[0].sm == "sm" + want_cc.replace(".", "")


def test_fact_details_and_placeholders():
    h100 = gpu("h100-80gb-hbm3.csv")
    assert (h100.driver, h100.memory_total_mib, h100.memory_free_mib, h100.pci_bus_id) == \
        ("580.159.04", 81559, 81079, "00000000:00:06.0")
    assert free_memory_gib(h100) == pytest.approx(81079 / 1024)
    orin = gpu("jetson-agx-orin.csv")          # Jetson: memory "Not Supported" -> unknown
    assert orin.memory_free_mib is None and orin.uuid is None and free_memory_gib(orin) is None
    nvml = detect_gpus(FACTS / "h200-nvml.json")[0]
    assert (nvml.name, nvml.compute_cap, nvml.cuda, nvml.memory_total_mib) == (H200, "9.0", "13.0", 143771)
    no_header = parse_query_csv("0, NVIDIA L4, GPU-1, 8.9, 570.133.20, 23034, 23000, 00000000:31:00.0\n")
    assert no_header[0].memory_free_mib == 23000 and no_header[0].compute_cap == "8.9"


def test_recorded_facts_of_the_lent_machines_read_as_recorded():
    """The verbatim copies of ../shared/gpu-facts (tests/data/gpu-facts/README.md): the query CSV
    and NVML JSON read; `nvidia-smi -q -x` is refused, as it carries no compute capability."""
    h100 = gpu("h100-80gb-hbm3.csv")
    assert (h100.name, h100.compute_cap, h100.driver) == (H100, "9.0", "580.159.04")
    assert detect_gpus(FACTS / "h200-nvml.json")[0].compute_cap == "9.0"
    with pytest.raises(PipelineError, match="does not record the compute capability"):
        detect_gpus(FACTS / "h200-nvidia-smi-q.xml")


def test_bad_fact_files(tmp_path):
    table = tmp_path / "smi.txt"
    table.write_text("+----+\n| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04 |\n")
    with pytest.raises(PipelineError, match="compute capability") as e:
        detect_gpus(table)
    assert "--query-gpu=" in e.value.fix
    no_cc = tmp_path / "old.csv"
    no_cc.write_text("index, name, compute_cap\n0, Tesla T4, [N/A]\n")
    with pytest.raises(PipelineError, match="no compute capability"):
        detect_gpus(no_cc)


def test_nvml_then_nvidia_smi(monkeypatch, tmp_path):
    import pipeline.hardware as hw
    fake = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass
    mem = types.SimpleNamespace(total=85520809984, free=85017493504)
    fake.NVMLError = NVMLError
    fake.nvmlInit = fake.nvmlShutdown = lambda: None
    fake.nvmlSystemGetDriverVersion = lambda: b"580.159.04"
    fake.nvmlSystemGetCudaDriverVersion = lambda: 13000
    fake.nvmlDeviceGetCount = lambda: 1
    fake.nvmlDeviceGetHandleByIndex = lambda i: i
    fake.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    fake.nvmlDeviceGetMemoryInfo = lambda h: mem
    fake.nvmlDeviceGetName = lambda h: H100
    fake.nvmlDeviceGetUUID = lambda h: "GPU-0"
    fake.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=b"00000000:00:06.0")
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    g = detect_gpus()[0]
    assert (g.name, g.compute_cap, g.driver, g.cuda, g.memory_free_mib, g.source) == \
        (H100, "9.0", "580.159.04", "13.0", 81079, "NVML")

    def no_driver():
        raise NVMLError("Driver Not Loaded")
    fake.nvmlInit = no_driver                    # NVML fails: the nvidia-smi query answers
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nexec /bin/cat '{FACTS / 'l4.csv'}'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert [x.name for x in detect_gpus()] == ["NVIDIA L4"] and hw.detect_gpus()[0].source == "nvidia-smi"
    smi.unlink()
    assert detect_gpus() == []


def test_pick_gpu():
    a10s = detect_gpus(FACTS / "a10-x2.csv")
    assert pick_gpu(a10s).index == 0 and pick_gpu(a10s, 1).memory_free_mib == 22511
    with pytest.raises(PipelineError, match="no GPU with index 7") as e:
        pick_gpu(a10s, 7)
    assert "--gpu-index 0, 1" in e.value.fix
    with pytest.raises(PipelineError, match="different GPUs"):
        pick_gpu([gpu("l4.csv"), GpuFacts(**{**gpu("t4.csv").to_json(), "index": 1})])
    with pytest.raises(PipelineError, match="no NVIDIA GPU found"):
        pick_gpu([])


@pytest.mark.parametrize("cc,fast", [("5.2", False), ("5.3", True), ("6.0", True), ("6.1", False),
                                     ("6.2", True), ("7.0", True), ("7.5", True), ("8.7", True),
                                     ("9.0", True), ("12.0", True)])
def test_has_fast_fp16(cc, fast):
    assert has_fast_fp16(cc) is fast
