"""`engines fleet status`: which (GPU product, runtime) cells the registry's sets cover.

A cell is judged with the rules of `engines resolve` (deploy.judge) against a GPU of that
product: a set counts for it when resolve on such a host could take it. A full-TensorRT
set must also have been built on that GPU product (it is built and timed on its GPU type)
unless it was built to move (a hardware compatibility level, or a version-compatible plan
on a later TensorRT); one that would load by compute capability alone is reported, but the
cell stays missing. The cells are the GPU list's (``pipeline.fleet.cells``), the same
reader and ``Cell`` as `engines fleet plan`.
"""
from __future__ import annotations

from pipeline.builders import builder_named
from pipeline.builders.compat import level
from pipeline.engine_set import EngineSet
from pipeline.fleet.cells import Cell, gfd_product, read_cells  # noqa: F401  (read_cells: `fleet status --gpus`)
from pipeline.registry.sets import VERIFICATION
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


def cells(sets: list[EngineSet], wanted: list[Cell]) -> list[dict]:
    """Per wanted cell: passed | pending | failed | missing, the set that decides it, and why."""
    from pipeline.deploy.rules import judge
    from pipeline.hardware import GpuFacts
    out = []
    for c in wanted:
        rt, name = c.runtime, c.gpu
        built = [s.manifest.gpu or {} for s in sets]
        # the GPU Feature Discovery spelling (NVIDIA-H100-80GB-HBM3) names the same product as nvidia-smi's
        name = next((str(g["name"]) for g in built if name and g.get("name")
                     and gfd_product(g["name"]) == gfd_product(name)), name)
        any_model = name is None   # a cell by compute capability only: a set built on any GPU of it fills it
        name = name or f"any GPU of compute capability {c.compute_cap}"
        cc = c.compute_cap or next((str(g["compute_cap"]) for g in built
                                       if g.get("name") == name and g.get("compute_cap")), None)
        row = {"gpu": name, "runtime": rt.spec, "compute_cap": cc, "status": "missing", "tag": None, "why": ""}
        if cc is None:
            row["why"] = "no set was built on this GPU and the list gives no compute_cap"
            out.append(row)
            continue
        gpu = GpuFacts(0, name, None, cc, None, None, None, None, source="--gpus")
        ranked = []
        for s in sets:
            # a compute-capability cell is judged as the GPU the set was built on, when it is of that capability
            here = gpu
            if any_model and (s.manifest.gpu or {}).get("name") and str(s.manifest.gpu.get("compute_cap")) == cc:
                here = GpuFacts(0, str(s.manifest.gpu["name"]), None, cc, None, None, None, None, source="--gpus")
            v = judge(s, here, rt, allow_demo=True, allow_pending=True)
            if {"backend", "version", "cc"} & set(v.kinds):
                continue                                   # cannot run there at all
            moves = v.portable or level(s.manifest.compatibility) is not None   # built to move between GPU models
            if builder_named(rt.backend).tuned_on_build_gpu and not v.same_gpu and not moves and not any_model:
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

