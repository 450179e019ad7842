"""Value conversion: the VR pydicom gives an element, and its value as pydicom converts it.

The converters follow ``pydicom.values`` without building pydicom objects: text is
decoded with the Specific Character Set of the dataset or of its ancestors, values are
split, stripped and converted by pydicom's rules. The VR of implicit VR data comes from
pydicom's dictionaries (private tags by their private creator), ``UN`` is replaced by
the dictionary VR (``replace_un_with_known_vr``) and ambiguous VRs are resolved as
``correct_ambiguous_vr`` does; see :mod:`~pacs_lite.dicomheader.jsonrep` for where the
result deliberately differs from pydicom.
"""

from __future__ import annotations

import codecs
import math
import struct
from collections.abc import Callable
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import private_dictionary_VR
from pydicom.valuerep import TEXT_VR_DELIMS

from ..tags import (
    BITS_ALLOCATED,
    LUT_DATA,
    LUT_DESCRIPTOR,
    PIXEL_DATA,
    PIXEL_REPRESENTATION,
    SPECIFIC_CHARACTER_SET,
    WAVEFORM_BITS_ALLOCATED,
    WAVEFORM_OB_OW,
)
from .reader import CACHE_LIMIT, DICT_VR, MISSING, Buffer, Elements, dictionary_vr

DEFAULT_ENCODINGS = ["iso8859"]  # pydicom's default_encoding: ISO-IR 6 read as latin-1
#: The VRs pydicom leaves for ``correct_ambiguous_vr`` to resolve.
AMBIGUOUS = frozenset({"US or SS", "OB or OW", "US or OW", "US or SS or OW", "OB_OW"})
#: VRs that :func:`resolve_vr` replaces: ambiguous, unknown (``None``: implicit VR, not in the dictionary), UN.
UNRESOLVED = AMBIGUOUS | {None, "UN"}
#: The component groups of a PN value, in order (PS3.5 6.2.1.1).
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")

_PRIVATE_VR: dict[tuple[str, int], str] = {}
_CHARSETS: dict[str, list[str]] = {}
_CODECS: dict[str, str] = {}
_WAVEFORM_OB_OW = frozenset(WAVEFORM_OB_OW)

# -- VRs of implicit VR, UN and ambiguous elements -------------------------------------------


def resolve_vr(tag: int, vr: str | None, length: int, elements: Elements, buf: Buffer, little: bool,
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
            known = DICT_VR.get(tag, MISSING)
            if known is MISSING:
                known = dictionary_vr(tag)
            vr = known or "UN"
    if vr not in AMBIGUOUS:
        return vr
    if vr == "US or SS":
        return "US" if not pixel_rep else "SS"
    if tag == LUT_DATA:  # US if the LUT Descriptor gives one entry
        return "US" if _first_us(elements, LUT_DESCRIPTOR, buf, little) == 1 else "OW"
    if tag == PIXEL_DATA and not implicit:
        bits = _first_us(elements, BITS_ALLOCATED, buf, little)
        return "OB" if bits is not None and bits <= 8 else "OW"
    if tag in _WAVEFORM_OB_OW and not implicit:
        bits = _first_us(elements, WAVEFORM_BITS_ALLOCATED, buf, little)
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
    creator = decode(bytes(buf[start:start + length]), encodings, False)
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
        if len(_PRIVATE_VR) < CACHE_LIMIT:
            _PRIVATE_VR[key] = vr
    return vr


def _first_us(elements: Elements, tag: int, buf: Buffer, little: bool) -> int | None:
    """The first unsigned 16-bit value of ``tag`` in ``elements``, ``None`` if absent or empty."""
    element = elements.get(tag)
    if element is None or element[2] < 2 or element[3] is not None:
        return None
    return struct.unpack_from("<H" if little else ">H", buf, element[1])[0]


def pixel_representation(elements: Elements, buf: Buffer, little: bool, inherited: int | None) -> int | None:
    """Pixel Representation of a dataset, else of its nearest ancestor that has one."""
    value = _first_us(elements, PIXEL_REPRESENTATION, buf, little)
    return inherited if value is None else value


# -- character sets ---------------------------------------------------------------------------


def charset(elements: Elements, buf: Buffer, inherited: list[str]) -> list[str]:
    """Python codecs of a dataset's Specific Character Set (pydicom's ``convert_encodings``)."""
    element = elements.get(SPECIFIC_CHARACTER_SET)
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


def decode(raw: bytes, encodings: list[str], strict: bool) -> str:
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


# -- value converters: pydicom.values rules, without building pydicom objects ------------------
# Each returns the list of JSON values, [] for an empty value, or None when pydicom could
# not convert it (the element is then dropped).

Converter = Callable[[Buffer, int, int, bool, list[str], bool], list[Any] | None]


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
    text = decode(bytes(buf[start:start + length]), encodings, strict)
    if "\\" not in text:
        text = text.rstrip("\0 ")
        return [text] if text else []
    return [v.rstrip("\0 ") for v in text.split("\\")]


def _text_single(buf: Buffer, start: int, length: int, little: bool, encodings: list[str],
                 strict: bool) -> list[Any] | None:
    """ST, LT, UT: one value, backslashes included."""
    text = decode(bytes(buf[start:start + length]), encodings, strict).rstrip("\0 ")
    return [text] if text else []


def _pn(buf: Buffer, start: int, length: int, little: bool, encodings: list[str], strict: bool) -> list[Any] | None:
    """PN as DICOM JSON objects of its (up to three) component groups.

    pydicom keeps the groups up to the last non-empty one and always writes
    ``Alphabetic``; it fails on an empty name among several.
    """
    text = decode(bytes(buf[start:start + length]).rstrip(b"\0 "), encodings, strict)
    names = []
    for value in text.split("\\"):
        groups = value.split("=")
        while groups and not groups[-1]:
            groups.pop()
        if not groups:
            return [] if "\\" not in text else None
        names.append(dict(zip(PN_GROUPS, groups, strict=False)))
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


#: The converter of each VR pydicom can convert; called as ``convert(buf, start, length,
#: little, encodings, strict)`` (``strict``: raise UnicodeError rather than replace).
CONVERTERS: dict[str, Converter] = {
    "AE": _ae, "AS": _plain, "CS": _plain, "DA": _plain, "DT": _plain, "TM": _plain, "UI": _ui, "UR": _ur,
    "DS": _ds, "IS": _is, "SH": _text_multi, "LO": _text_multi, "UC": _text_multi,
    "ST": _text_single, "LT": _text_single, "UT": _text_single, "PN": _pn, "AT": _at,
    "US": _numbers("H"), "SS": _numbers("h"), "UL": _numbers("I"), "SL": _numbers("i"),
    "FL": _numbers("f"), "FD": _numbers("d"), "SV": _numbers("q"), "UV": _numbers("Q"),
}
