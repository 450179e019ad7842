"""DICOM JSON (PS3.18 F.2): one builder for stored metadata, QIDO results and store responses.

Binary values are never inlined in instance metadata: each becomes a ``BulkDataURI``
under ``{base}/studies/{study}/series/{series}/instances/{sop}/bulk/{path}``, where
``path`` names the element (``7FE00010``, or ``00880200/0/7FE00010`` inside a sequence).
The base is stored as a placeholder and replaced when served, so that stored
metadata does not depend on the host name a client used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.tag import Tag

from .catalog import BASE_PLACEHOLDER

BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"}
NUMBER_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}


def tag_hex(tag: int) -> str:
    return f"{tag:08X}"


def bulk_base(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The BulkDataURI prefix of an instance's elements; the element path follows it."""
    return f"{BASE_PLACEHOLDER}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulk/"


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
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), name.split("=")[:3], strict=False))
    return {key: text for key, text in groups.items() if text} or {"Alphabetic": ""}


def dataset_json(elements: Iterable[tuple[int, str, Any]]) -> dict[str, Any]:
    """A DICOM JSON object from (tag, VR, value) triples, keys sorted by tag."""
    return {tag_hex(tag): element_json(vr, value) for tag, vr, value in sorted(elements, key=lambda e: e[0])}


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
    from pydicom.datadict import keyword_for_tag

    return int(tag) if keyword_for_tag(tag) == text else None
