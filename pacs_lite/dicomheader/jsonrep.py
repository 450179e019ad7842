"""DICOM JSON (PS3.18 F.2): one builder for stored metadata, QIDO results and store responses.

Binary values are never inlined in instance metadata: each becomes a ``BulkDataURI``
under ``{base}/studies/{study}/series/{series}/instances/{sop}/bulk/{path}``, where
``path`` names the element (``7FE00010``, or ``00880200/0/7FE00010`` inside a sequence).
The base is stored as a placeholder and replaced when served (:func:`resolve_base`), so
that stored metadata does not depend on the host name a client used.

:func:`metadata_json` writes an indexed dataset (:mod:`~pacs_lite.dicomheader.reader`)
as the JSON pydicom 3 gives for the same bytes
(``Dataset.to_json_dict(bulk_data_threshold=0, suppress_invalid_tags=True)`` after
``correct_ambiguous_vr``, as the tests' reference (``tests/support/reference_json.py``)
does): VRs and values as :mod:`~pacs_lite.dicomheader.values` gives them, every
non-empty binary value a BulkDataURI, and elements whose value pydicom cannot convert
dropped. :func:`element_json` writes index values (QIDO).

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
"""

from __future__ import annotations

import json
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.tag import Tag

from ..catalog import BASE_PLACEHOLDER
from ..tags import LUT_DESCRIPTORS, PIXEL_REPRESENTATION, SPECIFIC_CHARACTER_SET
from .reader import CACHE_LIMIT, Buffer, Elements, sub_walk
from .values import CONVERTERS, PN_GROUPS, UNRESOLVED, charset, pixel_representation, resolve_vr

#: VRs written as a BulkDataURI; with the ambiguous ones pydicom can leave on an element it read.
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
NUMBER_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}

_KEYS: dict[int, str] = {}
#: compact, UTF-8 text as is, and never the non-JSON NaN/Infinity tokens
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
#: LUT Descriptors, whose first value pydicom reads unsigned even as SS (pydicom.tag._LUT_DESCRIPTOR_TAGS)
_LUT_DESCRIPTORS = frozenset(LUT_DESCRIPTORS)


def tag_hex(tag: int) -> str:
    return f"{tag:08X}"


def bulk_base(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The BulkDataURI prefix of an instance's elements; the element path follows it."""
    return f"{BASE_PLACEHOLDER}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulk/"


def resolve_base(body: bytes, base_url: str) -> bytes:
    """Replace the stored placeholder with the public DICOMweb base URL."""
    return body.replace(BASE_PLACEHOLDER.encode(), base_url.rstrip("/").encode())


def keyword_tag(keyword_or_tag: str) -> int | None:
    """The tag of a DICOM keyword or ``GGGGEEEE`` hex string; ``None`` if it is neither."""
    text = keyword_or_tag.strip()
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        return int(text, 16)
    try:
        tag = Tag(text)
    except (ValueError, TypeError, OverflowError):
        return None
    return int(tag) if keyword_for_tag(tag) == text else None


# -- index values -------------------------------------------------------------------------------


def element_json(vr: str, value: Any) -> dict[str, Any]:
    """One attribute as DICOM JSON from an index value (string, number, list or None)."""
    if value is None or value == "" or value == []:
        return {"vr": vr}
    values = value if isinstance(value, list) else [value]
    if vr == "PN":  # "Alphabetic=Ideographic=Phonetic" groups; index values join several with "\"
        names = [n for v in values for n in str(v).split("\\")]
        return {"vr": vr, "Value": [_pn_groups(n) for n in names]}
    if vr == "IS":
        return {"vr": vr, "Value": [int(v) for v in values]}
    if vr == "DS":
        return {"vr": vr, "Value": [float(v) for v in values]}
    if vr in NUMBER_VRS:
        return {"vr": vr, "Value": [v for v in values]}
    return {"vr": vr, "Value": [str(v) for v in values]}


def _pn_groups(name: str) -> dict[str, str]:
    groups = dict(zip(PN_GROUPS, name.split("=")[:3], strict=False))
    return {key: text for key, text in groups.items() if text} or {"Alphabetic": ""}


# -- an indexed dataset ---------------------------------------------------------------------------


def metadata_json(elements: Elements, buf: Buffer, little: bool, encodings: list[str], study_uid: str,
                  series_uid: str, sop_uid: str) -> bytes:
    """An indexed dataset as DICOM JSON (UTF-8, compact), binary values as BulkDataURIs.

    ``encodings`` are the codecs of its Specific Character Set
    (:func:`~pacs_lite.dicomheader.values.charset`).
    """
    doc = _dataset_json(elements, buf, little, encodings, pixel_representation(elements, buf, little, None),
                        bulk_base(study_uid, series_uid, sop_uid), 0)
    return _ENCODER.encode(doc).encode("utf-8")


def _dataset_json(elements: Elements, buf: Buffer, little: bool, encodings: list[str], pixel_rep: int | None,
                  path: str, depth: int) -> dict[str, Any]:
    """The DICOM JSON object of one dataset; ``path`` is the BulkDataURI prefix of its elements.

    The hot loop of ingest: a non-empty value of a plain VR takes one converter call and
    a few operations; sequences, binary, empty and unresolved elements go through
    :func:`_attribute`.
    """
    doc: dict[str, Any] = {}
    keys, converters, lut_descriptors = _KEYS, CONVERTERS, _LUT_DESCRIPTORS
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
    if vr in UNRESOLVED:
        given = vr
        vr = resolve_vr(tag, vr, length, elements, buf, little, encodings, pixel_rep)
        if vr == "SQ" and items is None:
            items = sub_walk(buf, start, length, little, given is None, depth)
            if items is None:
                vr = "UN"
    if items is not None:
        return {"vr": "SQ", "Value": [_item_json(item, buf, little, encodings, pixel_rep, f"{path}/{i}/", depth + 1)
                                      for i, item in enumerate(items)]}
    if not length:
        return {"vr": vr}
    if vr in BINARY_VRS:  # never an ambiguous VR here: resolve_vr resolved those
        return {"vr": vr, "BulkDataURI": path}
    convert = CONVERTERS.get(vr)
    if convert is None:  # a VR pydicom cannot convert either: dropped
        return None
    values = convert(buf, start, length, little, encodings, False)
    if values is None:
        return None
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _key(tag: int) -> str:
    """The JSON key of a tag, remembered (formatting is a measurable part of the JSON time)."""
    key = f"{tag:08X}"
    if len(_KEYS) < CACHE_LIMIT:
        _KEYS[tag] = key
    return key


def _item_json(item: Elements, buf: Buffer, little: bool, encodings: list[str], pixel_rep: int | None,
               path: str, depth: int) -> dict[str, Any]:
    """A sequence item: its own Specific Character Set and Pixel Representation, else its parent's."""
    if SPECIFIC_CHARACTER_SET in item:
        encodings = charset(item, buf, encodings)
    if PIXEL_REPRESENTATION in item:
        pixel_rep = pixel_representation(item, buf, little, pixel_rep)
    return _dataset_json(item, buf, little, encodings, pixel_rep, path, depth)
