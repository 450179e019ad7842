"""A real PostgreSQL server for the tests.

Uses the server named by ``PACSLITE_TEST_PG_URL`` or one answering on 127.0.0.1:5432;
where none runs, starts a private cluster (Debian's ``postgresql`` binaries, ``initdb``
as the ``postgres`` user, a free port, loopback only) and stops it at the end.
Each test session works in databases of its own, created and dropped here.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from harness.net import free_port, wait_for_port
from harness.processes import ManagedProcess


def _can_connect(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL binaries not found: install the Debian package 'postgresql'")
    return Path(found[-1]).parent


class PostgresServer:
    """An admin URL to a PostgreSQL server, and databases made on it for tests."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: ManagedProcess | None = None
        self._command: list[str] = []
        self.admin_url = ""
        self.created: list[str] = []

    def start(self, *, private: bool = False) -> PostgresServer:
        """Use a running server, or start a private one (always, with ``private=True``)."""
        if private:
            self._start_private()
            return self
        candidates = [
            os.environ.get("PACSLITE_TEST_PG_URL", ""),
            "postgresql://postgres@127.0.0.1:5432/postgres",
        ]
        for url in candidates:
            if url and _can_connect(url):
                self.admin_url = url
                return self
        self._start_private()
        return self

    def _start_private(self) -> None:
        bindir = _pg_bin()
        # the postgres user must reach the data folder: pytest's own temp root is private to root
        self.workdir = Path(tempfile.mkdtemp(prefix="pacs-lite-pg-"))
        data = self.workdir / "pgdata"
        data.mkdir(parents=True)
        as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            shutil.chown(self.workdir, "postgres")
            shutil.chown(data, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [
                *as_user,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        self._command = [
            *as_user,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(free_port()),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.workdir),
            "-c",
            "fsync=off",
        ]
        self.resume()

    def resume(self) -> None:
        """(Re)start the private server on its data directory and port."""
        port = int(self._command[self._command.index("-p") + 1])
        self.process = ManagedProcess(self._command, self.workdir / "postgres.log", name="postgres").start()
        wait_for_port("127.0.0.1", port, timeout=30)
        self.admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while not _can_connect(self.admin_url):
            if time.monotonic() > deadline:
                raise RuntimeError("private PostgreSQL did not accept connections")
            time.sleep(0.2)

    def pause(self) -> None:
        """Stop the private server (fast shutdown: clients are disconnected)."""
        assert self.process is not None and self.process.proc is not None, "only a private server can be stopped"
        # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.proc.pid, signal.SIGINT)
        try:
            self.process.proc.wait(30)
        finally:
            self.process.stop()
            self.process = None

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = "pacs_test_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        if self.admin_url and not self._command:
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(self.admin_url, autocommit=True) as conn,
            ):
                for name in self.created:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self._command:
            shutil.rmtree(self.workdir, ignore_errors=True)
