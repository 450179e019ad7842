"""The one ingest path: C-STORE, STOW-RS and ``pacs-lite import`` all call :class:`IngestService`.

Order of work, and why:

1. read the header in one pass over the received bytes, which also proves every element
   complete (:mod:`pacs_lite.dicomheader`: no pydicom dataset, no pixel decoding), and
   validate the UIDs;
2. write one canonical Part-10 object: zeroed preamble (no executable preamble can be
   stored), our file meta, the dataset bytes exactly as received;
3. write the object durably under a server-generated key, then commit the index row;
   only then report success. A failure after the write leaves an orphan object (swept
   later), never an index row pointing at nothing;
4. the same SOP Instance UID with the same content is a success that stores nothing;
   different content becomes a new revision (the older object is kept), or is refused
   when ``[ingest] duplicates = "reject"``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from storage import ObjectStore, StoreError

from . import dicomfile, dicomheader
from .activity import ReceivingSignal
from .catalog import (
    EXTRACTED,
    Catalog,
    CatalogUnavailable,
    CompressionState,
    InstanceRecord,
    Integrity,
    RecordOutcome,
    RecordStatus,
)
from .catalog.attributes import INT
from .dicomheader import DicomHeader
from .faults import crash_point
from .status import Status
from .syntaxes import NATIVE
from .tags import (
    PIXEL_DATA,
    PIXEL_TAGS,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
)
from .uids import MAX_UID_LENGTH, is_uid

log = logging.getLogger(__name__)

#: Objects at least this large get their checksums computed beside the write (see IngestService._checksums).
PARALLEL_CHECKSUM_BYTES = 256 * 1024


@dataclass(frozen=True)
class Expected:
    """What the sender said the object is, which the dataset must agree with.

    ``sop_class_uid``/``sop_instance_uid``: a C-STORE command's Affected SOP Class/Instance
    UIDs; ``study_instance_uid``: the study in a STOW-RS request URL.
    """

    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    #: whether the sender may add to a study (a partner may not add to studies it cannot see)
    study_allowed: Callable[[str], bool] | None = None




@dataclass(frozen=True)
class Received:
    """A received object: its header (structure proven, values read lazily) and its dataset bytes."""

    header: DicomHeader
    transfer_syntax_uid: str
    dataset_bytes: bytes | memoryview


class IngestStatus(StrEnum):
    """What happened to one object (:attr:`IngestResult.status`)."""

    STORED = "stored"
    #: new content for a known UID; the older object is kept
    REVISED = "revised"
    #: identical to what is stored; nothing new kept
    DUPLICATE = "duplicate"
    #: the object is unacceptable
    REJECTED = "rejected"
    #: we could not store it now: retry later
    FAILED = "failed"


@dataclass(frozen=True)
class IngestResult:
    """What happened to one object, and the DIMSE status that says so."""

    status: IngestStatus
    dicom_status: int
    reason: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    transfer_syntax_uid: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (IngestStatus.STORED, IngestStatus.REVISED, IngestStatus.DUPLICATE)


class IngestRejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_uid(value: Any, name: str) -> str:
    """The UID as a string, or :class:`IngestRejected` saying what is wrong with it."""
    if value is None:
        raise IngestRejected(Status.CANNOT_UNDERSTAND, f"{name} is missing")
    text = str(value).strip("\0 ")
    if not text:
        raise IngestRejected(Status.CANNOT_UNDERSTAND, f"{name} is empty")
    if len(text) > MAX_UID_LENGTH:
        raise IngestRejected(Status.CANNOT_UNDERSTAND, f"{name} is longer than 64 characters")
    if not is_uid(text):
        raise IngestRejected(Status.CANNOT_UNDERSTAND, f"{name} is not a valid UID (digits and dots only)")
    return text


class IngestService:
    """Validates, stores and indexes received DICOM objects.

    Parameters
    ----------
    catalog, store
        The index and the object store.
    compression_target
        Lossless transfer syntax UID that native images are compressed to later, or ``"none"``.
    duplicates
        ``"revision"`` (keep both, index the newest) or ``"reject"``.
    """

    def __init__(self, catalog: Catalog, store: ObjectStore, *, compression_target: str = "none",
                 duplicates: str = "revision", max_object_bytes: int = 4 * 1024**3, metrics: Any = None,
                 receiving: ReceivingSignal | None = None) -> None:
        self.catalog = catalog
        self.receiving = receiving  # tells this node's compression workers to hold off
        self._hasher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingest-sha256")  # threads start on first use
        self.store = store
        self.compression_target = compression_target
        self.duplicates = duplicates
        self.max_object_bytes = max_object_bytes
        self.metrics = metrics

    def close(self) -> None:
        """Stop the checksum helper threads (idle ones; they would otherwise live until exit)."""
        self._hasher.shutdown(wait=False)

    # -- entry points ------------------------------------------------------------------------

    def ingest_part10(self, data: bytes, *, source: str = "", study_instance_uid: str | None = None,
                      study_allowed: Callable[[str], bool] | None = None) -> IngestResult:
        """Ingest a DICOM Part-10 file (STOW-RS part, imported file).

        With ``study_instance_uid`` (the study of a STOW-RS request URL) an instance of
        another study is refused (0x0110) and nothing is stored; so is an instance of a study
        for which ``study_allowed`` says no (0x0124).
        """
        if len(data) > self.max_object_bytes:
            return self._result(IngestResult(IngestStatus.REJECTED, Status.OUT_OF_RESOURCES,
                                             "object larger than ingest.max_object_bytes"))
        try:
            transfer_syntax_uid, dataset_bytes = dicomfile.split_received_part10(data)
        except dicomfile.DicomFormatError as exc:
            return self._result(IngestResult(IngestStatus.REJECTED, Status.CANNOT_UNDERSTAND, str(exc)))
        return self._read_and_ingest(dataset_bytes, transfer_syntax_uid,
                                     Expected(study_instance_uid=study_instance_uid, study_allowed=study_allowed),
                                     source)

    def ingest_dataset(self, dataset_bytes: bytes | memoryview, transfer_syntax_uid: str, *,
                       sop_class_uid: str | None = None, sop_instance_uid: str | None = None,
                       source: str = "") -> IngestResult:
        """Ingest a dataset received over DIMSE in ``transfer_syntax_uid``.

        ``sop_class_uid``/``sop_instance_uid`` are the C-STORE command's Affected SOP
        Class/Instance UIDs; the dataset must agree with them.
        """
        if len(dataset_bytes) > self.max_object_bytes:
            return self._result(IngestResult(IngestStatus.REJECTED, Status.OUT_OF_RESOURCES,
                                             "object larger than ingest.max_object_bytes"))
        return self._read_and_ingest(dataset_bytes, transfer_syntax_uid,
                                     Expected(sop_class_uid, sop_instance_uid), source)

    def _read_and_ingest(self, dataset_bytes: bytes | memoryview, transfer_syntax_uid: str, expected: Expected,
                         source: str) -> IngestResult:
        """Read the header (proving the structure) and run the ingest path; never raises."""
        if self.receiving is not None:
            self.receiving.mark()
        try:
            header = dicomheader.read_header(dataset_bytes, transfer_syntax_uid)
        except dicomfile.DicomFormatError as exc:
            return self._result(IngestResult(IngestStatus.REJECTED, Status.CANNOT_UNDERSTAND, str(exc)))
        except (RecursionError, MemoryError):
            return self._result(IngestResult(IngestStatus.REJECTED, Status.CANNOT_UNDERSTAND,
                                             "dataset too deeply nested or too large"))
        received = Received(header, transfer_syntax_uid, dataset_bytes)
        try:
            return self._ingest(received, expected, source=source)
        except Exception as exc:  # noqa: BLE001 - the caller (SCP, STOW, import) must get a status
            log.exception("unexpected ingest error (%s)", type(exc).__name__)
            return self._result(IngestResult(IngestStatus.FAILED, Status.OUT_OF_RESOURCES,
                                             f"internal error: {type(exc).__name__}"))

    # -- the path --------------------------------------------------------------------------

    def _ingest(self, received: Received, expected: Expected, *, source: str) -> IngestResult:
        started = time.perf_counter()
        header = received.header
        try:
            uids = self._validate(header, expected)
        except IngestRejected as exc:
            return self._result(IngestResult(IngestStatus.REJECTED, exc.status, exc.reason,
                                             sop_instance_uid=_safe_uid(header, SOP_INSTANCE_UID),
                                             sop_class_uid=_safe_uid(header, SOP_CLASS_UID)))
        sop_class, sop_uid, study_uid, series_uid = uids
        base = dict(sop_class_uid=sop_class, sop_instance_uid=sop_uid, study_instance_uid=study_uid,
                    series_instance_uid=series_uid, transfer_syntax_uid=received.transfer_syntax_uid)
        crash_point("ingest.after_parse")

        # No early look-up of resends here: a read transaction per instance costs more than
        # writing the rare resend and letting the index transaction find it a duplicate.
        data = dicomfile.build_part10(sop_class, sop_uid, received.transfer_syntax_uid, received.dataset_bytes,
                                      source_ae=_ae(source))
        checksums = self._checksums(received.dataset_bytes, data)
        try:
            metadata = header.metadata_json(study_uid, series_uid, sop_uid)
            record = self._index_record(header, received.transfer_syntax_uid, uids, metadata)
        except (RecursionError, MemoryError):
            return self._result(IngestResult(IngestStatus.REJECTED, Status.CANNOT_UNDERSTAND,
                                             "dataset too deeply nested or too large", **base))
        except Exception as exc:  # noqa: BLE001 - malformed values
            # the exception text may quote element values (patient data): report its type only
            return self._result(IngestResult(IngestStatus.REJECTED, Status.CANNOT_UNDERSTAND,
                                             f"cannot read dataset: malformed value ({type(exc).__name__})", **base))

        record.object_key = dicomfile.new_object_key()
        record.object_size = len(data)
        try:
            self.store.put(record.object_key, data)
        except StoreError as exc:
            log.warning("object store write failed: %s", exc)
            return self._result(IngestResult(IngestStatus.FAILED, Status.OUT_OF_RESOURCES,
                                             f"storage unavailable: {exc}", **base))
        crash_point("ingest.after_object_write")
        record.received_sha256, record.object_sha256 = checksums()

        pending = record.compression_state == CompressionState.PENDING
        enqueue = [("compress", {"sop_instance_uid": sop_uid})] if pending else []
        try:
            outcome = self.catalog.record_instance(record, enqueue=enqueue,
                                                   keep_revisions=self.duplicates == "revision")
        except Exception as exc:  # noqa: BLE001 - any index failure
            return self._index_failed(exc, base)
        crash_point("ingest.after_index_commit")
        try:
            repaired = outcome.status == RecordStatus.DUPLICATE and self._repair(record, outcome, enqueue)
        except Exception as exc:  # noqa: BLE001 - any index failure
            return self._index_failed(exc, base)
        if self.metrics is not None and (repaired or outcome.status in (RecordStatus.STORED, RecordStatus.REVISED)):
            self.metrics.observe_ingest(time.perf_counter() - started, len(data))
        if repaired:
            return self._result(IngestResult(IngestStatus.STORED, Status.SUCCESS,
                                             "the stored copy was missing or corrupt: replaced by this one", **base))
        if outcome.status == RecordStatus.DUPLICATE:
            return self._result(IngestResult(IngestStatus.DUPLICATE, Status.SUCCESS,
                                             "identical instance already stored", **base))
        if outcome.status == RecordStatus.CONFLICT:
            self._discard(record.object_key)
            return self._result(IngestResult(
                IngestStatus.REJECTED, Status.DUPLICATE_SOP_INSTANCE,
                "an instance with this SOP Instance UID and different content is already stored", **base))
        if outcome.status == RecordStatus.REVISED:
            return self._result(IngestResult(IngestStatus.REVISED, Status.SUCCESS,
                                             "new revision; the previous object is retained", **base))
        return self._result(IngestResult(IngestStatus.STORED, Status.SUCCESS, "", **base))

    def _index_failed(self, exc: Exception, base: dict[str, str]) -> IngestResult:
        # The commit may have happened even though we were told otherwise (a connection lost
        # during COMMIT), so the object is not deleted here: if no row refers to it, the
        # orphan sweeper removes it after the grace period.
        reason = str(exc) if isinstance(exc, CatalogUnavailable) else f"index write failed: {type(exc).__name__}"
        log.warning("index write failed: %s", reason)
        return self._result(IngestResult(IngestStatus.FAILED, Status.OUT_OF_RESOURCES, reason, **base))

    def _repair(self, record: InstanceRecord, outcome: RecordOutcome,
                enqueue: list[tuple[str, dict[str, Any]]]) -> bool:
        """A duplicate arrived: keep it in place of the stored copy if that one is lost or corrupt.

        Asks the store outside the index transaction, then points the instance at the new
        object with a compare and swap (the index changed meanwhile: it stays a duplicate).
        Otherwise the new object is deleted. Returns whether the new object replaced the stored one.
        """
        stored_key = outcome.existing_key
        assert stored_key is not None
        if outcome.existing_integrity == Integrity.OK:
            try:
                present = self.store.exists(stored_key)
            except StoreError as exc:  # cannot tell: keep what is indexed; the sweeper removes the new object
                log.warning("could not check the stored copy of a resent instance: %s", exc)
                return False
            if present:
                self._discard(record.object_key)
                return False
        replaced = self.catalog.replace_object(
            record.sop_instance_uid, stored_key, object_key=record.object_key, object_size=record.object_size,
            object_sha256=record.object_sha256, transfer_syntax_uid=record.transfer_syntax_uid,
            compression_state=record.compression_state, compression_note=record.compression_note,
            integrity=Integrity.OK, enqueue=enqueue)
        if not replaced:
            self._discard(record.object_key)
            return False
        log.warning("a resent instance replaced its stored copy, which was %s",
                    "missing" if outcome.existing_integrity == Integrity.OK else "corrupt")
        if outcome.existing_integrity != Integrity.OK:
            self._discard(stored_key)  # the corrupt copy; no row refers to it any more
        return True

    def _validate(self, header: DicomHeader, expected: Expected) -> tuple[str, str, str, str]:
        sop_class = check_uid(header.raw_text(SOP_CLASS_UID), "SOP Class UID (0008,0016)")
        sop_uid = check_uid(header.raw_text(SOP_INSTANCE_UID), "SOP Instance UID (0008,0018)")
        study_uid = check_uid(header.raw_text(STUDY_INSTANCE_UID), "Study Instance UID (0020,000D)")
        series_uid = check_uid(header.raw_text(SERIES_INSTANCE_UID), "Series Instance UID (0020,000E)")
        if expected.sop_instance_uid is not None and expected.sop_instance_uid.strip("\0 ") != sop_uid:
            raise IngestRejected(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                                 "dataset SOP Instance UID differs from the command's Affected SOP Instance UID")
        if expected.sop_class_uid is not None and expected.sop_class_uid.strip("\0 ") != sop_class:
            raise IngestRejected(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                                 "dataset SOP Class UID differs from the command's Affected SOP Class UID")
        if expected.study_instance_uid is not None and expected.study_instance_uid != study_uid:
            raise IngestRejected(Status.PROCESSING_FAILURE, "the instance does not belong to the study in the request URL")
        if expected.study_allowed is not None and not expected.study_allowed(study_uid):
            raise IngestRejected(Status.NOT_AUTHORIZED, "not allowed to add instances to this study")
        return sop_class, sop_uid, study_uid, series_uid

    def _checksums(self, dataset: bytes | memoryview, data: bytes) -> Callable[[], tuple[str, str]]:
        """SHA-256 of the received data set and of the object, as a call that returns both.

        For a large object both run on a helper thread (hashlib lets go of the GIL), beside
        the header work and the object write, which they would otherwise add ~0.6 ms to for
        a CT slice; for a small one the hand-over costs more than it saves.
        """
        if len(data) < PARALLEL_CHECKSUM_BYTES:
            digests = hashlib.sha256(dataset).hexdigest(), hashlib.sha256(data).hexdigest()
            return lambda: digests
        received = self._hasher.submit(lambda: hashlib.sha256(dataset).hexdigest())
        stored = self._hasher.submit(lambda: hashlib.sha256(data).hexdigest())
        return lambda: (received.result(), stored.result())

    def _index_record(self, header: DicomHeader, ts: str, uids: tuple[str, str, str, str],
                      metadata: bytes) -> InstanceRecord:
        """What the index will hold of this instance: each extracted attribute of each level.

        The UIDs are the validated ones; every other attribute is read as its column
        takes it (:data:`pacs_lite.catalog.EXTRACTED`: integer, or text cut to the column).
        """
        sop_class, sop_uid, study_uid, series_uid = uids
        validated = {"SOPClassUID": sop_class, "SOPInstanceUID": sop_uid, "StudyInstanceUID": study_uid,
                     "SeriesInstanceUID": series_uid}

        def values(level: str) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for attr in EXTRACTED[level]:
                if attr.keyword in validated:
                    out[attr.name] = validated[attr.keyword]
                elif attr.value_kind == INT:
                    out[attr.name] = header.int(attr.tag)
                else:
                    out[attr.name] = header.text(attr.tag, limit=attr.limit)
            return out

        if self.compression_target == "none":
            state, note = CompressionState.NONE, ""
        elif not any(header.has(tag) for tag in PIXEL_TAGS):
            state, note = CompressionState.KEPT, "no pixel data"
        elif ts not in NATIVE:
            state, note = CompressionState.KEPT, "received compressed; stored as received"
        elif not header.has(PIXEL_DATA):
            state, note = CompressionState.KEPT, "float pixel data"
        else:
            state, note = CompressionState.PENDING, ""
        instance = values("IMAGE")
        instance["number_of_frames"] = max(1, instance["number_of_frames"] or 1)
        return InstanceRecord(
            patient=values("PATIENT"), study=values("STUDY"), series=values("SERIES"), instance=instance,
            transfer_syntax_uid=ts, metadata_json=metadata, compression_state=state, compression_note=note,
        )

    def _discard(self, key: str) -> None:
        try:
            self.store.delete(key)
        except StoreError as exc:  # the sweeper removes it later
            log.warning("could not remove unreferenced object %s: %s", key, exc)

    def _result(self, result: IngestResult) -> IngestResult:
        if self.metrics is not None:
            self.metrics.count_ingest(result.status)
        if not result.ok:
            log.info("ingest %s (0x%04X): %s", result.status, result.dicom_status, result.reason)
        return result


def _safe_uid(header: DicomHeader, tag: int) -> str:
    try:
        return check_uid(header.raw_text(tag), "UID")
    except Exception:  # noqa: BLE001
        return ""


def _ae(source: str) -> str | None:
    text = source.strip()
    return text if text and len(text) <= 16 and text.isascii() and "\\" not in text else None
