"""DICOM Part-10 framing: file meta information around dataset bytes, without decoding pixels.

Ingest receives either a Part-10 file (STOW-RS, import), which
:func:`split_received_part10` splits into its transfer syntax and dataset bytes, or a
raw dataset with the transfer syntax negotiated on the association (C-STORE). Both are
stored as one canonical Part-10 object (:func:`build_part10`): a zeroed preamble, file
meta information written by us (:func:`encode_file_meta`) and the dataset bytes exactly
as received; :mod:`pacs_lite.dicomheader` proves their structure and reads the header.

Stored objects are split again (:func:`split_part10`), given a new dataset
(:func:`with_dataset`, compression) or read with pydicom (:func:`read_part10`: trusted,
written by us). :func:`parse_dataset` reads received dataset bytes with pydicom after
proving them complete (pydicom itself reads truncated data silently), for the few callers
that need a pydicom dataset of them. Every malformed input is a :class:`DicomFormatError`.
"""

from __future__ import annotations

import io
import struct
import uuid

import pydicom
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble

from . import tags
from .uids import is_uid

IMPLEMENTATION_CLASS_UID = "2.25.105972989377714384401221926319813216145"  # ours: a UUID-derived UID (PS3.5 B.2)
IMPLEMENTATION_VERSION = "PACSLITE_010"

MAX_INFLATED = 256 * 1024**2  # deflate carries SR and small objects; larger is a decompression bomb


class DicomFormatError(ValueError):
    """The bytes are not a complete, well-formed DICOM object; the message says why."""


def new_object_key(prefix: str = "instances") -> str:
    """A fresh server-generated key; nothing in it comes from the peer."""
    u = uuid.uuid4().hex
    return f"{prefix}/{u[:2]}/{u}.dcm"


def check_transfer_syntax(uid: str) -> str:
    """The transfer syntax UID if it is a well-formed UID, else :class:`DicomFormatError`."""
    if not is_uid(uid):
        raise DicomFormatError("invalid Transfer Syntax UID in the file meta information")
    return uid


def check_structure(data: bytes | memoryview, transfer_syntax_uid: str, *, max_inflated: int = MAX_INFLATED) -> None:
    """Walk every element of an encoded dataset and prove it complete.

    Raises :class:`DicomFormatError` for a truncated element, a missing delimiter,
    trailing bytes or nesting too deep. The walk is
    :func:`pacs_lite.dicomheader.scan`, the one walker of the code base, which also
    indexes the elements for ingest.
    """
    from .dicomheader import scan  # imported here: dicomheader builds on this module

    scan(data, transfer_syntax_uid, max_inflated=max_inflated)


def parse_dataset(dataset_bytes: bytes | memoryview, transfer_syntax_uid: str) -> Dataset:
    """Check the structure of an encoded dataset, then read it (values stay raw until used)."""
    check_structure(dataset_bytes, transfer_syntax_uid)
    fp = DicomBytesIO(b"\0" * 128 + b"DICM" + encode_file_meta({tags.TRANSFER_SYNTAX_UID: transfer_syntax_uid})
                      + bytes(dataset_bytes))
    try:
        return pydicom.dcmread(fp, force=False)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed input
        raise DicomFormatError(f"cannot read dataset: {exc}") from None


def split_received_part10(data: bytes | memoryview) -> tuple[str, memoryview]:
    """Transfer syntax and dataset bytes of a received Part-10 file (the dataset is not read here).

    Raises :class:`DicomFormatError` when there is no preamble and ``DICM`` prefix, or
    the file meta information is malformed or names no valid transfer syntax.
    """
    if len(data) < 132 or bytes(data[128:132]) != b"DICM":
        raise DicomFormatError("not a DICOM Part-10 file (no 'DICM' prefix after the 128-byte preamble)")
    fp = io.BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed meta
        raise DicomFormatError(f"invalid file meta information: {exc}") from None
    ts = str(meta.get("TransferSyntaxUID", "") or "").strip("\0 ")
    if not ts:
        raise DicomFormatError("file meta information has no Transfer Syntax UID")
    check_transfer_syntax(ts)
    return ts, memoryview(data)[fp.tell():]


_META_VR = {tags.MEDIA_STORAGE_SOP_CLASS_UID: b"UI", tags.MEDIA_STORAGE_SOP_INSTANCE_UID: b"UI",
            tags.TRANSFER_SYNTAX_UID: b"UI", tags.IMPLEMENTATION_CLASS_UID: b"UI",
            tags.IMPLEMENTATION_VERSION_NAME: b"SH", tags.SOURCE_APPLICATION_ENTITY_TITLE: b"AE"}


def encode_file_meta(values: dict[int, str]) -> bytes:
    """File meta information (group 0002, explicit VR little endian) with its group length.

    Written by hand rather than with pydicom: it is on the path of every C-STORE, and the
    group is small and fixed (PS3.10 7.1).
    """
    body = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"
    for tag in sorted(values):
        text = values[tag].encode("ascii")
        vr = _META_VR[tag]
        if len(text) % 2:
            text += b"\0" if vr == b"UI" else b" "
        body += struct.pack("<HH2sH", 0x0002, tag & 0xFFFF, vr, len(text)) + text
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


_PREAMBLE = b"\0" * 128 + b"DICM"


def build_part10(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                 dataset_bytes: bytes | memoryview, *, source_ae: str | None = None) -> bytes:
    """A Part-10 object with a zeroed preamble, our file meta and the dataset bytes as given."""
    values = {
        tags.MEDIA_STORAGE_SOP_CLASS_UID: sop_class_uid,
        tags.MEDIA_STORAGE_SOP_INSTANCE_UID: sop_instance_uid,
        tags.TRANSFER_SYNTAX_UID: transfer_syntax_uid,
        tags.IMPLEMENTATION_CLASS_UID: IMPLEMENTATION_CLASS_UID,
        tags.IMPLEMENTATION_VERSION_NAME: IMPLEMENTATION_VERSION,
    }
    if source_ae:
        values[tags.SOURCE_APPLICATION_ENTITY_TITLE] = source_ae
    return b"".join((_PREAMBLE, encode_file_meta(values), dataset_bytes))  # one copy of the data set


def with_dataset(data: bytes, transfer_syntax_uid: str, dataset_bytes: bytes | memoryview) -> bytes:
    """A stored object (written by :func:`build_part10`) with a new transfer syntax and data set.

    The other file meta values (SOP Class and Instance UIDs, implementation, source AE)
    are kept.
    """
    fp = io.BytesIO(bytes(data[:65536]))
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    values = {tag: str(meta[tag].value) for tag in _META_VR if tag in meta}
    values[tags.TRANSFER_SYNTAX_UID] = transfer_syntax_uid
    return b"".join((_PREAMBLE, encode_file_meta(values), dataset_bytes))


def split_part10(data: bytes | memoryview) -> tuple[str, memoryview]:
    """Transfer syntax and dataset bytes of a Part-10 object written by :func:`build_part10`."""
    fp = io.BytesIO(bytes(data[:65536]) if len(data) > 65536 else bytes(data))
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    return str(meta.TransferSyntaxUID), memoryview(data)[fp.tell():]


def read_part10(data: bytes, *, stop_before_pixels: bool = False) -> Dataset:
    """Read a stored object (trusted: written by us) into a dataset."""
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=True)
