"""The DIMSE service handlers: one thin function per service, delegating to pacs_lite.

In the style of pynetdicom's ``apps/qrscp``: each handler is bound to one ``evt.EVT_*``
event, catches everything (a dataset problem is a failure status with an
ErrorComment, never an abort), and does its work through the archive's ingest,
catalog and retrieval services.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification

from pacs_lite.catalog import CatalogUnavailable, QueryError, StoredInstance
from pacs_lite.retrieval import RetrievalError
from pacs_lite.status import Status
from pacs_lite.syntaxes import UNCOMPRESSED_OFFER

from .cstore import keep_alive
from .query import IdentifierError, build_response, iter_matches, parse_query, retrieve_instances

if TYPE_CHECKING:  # pragma: no cover
    from pacs_lite.archive import Archive
    from pacs_lite.config import Config

    from .commitment import CommitmentService

log = logging.getLogger("dicom_scp")

MAX_CONTEXTS = 128
MAX_COMMITMENT_REFERENCES = 50_000
#: C-FIND responses queued for sending before the handler waits for the network.
SEND_QUEUE_LIMIT = 4


def status(code: int, comment: str = "") -> Dataset:
    """A status dataset with an ErrorComment (at most 64 printable ASCII characters)."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = safe_text(comment, 64)
    return ds


def safe_text(text: str, limit: int) -> str:
    """``text`` reduced to printable ASCII without backslashes, cut to ``limit`` characters."""
    cleaned = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in str(text))
    return cleaned[:limit]


# -- bookkeeping -------------------------------------------------------------------------------


@dataclass
class AssociationStats:
    """What one association did, for its log line."""

    stored: int = 0
    failed: int = 0
    in_flight: int = 0  # handlers working through pynetdicom right now
    operations: dict[str, int] = field(default_factory=dict)


class AssociationLog:
    """One log line per association: calling AE, peer address, outcome, counts, duration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[Association, AssociationStats] = {}

    def started(self, assoc: Association) -> None:
        with self._lock:
            self._stats[assoc] = AssociationStats()

    def get(self, assoc: Association) -> AssociationStats:
        with self._lock:
            return self._stats.setdefault(assoc, AssociationStats())

    def count(self, assoc: Association, operation: str) -> None:
        stats = self.get(assoc)
        stats.operations[operation] = stats.operations.get(operation, 0) + 1

    def finished(self, assoc: Association, duration: float) -> None:
        with self._lock:
            stats = self._stats.pop(assoc, AssociationStats())
        if assoc.is_released:
            outcome = "released"
        elif assoc.is_rejected:
            outcome = "rejected"
        elif assoc.is_aborted:
            outcome = "aborted"
        else:
            outcome = "closed"
        ops = ", ".join(f"{k} {v}" for k, v in sorted(stats.operations.items())) or "no operations"
        log.info(
            "association from %s at %s %s after %.2f s: %d stored, %d failed; %s",
            calling_ae(assoc),
            peer_address(assoc),
            outcome,
            duration,
            stats.stored,
            stats.failed,
            ops,
        )


def calling_ae(assoc: Association) -> str:
    """The calling AE title of an association request, safe to log."""
    primitive = assoc.requestor.primitive
    title = getattr(primitive, "calling_ae_title", None) if primitive is not None else None
    return safe_text(str(title or "").strip(), 16) or "?"


def peer_address(assoc: Association) -> str:
    try:
        return str(assoc.requestor.address)
    except Exception:  # noqa: BLE001
        return "?"


@functools.lru_cache(maxsize=256)
def _addresses(host: str) -> frozenset[str]:
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
    except OSError:
        return frozenset()


def host_matches(configured: str, address: str) -> bool:
    """Whether the peer ``address`` is the configured host (an IP address or a name)."""
    return configured == address or address in _addresses(configured)


# -- the services --------------------------------------------------------------------------------


class DimseServices:
    """The handlers of one :class:`~dicom_scp.DicomServer`.

    Parameters
    ----------
    archive
        Where instances are ingested, found and read.
    config
        Peers, AE title, access policy.
    associations
        Per-association counters for the log line.
    commitment
        Queue for storage commitment requests.
    """

    def __init__(
        self, archive: Archive, config: Config, associations: AssociationLog, commitment: CommitmentService
    ) -> None:
        self.archive = archive
        self.config = config
        self.ae_title = config["dicom"]["ae_title"]
        self.max_pdu = config["dicom"]["max_pdu_length"]
        self.send_timeout = float(config["dicom"]["network_timeout"])
        self.associations = associations
        self.commitment = commitment

    def handlers(self) -> list[tuple[Any, Any]]:
        """``(event, handler)`` pairs for pynetdicom."""
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_ECHO, self._tracked(self.on_echo)),
            (evt.EVT_C_STORE, self._tracked(self.on_store)),
            (evt.EVT_C_FIND, self._tracked(self.on_find)),
            (evt.EVT_C_GET, self._tracked(self.on_get)),
            (evt.EVT_C_MOVE, self._tracked(self.on_move)),
            (evt.EVT_N_ACTION, self._tracked(self.on_n_action)),
        ]

    def idle(self, assoc: Association) -> bool:
        """Whether no handler is working for ``assoc`` through pynetdicom (the store receiver may read)."""
        return self.associations.get(assoc).in_flight == 0

    def _tracked(self, handler: Callable[[evt.Event], Any]) -> Callable[[evt.Event], Any]:
        """``handler``, counted in its association's ``in_flight`` until it (or its generator) is done."""

        def generator(stats: AssociationStats, responses: Iterator[Any]) -> Iterator[Any]:
            try:
                yield from responses
            finally:
                stats.in_flight -= 1

        @functools.wraps(handler)
        def tracked(event: evt.Event) -> Any:
            stats = self.associations.get(event.assoc)
            stats.in_flight += 1
            try:
                result = handler(event)
            except BaseException:
                stats.in_flight -= 1
                raise
            if isinstance(result, types.GeneratorType):
                return generator(stats, result)
            stats.in_flight -= 1
            return result

        return tracked

    # -- access ----------------------------------------------------------------------------

    def on_requested(self, event: evt.Event) -> None:
        """A-ASSOCIATE-RQ received: our AE title must be called; unless anyone may call, only known peers.

        Every rejection is logged with its reason: the called AE title is not ours, the calling AE title
        is not a configured peer, or it is one but connects from another host than the one configured.
        """
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        title = str(getattr(primitive, "calling_ae_title", "") or "").strip()
        called = str(getattr(primitive, "called_ae_title", "") or "").strip()
        address = peer_address(assoc)
        ours = self.config.get("dicom", "ae_title").strip()
        if called != ours:
            self._reject(assoc, 0x07, f"calling AE {safe_text(title, 16)!r} at {address} called AE "
                                      f"{safe_text(called, 16)!r}, but this server is {ours!r} (dicom.ae_title)")
            return
        if self.config.any_caller_allowed():
            return
        known = [p for p in self.config.peers if p.ae_title == title]
        if any(host_matches(p.host, address) for p in known):
            return
        if known:
            hosts = ", ".join(sorted({p.host for p in known}))
            reason = (f"calling AE {safe_text(title, 16)!r} connects from {address}, "
                      f"but its [[dicom.peers]] entry names host {hosts}")
        else:
            reason = (f"calling AE {safe_text(title, 16)!r} at {address} is not a configured peer "
                      f"(add it to [[dicom.peers]], or set dicom.allow_any_caller)")
        self._reject(assoc, 0x03, reason)

    @staticmethod
    def _reject(assoc: Association, reason_code: int, reason: str) -> None:
        """Send A-ASSOCIATE-RJ (rejected-permanent, service-user, ``reason_code``) after logging why."""
        log.warning("association rejected: %s", reason)
        assoc.acse.send_reject(0x01, 0x01, reason_code)  # 0x03: calling AE not recognised; 0x07: called AE
        assoc.kill()  # waits until the A-ASSOCIATE-RJ is out and the connection closed

    # -- verification and storage -------------------------------------------------------------

    def on_echo(self, event: evt.Event) -> int:
        self.associations.count(event.assoc, "C-ECHO")
        return Status.SUCCESS

    def on_store(self, event: evt.Event) -> int | Dataset:
        """C-STORE through pynetdicom (the store receiver leaves it the odd cases): as :meth:`store`."""
        req = event.request
        view = req.DataSet.getbuffer()
        try:
            code, comment = self.ingest_c_store(event.assoc, str(event.context.transfer_syntax),
                                       _text_or_none(req.AffectedSOPClassUID),
                                       _text_or_none(req.AffectedSOPInstanceUID), view)
        finally:
            try:
                view.release()
            except BufferError:
                pass
        return status(code, comment) if comment else code

    def ingest_c_store(self, assoc: Association, transfer_syntax: str, sop_class_uid: str | None,
              sop_instance_uid: str | None, dataset: bytes | memoryview) -> tuple[int, str]:
        """Ingest the dataset bytes as received (never decoded here); the status and error comment to send."""
        stats = self.associations.get(assoc)
        self.associations.count(assoc, "C-STORE")
        try:
            result = self.archive.ingest.ingest_dataset(dataset, transfer_syntax, sop_class_uid=sop_class_uid,
                                                        sop_instance_uid=sop_instance_uid, source=calling_ae(assoc))
        except Exception as exc:  # noqa: BLE001 - never abort on a dataset problem
            log.error("C-STORE failed unexpectedly: %s", type(exc).__name__)
            stats.failed += 1
            return Status.OUT_OF_RESOURCES, "internal error while storing; retry later"
        finally:
            keep_alive(assoc)
        if result.ok:
            stats.stored += 1
            return Status.SUCCESS, ""
        stats.failed += 1
        return result.dicom_status, safe_text(result.reason or result.status, 64)

    # -- query -------------------------------------------------------------------------------

    def on_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """Pending responses for each match; C-CANCEL is honoured between them."""
        self.associations.count(event.assoc, "C-FIND")
        try:
            query = parse_query(event.identifier, str(event.request.AffectedSOPClassUID))
        except IdentifierError as exc:
            yield status(exc.status, exc.comment), None
            return
        except Exception:  # noqa: BLE001 - an identifier pydicom cannot decode
            yield status(Status.CANNOT_UNDERSTAND, "cannot decode the query identifier"), None
            return
        try:
            for row, metadata in iter_matches(self.archive.catalog, query):
                wait_for_send_queue(event.assoc, self.send_timeout)
                keep_alive(event.assoc)
                if event.is_cancelled:
                    yield Status.CANCEL, None
                    return
                yield Status.PENDING, build_response(query, row, metadata, self.ae_title)
        except QueryError as exc:
            yield status(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
            return
        except CatalogUnavailable:
            yield status(Status.OUT_OF_RESOURCES, "index unavailable; retry later"), None
            return
        except Exception as exc:  # noqa: BLE001
            log.error("C-FIND failed unexpectedly: %s", type(exc).__name__)
            yield status(Status.CANNOT_UNDERSTAND, "internal error while searching"), None
            return
        yield Status.SUCCESS, None

    # -- retrieve ----------------------------------------------------------------------------

    def on_get(self, event: evt.Event) -> Iterator[Any]:
        """C-STORE sub-operations on this association, in a syntax the requestor accepted."""
        self.associations.count(event.assoc, "C-GET")
        try:
            instances = retrieve_instances(
                self.archive.catalog, event.identifier, str(event.request.AffectedSOPClassUID)
            )
        except Exception as exc:  # noqa: BLE001
            yield 1
            yield _retrieve_failure(exc), None
            return
        yield len(instances)
        for inst in instances:
            keep_alive(event.assoc)
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            yield Status.PENDING, self._prepare(inst, accepted_syntaxes(event.assoc, inst.sop_class_uid))
        keep_alive(event.assoc)

    def on_move(self, event: evt.Event) -> Iterator[Any]:
        """C-STORE sub-operations on a new association to a configured peer."""
        self.associations.count(event.assoc, "C-MOVE")
        destination = str(event.move_destination or "").strip()
        peer = self.config.find_peer(destination)
        if peer is None:
            log.warning("C-MOVE to unknown destination %r refused", safe_text(destination, 16))
            yield None, None  # pynetdicom answers 0xA801 (move destination unknown)
            return
        try:
            instances = retrieve_instances(
                self.archive.catalog, event.identifier, str(event.request.AffectedSOPClassUID)
            )
            error = None
        except Exception as exc:  # noqa: BLE001
            instances, error = [], exc
        accepted_by: dict[str, Association] = {}

        def remember(sub: evt.Event) -> None:
            accepted_by["assoc"] = sub.assoc

        contexts = move_contexts(instances) if instances else [build_context(Verification)]
        yield (
            peer.host,
            peer.port,
            {"contexts": contexts, "max_pdu": self.max_pdu, "evt_handlers": [(evt.EVT_ACCEPTED, remember)]},
        )
        if error is not None:
            yield 1
            yield _retrieve_failure(error), None
            return
        yield len(instances)
        sub = accepted_by.get("assoc")
        for inst in instances:
            keep_alive(event.assoc)
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            accepted = accepted_syntaxes(sub, inst.sop_class_uid) if sub is not None else []
            yield Status.PENDING, self._prepare(inst, accepted)
        keep_alive(event.assoc)

    def _prepare(self, inst: StoredInstance, accepted: Sequence[str]) -> Dataset:
        """The instance as a dataset in one of ``accepted``, or a marker pynetdicom counts as failed.

        pynetdicom's sub-operation loop counts a yielded dataset whose C-STORE cannot be
        sent as a failed sub-operation and lists its SOP Instance UID in the final
        response's Failed SOP Instance UID List; a dataset without a SOP Class UID is
        such a dataset.
        """
        failed = Dataset()
        failed.SOPInstanceUID = inst.sop_instance_uid
        if not accepted:
            log.info("retrieve: instance %s not sent: the peer accepted no presentation context for SOP class %s",
                     inst.sop_instance_uid, inst.sop_class_uid)
            return failed
        try:
            return self.archive.retrieval.dataset_for_peer(inst, accepted)
        except RetrievalError as exc:
            log.warning("retrieve: instance %s cannot be delivered (%s), its sub-operation fails: %s",
                        inst.sop_instance_uid, exc.kind, exc)
        except Exception as exc:  # noqa: BLE001
            log.error("retrieve: unexpected error preparing instance %s: %s", inst.sop_instance_uid,
                      type(exc).__name__)
        return failed

    # -- storage commitment ---------------------------------------------------------------------

    def on_n_action(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        """Storage Commitment request: check the caller, queue the request, answer at once.

        The N-EVENT-REPORT follows on a new association from the job runner, so that a
        restart in between still delivers it.
        """
        self.associations.count(event.assoc, "N-ACTION")
        try:
            if event.request.ActionTypeID != 1:
                return status(Status.NO_SUCH_ACTION_TYPE, "only action type 1 (request commitment)"), None
            caller = str(getattr(event.assoc.requestor.primitive, "calling_ae_title", "") or "").strip()
            address = peer_address(event.assoc)
            if not any(p.ae_title == caller and host_matches(p.host, address) for p in self.config.peers):
                return status(Status.NOT_AUTHORIZED, "storage commitment needs a configured peer"), None
            info = event.action_information
            transaction = str(info.get("TransactionUID", "") or "").strip()
            if not transaction or len(transaction) > 64:
                return status(Status.INVALID_ARGUMENT_VALUE, "Transaction UID missing or invalid"), None
            refs = []
            for item in info.get("ReferencedSOPSequence", None) or []:
                refs.append(
                    (
                        str(item.get("ReferencedSOPClassUID", "") or "").strip(),
                        str(item.get("ReferencedSOPInstanceUID", "") or "").strip(),
                    )
                )
            if not refs or len(refs) > MAX_COMMITMENT_REFERENCES:
                return status(Status.INVALID_ARGUMENT_VALUE, "Referenced SOP Sequence empty or too long"), None
            self.commitment.enqueue(caller, transaction, refs)
        except CatalogUnavailable:
            return status(Status.PROCESSING_FAILURE, "index unavailable; retry later"), None
        except Exception as exc:  # noqa: BLE001
            log.error("N-ACTION failed unexpectedly: %s", type(exc).__name__)
            return status(Status.PROCESSING_FAILURE, "cannot process the commitment request"), None
        return Status.SUCCESS, None


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _retrieve_failure(exc: BaseException) -> Dataset:
    if isinstance(exc, IdentifierError):
        return status(exc.status, exc.comment)
    if isinstance(exc, QueryError):
        return status(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc))
    if isinstance(exc, CatalogUnavailable):
        return status(Status.OUT_OF_RESOURCES, "index unavailable; retry later")
    log.error("retrieve failed unexpectedly: %s", type(exc).__name__)
    return status(Status.CANNOT_UNDERSTAND, "cannot process the retrieve identifier")


def accepted_syntaxes(assoc: Association, sop_class_uid: str) -> list[str]:
    """Transfer syntaxes the peer accepted on ``assoc`` for our sending ``sop_class_uid``."""
    return list(dict.fromkeys(
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class_uid and cx.as_scu
    ))


def move_contexts(instances: Sequence[StoredInstance]) -> list[PresentationContext]:
    """Presentation contexts to propose for sending ``instances`` (at most 128).

    For each SOP class: one context per stored transfer syntax that is not
    uncompressed (to send those objects as they are), then one offering Explicit and
    Implicit VR Little Endian. When that is more than 128, the as-stored contexts go
    first (those instances are then transcoded).
    """
    by_class: dict[str, dict[str, None]] = {}
    for inst in instances:
        by_class.setdefault(inst.sop_class_uid, {})[inst.transfer_syntax_uid] = None
    classes = list(by_class)[:MAX_CONTEXTS]
    budget = MAX_CONTEXTS - len(classes)
    contexts: list[PresentationContext] = []
    for sop_class in classes:
        for ts in by_class[sop_class]:
            if ts not in UNCOMPRESSED_OFFER and budget > 0:
                contexts.append(build_context(sop_class, [ts]))
                budget -= 1
        contexts.append(build_context(sop_class, list(UNCOMPRESSED_OFFER)))
    return contexts


def wait_for_send_queue(assoc: Association, timeout: float, limit: int = SEND_QUEUE_LIMIT) -> None:
    """Wait until the association has at most ``limit`` messages waiting to be sent.

    pynetdicom queues each response for its network thread without waiting, so a
    generator of C-FIND responses would otherwise run far ahead of the network: every
    match encoded in memory at once, and a C-CANCEL arriving only after all were
    queued. Pacing the generator to the socket bounds both.
    """
    queue = assoc.dul.to_provider_queue
    deadline = time.monotonic() + timeout
    while queue.qsize() > limit and assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.0005)
