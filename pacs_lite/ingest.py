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
from typing import Any

from storage import ObjectStore, StoreError

from . import dicomfile, dicomheader
from .activity import ReceivingSignal
from .catalog import Catalog, CatalogUnavailable, InstanceRecord
from .dicomheader import DicomHeader
from .faults import crash_point
from .uids import MAX_UID_LENGTH, is_uid

log = logging.getLogger(__name__)

# DICOM status codes used on the ingest path
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
DUPLICATE_REFUSED = 0x0111

NATIVE_SYNTAXES = {
    dicomfile.IMPLICIT_LE, dicomfile.EXPLICIT_LE, dicomfile.DEFLATED_LE, dicomfile.EXPLICIT_BE,
}
PIXEL_DATA = 0x7FE00010
PIXEL_TAGS = (PIXEL_DATA, 0x7FE00008, 0x7FE00009)  # integer, float, double float pixel data
#: Objects at least this large get their checksums computed beside the write (see IngestService._checksums).
PARALLEL_CHECKSUM_BYTES = 256 * 1024
SOP_CLASS_UID, SOP_INSTANCE_UID = 0x00080016, 0x00080018
STUDY_INSTANCE_UID, SERIES_INSTANCE_UID = 0x0020000D, 0x0020000E


@dataclass(frozen=True)
class Received:
    """A received object: its header (structure proven, values read lazily) and its dataset bytes."""

    header: DicomHeader
    transfer_syntax_uid: str
    dataset_bytes: bytes | memoryview


@dataclass(frozen=True)
class IngestResult:
    """What happened to one object. ``status`` is one of:

    ``stored``, ``revised`` (new content for a known UID; the older object is kept),
    ``duplicate`` (identical to what is stored; nothing new kept), ``rejected``
    (the object is unacceptable) or ``failed`` (we could not store it now: retry later).
    """

    status: str
    dicom_status: int
    reason: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    transfer_syntax_uid: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("stored", "revised", "duplicate")


class IngestRejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_uid(value: Any, name: str) -> str:
    """The UID as a string, or :class:`IngestRejected` saying what is wrong with it."""
    if value is None:
        raise IngestRejected(CANNOT_UNDERSTAND, f"{name} is missing")
    text = str(value).strip("\0 ")
    if not text:
        raise IngestRejected(CANNOT_UNDERSTAND, f"{name} is empty")
    if len(text) > MAX_UID_LENGTH:
        raise IngestRejected(CANNOT_UNDERSTAND, f"{name} is longer than 64 characters")
    if not is_uid(text):
        raise IngestRejected(CANNOT_UNDERSTAND, f"{name} is not a valid UID (digits and dots only)")
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

    def ingest_part10(self, data: bytes, *, source: str = "") -> IngestResult:
        """Ingest a DICOM Part-10 file (STOW-RS part, imported file)."""
        if len(data) > self.max_object_bytes:
            return self._result(IngestResult("rejected", OUT_OF_RESOURCES, "object larger than ingest.max_object_bytes"))
        try:
            transfer_syntax_uid, dataset_bytes = dicomfile.split_received_part10(data)
        except dicomfile.DicomFormatError as exc:
            return self._result(IngestResult("rejected", CANNOT_UNDERSTAND, str(exc)))
        return self._read_and_ingest(dataset_bytes, transfer_syntax_uid, None, None, source)

    def ingest_dataset(self, dataset_bytes: bytes | memoryview, transfer_syntax_uid: str, *,
                       sop_class_uid: str | None = None, sop_instance_uid: str | None = None,
                       source: str = "") -> IngestResult:
        """Ingest a dataset received over DIMSE in ``transfer_syntax_uid``.

        ``sop_class_uid``/``sop_instance_uid`` are the C-STORE command's Affected SOP
        Class/Instance UIDs; the dataset must agree with them.
        """
        if len(dataset_bytes) > self.max_object_bytes:
            return self._result(IngestResult("rejected", OUT_OF_RESOURCES, "object larger than ingest.max_object_bytes"))
        return self._read_and_ingest(dataset_bytes, transfer_syntax_uid, sop_class_uid, sop_instance_uid, source)

    def _read_and_ingest(self, dataset_bytes: bytes | memoryview, transfer_syntax_uid: str,
                         command_class: str | None, command_instance: str | None, source: str) -> IngestResult:
        """Read the header (proving the structure) and run the ingest path; never raises."""
        if self.receiving is not None:
            self.receiving.mark()
        try:
            header = dicomheader.read_header(dataset_bytes, transfer_syntax_uid)
        except dicomfile.DicomFormatError as exc:
            return self._result(IngestResult("rejected", CANNOT_UNDERSTAND, str(exc)))
        except (RecursionError, MemoryError):
            return self._result(IngestResult("rejected", CANNOT_UNDERSTAND, "dataset too deeply nested or too large"))
        received = Received(header, transfer_syntax_uid, dataset_bytes)
        try:
            return self._ingest(received, command_class=command_class, command_instance=command_instance,
                                source=source)
        except Exception as exc:  # noqa: BLE001 - the caller (SCP, STOW, import) must get a status
            log.exception("unexpected ingest error (%s)", type(exc).__name__)
            return self._result(IngestResult("failed", OUT_OF_RESOURCES, f"internal error: {type(exc).__name__}"))

    # -- the path --------------------------------------------------------------------------

    def _ingest(self, received: Received, *, command_class: str | None, command_instance: str | None,
                source: str) -> IngestResult:
        started = time.perf_counter()
        header = received.header
        try:
            uids = self._validate(header, command_class, command_instance)
        except IngestRejected as exc:
            return self._result(IngestResult("rejected", exc.status, exc.reason,
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
            record = self._record(header, received.transfer_syntax_uid, uids, metadata)
        except (RecursionError, MemoryError):
            return self._result(IngestResult("rejected", CANNOT_UNDERSTAND, "dataset too deeply nested or too large", **base))
        except Exception as exc:  # noqa: BLE001 - malformed values
            # the exception text may quote element values (patient data): report its type only
            return self._result(IngestResult("rejected", CANNOT_UNDERSTAND,
                                             f"cannot read dataset: malformed value ({type(exc).__name__})", **base))

        record.object_key = dicomfile.new_object_key()
        record.object_size = len(data)
        try:
            self.store.put(record.object_key, data)
        except StoreError as exc:
            log.warning("object store write failed: %s", exc)
            return self._result(IngestResult("failed", OUT_OF_RESOURCES, f"storage unavailable: {exc}", **base))
        crash_point("ingest.after_object_write")
        record.received_sha256, record.object_sha256 = checksums()

        enqueue = [("compress", {"sop_instance_uid": sop_uid})] if record.compression_state == "pending" else []
        try:
            outcome = self.catalog.record_instance(record, enqueue=enqueue,
                                                   keep_revisions=self.duplicates == "revision")
        except Exception as exc:  # noqa: BLE001 - any index failure
            # The commit may have happened even though we were told otherwise (a connection lost
            # during COMMIT), so the object is not deleted here: if no row refers to it, the
            # orphan sweeper removes it after the grace period.
            reason = str(exc) if isinstance(exc, CatalogUnavailable) else f"index write failed: {type(exc).__name__}"
            log.warning("index write failed: %s", reason)
            return self._result(IngestResult("failed", OUT_OF_RESOURCES, reason, **base))
        crash_point("ingest.after_index_commit")
        for key in outcome.orphaned_keys:
            self._discard(key)
        if self.metrics is not None and outcome.status in ("stored", "revised"):
            self.metrics.observe_ingest(time.perf_counter() - started, len(data))
        if outcome.status == "duplicate":
            return self._result(IngestResult("duplicate", SUCCESS, "identical instance already stored", **base))
        if outcome.status == "conflict":
            return self._result(IngestResult(
                "rejected", DUPLICATE_REFUSED,
                "an instance with this SOP Instance UID and different content is already stored", **base))
        if outcome.status == "revised":
            return self._result(IngestResult("revised", SUCCESS, "new revision; the previous object is retained", **base))
        return self._result(IngestResult("stored", SUCCESS, "", **base))

    def _validate(self, header: DicomHeader, command_class: str | None,
                  command_instance: str | None) -> tuple[str, str, str, str]:
        sop_class = check_uid(header.raw_text(SOP_CLASS_UID), "SOP Class UID (0008,0016)")
        sop_uid = check_uid(header.raw_text(SOP_INSTANCE_UID), "SOP Instance UID (0008,0018)")
        study_uid = check_uid(header.raw_text(STUDY_INSTANCE_UID), "Study Instance UID (0020,000D)")
        series_uid = check_uid(header.raw_text(SERIES_INSTANCE_UID), "Series Instance UID (0020,000E)")
        if command_instance is not None and command_instance.strip("\0 ") != sop_uid:
            raise IngestRejected(DATASET_MISMATCH, "dataset SOP Instance UID differs from the command's Affected SOP Instance UID")
        if command_class is not None and command_class.strip("\0 ") != sop_class:
            raise IngestRejected(DATASET_MISMATCH, "dataset SOP Class UID differs from the command's Affected SOP Class UID")
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

    def _record(self, header: DicomHeader, ts: str, uids: tuple[str, str, str, str],
                metadata: bytes) -> InstanceRecord:
        sop_class, sop_uid, study_uid, series_uid = uids
        text, number = header.text, header.int
        if self.compression_target == "none":
            state, note = "none", ""
        elif not any(header.has(tag) for tag in PIXEL_TAGS):
            state, note = "kept", "no pixel data"
        elif ts not in NATIVE_SYNTAXES:
            state, note = "kept", "received compressed; stored as received"
        elif not header.has(PIXEL_DATA):
            state, note = "kept", "float pixel data"
        else:
            state, note = "pending", ""
        frames = number(0x00280008) or 1
        return InstanceRecord(
            patient={
                "patient_id": text(0x00100020, limit=64),
                "patient_name": text(0x00100010, limit=324),
                "birth_date": text(0x00100030, limit=8),
                "sex": text(0x00100040, limit=16),
            },
            study={
                "study_instance_uid": study_uid,
                "study_date": text(0x00080020, limit=8),
                "study_time": text(0x00080030, limit=16),
                "accession_number": text(0x00080050, limit=16),
                "study_id": text(0x00200010, limit=16),
                "study_description": text(0x00081030, limit=64),
                "referring_physician_name": text(0x00080090, limit=324),
            },
            series={
                "series_instance_uid": series_uid,
                "modality": text(0x00080060, limit=16),
                "series_number": number(0x00200011),
                "series_description": text(0x0008103E, limit=64),
                "series_date": text(0x00080021, limit=8),
                "series_time": text(0x00080031, limit=16),
                "body_part_examined": text(0x00180015, limit=16),
            },
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            instance_number=number(0x00200013),
            number_of_frames=max(1, frames),
            rows=number(0x00280010),
            columns=number(0x00280011),
            transfer_syntax_uid=ts,
            object_key="",
            object_size=0,
            object_sha256="",
            received_sha256="",
            metadata_json=metadata,
            compression_state=state,
            compression_note=note,
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
