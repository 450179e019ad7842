"""The systems under test, each started on free loopback ports with a fresh data directory.

* :class:`PacsLite` runs ``pacs-lite serve`` as a user would: a subprocess in its own
  working directory (data under ``./pacs-data``), configured only through
  ``PACS_LITE_*`` environment variables.
* :class:`OrthancSystem` wraps :class:`harness.orthanc.Orthanc` (shared with the tests)
  (Debian Orthanc 1.10, SQLite index, filesystem storage, DICOMweb plugin, optional
  ``StorageCompression``, ``TcpNoDelay`` and ``TCP_NODELAY=1`` for its dcmtk).
* :class:`Storescp` is dcmtk's ``storescp`` writing files, the floor for C-STORE.

All of them expose the same small interface the measurements use: ``aet``,
``dicom_port``, ``pids()`` (the process tree, for RSS), ``instance_count()``,
``stored_bytes()`` and, where they serve DICOMweb, ``dicomweb``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import requests

from harness.net import LOOPBACK, free_ports, http_url, port_is_open
from harness.orthanc import DICOMWEB_PLUGIN, ORTHANC_BINARY, Orthanc
from harness.processes import ManagedProcess, kill_group_members, process_tree

#: The AE title every benchmark SCU calls with (Orthanc lists it as a known modality).
SCU_AET = "BENCHSCU"
REQUIRED_BINARIES = ("storescu", "storescp", "echoscu", ORTHANC_BINARY)


def preflight() -> list[str]:
    """What is missing to run the benchmark (empty when everything is there). Installs nothing."""
    missing = []
    for binary in REQUIRED_BINARIES:
        if shutil.which(binary) is None and not os.access(binary, os.X_OK):
            package = "orthanc" if "Orthanc" in binary else "dcmtk"
            missing.append(f"{binary} (Debian package {package!r})")
    if not os.path.exists(DICOMWEB_PLUGIN):
        missing.append(f"{DICOMWEB_PLUGIN} (Debian package 'orthanc-dicomweb')")
    if pacs_lite_command() is None:
        missing.append("the pacs-lite command (pip install -e . into this Python's environment)")
    for module, dist in (("matplotlib", "matplotlib"), ("data_store", "pydicom-data"), ("psycopg", "psycopg")):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"Python module {module} (pip install {dist})")
    return missing


def pacs_lite_command() -> str | None:
    """The ``pacs-lite`` console script of the running Python environment."""
    candidate = Path(sys.executable).parent / "pacs-lite"
    return str(candidate) if candidate.exists() else shutil.which("pacs-lite")


def tool_versions() -> dict[str, str]:
    """Versions of the programs compared (for the report)."""
    import platform

    import pydicom
    import pynetdicom

    def first_line(cmd: list[str], pick: int = 0) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
            return out[pick].strip() if out else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    def deb(package: str) -> str:
        return first_line(["dpkg-query", "-W", "-f", "${Version}", package])

    from importlib.metadata import version

    return {
        "pacs-lite": version("pacs-lite"),
        "orthanc": deb("orthanc"),
        "orthanc-dicomweb": deb("orthanc-dicomweb"),
        "dcmtk": deb("dcmtk"),
        "python": platform.python_version(),
        "pydicom": pydicom.__version__,
        "pynetdicom": pynetdicom.__version__,
    }


# -- sizes -------------------------------------------------------------------------------------


def directory_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


# -- PACS-lite --------------------------------------------------------------------------------


class PacsLite:
    """``pacs-lite serve`` in a fresh working directory.

    Parameters
    ----------
    workdir
        Its working directory (data under ``workdir/pacs-data``); created empty.
    label
        Name in the report.
    compression
        ``"default"`` (the shipped codec, JPEG-LS lossless) or a transfer syntax / ``"none"``.
    index_url
        ``PACS_LITE_INDEX_URL`` (default: SQLite under the working directory).
    """

    def __init__(self, workdir: Path, label: str = "PACS-lite", *, compression: str = "default",
                 index_url: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.label = label
        self.aet = "PACSLITE"
        self.dicom_port, self.http_port = free_ports(2)
        self.compression = compression
        self.index_url = index_url or f"sqlite:///{workdir}/pacs-data/index.db"
        self.extra_env = dict(env or {})
        self.process: ManagedProcess | None = None
        self._catalog: Any = None

    @property
    def url(self) -> str:
        return http_url(self.http_port)

    @property
    def dicomweb(self) -> str:
        return http_url(self.http_port, "/dicomweb")

    @property
    def objects_dir(self) -> Path:
        return self.workdir / "pacs-data" / "objects"

    @property
    def compresses(self) -> bool:
        return self.compression != "none"

    def start(self) -> PacsLite:
        """Launch (does not wait; see :meth:`wait_ready`)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_LITE_")}
        env.update({
            "PACS_LITE_DICOM_PORT": str(self.dicom_port),
            "PACS_LITE_HTTP_PORT": str(self.http_port),
            "PACS_LITE_INDEX_URL": self.index_url,
        })
        if self.compression != "default":
            env["PACS_LITE_COMPRESSION_TRANSFER_SYNTAX"] = self.compression
        env.update(self.extra_env)
        command = pacs_lite_command()
        assert command is not None
        self.process = ManagedProcess([command, "serve"], self.workdir / "pacs-lite.log", env=env,
                                      cwd=self.workdir, name=self.label).start()
        return self

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Block until DICOM accepts connections and ``/readyz`` answers 200; return the seconds waited."""
        assert self.process is not None

        def ready() -> bool:
            if not port_is_open(LOOPBACK, self.dicom_port, 0.2):
                return False
            try:
                return requests.get(self.url + "/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        return self.process.wait_until(ready, timeout=timeout, what="serving DICOM and HTTP")

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM to ``pacs-lite serve`` alone (it stops its components), then SIGKILL leftovers.

        Only the supervisor gets SIGTERM: it forwards the stop to its components. The
        whole process group is killed afterwards if anything is left or it hangs.
        """
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        process = self.process
        if process is None or process.proc is None:
            return
        proc = process.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  note: {self.label} did not stop within {timeout:.0f} s of SIGTERM; killed")
        kill_group_members(proc.pid)
        process.kill()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def catalog(self) -> Any:
        """A :class:`pacs_lite.catalog.Catalog` on this server's index (read-only use)."""
        if self._catalog is None:
            from pacs_lite.catalog import Catalog

            self._catalog = Catalog(self.index_url, pool_size=2)
        return self._catalog

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process and self.process.running else []

    def instance_count(self) -> int:
        return int(self.catalog().counts()["instances"])

    def pending_compression(self) -> int:
        return int(self.catalog().counts()["pending_compression"])

    def stored_bytes(self) -> int:
        """Size of the objects folder (every stored object, compressed or not)."""
        return directory_bytes(self.objects_dir)

    def index_object_bytes(self) -> int:
        """Sum of ``object_size`` over the index's current objects."""
        from sqlalchemy import func, select

        from pacs_lite.catalog.models import Instance

        with self.catalog().reader() as s:
            return int(s.scalar(select(func.coalesce(func.sum(Instance.object_size), 0))) or 0)

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) if self.process else ""


# -- Orthanc ----------------------------------------------------------------------------------


class OrthancSystem:
    """Debian Orthanc with the DICOMweb plugin, SQLite index and filesystem storage.

    Parameters
    ----------
    workdir
        Private directory; if ``seed_dir`` is given its ``index``/``storage`` are copied in
        first (a cached, already populated Orthanc).
    storage_compression
        ``"StorageCompression": true`` (zlib of every stored file).
    """

    def __init__(self, workdir: Path, label: str = "Orthanc", *, storage_compression: bool = False,
                 seed_dir: Path | None = None) -> None:
        self.label = label
        self.aet = "ORTHANC"
        self.workdir = workdir
        self.seed_dir = seed_dir
        self.orthanc = Orthanc(
            workdir, aet=self.aet, modalities={"bench": (SCU_AET, LOOPBACK, 104)}, dicomweb=True, tcp_nodelay=True,
            extra_config={"StorageCompression": storage_compression, "DicomWeb": {
                "Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False}},
        )
        self.compresses = False

    @property
    def dicom_port(self) -> int:
        return self.orthanc.dicom_port

    @property
    def url(self) -> str:
        return self.orthanc.url

    @property
    def dicomweb(self) -> str:
        return self.orthanc.url + "/dicom-web"

    @property
    def storage_dir(self) -> Path:
        return self.workdir / "storage"

    def start(self) -> OrthancSystem:
        if self.seed_dir is not None:
            for part in ("index", "storage"):
                shutil.copytree(self.seed_dir / part, self.workdir / part)
        self.orthanc.start(timeout=120)
        return self

    def wait_ready(self, timeout: float = 120.0) -> float:
        return 0.0  # Orthanc.start() already waited

    @property
    def running(self) -> bool:
        process = self.orthanc.process
        return process is not None and process.running

    def stop(self) -> None:
        self.orthanc.stop(timeout=30)

    def pids(self) -> list[int]:
        process = self.orthanc.process
        return process_tree(process.pid) if process and process.running else []

    def instance_count(self) -> int:
        return int(self.orthanc.statistics()["CountInstances"])

    def pending_compression(self) -> int:
        return 0

    def stored_bytes(self) -> int:
        """Size of the storage folder (the index lives elsewhere)."""
        return directory_bytes(self.storage_dir)

    def log_tail(self, lines: int = 30) -> str:
        return self.orthanc.log_tail(lines)


# -- storescp ---------------------------------------------------------------------------------


class Storescp:
    """dcmtk ``storescp`` writing each received file (``--fork``: one process per association)."""

    def __init__(self, workdir: Path, label: str = "storescp") -> None:
        self.label = label
        self.aet = "STORESCP"
        self.workdir = workdir
        self.out_dir = workdir / "received"
        (self.dicom_port,) = free_ports(1)
        self.process: ManagedProcess | None = None
        self.compresses = False
        self.dicomweb = None

    def start(self) -> Storescp:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TCP_NODELAY="1")
        self.process = ManagedProcess(
            ["storescp", "--fork", "-aet", self.aet, "-od", str(self.out_dir), str(self.dicom_port)],
            self.workdir / "storescp.log", env=env, cwd=self.workdir, name="storescp",
        ).start()
        return self

    def wait_ready(self, timeout: float = 30.0) -> float:
        assert self.process is not None
        return self.process.wait_until(lambda: port_is_open(LOOPBACK, self.dicom_port, 0.2), timeout=timeout,
                                       what="listening")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process and self.process.running else []

    def instance_count(self) -> int:
        return sum(1 for _ in self.out_dir.iterdir())

    def pending_compression(self) -> int:
        return 0

    def stored_bytes(self) -> int:
        return directory_bytes(self.out_dir)

    def clear(self) -> None:
        """Delete what it received (between runs; it has no index to keep consistent)."""
        for path in self.out_dir.iterdir():
            path.unlink()

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) if self.process else ""


def ensure_running(system: Any) -> None:
    """Raise if ``system`` has exited (something killed it or it crashed): its numbers would be void."""
    if not system.running:
        raise RuntimeError(f"{system.label} is no longer running; log tail:\n{system.log_tail(20)}")


def wait_all_ready(systems: Iterable[Any], timeout: float = 180.0) -> None:
    """Wait until every started system serves (they start in parallel)."""
    deadline = time.monotonic() + timeout
    for system in systems:
        system.wait_ready(max(5.0, deadline - time.monotonic()))
