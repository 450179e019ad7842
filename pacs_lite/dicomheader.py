"""One pass over a received dataset: prove its structure, read its header, write its DICOM JSON.

Ingest used to walk every dataset twice (:func:`dicomfile.check_structure`, then
``pydicom.dcmread``) and then build a pydicom :class:`~pydicom.dataset.Dataset` only to
turn it into DICOM JSON. :func:`read_header` does all of it in one walk over the raw
bytes: :func:`scan` proves every element complete (the same checks and messages as
before: truncated element, missing delimiter, trailing bytes, nesting deeper than
:data:`~pacs_lite.dicomfile.MAX_DEPTH`, deflate bomb, invalid VR) and records where each
element's value lies. Values are decoded lazily, only by the accessors and by
:meth:`DicomHeader.metadata_json`; pixel data is never copied.

The JSON is the one pydicom 3 gives for the same bytes
(``Dataset.to_json_dict(bulk_data_threshold=0, suppress_invalid_tags=True)`` after
``correct_ambiguous_vr``, as the tests' reference (``tests/support/reference_json.py``)
does): VRs of implicit-VR data from pydicom's dictionaries (private ones by their
private creator), ``UN`` replaced by the dictionary VR, ambiguous VRs resolved the
same way, text decoded with the Specific Character Set of the item or of its
ancestors, values split, stripped and converted by pydicom's rules, every non-empty
binary value a BulkDataURI, and elements whose value pydicom cannot convert dropped.

Deliberate differences from pydicom, each for a reason:

* Group Length (gggg,0000) elements are left out, at every level: PS3.18 F.2.2 says
  they "shall not be included in a DICOM JSON Model object" (pydicom includes them).
* Attributes are ordered by tag, as PS3.18 F.2.2 requires; pydicom keeps file order.
* A NaN or infinite number (FL, FD, or a DS such as ``"nan"``) is written ``null``:
  pydicom writes ``NaN``/``Infinity``, which are not JSON.
* A value that cannot be converted drops its element, and only it. pydicom drops a
  top-level element too, but for an invalid value inside a sequence item it drops the
  whole top-level sequence, and for a binary number whose length is not a multiple of
  its size (US, FL, ...) or a VR that does not exist it fails the whole dataset.
* A value pydicom would read as a sequence although it was not walked as one (UN of a
  sequence attribute, a private sequence in implicit VR) but that is not a valid
  sequence stays binary: ``UN`` with a BulkDataURI. pydicom reads what it can of it.
* An ambiguous VR pydicom leaves unresolved (``"OB or OW"`` of retired curve or
  DICONDE data, ``"US or SS or OW"``, ``"US or OW"`` LUT Data without a LUT
  Descriptor, Pixel Data of a UN element without Bits Allocated) is written ``"OW"``,
  the VR of such data in implicit VR (PS3.5 A.1), rather than the ambiguous string,
  which is no VR; a ``"US or SS"`` pydicom leaves unresolved is read by Pixel
  Representation like the others (US without one).
* ``"US or SS"`` is resolved by the Pixel Representation of the nearest dataset that
  has one, the item's own or an ancestor's. pydicom does so too, except in the items
  of an implicit VR sequence of undefined length, where it ignores the ancestors.
* The ``text`` accessor gives ``""`` for a value that is not valid in its character
  set (an index column should not hold replacement characters); the JSON has the
  value with replacement characters, as pydicom decodes it. Values with ISO 2022
  escape sequences are decoded by pydicom's ``decode_bytes`` in both.
"""

from __future__ import annotations

import codecs
import json
import math
import struct
import zlib
from collections.abc import Callable
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.valuerep import TEXT_VR_DELIMS

from .dicomfile import (
    DEFLATED_LE,
    EXPLICIT_BE,
    IMPLICIT_LE,
    ITEM,
    ITEM_END,
    LONG_VRS,
    MAX_DEPTH,
    MAX_INFLATED,
    SEQ_END,
    UNDEFINED,
    DicomFormatError,
)
from .dicomjson import bulk_base

PIXEL_DATA = 0x7FE00010

#: One element: (VR, value offset, value length, items). The VR is the explicit one, or
#: for implicit VR the dictionary's (``None`` if the tag is not in it); items is the
#: list of item datasets of a sequence, else ``None``. Encapsulated values record the
#: length of their fragments without the sequence delimiter.
Element = tuple[str | None, int, int, list[dict[int, Any]] | None]
Elements = dict[int, Element]
Buffer = bytes | memoryview

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

_MISSING = object()
_CACHE_LIMIT = 8192
_DICT_VR: dict[int, str | None] = {}
_PRIVATE_VR: dict[tuple[str, int], str] = {}
_CHARSETS: dict[str, list[str]] = {}
_CODECS: dict[str, str] = {}
DEFAULT_ENCODINGS = ["iso8859"]  # pydicom's default_encoding: ISO-IR 6 read as latin-1

# -- the walk ---------------------------------------------------------------------------------


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
    if transfer_syntax_uid == DEFLATED_LE:
        data = _inflate(data, max_inflated)
    elements: Elements = {}
    end = _walk(data, 0, len(data), transfer_syntax_uid == IMPLICIT_LE, transfer_syntax_uid != EXPLICIT_BE, 0,
                None, elements)
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
    dict_vr = _DICT_VR
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
            vr = dict_vr.get(tag, _MISSING)
            if vr is _MISSING:
                vr = _dictionary_vr(tag)
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


def _dictionary_vr(tag: int) -> str | None:
    """pydicom's dictionary VR of a tag (``None`` if unknown), remembered for the next dataset."""
    try:
        vr: str | None = dictionary_VR(tag)
    except KeyError:
        vr = None
    if len(_DICT_VR) < _CACHE_LIMIT:  # bounded: hostile data may carry any number of unknown tags
        _DICT_VR[tag] = vr
    return vr


# -- the header -------------------------------------------------------------------------------


def read_header(data: Buffer, transfer_syntax_uid: str, *, max_inflated: int = MAX_INFLATED) -> DicomHeader:
    """Prove the structure of an encoded dataset and index its elements.

    Parameters
    ----------
    data
        The dataset bytes (no file meta information); offsets into them are kept, so
        they must outlive the header. Nothing is copied except deflated data, which is
        inflated.
    transfer_syntax_uid
        The transfer syntax of ``data``: implicit or explicit VR little endian,
        explicit VR big endian, deflated, or any encapsulated syntax.
    max_inflated
        Largest inflated size accepted for the deflated transfer syntax.

    Raises
    ------
    DicomFormatError
        As :func:`scan`.
    """
    buf, elements = scan(data, transfer_syntax_uid, max_inflated=max_inflated)
    return DicomHeader(buf, elements, transfer_syntax_uid != EXPLICIT_BE)


_MAX_UID_READ = 256


class DicomHeader:
    """The indexed elements of one dataset, with values decoded on demand.

    The accessors read top-level elements and give what pydicom would, in the form the
    index needs; :meth:`metadata_json` writes the whole dataset as DICOM JSON.
    """

    __slots__ = ("_buf", "_elements", "_little", "_encodings")

    def __init__(self, buf: Buffer, elements: Elements, little: bool) -> None:
        self._buf = buf
        self._elements = elements
        self._little = little
        self._encodings: list[str] | None = None

    @property
    def encodings(self) -> list[str]:
        """Python codecs of the top-level Specific Character Set, as pydicom converts it."""
        if self._encodings is None:
            self._encodings = _charset(self._elements, self._buf, DEFAULT_ENCODINGS)
        return self._encodings

    def has(self, tag: int) -> bool:
        """Whether the top level holds ``tag`` (with any value, even empty)."""
        return tag in self._elements

    def value_span(self, tag: int) -> tuple[int, int] | None:
        """(offset, length) of a top-level element's value in the dataset bytes, ``None`` if absent.

        The length is as encoded: ``0xFFFFFFFF`` for undefined-length values.
        """
        element = self._elements.get(tag)
        return None if element is None else (element[1], element[2])

    def text(self, tag: int, limit: int = 64) -> str:
        """A top-level value as text, as ingest has always indexed ``str(ds.Keyword)``.

        Decoded with the Specific Character Set, values joined with ``\\``, NULs
        removed and surrounding spaces stripped, cut to ``limit`` characters; ``""``
        if absent, empty, binary, a sequence or not decodable.
        """
        vr, values = self._values(tag, strict=True)
        if not values:
            return ""
        if vr == "PN":
            values = ["=".join(groups.values()) for groups in values]
        elif vr == "DS" or vr == "IS":  # as written, not as numbers
            _, start, length, _ = self._elements[tag]
            values = [v.strip() for v in str(self._buf[start:start + length], "latin-1").rstrip(" \0").split("\\")]
        text = "\\".join(str(v) for v in values).replace("\0", "").strip()
        return text[:limit]

    def raw_text(self, tag: int) -> str | None:
        """A top-level value decoded as ASCII (``errors="replace"``), stripped as ``str(ds.SOPInstanceUID)`` is.

        That is of trailing NULs and spaces, then of surrounding whitespace, nothing
        else. For UIDs, which the caller checks; ``None`` if absent.
        """
        element = self._elements.get(tag)
        if element is None:
            return None
        _, start, length, _ = element
        # a UID has at most 64 characters: decoding more (a sequence or a huge value under a
        # UID's tag) only costs memory, and the caller's check refuses it all the same
        length = min(length, _MAX_UID_READ)
        return str(self._buf[start:start + length], "ascii", "replace").rstrip("\0 ").strip()

    def int(self, tag: int) -> int | None:
        """The first value of a top-level IS, US, UL, SS or SL element.

        ``None`` if absent, empty, of another VR, not a number or outside the signed
        32-bit range.
        """
        vr, values = self._values(tag, strict=False)
        if not values or vr not in _INT_VRS:
            return None
        value = values[0]
        return value if -(2**31) <= value < 2**31 else None

    def metadata_json(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """The dataset as DICOM JSON (UTF-8, compact), binary values as BulkDataURIs.

        See the module docstring for how it relates to pydicom's JSON.
        """
        base = bulk_base(study_uid, series_uid, sop_uid)
        doc = _dataset_json(self._elements, self._buf, self._little, self.encodings,
                            _pixel_representation(self._elements, self._buf, self._little, None), base, 0)
        return _ENCODER.encode(doc).encode("utf-8")

    def _values(self, tag: int, *, strict: bool) -> tuple[str, list[Any] | None]:
        """(VR, converted values) of a top-level element; values ``None`` when absent or unusable."""
        element = self._elements.get(tag)
        if element is None:
            return "", None
        vr, start, length, items = element
        if vr in _UNRESOLVED:
            pixel_rep = _pixel_representation(self._elements, self._buf, self._little, None)
            vr = _resolve_vr(tag, vr, length, self._elements, self._buf, self._little, self.encodings, pixel_rep)
        convert = _CONVERTERS.get(vr)
        if convert is None or not length or items is not None:
            return vr, None
        try:
            return vr, convert(self._buf, start, length, self._little, self.encodings, strict)
        except UnicodeError:
            return vr, None


# -- DICOM JSON -------------------------------------------------------------------------------

_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL"})
_AMBIGUOUS = frozenset({"US or SS", "OB or OW", "US or OW", "US or SS or OW", "OB_OW"})
_UNRESOLVED = _AMBIGUOUS | {None, "UN"}
_KEYS: dict[int, str] = {}
#: compact, UTF-8 text as is (like dicomjson), and never the non-JSON NaN/Infinity tokens
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
#: LUT Descriptors, whose first value pydicom reads unsigned even as SS (pydicom.tag._LUT_DESCRIPTOR_TAGS)
_LUT_DESCRIPTORS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
#: "OB or OW" waveform elements, OB or OW by Waveform Bits Allocated (pydicom.filewriter)
_WAVEFORM_OB_OW = frozenset({0x54000110, 0x54000112, 0x5400100A, 0x54001010})


def _dataset_json(elements: Elements, buf: Buffer, little: bool, encodings: list[str], pixel_rep: int | None,
                  path: str, depth: int) -> dict[str, Any]:
    """The DICOM JSON object of one dataset; ``path`` is the BulkDataURI prefix of its elements.

    The hot loop of ingest: a non-empty value of a plain VR takes one converter call and
    a few operations; sequences, binary, empty and unresolved elements go through
    :func:`_attribute`.
    """
    doc: dict[str, Any] = {}
    keys, converters, lut_descriptors = _KEYS, _CONVERTERS, _LUT_DESCRIPTORS
    tags = list(elements)
    ordered = elements.items() if tags == sorted(tags) else sorted(elements.items())
    for tag, (vr, start, length, items) in ordered:
        if not tag & 0xFFFF:  # Group Length: not in DICOM JSON (PS3.18 F.2.2)
            continue
        key = keys.get(tag) or _key(tag)
        convert = converters.get(vr)
        if convert is None or not length:
            attribute = _attribute(tag, vr, start, length, items, elements, buf, little, encodings, pixel_rep,
                                   path + key, depth)
            if attribute is not None:
                doc[key] = attribute
            continue
        values = convert(buf, start, length, little, encodings, False)
        if values:
            if vr == "SS" and tag in lut_descriptors and len(values) > 1 and values[0] < 0:
                values[0] += 65536  # pydicom's raw_element_value hook: the first value counts entries
            doc[key] = {"vr": vr, "Value": values}
        elif values is not None:  # None: not convertible, dropped as pydicom drops it (suppress_invalid_tags)
            doc[key] = {"vr": vr}
    return doc


def _attribute(tag: int, vr: str | None, start: int, length: int, items: list[Elements] | None,
               elements: Elements, buf: Buffer, little: bool, encodings: list[str], pixel_rep: int | None,
               path: str, depth: int) -> dict[str, Any] | None:
    """The JSON attribute of a sequence, binary, empty or not yet resolved element; ``None`` to drop it."""
    if vr in _UNRESOLVED:
        given = vr
        vr = _resolve_vr(tag, vr, length, elements, buf, little, encodings, pixel_rep)
        if vr == "SQ" and items is None:
            items = _sub_walk(buf, start, length, little, given is None, depth)
            if items is None:
                vr = "UN"
    if items is not None:
        return {"vr": "SQ", "Value": [_item_json(item, buf, little, encodings, pixel_rep, f"{path}/{i}/", depth + 1)
                                      for i, item in enumerate(items)]}
    if not length:
        return {"vr": vr}
    if vr in _BINARY_VRS:
        return {"vr": vr, "BulkDataURI": path}
    convert = _CONVERTERS.get(vr)
    if convert is None:  # a VR pydicom cannot convert either: dropped
        return None
    values = convert(buf, start, length, little, encodings, False)
    if values is None:
        return None
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _key(tag: int) -> str:
    """The JSON key of a tag, remembered (formatting is a measurable part of the JSON time)."""
    key = f"{tag:08X}"
    if len(_KEYS) < _CACHE_LIMIT:
        _KEYS[tag] = key
    return key


def _item_json(item: Elements, buf: Buffer, little: bool, encodings: list[str], pixel_rep: int | None,
               path: str, depth: int) -> dict[str, Any]:
    """A sequence item: its own Specific Character Set and Pixel Representation, else its parent's."""
    if 0x00080005 in item:
        encodings = _charset(item, buf, encodings)
    if 0x00280103 in item:
        pixel_rep = _pixel_representation(item, buf, little, pixel_rep)
    return _dataset_json(item, buf, little, encodings, pixel_rep, path, depth)


def _sub_walk(buf: Buffer, start: int, length: int, little: bool, implicit: bool, depth: int) -> list[Elements] | None:
    """The items of a sequence that the structural walk kept opaque (UN, or a private SQ of implicit VR).

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


# -- VRs of implicit VR, UN and ambiguous elements -------------------------------------------


def _resolve_vr(tag: int, vr: str | None, length: int, elements: Elements, buf: Buffer, little: bool,
                encodings: list[str], pixel_rep: int | None) -> str:
    """The VR pydicom gives an element read as ``vr`` (``None``: implicit VR, not in the dictionary).

    ``UN`` is replaced by the dictionary VR (pydicom's ``replace_un_with_known_vr``),
    private tags get their private dictionary VR through their private creator, and
    ambiguous VRs are resolved as ``correct_ambiguous_vr`` does.
    """
    implicit = True
    if vr is None or vr == "UN":
        implicit = vr is None
        if tag & 0x10000:  # odd group: private
            vr = _private_vr(tag, elements, buf, encodings)
        elif vr is None:
            vr = "UL" if not tag & 0xFFFF else "UN"
        elif length < 0xFFFF:
            known = _DICT_VR.get(tag, _MISSING)
            if known is _MISSING:
                known = _dictionary_vr(tag)
            vr = known or "UN"
    if vr not in _AMBIGUOUS:
        return vr
    if vr == "US or SS":
        return "US" if not pixel_rep else "SS"
    if tag == 0x00283006:  # LUT Data: US if the LUT Descriptor gives one entry
        return "US" if _first_us(elements, 0x00283002, buf, little) == 1 else "OW"
    if tag == PIXEL_DATA and not implicit:
        bits = _first_us(elements, 0x00280100, buf, little)
        return "OB" if bits is not None and bits <= 8 else "OW"
    if tag in _WAVEFORM_OB_OW and not implicit:
        bits = _first_us(elements, 0x54001004, buf, little)
        return "OB" if bits is not None and bits <= 8 else "OW"
    return "OW"  # implicit VR binary (PS3.5 A.1), overlay data, and what pydicom leaves unresolved


def _private_vr(tag: int, elements: Elements, buf: Buffer, encodings: list[str]) -> str:
    """pydicom's VR of a private tag: LO for a private creator, else the private dictionary's, else UN."""
    elem = tag & 0xFFFF
    if 0x0010 <= elem < 0x0100:
        return "LO"
    if not elem & 0xFF00:
        return "UN"
    creator_element = elements.get((tag & 0xFFFF0000) | (elem >> 8))
    if creator_element is None:
        return "UN"
    _, start, length, _ = creator_element
    creator = _decode(bytes(buf[start:start + length]), encodings, False)
    if "\\" in creator:  # several values: pydicom cannot look them up
        return "UN"
    creator = creator.rstrip("\0 ")
    key = (creator, tag)
    vr = _PRIVATE_VR.get(key)
    if vr is None:
        try:
            vr = private_dictionary_VR(tag, creator)
        except KeyError:
            vr = "UN"
        if len(_PRIVATE_VR) < _CACHE_LIMIT:
            _PRIVATE_VR[key] = vr
    return vr


def _first_us(elements: Elements, tag: int, buf: Buffer, little: bool) -> int | None:
    """The first unsigned 16-bit value of ``tag`` in ``elements``, ``None`` if absent or empty."""
    element = elements.get(tag)
    if element is None or element[2] < 2 or element[3] is not None:
        return None
    return struct.unpack_from("<H" if little else ">H", buf, element[1])[0]


def _pixel_representation(elements: Elements, buf: Buffer, little: bool, inherited: int | None) -> int | None:
    """Pixel Representation of a dataset, else of its nearest ancestor that has one."""
    value = _first_us(elements, 0x00280103, buf, little)
    return inherited if value is None else value


def _charset(elements: Elements, buf: Buffer, inherited: list[str]) -> list[str]:
    """Python codecs of a dataset's Specific Character Set (pydicom's ``convert_encodings``)."""
    element = elements.get(0x00080005)
    if element is None or element[3] is not None:
        return inherited
    _, start, length, _ = element
    text = str(buf[start:start + length], "latin-1").rstrip(" \0")
    encodings = _CHARSETS.get(text)
    if encodings is None:
        values = text.split("\\")
        try:
            encodings = convert_encodings(values[0] if len(values) == 1 else values)
        except (LookupError, ValueError):  # a NUL in the name, or pydicom configured to raise
            encodings = DEFAULT_ENCODINGS  # what pydicom uses for a Specific Character Set it does not know
        if len(_CHARSETS) < 256:
            _CHARSETS[text] = encodings
    return encodings


# -- value converters: pydicom.values rules, without building pydicom objects ------------------
# Each returns the list of JSON values, [] for an empty value, or None when pydicom could
# not convert it (the element is then dropped).

Converter = Callable[[Buffer, int, int, bool, list[str], bool], list[Any] | None]


def _decode(raw: bytes, encodings: list[str], strict: bool) -> str:
    """Text decoded as pydicom's ``decode_bytes`` does (``strict``: raise instead of replacing)."""
    if 0x1B not in raw:  # no escape sequence (an int needle is much faster than b"\x1b")
        codec = _CODECS.get(encodings[0]) or _codec(encodings[0])
        try:
            return raw.decode(codec)
        except UnicodeError:
            if strict:
                raise
            return raw.decode(codec, "replace")
    return decode_bytes(raw, encodings, TEXT_VR_DELIMS)  # ISO 2022 code extensions


def _codec(encoding: str) -> str:
    """The canonical name of a Python codec (latin-1 if unknown, as pydicom falls back).

    pydicom names ISO-IR 6 ``"iso8859"``, which ``bytes.decode`` resolves through the codec
    registry on every call; the canonical ``"iso8859-1"`` takes the built-in fast path.
    """
    try:
        codec = codecs.lookup(encoding).name
    except (LookupError, ValueError):
        codec = "latin-1"
    if len(_CODECS) < 256:
        _CODECS[encoding] = codec
    return codec


def _plain(buf: Buffer, start: int, length: int, little: bool, encodings: list[str], strict: bool) -> list[Any] | None:
    """AS, CS, DA, DT, TM: default repertoire, trailing spaces and NULs removed, split."""
    values = str(buf[start:start + length], "latin-1").rstrip(" \0").split("\\")
    return values if values[0] or len(values) > 1 else []


def _ae(buf: Buffer, start: int, length: int, little: bool, encodings: list[str], strict: bool) -> list[Any] | None:
    """AE: each value stripped of spaces (only) at both ends."""
    text = str(buf[start:start + length], "latin-1")
    if "\\" not in text:
        text = text.strip()
        return [text] if text else []
    return [v.strip() for v in text.split("\\")]


def _ui(buf: Buffer, start: int, length: int, little: bool, encodings: list[str], strict: bool) -> list[Any] | None:
    """UI: trailing NULs and spaces removed, then each value stripped of spaces (pydicom's ``UID``)."""
    text = str(buf[start:start + length], "latin-1").rstrip("\0 ")
    if "\\" not in text:
        text = text.strip()
        return [text] if text else []
    return [v.strip() for v in text.split("\\")]


def _ur(buf: Buffer, start: int, length: int, little: bool, encodings: list[str], strict: bool) -> list[Any] | None:
    """UR: one value, trailing whitespace removed."""
    text = str(buf[start:start + length], "latin-1").rstrip()
    return [text] if text else []


def _ds(buf: Buffer, start: int, length: int, little: bool, encodings: list[str], strict: bool) -> list[Any] | None:
    """DS as floats (pydicom's ``convert_DS_string``, then its retry as text if that fails)."""
    text = str(buf[start:start + length], "latin-1").strip().rstrip(" \0")
    try:
        if "\\" not in text:
            if not text:
                return []
            number = float(text)
            return [number] if number - number == 0.0 else [None]  # False for NaN and infinities
        numbers = [float(v) for v in text.split("\\")]
    except ValueError:
        return _as_text_then(float, buf, start, length, encodings)
    return numbers if math.isfinite(sum(numbers)) else _finite(numbers)


def _finite(numbers: list[Any]) -> list[Any]:
    """NaN and infinities as ``null``: JSON has no token for them."""
    return [v if math.isfinite(v) else None for v in numbers]


def _is_number(text: str) -> int:
    """pydicom's ``IS``: an integer, or a float string such as ``"1.0"`` or ``"1e3"`` (1.5 becomes 1)."""
    try:
        return int(text)
    except ValueError:
        return int(float(text))  # ValueError for NaN: as for any other non-number


def _is(buf: Buffer, start: int, length: int, little: bool, encodings: list[str], strict: bool) -> list[Any] | None:
    """IS as ints (pydicom's ``convert_IS_string``, then its retry as text if that fails)."""
    text = str(buf[start:start + length], "latin-1").rstrip(" \0")
    try:
        if "\\" not in text:
            if not text:
                return []
            return [_is_number(text)]
        return [_is_number(v) for v in text.split("\\")]
    except ValueError:
        return _as_text_then(int, buf, start, length, encodings)
    except OverflowError:  # "inf": pydicom fails the whole dataset
        return None


def _as_text_then(number: Callable[[str], Any], buf: Buffer, start: int, length: int,
                  encodings: list[str]) -> list[Any] | None:
    """A DS or IS value pydicom could not read as numbers: it reads it as SH, then converts each string.

    So values with NULs or spaces at their end still count; anything else that is not a
    number drops the element. (A blank among several values is never a number.)
    """
    values = _text_multi(buf, start, length, False, encodings, False)
    if not values:
        return values
    try:
        numbers = [number(v) for v in values]
    except (ValueError, OverflowError):
        return None
    return _finite(numbers) if number is float else numbers


def _text_multi(buf: Buffer, start: int, length: int, little: bool, encodings: list[str],
                strict: bool) -> list[Any] | None:
    """SH, LO, UC: decoded with the character set, split, trailing NULs and spaces removed."""
    text = _decode(bytes(buf[start:start + length]), encodings, strict)
    if "\\" not in text:
        text = text.rstrip("\0 ")
        return [text] if text else []
    return [v.rstrip("\0 ") for v in text.split("\\")]


def _text_single(buf: Buffer, start: int, length: int, little: bool, encodings: list[str],
                 strict: bool) -> list[Any] | None:
    """ST, LT, UT: one value, backslashes included."""
    text = _decode(bytes(buf[start:start + length]), encodings, strict).rstrip("\0 ")
    return [text] if text else []


_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _pn(buf: Buffer, start: int, length: int, little: bool, encodings: list[str], strict: bool) -> list[Any] | None:
    """PN as DICOM JSON objects of its (up to three) component groups.

    pydicom keeps the groups up to the last non-empty one and always writes
    ``Alphabetic``; it fails on an empty name among several.
    """
    text = _decode(bytes(buf[start:start + length]).rstrip(b"\0 "), encodings, strict)
    names = []
    for value in text.split("\\"):
        groups = value.split("=")
        while groups and not groups[-1]:
            groups.pop()
        if not groups:
            return [] if "\\" not in text else None
        names.append(dict(zip(_PN_GROUPS, groups, strict=False)))
    return names


def _at(buf: Buffer, start: int, length: int, little: bool, encodings: list[str], strict: bool) -> list[Any] | None:
    """AT as ``GGGGEEEE`` strings; a trailing partial tag is ignored, as pydicom does."""
    count = length // 4
    pairs = struct.unpack_from(("<" if little else ">") + "HH" * count, buf, start)
    return [f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, 2 * count, 2)]


def _numbers(code: str) -> Converter:
    """A converter of binary numbers; floats that are NaN or infinite become ``None``."""
    size = struct.calcsize("<" + code)
    floats = code in "fd"
    one_le, one_be = struct.Struct("<" + code).unpack_from, struct.Struct(">" + code).unpack_from

    def convert(buf: Buffer, start: int, length: int, little: bool, encodings: list[str],
                strict: bool) -> list[Any] | None:
        if length == size:
            numbers = list((one_le if little else one_be)(buf, start))
        else:
            count, rest = divmod(length, size)
            if rest:  # pydicom raises BytesLengthException
                return None
            numbers = list(struct.unpack_from(f"{'<' if little else '>'}{count}{code}", buf, start))
        if floats and not math.isfinite(sum(numbers)):
            return _finite(numbers)
        return numbers

    return convert


_CONVERTERS: dict[str, Converter] = {
    "AE": _ae, "AS": _plain, "CS": _plain, "DA": _plain, "DT": _plain, "TM": _plain, "UI": _ui, "UR": _ur,
    "DS": _ds, "IS": _is, "SH": _text_multi, "LO": _text_multi, "UC": _text_multi,
    "ST": _text_single, "LT": _text_single, "UT": _text_single, "PN": _pn, "AT": _at,
    "US": _numbers("H"), "SS": _numbers("h"), "UL": _numbers("I"), "SL": _numbers("i"),
    "FL": _numbers("f"), "FD": _numbers("d"), "SV": _numbers("q"), "UV": _numbers("Q"),
}
