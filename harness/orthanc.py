"""A throw-away Orthanc (Debian package, 1.10.x) for interoperability tests and benchmarks.

The configuration is generated into a private directory: free HTTP and DICOM ports,
SQLite index and filesystem storage there, no authentication, HTTP refused to
non-local clients (``RemoteAccessAllowed: false``), and DICOM refused to AEs that are
not listed in ``DicomModalities`` or that call from another host
(``DicomAlwaysAllow*: false``, ``DicomCheckModalityHost: true``). Orthanc 1.10 has no
setting for the address it binds, so these checks are what keeps it loopback-only.

Examples
--------
>>> with Orthanc(tmp_path, modalities={"pacs": ("PACSLITE", "127.0.0.1", 11112)}) as orthanc:
...     orthanc.rest("/system")["DicomAet"]
'ORTHANC'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import requests

from harness.net import LOOPBACK, free_ports, http_url, port_is_open
from harness.processes import ManagedProcess

ORTHANC_BINARY = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class OrthancError(RuntimeError):
    """An Orthanc REST call failed; the message has the status and body."""


class Orthanc:
    """One Orthanc process with its own configuration, data and ports.

    Parameters
    ----------
    workdir
        Private directory (configuration, index, storage, log).
    aet
        Orthanc's own AE title.
    modalities
        ``{name: (ae_title, host, port)}``: the DICOM peers Orthanc knows (and accepts).
    dicomweb
        Load the DICOMweb plugin (served under ``/dicom-web/``).
    tcp_nodelay
        Set ``TCP_NODELAY=1`` for dcmtk inside Orthanc (and HTTP ``TcpNoDelay``).
    extra_config
        Keys merged into the generated configuration last.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        dicomweb: bool = False,
        tcp_nodelay: bool = True,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.aet = aet
        self.http_port, self.dicom_port = free_ports(2)
        self.modalities = dict(modalities or {})
        self.dicomweb = dicomweb
        self.tcp_nodelay = tcp_nodelay
        self.extra_config = dict(extra_config or {})
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"
        self.process: ManagedProcess | None = None
        self.session = requests.Session()

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return http_url(self.http_port)

    def configuration(self) -> dict[str, Any]:
        """The generated Orthanc configuration."""
        config: dict[str, Any] = {
            "Name": f"pacs-lite-test-{self.aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "HttpThreadsCount": 8,
            "TcpNoDelay": self.tcp_nodelay,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomScuTimeout": 30,
            "DicomModalities": {
                name: {"AET": aet, "Host": host, "Port": port} for name, (aet, host, port) in self.modalities.items()
            },
            "UnknownSopClassAccepted": False,
            "SaveJobs": False,
            "StableAge": 2,
            "Plugins": [DICOMWEB_PLUGIN] if self.dicomweb else [],
        }
        if self.dicomweb:
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True}
        config.update(self.extra_config)
        return config

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Self:
        """Write the configuration, start Orthanc, wait until REST and DICOM answer."""
        if self.process is not None and self.process.running:
            raise RuntimeError("Orthanc is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.configuration(), indent=2))
        env = dict(os.environ)
        if self.tcp_nodelay:
            env["TCP_NODELAY"] = "1"
        self.process = ManagedProcess(
            [ORTHANC_BINARY, str(self.config_path)], self.log_path, env=env, cwd=self.workdir, name="Orthanc"
        )
        self.process.start()
        try:
            self.process.wait_until(self._ready, timeout=timeout, what="serving REST and DICOM")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if not port_is_open(LOOPBACK, self.dicom_port, timeout=0.2):
            return False
        try:
            return self.session.get(self.url + "/system", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL); data stays for a restart."""
        if self.process is not None:
            self.process.stop(timeout=timeout)
        self.session.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else ""

    # -- REST ------------------------------------------------------------------------------------

    def rest(
        self,
        path: str,
        method: str = "GET",
        *,
        json_body: Any = None,
        data: bytes | str | None = None,
        raw: bool = False,
        timeout: float = 120.0,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Call the REST API; JSON answers are decoded unless ``raw`` (then the bytes)."""
        response = self.session.request(
            method, self.url + path, json=json_body, data=data, timeout=timeout, headers=dict(headers or {})
        )
        if response.status_code >= 400:
            raise OrthancError(f"{method} {path}: HTTP {response.status_code}: {response.text[:1000]}")
        if raw:
            return response.content
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def lookup(self, uid: str) -> list[dict[str, Any]]:
        """Orthanc resources (ID, Type, Path) having the DICOM UID ``uid``."""
        return self.rest("/tools/lookup", "POST", data=uid)

    def instance_id(self, sop_instance_uid: str) -> str | None:
        """Orthanc's ID of the instance with this SOP Instance UID, if it has it."""
        for item in self.lookup(sop_instance_uid):
            if item.get("Type") == "Instance":
                return str(item["ID"])
        return None

    def instance_file(self, sop_instance_uid: str) -> bytes | None:
        """The stored Part-10 file of an instance, or ``None``."""
        orthanc_id = self.instance_id(sop_instance_uid)
        return None if orthanc_id is None else self.rest(f"/instances/{orthanc_id}/file", raw=True)

    def upload(self, data: bytes) -> dict[str, Any]:
        """Store one Part-10 file through REST."""
        return self.rest("/instances", "POST", data=data)

    def statistics(self) -> dict[str, Any]:
        return self.rest("/statistics")
