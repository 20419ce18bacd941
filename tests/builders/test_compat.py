"""NVIDIA's compatibility facts as one table (pipeline.builders.compat): hardware levels and
version compatibility across majors."""
from __future__ import annotations

import pytest

from pipeline.builders.compat import CROSS_MAJOR_RULE, HARDWARE_LEVELS, level, version_compatible_loads
from pipeline.hardware import GpuFacts


@pytest.mark.parametrize(("built", "runtime", "loads"), [
    ("10.13.2.6", "10.14.1.48", True), ("10.13.2.6", "10.13.0.35", False),   # same major: not older
    ("10.13.2.6", "11.0.0.114", True), ("8.6.1.6", "10.0.1.6", True),         # NVIDIA's two cross-major pairs
    ("10.13.2.6", "12.0.0.1", False), ("9.3.0.1", "11.2.1.2", False), ("8.6.1.6", "11.2.1.2", False),
    ("11.2.1.2", "10.13.2.6", False), ("10.13.2.6", "eleven", False),
])
def test_version_compatible_loads_exactly_as_the_support_matrix_says(built, runtime, loads):
    assert version_compatible_loads(built, runtime) is loads
    assert "No other combination." in CROSS_MAJOR_RULE


def _gpu(name: str, cc: str) -> GpuFacts:
    return GpuFacts(0, name, None, cc, None, None, None, None)


def test_levels_tag_where_they_run_and_where_they_cannot_be_built():
    ampere, same = HARDWARE_LEVELS["ampere_plus"], HARDWARE_LEVELS["same_compute_capability"]
    assert (ampere.enum, same.enum) == ("AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")
    assert ampere.tag_part(["9.0"]) == "sm80plus" and same.tag_part(["8.6"]) == "sm86cc"
    assert ampere.runs_on(["9.0"], "8.6") and not ampere.runs_on(["9.0"], "7.5") and not ampere.runs_on(["9.0"], "8.7")
    assert same.runs_on(["8.6"], "8.6") and not same.runs_on(["8.6"], "8.9") and not same.runs_on(["7.2"], "7.2")
    assert same.build_refusal(_gpu("NVIDIA A10", "8.6")) is None and same.build_refusal(_gpu("Tesla T4", "7.5")) is None
    assert "7.5 or newer" in same.build_refusal(_gpu("Tesla V100-SXM2-16GB", "7.0"))
    assert "JetPack" in same.build_refusal(_gpu("Orin (nvgpu)", "8.7"))
    assert "8.0 or newer" in ampere.build_refusal(_gpu("Tesla T4", "7.5"))
    assert level(None) is None and level("ampere_plus") is ampere
