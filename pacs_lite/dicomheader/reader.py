"""The walk: one pass over an encoded dataset that proves its structure and indexes its elements.

:func:`scan` proves every element complete (truncated element, missing delimiter,
trailing bytes, nesting deeper than :data:`MAX_DEPTH`, deflate bomb, invalid VR: each
a :class:`~pacs_lite.dicomfile.DicomFormatError` with its own message; pydicom itself
reads truncated data silently) and records where each element's value lies. Nothing is
decoded here and pixel data is never copied; values are converted by
:mod:`~pacs_lite.dicomheader.values` when asked for.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from ..dicomfile import MAX_INFLATED, DicomFormatError
from ..tags import PIXEL_DATA

#: One element: (VR, value offset, value length, items). The VR is the explicit one, or
#: for implicit VR the dictionary's (``None`` if the tag is not in it); items is the
#: list of item datasets of a sequence, else ``None``. Encapsulated values record the
#: length of their fragments without the sequence delimiter.
Element = tuple[str | None, int, int, list[dict[int, Any]] | None]
Elements = dict[int, Element]
Buffer = bytes | memoryview

#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
UNDEFINED = 0xFFFFFFFF
#: Item, Item Delimitation Item and Sequence Delimitation Item (plain ints: compared per item).
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
MAX_DEPTH = 32

#: (name, has a 4-byte length) of each explicit VR: one look-up per element
_EXPLICIT_VRS = {vr.encode(): (vr, vr.encode() in LONG_VRS) for vr in (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV",
    "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV")}
_LE_TAG_VR = struct.Struct("<HH2sH").unpack_from
_BE_TAG_VR = struct.Struct(">HH2sH").unpack_from
_LE_TAG_LEN = struct.Struct("<HHI").unpack_from
_BE_TAG_LEN = struct.Struct(">HHI").unpack_from
_LE_U32 = struct.Struct("<I").unpack_from
_BE_U32 = struct.Struct(">I").unpack_from

#: Bound of every cache kept across datasets: hostile data may carry any number of unknown tags.
CACHE_LIMIT = 8192
MISSING = object()
#: pydicom's dictionary VR by tag (``None``: not in the dictionary); read through
#: ``DICT_VR.get(tag, MISSING)``, filled by :func:`dictionary_vr`.
DICT_VR: dict[int, str | None] = {}


def scan(data: Buffer, transfer_syntax_uid: str, *, max_inflated: int = MAX_INFLATED) -> tuple[Buffer, Elements]:
    """Walk every element of an encoded dataset, proving it complete, and index it.

    Parameters
    ----------
    data
        The dataset bytes as received (no preamble, no file meta information).
    transfer_syntax_uid
        The transfer syntax they are encoded in; deflated data is inflated first.
    max_inflated
        Largest inflated size accepted for the deflated transfer syntax.

    Returns
    -------
    tuple
        The buffer the offsets refer to (``data``, or the inflated bytes) and the
        top-level elements by tag.

    Raises
    ------
    DicomFormatError
        For a truncated element, a missing delimiter, trailing bytes, nesting deeper
        than ``MAX_DEPTH``, an invalid VR or a corrupt or too large deflated stream.
    """
    if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        data = _inflate(data, max_inflated)
    elements: Elements = {}
    end = _walk(data, 0, len(data), transfer_syntax_uid == ImplicitVRLittleEndian,
                transfer_syntax_uid != ExplicitVRBigEndian, 0, None, elements)
    if end != len(data):
        raise DicomFormatError(f"unexpected bytes after the dataset at offset {end}")
    return data, elements


def _inflate(data: Buffer, max_inflated: int) -> bytes:
    """The inflated deflate stream, refusing more than ``max_inflated`` bytes (a decompression bomb)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(bytes(data), max_inflated)
    except zlib.error as exc:
        raise DicomFormatError(f"deflated dataset is corrupt: {exc}") from None
    if inflater.unconsumed_tail:
        raise DicomFormatError("deflated dataset too large")
    return inflated


def _walk(buf: Buffer, pos: int, end: int, implicit: bool, little: bool, depth: int, stop_tag: int | None,
          out: Elements) -> int:
    """Index elements from ``pos`` up to ``end`` or ``stop_tag`` into ``out``; return where it stopped.

    One loop for both VR encodings keeps the per-element work to one ``unpack_from``,
    a dictionary look-up and a tuple; sequences recurse through :func:`_walk_items`.
    """
    if depth > MAX_DEPTH:
        raise DicomFormatError(f"sequences nested deeper than {MAX_DEPTH} levels")
    tag_vr, tag_len, u32 = (_LE_TAG_VR, _LE_TAG_LEN, _LE_U32) if little else (_BE_TAG_VR, _BE_TAG_LEN, _BE_U32)
    dict_vr = DICT_VR
    while pos < end:
        if end - pos < 8:
            raise DicomFormatError(f"truncated element header at offset {pos}")
        if implicit:
            group, elem, length = tag_len(buf, pos)
            tag = group << 16 | elem
            if group == 0xFFFE:  # items and delimiters
                if tag == stop_tag:
                    return pos + 8
                raise DicomFormatError(f"unexpected delimiter ({group:04X},{elem:04X}) at offset {pos}")
            vr = dict_vr.get(tag, MISSING)
            if vr is MISSING:
                vr = dictionary_vr(tag)
            pos += 8
            if length == UNDEFINED:
                if vr is None or vr == "SQ":  # unknown tags with undefined length can only be sequences
                    items: list[Elements] = []
                    out[tag] = ("SQ", pos, UNDEFINED, items)
                    pos = _walk_items(buf, pos, end, True, little, depth + 1, None, items)
                else:
                    start = pos
                    pos = _walk_fragments(buf, pos, end, little)
                    out[tag] = ("OB" if tag == PIXEL_DATA else vr, start, pos - 8 - start, None)
                continue
        else:
            group, elem, vrb, length = tag_vr(buf, pos)
            tag = group << 16 | elem
            if group == 0xFFFE:
                if tag == stop_tag:
                    return pos + 8
                raise DicomFormatError(f"unexpected delimiter ({group:04X},{elem:04X}) at offset {pos}")
            known = _EXPLICIT_VRS.get(vrb)
            if known is None:
                if not (65 <= vrb[0] <= 90 and 65 <= vrb[1] <= 90):
                    raise DicomFormatError(f"invalid VR at offset {pos + 4}")
                known = (vrb.decode("ascii"), False)  # unknown VRs have a 2-byte length (as pydicom reads them)
            vr, long = known
            if long:
                if end - pos < 12:
                    raise DicomFormatError(f"truncated element header at offset {pos}")
                length = u32(buf, pos + 8)[0]
                pos += 12
            else:
                pos += 8
            if length == UNDEFINED:
                if vr == "SQ" or vr == "UN":  # UN of undefined length is an implicit VR sequence (PS3.5 6.2.2)
                    items = []
                    out[tag] = ("SQ", pos, UNDEFINED, items)
                    pos = _walk_items(buf, pos, end, vr == "UN", little, depth + 1, None, items)
                elif vr == "OB" or vr == "OW" or tag == PIXEL_DATA:
                    start = pos
                    pos = _walk_fragments(buf, pos, end, little)
                    out[tag] = (vr, start, pos - 8 - start, None)
                else:
                    raise DicomFormatError(f"undefined length on a ({group:04X},{elem:04X}) element")
                continue
        if pos + length > end:
            raise DicomFormatError(
                f"element ({group:04X},{elem:04X}) at offset {pos} claims {length} bytes, only {end - pos} remain"
            )
        if vr == "SQ":
            items = []
            _walk_items(buf, pos, pos + length, implicit, little, depth + 1, length, items)
            out[tag] = ("SQ", pos, length, items)
        else:
            out[tag] = (vr, pos, length, None)
        pos += length
    if stop_tag is not None:
        raise DicomFormatError("missing item or sequence delimiter (truncated dataset)")
    return pos


def _walk_items(buf: Buffer, pos: int, end: int, implicit: bool, little: bool, depth: int,
                seq_length: int | None, out: list[Elements]) -> int:
    """Index the items of a sequence (defined length: up to ``end``; undefined: to its delimiter)."""
    if depth > MAX_DEPTH:
        raise DicomFormatError(f"sequences nested deeper than {MAX_DEPTH} levels")
    tag_len = _LE_TAG_LEN if little else _BE_TAG_LEN
    while pos < end:
        if end - pos < 8:
            raise DicomFormatError(f"truncated item header at offset {pos}")
        group, elem, length = tag_len(buf, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == SEQ_END and seq_length is None:
            return pos
        if tag != ITEM:
            raise DicomFormatError(f"expected an item at offset {pos - 8}")
        item: Elements = {}
        if length == UNDEFINED:
            pos = _walk(buf, pos, end, implicit, little, depth, ITEM_END, item)
        else:
            if pos + length > end:
                raise DicomFormatError(f"item at offset {pos - 8} claims {length} bytes, only {end - pos} remain")
            _walk(buf, pos, pos + length, implicit, little, depth, None, item)
            pos += length
        out.append(item)
    if seq_length is None:
        raise DicomFormatError("missing sequence delimiter (truncated dataset)")
    return pos


def _walk_fragments(buf: Buffer, pos: int, end: int, little: bool) -> int:
    """Skip the fragments of encapsulated pixel data; return the offset after its delimiter."""
    tag_len = _LE_TAG_LEN if little else _BE_TAG_LEN
    while True:
        if end - pos < 8:
            raise DicomFormatError(f"truncated encapsulated pixel data at offset {pos}")
        group, elem, length = tag_len(buf, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == SEQ_END:
            return pos
        if tag != ITEM or length == UNDEFINED:
            raise DicomFormatError(f"invalid fragment in encapsulated pixel data at offset {pos - 8}")
        if pos + length > end:
            raise DicomFormatError(f"pixel data fragment at offset {pos - 8} claims {length} bytes, only {end - pos} remain")
        pos += length


def sub_walk(buf: Buffer, start: int, length: int, little: bool, implicit: bool, depth: int) -> list[Elements] | None:
    """The items of a sequence that the walk kept opaque (UN, or a private SQ of implicit VR).

    pydicom reads such a value as a sequence; its items are implicit VR unless their
    first element carries an explicit VR (PS3.5 6.2.2). ``None`` when it is not a
    valid sequence: the value then stays binary.
    """
    end = start + length
    if not implicit and length >= 14:
        vr0, vr1 = buf[start + 12], buf[start + 13]
        implicit = not (0x40 < vr0 < 0x5B and 0x40 < vr1 < 0x5B)
    items: list[Elements] = []
    try:
        _walk_items(buf, start, end, implicit or length < 14, little, depth + 1, length, items)
    except DicomFormatError:
        return None
    return items


def dictionary_vr(tag: int) -> str | None:
    """pydicom's dictionary VR of a tag (``None`` if unknown), remembered in :data:`DICT_VR`."""
    try:
        vr: str | None = dictionary_VR(tag)
    except KeyError:
        vr = None
    if len(DICT_VR) < CACHE_LIMIT:
        DICT_VR[tag] = vr
    return vr
