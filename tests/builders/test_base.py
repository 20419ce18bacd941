"""The builder interface: every difference between builders is an attribute or a method of
its class, so nothing outside pipeline/builders/ compares a builder's name (issue 21)."""
from __future__ import annotations

import ast
from pathlib import Path

from pipeline.builders import BUILDERS, TensorRT, TensorRTRTX
from pipeline.builders.base import Builder
from pipeline.hardware import GpuFacts

PKG = Path(__file__).resolve().parents[2] / "pipeline"


def _name_comparisons(path: Path) -> list[str]:
    """`x == "tensorrt-rtx"`, `"tensorrt" != y`, `x in ("tensorrt", ...)`: a builder's name compared."""
    names = {b.name for b in BUILDERS}
    where = path.relative_to(PKG.parent) if PKG in path.parents else path.name
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            consts = [n for n in [node.left, *node.comparators] for n in ([n] if not isinstance(n, (ast.Tuple, ast.List,
                      ast.Set)) else n.elts) if isinstance(n, ast.Constant) and n.value in names]
            if consts:
                out.append(f"{where}:{node.lineno}")
        elif isinstance(node, ast.Dict):   # {"tensorrt": ..., "tensorrt-rtx": ...}: a table keyed by name
            if sum(isinstance(k, ast.Constant) and k.value in names for k in node.keys) > 1:
                out.append(f"{where}:{node.lineno}")
    return out


def test_no_builder_name_is_compared_outside_the_builders():
    found = [hit for p in sorted(PKG.rglob("*.py")) if "builders" not in p.relative_to(PKG).parts
             for hit in _name_comparisons(p)]
    assert found == []


def test_the_check_sees_a_comparison(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('def f(b):\n    return b.name == "tensorrt-rtx" or b in ("tensorrt",)\n'
                     'T = {"tensorrt": "trt", "tensorrt-rtx": "trtrtx"}\n')
    assert sorted(_name_comparisons(probe)) == ["probe.py:2", "probe.py:2", "probe.py:3"]


def test_every_builder_fills_in_the_interface():
    for cls in BUILDERS:
        assert issubclass(cls, Builder)
        assert cls.name and cls.tag_prefix and cls.label and cls.module_name and cls.dists and cls.image_label
        assert cls.missing and cls.install_fix and cls.import_fix and cls.older_cuda_route
        for method in ("for_host", "missing_build", "build_command", "rebuild_command"):
            assert getattr(cls, method).__func__ is not getattr(Builder, method).__func__, f"{cls.name}.{method}"
    assert len({b.tag_prefix for b in BUILDERS}) == len(BUILDERS)


def test_builders_differ_by_attribute_not_by_name():
    a10 = GpuFacts(0, "NVIDIA A10", None, "8.6", "580.95.05", None, None, None)
    assert TensorRT.timing_cache and not TensorRTRTX.timing_cache
    assert TensorRT.needs_build_gpu and not TensorRTRTX.needs_build_gpu
    assert TensorRT.missing_build(a10).container_args == ["run", "--backend", "tensorrt"]
    assert TensorRTRTX.missing_build(a10).argv == ["run", "--backend", "tensorrt-rtx", "--target", "sm86"]
    assert TensorRTRTX(["8.6", "8.9"]).reproduce("human") == "engines build --model human --backend tensorrt-rtx " \
                                                              "--target sm86,sm89"
    assert TensorRT.runtime_loads("10.13.2.6", "11.2.1.2", True) and not TensorRT.runtime_loads("10.13.2.6",
                                                                                                  "11.2.1.2", False)
    assert not TensorRTRTX.runtime_loads("1.7.1.116", "1.8.0.1", True)
    assert TensorRT.int8_refusal("10.8.0.43") and TensorRT.int8_refusal("11.2.1.2") is None
    assert TensorRTRTX.int8_refusal("1.7.1.116") is None
    assert TensorRTRTX.no_build_fix(GpuFacts(0, "NVIDIA H100", None, "9.0", None, None, None, None))
    assert TensorRTRTX.no_build_fix(a10) is None and TensorRT.no_build_fix(a10) is None
