"""``pacs-lite import``: one file at a time through the ingest path, telling DICOM from everything else.

Folders copied from CDs, modality exports and PACS dumps hold more than images: a ``DICOMDIR``
(the medium's directory), README files, thumbnails. Those are *skipped*, not rejections: a
rejection is a DICOM object the archive refused, and the import fails on it.

Files without the Part-10 header (no preamble and ``DICM``: raw datasets written by some
modalities and older tools) are accepted when their encoding can be told: pydicom's reader with
``force=True`` guesses implicit or explicit VR and the byte order from the first elements, and
a dataset that yields a SOP Class UID and a SOP Instance UID is taken through
:meth:`~pacs_lite.ingest.IngestService.ingest_dataset` in that transfer syntax, exactly as a
C-STORE in it would be. A file whose file meta information lacks only the preamble gets one.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .ingest import IngestService

#: Media Storage Directory Storage: a DICOMDIR
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
PREAMBLE = b"\0" * 128 + b"DICM"
SKIPPED = "skipped"


@dataclass(frozen=True)
class ImportOutcome:
    """What became of one file: ``stored``, ``duplicate``, ``rejected``, ``failed`` or ``skipped``."""

    status: str
    reason: str = ""
    dicom_status: int = 0


def _media_storage_class(data: bytes) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=[]).file_meta
        return str(meta.get("MediaStorageSOPClassUID", "") or "")
    except Exception:  # noqa: BLE001 - the ingest path reports malformed meta itself
        return ""


def _raw_dataset_syntax(data: bytes) -> str | None:
    """The transfer syntax of a dataset written without file meta, or ``None`` when it is not DICOM."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True,
                                 specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except Exception:  # noqa: BLE001 - pydicom raises many types on bytes that are not DICOM
        return None
    if not (ds.get("SOPClassUID") and ds.get("SOPInstanceUID")):
        return None
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    if implicit:
        return ImplicitVRLittleEndian if little else None
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def import_bytes(ingest: IngestService, data: bytes, *, source: str = "IMPORT") -> ImportOutcome:
    """Ingest one file's bytes (Part-10, Part-10 without preamble, or a bare dataset) or skip it."""
    if not data:
        return ImportOutcome(SKIPPED, "empty file")
    if data[128:132] == b"DICM":
        if _media_storage_class(data) == DICOMDIR_CLASS:
            return ImportOutcome(SKIPPED, "the medium's directory (DICOMDIR); the images it lists are imported "
                                          "from their own files")
        result = ingest.ingest_part10(data, source=source)
    elif data[:2] == b"\x02\x00" and data[4:6] in (b"UL", b"OB", b"UI"):  # file meta without the preamble
        result = ingest.ingest_part10(PREAMBLE + data, source=source)
    else:
        syntax = _raw_dataset_syntax(data)
        if syntax is None:
            return ImportOutcome(SKIPPED, "not DICOM")
        result = ingest.ingest_dataset(data, syntax, source=source)
    status = "stored" if result.status == "revised" else str(result.status)
    return ImportOutcome(status, result.reason, result.dicom_status)


def import_file(ingest: IngestService, path: Path) -> ImportOutcome:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImportOutcome("failed", f"cannot read the file: {exc.strerror or exc}")
    return import_bytes(ingest, data)
