"""Reading and writing DICOM Part-10 bytes without decoding pixels.

Ingest receives either a Part-10 file (STOW-RS, import) or a raw dataset with the
transfer syntax negotiated on the association (C-STORE). Both become one canonical
Part-10 object: a zeroed preamble, file meta information written by us, and the
dataset bytes exactly as received. The dataset is parsed for its header only, after
:func:`check_structure` has proven that every element is complete, because pydicom
itself reads truncated data silently.
"""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from dataclasses import dataclass

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble

IMPLEMENTATION_CLASS_UID = "2.25.105972989377714384401221926319813216145"  # ours: a UUID-derived UID (PS3.5 B.2)
IMPLEMENTATION_VERSION = "PACSLITE_010"

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"

LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
MAX_DEPTH = 32
MAX_INFLATED = 256 * 1024**2  # deflate carries SR and small objects; larger is a decompression bomb


class DicomFormatError(ValueError):
    """The bytes are not a complete, well-formed DICOM object; the message says why."""


@dataclass(frozen=True)
class ParsedObject:
    """A received object: the header dataset (no pixel data decoded) and its bytes."""

    dataset: Dataset
    transfer_syntax_uid: str
    dataset_bytes: bytes | memoryview


def new_object_key(prefix: str = "instances") -> str:
    """A fresh server-generated key; nothing in it comes from the peer."""
    u = uuid.uuid4().hex
    return f"{prefix}/{u[:2]}/{u}.dcm"


TS_RE = __import__("re").compile(r"^[0-9]+(\.[0-9]+)*$")


def check_transfer_syntax(uid: str) -> str:
    """The transfer syntax UID if it is a well-formed UID, else :class:`DicomFormatError`."""
    if not uid or len(uid) > 64 or not TS_RE.match(uid):
        raise DicomFormatError("invalid Transfer Syntax UID in the file meta information")
    return uid


def check_structure(data: bytes | memoryview, transfer_syntax_uid: str, *, max_inflated: int = MAX_INFLATED) -> None:
    """Walk every element of an encoded dataset and prove it complete.

    Raises :class:`DicomFormatError` for a truncated element, a missing delimiter,
    trailing bytes or nesting deeper than :data:`MAX_DEPTH`.
    """
    if transfer_syntax_uid == DEFLATED_LE:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(bytes(data), max_inflated)
        except zlib.error as exc:
            raise DicomFormatError(f"deflated dataset is corrupt: {exc}") from None
        if inflater.unconsumed_tail:
            raise DicomFormatError("deflated dataset too large")
    implicit = transfer_syntax_uid == IMPLICIT_LE
    little = transfer_syntax_uid != EXPLICIT_BE
    view = memoryview(data)
    end = _walk(view, 0, len(view), implicit, little, 0, stop_tag=None)
    if end != len(view):
        raise DicomFormatError(f"unexpected bytes after the dataset at offset {end}")


def _walk(buf: memoryview, pos: int, end: int, implicit: bool, little: bool, depth: int,
          stop_tag: int | None) -> int:
    """Scan elements from ``pos`` up to ``end`` or ``stop_tag``; return where scanning stopped."""
    if depth > MAX_DEPTH:
        raise DicomFormatError(f"sequences nested deeper than {MAX_DEPTH} levels")
    e = "<" if little else ">"
    while pos < end:
        if end - pos < 8:
            raise DicomFormatError(f"truncated element header at offset {pos}")
        group, elem = struct.unpack_from(e + "HH", buf, pos)
        tag = (group << 16) | elem
        if group == 0xFFFE:  # items and delimiters are always implicit, 4-byte length
            length = struct.unpack_from(e + "I", buf, pos + 4)[0]
            pos += 8
            if tag == stop_tag:
                return pos
            raise DicomFormatError(f"unexpected delimiter ({group:04X},{elem:04X}) at offset {pos - 8}")
        if implicit:
            length = struct.unpack_from(e + "I", buf, pos + 4)[0]
            vr = _implicit_vr(tag, length)
            pos += 8
        else:
            vr = bytes(buf[pos + 4:pos + 6])
            if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                raise DicomFormatError(f"invalid VR at offset {pos + 4}")
            if vr in LONG_VRS:
                if end - pos < 12:
                    raise DicomFormatError(f"truncated element header at offset {pos}")
                length = struct.unpack_from(e + "I", buf, pos + 8)[0]
                pos += 12
            else:
                length = struct.unpack_from(e + "H", buf, pos + 6)[0]
                pos += 8
        if length == UNDEFINED:
            if vr == b"SQ" or (vr == b"UN" and not implicit):
                pos = _walk_items(buf, pos, end, True if vr == b"UN" else implicit, little, depth + 1, None)
            elif vr in (b"OB", b"OW") or tag == 0x7FE00010:
                pos = _walk_fragments(buf, pos, end, little)
            else:
                raise DicomFormatError(f"undefined length on a ({group:04X},{elem:04X}) element")
            continue
        if pos + length > end:
            raise DicomFormatError(
                f"element ({group:04X},{elem:04X}) at offset {pos} claims {length} bytes, only {end - pos} remain"
            )
        if vr == b"SQ":
            _walk_items(buf, pos, pos + length, implicit, little, depth + 1, length)
        pos += length
    if stop_tag is not None:
        raise DicomFormatError("missing item or sequence delimiter (truncated dataset)")
    return pos


def _implicit_vr(tag: int, length: int) -> bytes:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return b"SQ" if length == UNDEFINED else b"UN"
    return b"SQ" if vr == "SQ" else b"OB"


def _walk_items(buf: memoryview, pos: int, end: int, implicit: bool, little: bool, depth: int,
                seq_length: int | None) -> int:
    """Scan the items of a sequence (defined length: up to ``end``; undefined: to its delimiter)."""
    if depth > MAX_DEPTH:
        raise DicomFormatError(f"sequences nested deeper than {MAX_DEPTH} levels")
    e = "<" if little else ">"
    while pos < end:
        if end - pos < 8:
            raise DicomFormatError(f"truncated item header at offset {pos}")
        group, elem, length = struct.unpack_from(e + "HHI", buf, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == SEQ_END and seq_length is None:
            return pos
        if tag != ITEM:
            raise DicomFormatError(f"expected an item at offset {pos - 8}")
        if length == UNDEFINED:
            pos = _walk(buf, pos, end, implicit, little, depth, stop_tag=ITEM_END)
        else:
            if pos + length > end:
                raise DicomFormatError(f"item at offset {pos - 8} claims {length} bytes, only {end - pos} remain")
            _walk(buf, pos, pos + length, implicit, little, depth, stop_tag=None)
            pos += length
    if seq_length is None:
        raise DicomFormatError("missing sequence delimiter (truncated dataset)")
    return pos


def _walk_fragments(buf: memoryview, pos: int, end: int, little: bool) -> int:
    e = "<" if little else ">"
    while True:
        if end - pos < 8:
            raise DicomFormatError(f"truncated encapsulated pixel data at offset {pos}")
        group, elem, length = struct.unpack_from(e + "HHI", buf, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == SEQ_END:
            return pos
        if tag != ITEM or length == UNDEFINED:
            raise DicomFormatError(f"invalid fragment in encapsulated pixel data at offset {pos - 8}")
        if pos + length > end:
            raise DicomFormatError(f"pixel data fragment at offset {pos - 8} claims {length} bytes, only {end - pos} remain")
        pos += length


def parse_dataset(dataset_bytes: bytes | memoryview, transfer_syntax_uid: str) -> Dataset:
    """Check the structure of an encoded dataset, then read it (values stay raw until used)."""
    check_structure(dataset_bytes, transfer_syntax_uid)
    fp = DicomBytesIO(b"\0" * 128 + b"DICM" + encode_file_meta({0x00020010: transfer_syntax_uid})
                      + bytes(dataset_bytes))
    try:
        return pydicom.dcmread(fp, force=False)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed input
        raise DicomFormatError(f"cannot read dataset: {exc}") from None


def parse_part10(data: bytes) -> ParsedObject:
    """Split a Part-10 file into its header dataset, transfer syntax and dataset bytes."""
    if len(data) < 132 or data[128:132] != b"DICM":
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
    offset = fp.tell()
    body = memoryview(data)[offset:]
    ds = parse_dataset(body, ts)
    return ParsedObject(ds, ts, body)


_META_VR = {0x00020002: b"UI", 0x00020003: b"UI", 0x00020010: b"UI", 0x00020012: b"UI", 0x00020013: b"SH",
            0x00020016: b"AE"}


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


def build_part10(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                 dataset_bytes: bytes | memoryview, *, source_ae: str | None = None) -> bytes:
    """A Part-10 object with a zeroed preamble, our file meta and the dataset bytes as given."""
    values = {
        0x00020002: sop_class_uid,
        0x00020003: sop_instance_uid,
        0x00020010: transfer_syntax_uid,
        0x00020012: IMPLEMENTATION_CLASS_UID,
        0x00020013: IMPLEMENTATION_VERSION,
    }
    if source_ae:
        values[0x00020016] = source_ae
    return b"\0" * 128 + b"DICM" + encode_file_meta(values) + bytes(dataset_bytes)


def split_part10(data: bytes | memoryview) -> tuple[str, memoryview]:
    """Transfer syntax and dataset bytes of a Part-10 object written by :func:`build_part10`."""
    fp = io.BytesIO(bytes(data[:65536]) if len(data) > 65536 else bytes(data))
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    return str(meta.TransferSyntaxUID), memoryview(data)[fp.tell():]


def read_part10(data: bytes, *, stop_before_pixels: bool = False) -> Dataset:
    """Read a stored object (trusted: written by us) into a dataset."""
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=True)
