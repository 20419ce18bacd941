"""docker_runner without a daemon: the missing daemon named with how to start one, and the
--no-gpu route (TensorRT for RTX) the toolkit error and `engines docker run --gpu` offer."""
from __future__ import annotations

import pytest

from pipeline.errors import PipelineError


def test_no_gpu_is_explained_as_the_tensorrt_rtx_route():
    import pipeline.cli.docker as cd
    from pipeline.docker_runner import TOOLKIT_FIX
    help_text = next(p.help for p in cd.docker_group.commands["run"].params if p.name == "gpu")
    for text in (TOOLKIT_FIX, help_text):
        assert "--no-gpu" in text and "TensorRT for RTX" in text and "--backend tensorrt-rtx" in text


def test_no_daemon_names_the_socket_and_how_to_start_one(monkeypatch, tmp_path):
    pytest.importorskip("docker")
    from pipeline.docker_runner import connect
    sock = tmp_path / "no-daemon.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    with pytest.raises(PipelineError) as err:
        connect()
    assert f"cannot reach the Docker daemon at unix://{sock}" in err.value.what
    assert "start-dockerd.sh" in err.value.fix and "systemctl start docker" in err.value.fix
