"""Fixtures of the registry tests: a shared registry, one of a test's own (for tests that
damage its storage), one with a login, a fresh repository per test, and an empty Docker config
of the test's own (never the user's credentials)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.registry.oci_server import Registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture
def own_registry(tmp_path):
    """A registry of the test's own, for tests that damage its storage (blobs are shared by
    content across repositories)."""
    reg = Registry(tmp_path / "registry")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("registry-auth"), auth=True)
    yield reg
    reg.stop()


@pytest.fixture(autouse=True)
def docker_config(tmp_path, monkeypatch) -> Path:
    """An empty Docker config of this test's own (never the user's credentials)."""
    d = tmp_path / "docker-config"
    d.mkdir()
    (d / "config.json").write_text("{}")
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    monkeypatch.setenv("HOME", str(tmp_path))    # oras also reads ~/.docker/config.json
    return d


_REPOS = iter(range(10**6))


@pytest.fixture
def repo(registry) -> str:
    """A fresh repository per test (the registry is shared by the session)."""
    return f"{registry.host}/engines/t{next(_REPOS)}"
