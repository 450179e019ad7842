"""Shared pytest fixtures for PACS-lite.

Keep this file small: fixtures that need real helpers import them from
``tests.support``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacs_lite.activity import receiving_signal_path
from pacs_lite.archive import Archive
from pacs_lite.config import Config
from tests.support.pacs import make_config
from tests.support.postgres import PostgresServer
from tests.support.seaweedfs import SeaweedFS


def _dcmtk_first_on_path() -> None:
    """pynetdicom installs console scripts named like dcmtk's tools (storescu, findscu, ...) in the
    virtualenv's bin folder; the tests mean dcmtk's, so that folder must not shadow them."""
    venv_bin = os.path.dirname(sys.executable)
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != os.path.realpath(venv_bin)]
    os.environ["PATH"] = os.pathsep.join(parts)


_dcmtk_first_on_path()

@pytest.fixture(scope="session", autouse=True)
def _no_receiving_signals_left() -> Iterator[None]:
    """Remove the receiving-signal files (``pacs_lite.activity``) that this session's archives made.

    ``pacs-lite serve`` removes its own at shutdown; archives built directly in tests have no
    shutdown, and each test's configuration has its own file.
    """
    folder = receiving_signal_path(make_config(Path.cwd())).parent
    before = set(folder.glob(f"pacs-lite-{os.getuid()}-*.receiving"))
    yield
    for path in set(folder.glob(f"pacs-lite-{os.getuid()}-*.receiving")) - before:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One ``weed mini`` S3 server for the whole session, on loopback and free ports.

    Tests that stop or kill it must start it again before they finish (see
    ``test_seaweedfs_restart_keeps_objects``); isolate data with a unique bucket each.
    """
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL server (an existing one on loopback, or a private one we start)."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty index database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/index.db"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Embedded defaults (SQLite, filesystem store) under a temporary directory."""
    return make_config(tmp_path)


@pytest.fixture
def archive(config: Config) -> Iterator[Archive]:
    """An archive on the embedded defaults, without compression."""
    arch = Archive(config.with_overrides(compression={"transfer_syntax": "none"}))
    try:
        yield arch
    finally:
        arch.close()
