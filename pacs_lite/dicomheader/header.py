"""The header of a received dataset: its indexed elements, with values decoded on demand.

:func:`read_header` walks the dataset once (:func:`~pacs_lite.dicomheader.reader.scan`);
the :class:`DicomHeader` accessors give what pydicom would for the top-level elements,
in the form the index needs, and :meth:`DicomHeader.metadata_json` writes the whole
dataset as DICOM JSON. One deliberate difference from pydicom: the ``text`` accessor
gives ``""`` for a value that is not valid in its character set (an index column should
not hold replacement characters); the JSON has the value with replacement characters,
as pydicom decodes it. Values with ISO 2022 escape sequences are decoded by pydicom's
``decode_bytes`` in both.
"""

from __future__ import annotations

from typing import Any

from pydicom.uid import ExplicitVRBigEndian

from ..dicomfile import MAX_INFLATED
from . import jsonrep
from .reader import Buffer, Elements, scan
from .values import CONVERTERS, DEFAULT_ENCODINGS, UNRESOLVED, charset, pixel_representation, resolve_vr

_MAX_UID_READ = 256
_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL"})


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
        As :func:`~pacs_lite.dicomheader.reader.scan`.
    """
    buf, elements = scan(data, transfer_syntax_uid, max_inflated=max_inflated)
    return DicomHeader(buf, elements, transfer_syntax_uid != ExplicitVRBigEndian)


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
            self._encodings = charset(self._elements, self._buf, DEFAULT_ENCODINGS)
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

        See :mod:`~pacs_lite.dicomheader.jsonrep` for how it relates to pydicom's JSON.
        """
        return jsonrep.metadata_json(self._elements, self._buf, self._little, self.encodings, study_uid,
                                     series_uid, sop_uid)

    def _values(self, tag: int, *, strict: bool) -> tuple[str, list[Any] | None]:
        """(VR, converted values) of a top-level element; values ``None`` when absent or unusable."""
        element = self._elements.get(tag)
        if element is None:
            return "", None
        vr, start, length, items = element
        if vr in UNRESOLVED:
            pixel_rep = pixel_representation(self._elements, self._buf, self._little, None)
            vr = resolve_vr(tag, vr, length, self._elements, self._buf, self._little, self.encodings, pixel_rep)
        convert = CONVERTERS.get(vr)
        if convert is None or not length or items is not None:
            return vr, None
        try:
            return vr, convert(self._buf, start, length, self._little, self.encodings, strict)
        except UnicodeError:
            return vr, None
