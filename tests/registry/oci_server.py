"""The registries the registry tests talk to: a real docker-registry process on 127.0.0.1
(Debian's `docker-registry`, distribution 2.8) with its access log on, so tests count the blob
uploads and downloads it actually served, and its storage root in a temp folder, so tests can
tamper with a blob or delete one; a stalling one (answers /v2/, then never again, or 503); and
the CLI helpers the tests of ``registry.client`` and ``registry.sets`` share.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.cli import stages as commands  # noqa: F401  (registers every command, push/pull/fleet included)
from tests.deploy.test_resolve import FACTS

REGISTRY_BIN = shutil.which("docker-registry")
H100_FACTS = str(FACTS / "h100-80gb-hbm3.csv")
A10_FACTS = str(FACTS / "a10-x2.csv")
T4_FACTS = str(FACTS / "t4.csv")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """A docker-registry process on 127.0.0.1 with its own storage root and log."""

    def __init__(self, folder: Path, auth: bool = False):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.root, self.log = folder, folder / "storage", folder / "registry.log"
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        auth_cfg = (f"auth:\n  htpasswd:\n    realm: engines-test\n    path: {folder / 'htpasswd'}\n") if auth else ""
        (folder / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n" + auth_cfg)
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(folder / "config.yml")],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            pytest.fail(f"docker-registry did not listen on {self.host}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def requests(self, method: str, pattern: str = "") -> list[str]:
        """Access-log lines of ``method`` requests whose URI contains ``pattern``."""
        return [line for line in self.log.read_text().splitlines()
                if f'"{method} /v2/' in line and pattern in line]

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def password(self) -> str:
        """The password distribution provisions for user `docker` when htpasswd is missing."""
        m = re.search(r'provisioning with default user.*password=(\S+)', self.log.read_text())
        assert m, "the registry did not log a provisioned password"
        return m.group(1)


def models_dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    (d / "engines").mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "models" / "models.yaml", d / "models.yaml")
    return d


def engines(models: Path, *args: str, json_out=True):
    base = ["--config", str(models / "models.yaml")] + (["--json"] if json_out else [])
    r = CliRunner().invoke(cli, [*base, *args], catch_exceptions=False)
    out = json.loads(r.stdout) if json_out and r.stdout.strip() else None
    return r, out


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*")) if not p.name.endswith(".lock")}


class StallingRegistry:
    """Answers GET /v2/ like a registry, then accepts every other request and never replies
    (a registry whose storage hangs); with ``status`` 503, answers everything so (a load
    balancer in front of a registry that is down)."""

    def __init__(self, status: int = 200):
        import threading
        self.status = status
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            request = conn.recv(65536)
            if self.status != 200:
                conn.sendall(f"HTTP/1.1 {self.status} Service Unavailable\r\nContent-Length: 0\r\n"
                             "Connection: close\r\n\r\n".encode())
                conn.close()
            elif request.startswith(b"GET /v2/ "):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n"
                             b"Docker-Distribution-Api-Version: registry/2.0\r\nConnection: close\r\n\r\n{}")
                conn.close()
            else:
                self.held.append(conn)      # read, never answered

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()
