"""Storage Commitment Push Model (PS3.4 Annex J), SCP side, made durable with catalog jobs.

N-ACTION only queues a ``commitment`` job (in the index, so it survives a restart) and
answers at once. A runner thread claims jobs, checks each referenced instance (indexed,
same SOP class, object present with its recorded SHA-256) and sends the N-EVENT-REPORT
on a new association to the calling AE's configured address, retrying with
exponential backoff while the peer cannot be reached. Several nodes sharing one
PostgreSQL index share the queue (``catalog.jobs.claim`` skips jobs another node holds).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom import build_role
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StorageCommitmentPushModel

from pacs_lite.catalog import CatalogUnavailable
from pacs_lite.retrieval import Failure, RetrievalError
from pacs_lite.status import Status

if TYPE_CHECKING:  # pragma: no cover
    from pynetdicom.ae import ApplicationEntity

    from pacs_lite.archive import Archive
    from pacs_lite.config import Config, Peer

log = logging.getLogger("dicom_scp.commitment")

JOB_KIND = "commitment"
#: The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.5)
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"



class DeliveryError(Exception):
    """The report could not be delivered now; ``permanent`` means retrying is pointless."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class CommitmentResult:
    """The outcome of checking one request."""

    transaction_uid: str
    committed: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def event_type(self) -> int:
        """1: every instance committed; 2: some failed."""
        return 2 if self.failed else 1

    def report(self, ae_title: str) -> Dataset:
        """The N-EVENT-REPORT Event Information."""
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        if self.committed:
            ds.RetrieveAETitle = ae_title
            ds.ReferencedSOPSequence = [_ref(c, i) for c, i in self.committed]
        if self.failed:
            items = []
            for sop_class, sop_uid, reason in self.failed:
                item = _ref(sop_class, sop_uid)
                item.FailureReason = reason
                items.append(item)
            ds.FailedSOPSequence = items
        return ds


def _ref(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


class CommitmentService:
    """Queues storage commitment requests and delivers their reports.

    Parameters
    ----------
    archive, config
        The archive whose instances are checked; peers and our AE title.
    ae
        The application entity that requests the report associations.
    retry_base
        Seconds before the first retry; doubled each attempt, at most ``retry_max``.
    max_attempts
        Attempts before a job is marked failed.
    poll_interval
        Seconds between looks at the queue when idle (new requests wake the runner).
    """

    def __init__(
        self,
        archive: Archive,
        config: Config,
        ae: ApplicationEntity | None = None,
        *,
        retry_base: float = 5.0,
        retry_max: float = 600.0,
        max_attempts: int = 30,
        poll_interval: float = 2.0,
        lease_seconds: float = 300.0,
    ) -> None:
        self.archive = archive
        self.config = config
        self.ae = ae
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.worker = f"dicom-scp@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- queue ---------------------------------------------------------------------------------

    def enqueue(self, calling_ae: str, transaction_uid: str, refs: Sequence[tuple[str, str]]) -> None:
        """Record a request durably and wake the runner."""
        self.archive.catalog.jobs.add(
            JOB_KIND,
            {
                "calling_ae": calling_ae,
                "transaction_uid": transaction_uid,
                "refs": [list(r) for r in refs],
            },
        )
        self._wake.set()

    # -- runner --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the runner thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dicom-scp-commitment", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the runner after the job in hand (its report is sent or requeued)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except CatalogUnavailable as exc:
                log.warning("commitment queue unavailable: %s", exc)
                worked = False
            except Exception:  # noqa: BLE001 - the runner must survive anything
                log.exception("commitment runner error")
                worked = False
            if not worked:
                self._wake.wait(self.poll_interval)
                self._wake.clear()

    def run_once(self) -> bool:
        """Claim and process one queued job; ``False`` when there was none."""
        job = self.archive.catalog.jobs.claim([JOB_KIND], self.worker, lease_seconds=self.lease_seconds)
        if job is None:
            return False
        job_id, _, payload, attempts = job
        try:
            result = self.process(payload)
        except Exception as exc:  # noqa: BLE001
            permanent = isinstance(exc, DeliveryError) and exc.permanent
            message = str(exc) if isinstance(exc, DeliveryError | CatalogUnavailable) else type(exc).__name__
            if permanent or attempts >= self.max_attempts:
                log.error(
                    "storage commitment report %s abandoned after %d attempt(s): %s",
                    payload.get("transaction_uid", "?"),
                    attempts,
                    message,
                )
                self.archive.catalog.jobs.finish(job_id, error=message)
            else:
                delay = min(self.retry_max, self.retry_base * 2 ** (attempts - 1))
                log.warning(
                    "storage commitment report %s not delivered (attempt %d): %s; retry in %.0f s",
                    payload.get("transaction_uid", "?"),
                    attempts,
                    message,
                    delay,
                )
                self.archive.catalog.jobs.finish(job_id, error=message, retry_in=delay)
            return True
        self.archive.catalog.jobs.finish(job_id)
        log.info(
            "storage commitment report %s sent to %s: %d committed, %d failed",
            result.transaction_uid,
            payload.get("calling_ae", "?"),
            len(result.committed),
            len(result.failed),
        )
        return True

    # -- work ----------------------------------------------------------------------------------

    def process(self, payload: dict[str, Any]) -> CommitmentResult:
        """Check the request's instances and send the report; raise to have it retried."""
        peer = self.config.find_peer(str(payload.get("calling_ae", "")))
        if peer is None:
            raise DeliveryError("the requesting AE is no longer a configured peer", permanent=True)
        result = self.check(str(payload["transaction_uid"]), payload.get("refs", []))
        self.send(peer, result)
        return result

    def check(self, transaction_uid: str, refs: Sequence[Sequence[str]]) -> CommitmentResult:
        """Which referenced instances we hold safely (raises when the index or store is down)."""
        result = CommitmentResult(transaction_uid)
        for sop_class, sop_uid in refs:
            reason = self.check_instance(sop_class, sop_uid)
            if reason is None:
                result.committed.append((sop_class, sop_uid))
            else:
                result.failed.append((sop_class, sop_uid, reason))
        return result

    def check_instance(self, sop_class: str, sop_uid: str) -> int | None:
        """``None`` when committed, else the Failure Reason."""
        inst = self.archive.catalog.lookup_instance(sop_uid)
        if inst is None:
            return Status.NO_SUCH_SOP_INSTANCE
        if inst.sop_class_uid != sop_class:
            return Status.CLASS_INSTANCE_CONFLICT
        try:
            self.archive.retrieval.read(inst)  # verifies the recorded SHA-256
        except RetrievalError as exc:
            if exc.kind is Failure.UNAVAILABLE:
                raise DeliveryError(f"object store unavailable: {exc}") from None
            return Status.PROCESSING_FAILURE
        return None

    def send(self, peer: Peer, result: CommitmentResult) -> None:
        """Send the N-EVENT-REPORT on a new association, proposing the SCP role."""
        if self.ae is None:
            raise DeliveryError("no application entity to send with", permanent=True)
        assoc = self.ae.associate(
            peer.host,
            peer.port,
            contexts=[build_context(StorageCommitmentPushModel)],
            ae_title=peer.ae_title,
            ext_neg=[build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)],
            max_pdu=self.config["dicom"]["max_pdu_length"],
        )
        if not assoc.is_established:
            raise DeliveryError(f"cannot associate with {peer.ae_title} at {peer.host}:{peer.port}")
        try:
            rsp, _ = assoc.send_n_event_report(
                result.report(self.config["dicom"]["ae_title"]),
                result.event_type,
                StorageCommitmentPushModel,
                STORAGE_COMMITMENT_INSTANCE,
            )
        finally:
            if assoc.is_established:
                assoc.release()
        code = rsp.get("Status")
        if code is None:
            raise DeliveryError("no N-EVENT-REPORT response from the peer")
        if code != Status.SUCCESS:
            raise DeliveryError(f"peer answered the N-EVENT-REPORT with status 0x{int(code):04X}")
