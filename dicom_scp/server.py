"""The DICOM (DIMSE) server of PACS-lite: pynetdicom with hardened transport, thin handlers.

Services: Verification; Storage for every storage SOP class pynetdicom knows, in every
transfer syntax it knows (the dataset is stored as received, never decoded here);
Query/Retrieve FIND, GET and MOVE in the Patient Root and Study Root models; Storage
Commitment Push Model (reports delivered by a durable job queue).

C-STORE requests are read straight off the socket by :mod:`dicom_scp.cstore` (pynetdicom's
per-PDU path costs more than the whole ingest); every other message, and the association
itself, stays with pynetdicom.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Self

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config
from pynetdicom.sop_class import (
    StorageCommitmentPushModel,
    Verification,
)

from pacs_lite import dicomfile

from .commitment import CommitmentService
from .handlers import AssociationLog, DimseServices
from .query import MODELS
from .transport import GuardedAssociationServer, TransportLimits, TunedApplicationEntity, make_ssl_context

if TYPE_CHECKING:  # pragma: no cover
    from pacs_lite.archive import Archive
    from pacs_lite.config import Config

log = logging.getLogger("dicom_scp")

#: The Query/Retrieve information models we serve (FIND, GET, MOVE; Patient and Study Root).
QUERY_RETRIEVE_MODELS = tuple(MODELS)


class _UndeliverableMarkerFilter(logging.Filter):
    """Drops pynetdicom's lines about the marker dataset yielded for an instance that cannot be sent.

    :meth:`dicom_scp.handlers.DimseServices._prepare` logs why, naming the instance, and yields a dataset
    without a SOP Class UID so that pynetdicom counts a failed sub-operation; pynetdicom then logs
    "C-STORE sub-operation failed." and a missing SOPClassUID, which point the operator at the wrong
    problem. Its other lines (a real C-STORE failure logs the exception) pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == "C-STORE sub-operation failed.":
            return False
        return not (message.startswith("Unable to send the dataset as one or more required")
                    and message.endswith("SOPClassUID"))


def quiet_pynetdicom() -> None:
    """Keep patient data out of the logs: pynetdicom logs query identifiers by default."""
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    service_log = logging.getLogger("pynetdicom.service_class")
    if not any(isinstance(f, _UndeliverableMarkerFilter) for f in service_log.filters):
        service_log.addFilter(_UndeliverableMarkerFilter())


class DicomServer:
    """The archive's DIMSE service provider.

    Parameters
    ----------
    archive
        Catalog, ingest and retrieval to serve.
    config
        ``[dicom]`` settings (AE title, host, port, limits, timeouts, TLS, peers).
    commitment_retry_base
        Seconds before the first retry of an undelivered commitment report (doubling).
    job_poll_interval
        Seconds between looks at the job queue when idle.
    max_connections
        Connections served at once (default: 4 x ``max_associations`` + 32); more are closed on accept.

    Examples
    --------
    >>> server = DicomServer(archive, config)
    >>> server.start()          # returns once listening; server.port is the real port
    >>> server.shutdown()       # stops accepting, lets open associations finish
    """

    def __init__(
        self,
        archive: Archive,
        config: Config,
        *,
        commitment_retry_base: float = 5.0,
        job_poll_interval: float = 2.0,
        max_connections: int | None = None,
    ) -> None:
        self.archive = archive
        self.config = config
        dicom = config["dicom"]
        self.ae_title: str = dicom["ae_title"]
        self.host: str = dicom["host"]
        self._requested_port: int = dicom["port"]
        self.max_connections = max_connections or 4 * dicom["max_associations"] + 32
        self.associations = AssociationLog()
        self.ae = self._make_ae()
        self.commitment = CommitmentService(
            archive, config, self.ae, retry_base=commitment_retry_base, poll_interval=job_poll_interval
        )
        self.services = DimseServices(archive, config, self.associations, self.commitment)
        self._server: GuardedAssociationServer | None = None
        self._thread: threading.Thread | None = None

    # -- set-up ----------------------------------------------------------------------------------

    def _make_ae(self) -> TunedApplicationEntity:
        dicom = self.config["dicom"]
        ae = TunedApplicationEntity(self.ae_title)
        ae.maximum_pdu_size = dicom["max_pdu_length"]
        ae.maximum_associations = dicom["max_associations"]
        ae.acse_timeout = dicom["acse_timeout"]
        ae.dimse_timeout = dicom["dimse_timeout"]
        ae.network_timeout = dicom["network_timeout"]
        ae.connection_timeout = dicom["acse_timeout"]
        ae.require_called_aet = True
        ae.implementation_class_uid = dicomfile.IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = dicomfile.IMPLEMENTATION_VERSION
        ae.transport_limits = TransportLimits(
            max_pdu_length=dicom["max_pdu_length"],
            max_message_bytes=self.config["ingest"]["max_object_bytes"],
            acse_timeout=float(dicom["acse_timeout"]),
            network_timeout=float(dicom["network_timeout"]),
        )
        ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:
            # both roles: storage SCUs, and C-GET requestors that act as the storage SCP
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        for model in QUERY_RETRIEVE_MODELS:
            ae.add_supported_context(model)
        ae.add_supported_context(StorageCommitmentPushModel)
        return ae

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and listen (port 0 picks a free port), start serving and the job runner; return at once."""
        if self._server is not None:
            raise RuntimeError("the DICOM server is already running")
        quiet_pynetdicom()
        dicom = self.config["dicom"]
        ssl_context = None
        if dicom["tls_cert"]:
            ssl_context = make_ssl_context(dicom["tls_cert"], dicom["tls_key"], dicom["tls_ca"])
        server = self.ae.make_server(
            (self.host, self._requested_port),
            ae_title=self.ae_title,
            ssl_context=ssl_context,
            evt_handlers=self.services.handlers(),
            server_class=GuardedAssociationServer,
            limits=self.ae.transport_limits,
            max_connections=self.max_connections,
            on_started=self.associations.started,
            on_finished=self.associations.finished,
            ingest_c_store=self.services.ingest_c_store,
            storage_classes=frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts),
            idle=self.services.idle,
        )
        self.ae._servers.append(server)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"dicom-scp-accept-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self.commitment.start()
        log.info(
            "DICOM server %s listening on %s:%d%s", self.ae_title, self.host, self.port, " (TLS)" if ssl_context else ""
        )

    @property
    def port(self) -> int:
        """The port actually listened on."""
        if self._server is None:
            raise RuntimeError("the DICOM server is not running")
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def active_associations(self) -> int:
        """Associations in progress."""
        return len(self._server.active_associations) if self._server is not None else 0

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, let open associations finish for up to ``timeout`` s, abort the rest."""
        server = self._server
        if server is None:
            return
        server.closing = True
        self.commitment.stop(timeout)
        server.shutdown()  # stops the accept loop, closes the listening socket
        deadline = time.monotonic() + timeout
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in server.active_associations:
            log.warning("aborting association from %s at shutdown", assoc.requestor.address)
            assoc.abort()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
        self._thread = None
        log.info("DICOM server %s stopped", self.ae_title)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()
