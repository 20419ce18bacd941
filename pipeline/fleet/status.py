"""`engines fleet status`: which (GPU product, runtime) cells the registry's sets cover.

A cell is judged with the rules of `engines resolve` (deploy.judge) against a GPU of that
product: a set counts for it when resolve on such a host could take it. A full-TensorRT
set must also have been built on that GPU product (it is built and timed on its GPU type);
one that would load by compute capability alone is reported, but the cell stays missing.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.engine_set import EngineSet
from pipeline.errors import PipelineError
from pipeline.registry import VERIFICATION
from pipeline.status import Status


def rows(sets: list[EngineSet]) -> list[dict]:
    out = []
    for s in sets:
        m = s.manifest
        out.append({"tag": s.tag, "backend": m.backend, "version": m.trt_version, "compute_caps": list(m.targets),
                    "gpu": (m.gpu or {}).get("name"), "demo": s.demo,
                    "verification": VERIFICATION[s.status()], "models": sorted(s.models),
                    "updated": str(m.updated or m.created or "")})
    return sorted(out, key=lambda r: (r["backend"] or "", r["version"] or "", r["tag"]))


def read_cells(path: Path) -> list[dict]:
    """The wanted cells: [{gpu, runtime (BACKEND==VERSION) | tensorrt | trt (version), compute_cap?}];
    `engines fleet plan`'s file serves too, where each cell names its gpu and trt."""
    from pipeline.fleet.cells import read_gpu_list
    from pipeline.runtime import parse_runtime
    _, data = read_gpu_list(path)   # the reader `fleet plan` uses: size, UTF-8, nesting depth, each key once
    data = data.get("cells") if isinstance(data, dict) else data
    if not isinstance(data, list):
        raise PipelineError("the GPU list is not a list of cells", file=path, fix=_CELL_FIX)
    cells = []
    for i, item in enumerate(data):
        version = (item.get("tensorrt") or item.get("trt")) if isinstance(item, dict) else None
        if not isinstance(item, dict) or not item.get("gpu") or not (item.get("runtime") or version):
            raise PipelineError(f"cell {i + 1} needs `gpu` and `runtime` (or `tensorrt`/`trt`): {item!r}", file=path,
                                fix=_CELL_FIX)
        spec = str(item.get("runtime") or f"tensorrt=={version}")
        try:
            rt = parse_runtime(spec, str(path))
        except PipelineError as err:
            raise PipelineError(f"cell {i + 1}: {err.what}", file=path, fix=err.fix) from None
        cc = item.get("compute_cap")
        cells.append({"gpu": str(item["gpu"]), "runtime": rt, "compute_cap": str(cc) if cc is not None else None})
    return cells


_CELL_FIX = ("one item per cell, e.g. `- {gpu: NVIDIA H100 80GB HBM3, runtime: tensorrt==10.13.3.9, "
             "compute_cap: '9.0'}` (compute_cap is optional when a set built on that GPU exists)")


def cells(sets: list[EngineSet], wanted: list[dict]) -> list[dict]:
    """Per wanted cell: passed | pending | failed | missing, the set that decides it, and why."""
    from pipeline.deploy.rules import judge
    from pipeline.fleet.plan import gfd_product
    from pipeline.hardware import GpuFacts
    out = []
    for c in wanted:
        rt, name = c["runtime"], c["gpu"]
        built = [s.manifest.gpu or {} for s in sets]
        # the GPU Feature Discovery spelling (NVIDIA-H100-80GB-HBM3) names the same product as nvidia-smi's
        name = next((str(g["name"]) for g in built if g.get("name") and gfd_product(g["name"]) == gfd_product(name)),
                    name)
        cc = c["compute_cap"] or next((str(g["compute_cap"]) for g in built
                                       if g.get("name") == name and g.get("compute_cap")), None)
        row = {"gpu": name, "runtime": rt.spec, "compute_cap": cc, "status": "missing", "tag": None, "why": ""}
        if cc is None:
            row["why"] = "no set was built on this GPU and the list gives no compute_cap"
            out.append(row)
            continue
        gpu = GpuFacts(0, name, None, cc, None, None, None, None, source="--gpus")
        ranked = []
        for s in sets:
            v = judge(s, gpu, rt, allow_demo=True, allow_pending=True)
            if {"backend", "version", "cc"} & set(v.kinds):
                continue                                   # cannot run there at all
            if rt.backend == "tensorrt" and not v.same_gpu and not v.portable:  # portable: built to move
                row["why"] = row["why"] or f"{s.tag} loads by compute capability only (built on another GPU)"
                continue
            pending = any("verification pending" in w for w in v.warnings)
            status = Status.FAILED if not v.accepted else Status.PENDING if pending else Status.PASSED
            why = "; ".join(v.reasons) if not v.accepted else "; ".join(v.warnings) or "verified on this GPU"
            ranked.append(({Status.PASSED: 0, Status.PENDING: 1, Status.FAILED: 2}[status], s.tag, status, why))
        if ranked:
            _, tag, status, why = sorted(ranked)[0]
            row.update(status=status, tag=tag, why=why)
        elif not row["why"]:
            row["why"] = f"no set for {rt.label} on {name} ({cc})"
        out.append(row)
    return out

