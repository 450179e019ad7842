"""The one ingest path: C-STORE, STOW-RS and ``pacs-lite import`` all call :class:`IngestService`.

Order of work, and why:

1. check the structure and parse the header (no pixel decoding); validate the UIDs;
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
import re
import time
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from storage import ObjectStore, StoreError

from . import dicomfile, dicomjson
from .catalog import Catalog, CatalogUnavailable, InstanceRecord
from .faults import crash_point

log = logging.getLogger(__name__)


LOOSE_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# DICOM status codes used on the ingest path
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
DUPLICATE_REFUSED = 0x0111

NATIVE_SYNTAXES = {
    dicomfile.IMPLICIT_LE, dicomfile.EXPLICIT_LE, dicomfile.DEFLATED_LE, dicomfile.EXPLICIT_BE,
}
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


@dataclass(frozen=True)
class IngestResult:
    """What happened to one object. ``status`` is one of:

    ``stored``, ``revised`` (new content for a known UID; the older object is kept),
    ``duplicate`` (identical to what is stored; nothing new written), ``rejected``
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
    if len(text) > 64:
        raise IngestRejected(CANNOT_UNDERSTAND, f"{name} is longer than 64 characters")
    if not LOOSE_UID_RE.match(text):
        raise IngestRejected(CANNOT_UNDERSTAND, f"{name} is not a valid UID (digits and dots only)")
    return text


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed optional value is treated as absent
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    text = str(value).replace("\0", "").strip()
    return text[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        result = int(value)
    except Exception:  # noqa: BLE001
        return None
    return result if -(2**31) <= result < 2**31 else None


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
                 duplicates: str = "revision", max_object_bytes: int = 4 * 1024**3, metrics: Any = None) -> None:
        self.catalog = catalog
        self.store = store
        self.compression_target = compression_target
        self.duplicates = duplicates
        self.max_object_bytes = max_object_bytes
        self.metrics = metrics

    # -- entry points ------------------------------------------------------------------------

    def ingest_part10(self, data: bytes, *, source: str = "") -> IngestResult:
        """Ingest a DICOM Part-10 file (STOW-RS part, imported file)."""
        if len(data) > self.max_object_bytes:
            return self._result(IngestResult("rejected", OUT_OF_RESOURCES, "object larger than ingest.max_object_bytes"))
        try:
            parsed = dicomfile.parse_part10(data)
        except dicomfile.DicomFormatError as exc:
            return self._result(IngestResult("rejected", CANNOT_UNDERSTAND, str(exc)))
        return self._guarded(parsed, None, None, source)

    def ingest_dataset(self, dataset_bytes: bytes | memoryview, transfer_syntax_uid: str, *,
                       sop_class_uid: str | None = None, sop_instance_uid: str | None = None,
                       source: str = "") -> IngestResult:
        """Ingest a dataset received over DIMSE in ``transfer_syntax_uid``.

        ``sop_class_uid``/``sop_instance_uid`` are the C-STORE command's Affected SOP
        Class/Instance UIDs; the dataset must agree with them.
        """
        if len(dataset_bytes) > self.max_object_bytes:
            return self._result(IngestResult("rejected", OUT_OF_RESOURCES, "object larger than ingest.max_object_bytes"))
        try:
            ds = dicomfile.parse_dataset(dataset_bytes, transfer_syntax_uid)
        except dicomfile.DicomFormatError as exc:
            return self._result(IngestResult("rejected", CANNOT_UNDERSTAND, str(exc)))
        parsed = dicomfile.ParsedObject(ds, transfer_syntax_uid, dataset_bytes)
        return self._guarded(parsed, sop_class_uid, sop_instance_uid, source)

    def _guarded(self, parsed: dicomfile.ParsedObject, command_class: str | None, command_instance: str | None,
                 source: str) -> IngestResult:
        """Run the ingest path; anything unforeseen is a clear failure, never an exception to the caller."""
        try:
            return self._ingest(parsed, command_class=command_class, command_instance=command_instance, source=source)
        except Exception as exc:  # noqa: BLE001 - the caller (SCP, STOW, import) must get a status
            log.exception("unexpected ingest error (%s)", type(exc).__name__)
            return self._result(IngestResult("failed", OUT_OF_RESOURCES, f"internal error: {type(exc).__name__}"))

    # -- the path --------------------------------------------------------------------------

    def _ingest(self, parsed: dicomfile.ParsedObject, *, command_class: str | None,
                command_instance: str | None, source: str) -> IngestResult:
        started = time.perf_counter()
        ds = parsed.dataset
        try:
            uids = self._validate(ds, command_class, command_instance)
        except IngestRejected as exc:
            return self._result(IngestResult("rejected", exc.status, exc.reason,
                                             sop_instance_uid=_safe_uid(ds, "SOPInstanceUID"),
                                             sop_class_uid=_safe_uid(ds, "SOPClassUID")))
        sop_class, sop_uid, study_uid, series_uid = uids
        base = dict(sop_class_uid=sop_class, sop_instance_uid=sop_uid, study_instance_uid=study_uid,
                    series_instance_uid=series_uid, transfer_syntax_uid=parsed.transfer_syntax_uid)
        crash_point("ingest.after_parse")

        received_sha = hashlib.sha256(parsed.dataset_bytes).hexdigest()
        try:
            known = self.catalog.received_digest(sop_uid)  # a cheap early answer for resends
        except CatalogUnavailable as exc:
            return self._result(IngestResult("failed", OUT_OF_RESOURCES, str(exc), **base))
        if known is not None and known[0] == received_sha and self.store.exists(known[1]):
            return self._result(IngestResult("duplicate", SUCCESS, "identical instance already stored", **base))
        try:
            metadata = dicomjson.instance_metadata(ds, study_uid, series_uid, sop_uid)
            record = self._record(ds, parsed, uids, received_sha, metadata)
        except (RecursionError, MemoryError):
            return self._result(IngestResult("rejected", CANNOT_UNDERSTAND, "dataset too deeply nested or too large", **base))
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for malformed values
            # the exception text may quote element values (patient data): report its type only
            return self._result(IngestResult("rejected", CANNOT_UNDERSTAND,
                                             f"cannot read dataset: malformed value ({type(exc).__name__})", **base))

        data = dicomfile.build_part10(sop_class, sop_uid, parsed.transfer_syntax_uid, parsed.dataset_bytes,
                                      source_ae=_ae(source))
        record.object_key = dicomfile.new_object_key()
        record.object_size = len(data)
        record.object_sha256 = hashlib.sha256(data).hexdigest()
        try:
            self.store.put(record.object_key, data)
        except StoreError as exc:
            log.warning("object store write failed: %s", exc)
            return self._result(IngestResult("failed", OUT_OF_RESOURCES, f"storage unavailable: {exc}", **base))
        crash_point("ingest.after_object_write")

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

    def _validate(self, ds: Dataset, command_class: str | None, command_instance: str | None) -> tuple[str, str, str, str]:
        sop_class = check_uid(_raw(ds, "SOPClassUID"), "SOP Class UID (0008,0016)")
        sop_uid = check_uid(_raw(ds, "SOPInstanceUID"), "SOP Instance UID (0008,0018)")
        study_uid = check_uid(_raw(ds, "StudyInstanceUID"), "Study Instance UID (0020,000D)")
        series_uid = check_uid(_raw(ds, "SeriesInstanceUID"), "Series Instance UID (0020,000E)")
        if command_instance is not None and command_instance.strip("\0 ") != sop_uid:
            raise IngestRejected(DATASET_MISMATCH, "dataset SOP Instance UID differs from the command's Affected SOP Instance UID")
        if command_class is not None and command_class.strip("\0 ") != sop_class:
            raise IngestRejected(DATASET_MISMATCH, "dataset SOP Class UID differs from the command's Affected SOP Class UID")
        return sop_class, sop_uid, study_uid, series_uid

    def _record(self, ds: Dataset, parsed: dicomfile.ParsedObject, uids: tuple[str, str, str, str],
                received_sha: str, metadata: bytes) -> InstanceRecord:
        sop_class, sop_uid, study_uid, series_uid = uids
        ts = parsed.transfer_syntax_uid
        has_pixels = any(tag in ds for tag in PIXEL_TAGS)
        if self.compression_target == "none":
            state, note = "none", ""
        elif not has_pixels:
            state, note = "kept", "no pixel data"
        elif ts not in NATIVE_SYNTAXES:
            state, note = "kept", "received compressed; stored as received"
        elif 0x7FE00010 not in ds:
            state, note = "kept", "float pixel data"
        else:
            state, note = "pending", ""
        frames = _int(ds, "NumberOfFrames") or 1
        return InstanceRecord(
            patient={
                "patient_id": _text(ds, "PatientID", 64),
                "patient_name": _text(ds, "PatientName", 324),
                "birth_date": _text(ds, "PatientBirthDate", 8),
                "sex": _text(ds, "PatientSex", 16),
            },
            study={
                "study_instance_uid": study_uid,
                "study_date": _text(ds, "StudyDate", 8),
                "study_time": _text(ds, "StudyTime", 16),
                "accession_number": _text(ds, "AccessionNumber", 16),
                "study_id": _text(ds, "StudyID", 16),
                "study_description": _text(ds, "StudyDescription", 64),
                "referring_physician_name": _text(ds, "ReferringPhysicianName", 324),
            },
            series={
                "series_instance_uid": series_uid,
                "modality": _text(ds, "Modality", 16),
                "series_number": _int(ds, "SeriesNumber"),
                "series_description": _text(ds, "SeriesDescription", 64),
                "series_date": _text(ds, "SeriesDate", 8),
                "series_time": _text(ds, "SeriesTime", 16),
                "body_part_examined": _text(ds, "BodyPartExamined", 16),
            },
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            instance_number=_int(ds, "InstanceNumber"),
            number_of_frames=max(1, frames),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            transfer_syntax_uid=ts,
            object_key="",
            object_size=0,
            object_sha256="",
            received_sha256=received_sha,
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


def _raw(ds: Dataset, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:  # noqa: BLE001
        return "<unreadable>"


def _safe_uid(ds: Dataset, keyword: str) -> str:
    try:
        return check_uid(ds.get(keyword), keyword)
    except Exception:  # noqa: BLE001
        return ""


def _ae(source: str) -> str | None:
    text = source.strip()
    return text if text and len(text) <= 16 and text.isascii() and "\\" not in text else None
