"""Shared pytest fixtures for PACS-lite, and the ``peers`` marker rule.

Keep this file small: fixtures that need real helpers import them from
``tests.support`` (test helpers) or ``harness`` (the external processes, shared with the benchmark).

``peers`` marks every test that starts an external process, so that ``-m "not peers"`` is
the fast tier. A test gets it from a fixture in :data:`PEER_FIXTURES` (directly or through
another fixture), from ``pytestmark`` / ``@pytest.mark.peers`` in its module, or from a
``pytest.param(..., marks=pytest.mark.peers)`` of a parametrized fixture that starts one
on demand. A test without it that starts a process through the harness fails, saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import harness.dcmtk
from harness.postgres import PostgresServer
from harness.processes import ManagedProcess
from harness.seaweedfs import SeaweedFS
from pacs_lite.activity import receiving_signal_path
from pacs_lite.archive import Archive
from pacs_lite.config import Config
from tests.support.pacs import make_config


def _dcmtk_first_on_path() -> None:
    """pynetdicom installs console scripts named like dcmtk's tools (storescu, findscu, ...) in the
    virtualenv's bin folder; the tests mean dcmtk's, so that folder must not shadow them."""
    venv_bin = os.path.dirname(sys.executable)
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != os.path.realpath(venv_bin)]
    os.environ["PATH"] = os.pathsep.join(parts)


_dcmtk_first_on_path()

#: Fixtures that start an external process (or reach a running PostgreSQL): tests using them are ``peers``.
PEER_FIXTURES = frozenset({"seaweedfs", "postgres"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = PEER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if used:
            item.add_marker(pytest.mark.peers)
        if "postgres" in used:
            item.add_marker(pytest.mark.postgres)


_running_item: list[pytest.Item] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    _running_item.append(item)  # its set-up runs the module and session fixtures it is the first to use
    try:
        return (yield)
    finally:
        _running_item.pop()


def _check_peers_marker(what: str) -> None:
    """Fail the running test if it starts ``what`` without the ``peers`` marker (it would slow the fast tier)."""
    item = _running_item[-1] if _running_item else None
    if item is not None and item.get_closest_marker("peers") is None:
        pytest.fail(f"{item.nodeid} starts {what} but is not marked 'peers': use a fixture of tests/conftest.py's "
                    f"PEER_FIXTURES or add pytest.mark.peers (pytestmark for the whole module)", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _peers_marker_enforced() -> Iterator[None]:
    """Route the harness's process starts (servers and dcmtk's tools) through :func:`_check_peers_marker`."""
    start, run = ManagedProcess.start, harness.dcmtk.run

    def checked_start(self: ManagedProcess) -> ManagedProcess:
        _check_peers_marker(self.name)
        return start(self)

    def checked_run(args: Sequence[str | os.PathLike[str]], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        _check_peers_marker(os.path.basename(os.fspath(args[0])))
        return run(args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ManagedProcess, "start", checked_start)
        patch.setattr(harness.dcmtk, "run", checked_run)
        yield


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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.peers, pytest.mark.postgres])])
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
