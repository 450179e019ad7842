"""Start-up of ``pacs-lite serve``: checks that fail in one line, and waiting for the index and the store.

Before anything is started, :func:`preflight` checks what an operator can get wrong and a
traceback would only obscure: a port another program holds, a data folder the service user
cannot write, a TLS certificate that is missing or unreadable. Each raises
:class:`StartupError`, whose message names the problem and the configuration key to change;
the command line prints it as one line and exits with :data:`EXIT_STARTUP`.

Then :func:`wait_for_dependencies` waits for PostgreSQL and S3, which in a container deployment
start together with the nodes and take seconds to accept connections: it retries with a capped,
growing delay for ``[startup] wait_seconds`` in all, logging each attempt (what is awaited, why
it failed, the next delay), while a small :class:`WaitingStatusServer` on the HTTP port answers
``/readyz`` with 503 and what is still missing (``/healthz`` with 200: the process is alive).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .config import Config

log = logging.getLogger("pacs_lite.startup")

#: Exit status of ``pacs-lite serve`` when it cannot start (configuration errors exit with 2).
EXIT_STARTUP = 3
FIRST_DELAY = 0.5
MAX_DELAY = 10.0


class StartupError(Exception):
    """Serving cannot start; the message names the problem and the configuration key to change."""


def _env_name(key: str) -> str:
    return "PACS_LITE_" + key.replace(".", "_").upper()


# -- checks before anything starts -------------------------------------------------------------


def check_listen(what: str, section: str, host: str, port: int) -> None:
    """Raise :class:`StartupError` unless ``host:port`` can be bound now (port 0 always can)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why, key = "the port is already in use by another program", f"{section}.port"
            elif exc.errno == errno.EACCES:
                why, key = ("permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
                            f"{section}.port")
            elif exc.errno == errno.EADDRNOTAVAIL:
                why, key = "no interface of this machine has that address", f"{section}.host"
            else:
                why, key = exc.strerror or str(exc), f"{section}.port"
            raise StartupError(f"cannot listen for {what} on {host}:{port}: {why}; "
                               f"change {key} (or {_env_name(key)})") from None


def check_writable_folder(folder: Path, key: str) -> None:
    """Create ``folder`` if needed and prove a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pacs-lite-write-check-"):
            pass
    except OSError as exc:
        raise StartupError(
            f"data folder {folder} is not writable ({exc.strerror or exc}); change {key} (or {_env_name(key)}) "
            f"or give the user running pacs-lite (uid {os.geteuid()}) write access to it"
        ) from None


def check_tls(config: Config) -> None:
    """The DICOM TLS certificate, key and CA bundle exist, are readable and load."""
    dicom = config["dicom"]
    if not dicom["tls_cert"]:
        return
    for key in ("tls_cert", "tls_key", "tls_ca"):
        path = dicom[key]
        if not path:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise StartupError(f"dicom.{key}: cannot read {path} ({exc.strerror or exc}); "
                               f"change dicom.{key} (or {_env_name('dicom.' + key)})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(dicom["tls_cert"], dicom["tls_key"])
    except ssl.SSLError as exc:
        raise StartupError(f"dicom.tls_cert and dicom.tls_key: {dicom['tls_cert']} and {dicom['tls_key']} are not "
                           f"a PEM certificate and its private key ({exc.reason or exc})") from None
    if dicom["tls_ca"]:
        try:
            context.load_verify_locations(dicom["tls_ca"])
        except ssl.SSLError as exc:
            raise StartupError(f"dicom.tls_ca: {dicom['tls_ca']} is not a PEM bundle of CA certificates "
                               f"({exc.reason or exc})") from None


def preflight(config: Config) -> None:
    """Every check that needs no peer: listening ports, data folders, TLS files."""
    check_listen("DICOM", "dicom", config.get("dicom", "host"), config.get("dicom", "port"))
    check_listen("HTTP", "http", config.get("http", "host"), config.get("http", "port"))
    url = config.index_url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        check_writable_folder(Path(url[len("sqlite:///"):]).parent, "index.url")
    if config.get("storage", "backend") == "filesystem":
        check_writable_folder(config.path("storage", "path"), "storage.path")
    check_tls(config)


# -- waiting for PostgreSQL and S3 ---------------------------------------------------------------


def describe_index(config: Config) -> str:
    """The index location with its password masked."""
    return config.masked_index_url


def describe_store(config: Config) -> str:
    """The object store location (never its credentials)."""
    st = config["storage"]
    if st["backend"] == "filesystem":
        return f"filesystem {config.path('storage', 'path')}"
    return f"s3 {'https' if st['secure'] else 'http'}://{st['endpoint']}/{st['bucket']}"


def _probe_index(config: Config) -> Callable[[], str | None]:
    """A probe of the index database: ``None`` when it answers, else why not."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    url = config.index_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    args = {"connect_args": {"connect_timeout": 5}} if url.startswith("postgresql") else {}
    engine = create_engine(url, poolclass=NullPool, **args)

    def probe() -> str | None:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return None
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            return (str(orig).strip().splitlines() or [type(orig).__name__])[0][:200]

    return probe


def _probe_store(config: Config) -> Callable[[], str | None]:
    from storage import StoreError

    from .archive import open_object_store

    store = open_object_store(config)

    def probe() -> str | None:
        try:
            store.check()
            return None
        except StoreError as exc:
            return str(exc)[:200]
        finally:
            store.close()

    return probe


class WaitingStatusServer:
    """``/healthz`` (200) and ``/readyz`` (503, what is awaited) on the HTTP port while start-up waits.

    It answers nothing else (503) and holds no data; it is closed before the web server binds the port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.waiting_for: list[str] = []
        status = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                if self.path.split("?")[0] == "/healthz":
                    code, body = 200, {"status": "starting"}
                else:
                    missing = "; ".join(status.waiting_for) or "starting"
                    code, body = 503, {"error": "Service Unavailable", "reason": f"starting: {missing}"}
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Retry-After", "5")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
                pass

        server_class = type("Server", (ThreadingHTTPServer,), {
            "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET, "daemon_threads": True})
        self._server = server_class((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="startup-status", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def wait_for_dependencies(config: Config, *, stopped: Callable[[], bool] = lambda: False) -> bool:
    """Wait until the index database and the object store answer; ``False`` if stopped meanwhile.

    Raises
    ------
    StartupError
        When either still does not answer after ``[startup] wait_seconds``.
    """
    total = config.get("startup", "wait_seconds")
    probes = {
        f"index database {describe_index(config)}": ("index database unavailable", "index.url", _probe_index(config)),
        f"object store {describe_store(config)}": ("object store unavailable", "storage.endpoint",
                                                   _probe_store(config)),
    }
    status: WaitingStatusServer | None = None
    started = time.monotonic()
    delay = FIRST_DELAY
    attempt = 0
    try:
        while True:
            attempt += 1
            failing = {name: (problem, key, why) for name, (problem, key, probe) in probes.items()
                       if (why := probe()) is not None}
            if not failing:
                if attempt > 1:
                    log.info("index database and object store answer after %.1f s", time.monotonic() - started)
                return True
            probes = {name: spec for name, spec in probes.items() if name in failing}
            left = total - (time.monotonic() - started)
            if left <= 0:
                name, (_, key, why) = next(iter(failing.items()))
                raise StartupError(f"{name} does not answer after {total} s ({why}); check {key} "
                                   f"(or {_env_name(key)}), or wait longer with startup.wait_seconds")
            pause = min(delay, left)
            for name, (_, _, why) in failing.items():
                log.warning("waiting for the %s: %s; attempt %d, next in %.1f s (giving up in %.0f s: "
                            "startup.wait_seconds = %d)", name, why, attempt, pause, left, total)
            if status is None:
                with contextlib.suppress(OSError):  # the port was checked free; never fail for a status page
                    status = WaitingStatusServer(config.get("http", "host"), config.get("http", "port"))
            if status is not None:
                status.waiting_for = [problem for problem, _, _ in failing.values()]
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline:
                if stopped():
                    return False
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, MAX_DELAY)
    finally:
        if status is not None:
            status.close()
