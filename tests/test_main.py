"""`python -m pipeline` by a Python without the project's packages (issue 26.8): one paragraph that
names the missing package and the next step, exit 1, no traceback. The packages are hidden from a
real interpreter by stand-ins that fail to import as a missing package does."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _without(tmp_path, package: str, *args: str):
    (tmp_path / f"{package}.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{package}'\", name={package!r})\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("package", "args"), [
    ("click", ("--help",)),                                    # the CLI itself
    ("torch", ("--config", "{ws}/models.yaml", "demo-models")),  # a stage that loads PyTorch
])
def test_a_missing_package_is_one_paragraph_with_the_next_step(tmp_path, package, args):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "models.yaml").write_text("models:\n  - {name: a, source: a.pt, task: detect}\n")
    res = _without(tmp_path, package, *[a.format(ws=ws) for a in args])
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert f"'{package}' is not installed for {sys.executable}" in res.stderr
    assert "make install" in res.stderr and ".venv/bin/engines" in res.stderr
    assert len([line for line in res.stderr.splitlines() if line.strip()]) <= 2


def test_the_paragraph_names_the_package_and_the_python_that_lacks_it():
    from pipeline.__main__ import missing_package_message
    text = missing_package_message(ModuleNotFoundError("No module named 'torch'", name="torch"), "/usr/bin/python3")
    assert text.startswith("error: the Python package 'torch' is not installed for /usr/bin/python3")
