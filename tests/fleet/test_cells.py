"""The GPU list's matrix (issue 23): every TensorRT version's builder image on every GPU type,
each cell its own engine set; `fleet plan` writes a Job per cell and `fleet status` reads the
same cells."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.errors import PipelineError

kv = pytest.importorskip("kubernetes_validate")
pytest.importorskip("kubernetes")

MATRIX = """\
registry: registry.example.com/engines/yolo
namespace: engines
models: {pvc: engines-models}
builders:
  - {image: registry.example.com/engines-builder:trt11, trt: "11.2.1.2"}
  - {image: registry.example.com/engines-builder:trt10, trt: "10.13.2.6"}
gpus:
  - {gpu: Tesla-T4}
  - {gpu: NVIDIA A10}
  - {gpu: NVIDIA-H100-80GB-HBM3, compute_cap: "9.0"}
"""


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gpus.yaml"
    p.write_text(text)
    return p


def test_two_tensorrt_versions_by_three_gpu_types_write_six_jobs_that_validate(tmp_path):
    from pipeline.fleet import plan
    ff = plan.load_fleet(_file(tmp_path, MATRIX))
    jobs = plan.plan(ff)
    assert len(jobs) == 6
    for job in jobs:
        kv.validate(job, kv.latest_version(), strict=True)
    names = [j["metadata"]["name"] for j in jobs]
    assert len(set(names)) == 6 and all(len(n) <= 63 for n in names)
    cells = {(j["metadata"]["labels"]["engines.pipeline/tensorrt"],
              j["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"]): j for j in jobs}
    assert set(cells) == {(v, g) for v in ("11.2.1.2", "10.13.2.6")
                          for g in ("Tesla-T4", "NVIDIA-A10", "NVIDIA-H100-80GB-HBM3")}
    for (version, _gpu), job in cells.items():
        (build,) = job["spec"]["template"]["spec"]["containers"]
        # each cell runs its own TensorRT's image and checks the version it carries before building
        assert build["image"].endswith("trt11" if version.startswith("11.") else "trt10")
        assert {"name": "ENGINES_EXPECT_TRT", "value": version} in build["env"]
        assert f"-trt{version.replace('.', '-')}-" in job["metadata"]["name"]
    h100 = cells[("11.2.1.2", "NVIDIA-H100-80GB-HBM3")]["spec"]["template"]["spec"]["nodeSelector"]
    assert h100["nvidia.com/gpu.compute.major"] == "9"
    assert cells[("10.13.2.6", "Tesla-T4")]["metadata"]["annotations"]["engines.pipeline/gpu-list"] == \
        "gpus.yaml builders[1] x gpus[0]"


def test_fleet_status_reads_the_same_cells_as_runtimes(tmp_path):
    from pipeline.fleet import plan, status
    path = _file(tmp_path, MATRIX)
    wanted = status.read_cells(path)
    assert [c.job_name for c in wanted] == [c.job_name for c in plan.load_fleet(path).cells]
    assert {c.runtime.spec for c in wanted} == {"tensorrt==11.2.1.2", "tensorrt==10.13.2.6"}
    rows = status.cells([], wanted)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"missing"}
    # the plain list fleet status always read still works, TensorRT for RTX runtimes included
    plain = _file(tmp_path, "- {gpu: NVIDIA GeForce RTX 4090, runtime: tensorrt-rtx==1.7.1.116, compute_cap: '8.9'}\n")
    (c,) = status.read_cells(plain)
    assert c.runtime.spec == "tensorrt-rtx==1.7.1.116" and c.image is None


@pytest.mark.parametrize(("tail", "expect"), [
    ("builders:\n  - {image: b:11, trt: '11.2.1.2'}\n", r"`builders:` without `gpus:`"),
    ("gpus:\n  - {gpu: Tesla-T4}\n", r"`gpus:` without `builders:`"),
    ("builders:\n  - {image: b:11, trt: '11.2.1.2'}\ngpus:\n  - {gpu: Tesla-T4, image: x}\n",
     r"gpus\[0\] \(line 6\): unknown key\(s\) image"),
    ("builders:\n  - {trt: '11.2.1.2'}\ngpus:\n  - {gpu: Tesla-T4}\n", r"builders\[0\] \(line 4\): missing `image`"),
    ("builders:\n  - {image: b:11, trt: eleven}\ngpus:\n  - {gpu: Tesla-T4}\n", r"`trt: eleven` is not a TensorRT"),
    ("builders:\n  - {image: b:11, trt: '11.2.1.2'}\ngpus:\n  - {gpu: Tesla-T4}\n"
     "cells:\n  - {gpu: Tesla T4, image: b:11}\n", r"cells\[0\] \(line 8\) repeats builders\[0\] x gpus\[0\]"),
    ("builders: []\ngpus:\n  - {gpu: Tesla-T4}\n", r"`builders:` must be a non-empty list"),
])
def test_matrix_errors_name_the_entry_and_the_next_step(tmp_path, tail, expect):
    from pipeline.fleet import plan
    with pytest.raises(PipelineError) as info:
        plan.load_fleet(_file(tmp_path, "registry: r.example/x\nmodels: {pvc: m}\n" + tail))
    assert re.search(expect, info.value.what), info.value.render()
    assert info.value.fix and str(info.value.file).endswith("gpus.yaml")


def test_the_schema_lives_apart_from_the_jobs():
    """fleet/cells.py holds the GPU list and its Cell; fleet/plan.py only turns cells into Jobs."""
    import inspect

    from pipeline.fleet import cells, plan, status
    assert plan.Cell is cells.Cell is status.Cell and plan.load_fleet is cells.load_fleet
    src = inspect.getsource(plan)
    assert "read_gpu_list" not in src and "def _cell" not in src and "class Cell" not in src


def test_a_cell_by_compute_capability_only_is_filled_by_a_set_built_on_any_gpu_of_it(tmp_path):
    """`{compute_cap: "9.0"}` pins a Job to any GPU of 9.0; fleet status counts the set such a Job
    builds (on an H100 or an H200) for it, and names the cell by its compute capability."""
    from pipeline.engine_set import list_sets
    from pipeline.fleet import status
    from tests.deploy.test_resolve import H200, make_set
    path = _file(tmp_path, "registry: r.example/x\nmodels: {pvc: m}\ncells:\n"
                           "  - {compute_cap: '9.0', image: b:11, trt: '11.2.1.2'}\n"
                           "  - {compute_cap: '8.6', image: b:11, trt: '11.2.1.2'}\n")
    wanted = status.read_cells(path)
    make_set(tmp_path / "engines", version="11.2.1.2", built_on=H200, verified_on=H200)
    sm90, sm86 = status.cells(list_sets(tmp_path / "engines"), wanted)
    assert sm90["status"] == "passed" and sm90["tag"] == "trt-11.2.1.2-sm90"
    assert sm90["gpu"] == "any GPU of compute capability 9.0"
    assert sm86["status"] == "missing" and sm86["tag"] is None
