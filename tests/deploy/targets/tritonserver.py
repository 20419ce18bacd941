"""Triton's own checks for the tests: its model_config.proto schema and a real tritonserver.

The schema comes from ``tritonclient`` (installed by `make install` with --no-deps, so its
older protobuf and ml-dtypes pins never move the project's): the serialized
``model_config.proto`` descriptor in its generated ``tritonclient/grpc/model_config_pb2.py``
is read as data and built into a private descriptor pool, so neither that module's protobuf
version check nor any tritonclient code runs. The server is the ``tritonserver`` binary the
``nvidia-pytriton`` wheel ships (Python backend only): a TensorRT model whose configuration
Triton accepts loads up to "unable to find backend library for backend 'tensorrt'".
"""
from __future__ import annotations

import ast
import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest

MISSING_BACKEND = "unable to find backend library for backend 'tensorrt'"


def _dist_file(dist: str, rel: str) -> Path | None:
    try:
        p = Path(metadata.distribution(dist).locate_file(rel))
    except metadata.PackageNotFoundError:
        return None
    return p if p.exists() else None


def model_config_class():
    """Triton's ``inference.ModelConfig`` message class, or a skip naming what is missing."""
    src = _dist_file("tritonclient", "tritonclient/grpc/model_config_pb2.py")
    if src is None:
        pytest.skip("tritonclient (Triton's model_config.proto) is not installed: run `make install`")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    blob = next(n.args[0].value for n in ast.walk(ast.parse(src.read_text()))
                if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "AddSerializedFile")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(blob))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def parse_config(text: str):
    """A config.pbtxt parsed by Triton's schema (raises text_format.ParseError when it does not fit)."""
    from google.protobuf import text_format
    return text_format.Parse(text, model_config_class()())


def config_as_json(text: str) -> dict:
    """The config as Triton's HTTP API returns it (what Ultralytics' client reads)."""
    from google.protobuf import json_format
    return json_format.MessageToDict(parse_config(text), preserving_proto_field_name=True)


def _binary() -> Path:
    exe = _dist_file("nvidia-pytriton", "pytriton/tritonserver/bin/tritonserver")
    if exe is None:
        pytest.skip("nvidia-pytriton (the tritonserver binary) is not installed: run `make install`")
    probe = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    if "Usage: tritonserver" not in probe.stdout + probe.stderr:   # a loader error: missing libraries, old glibc
        pytest.skip(f"the tritonserver binary cannot run here: {(probe.stderr or probe.stdout).strip()[-300:]}")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running tritonserver in explicit model-control mode; ``load`` asks it to load a model."""

    def __init__(self, url: str, log: Path) -> None:
        self.url, self.log = url, log

    def load(self, model: str) -> str:
        """The server's answer to loading ``model``: "" when it loaded, else its error."""
        req = urllib.request.Request(f"{self.url}/v2/repository/models/{model}/load", data=b"", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60):
                return ""
        except urllib.error.HTTPError as err:
            return json.loads(err.read() or b"{}").get("error", f"HTTP {err.code}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def tritonserver(repository: Path, workdir: Path):
    """Start tritonserver on 127.0.0.1 (free ports) over ``repository``; stop it afterwards."""
    exe = _binary()
    http = _free_port()
    log = workdir / "tritonserver.log"
    backends = exe.parent.parent / "backends"
    cmd = [str(exe), f"--model-repository={repository}", "--model-control-mode=explicit",
           "--http-address=127.0.0.1", f"--http-port={http}", "--grpc-address=127.0.0.1",
           f"--grpc-port={_free_port()}", "--allow-metrics=false", "--exit-on-error=false",
           f"--backend-directory={backends}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    url = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"tritonserver exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/v2/health/live", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"tritonserver did not start in 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Server(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
