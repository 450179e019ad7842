"""Copies of datasets made for writing in another transfer syntax.

Shared by compression and decompression: a deep copy (without pydicom's cached pixel
array) whose elements are all parsed, with big endian raw values byte-swapped, and
the transfer syntax set in its file meta. The caller replaces *Pixel Data*.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import VR

__all__ = ["copy_dataset", "set_syntax"]

#: Byte-swap unit of the VRs pydicom keeps as raw bytes (PS3.5 7.3).
_SWAPPED_VRS = {VR.OW: 2, VR.OL: 4, VR.OF: 4, VR.OD: 8, VR.OV: 8}


def _convert_elements(ds: Dataset, *, swap: bool) -> None:
    """Turn every raw element into a parsed one, byte-swapping big endian raw values.

    Parsing (by iterating) matters because pydicom writes still-raw elements
    verbatim when it believes the encoding is unchanged; a file whose body was
    actually implicit VR under an explicit VR transfer syntax would then be written
    with empty VRs. With ``swap``, OW/OL/OF/OD/OV values, which pydicom keeps as
    bytes, are converted from big to little endian (numeric VRs such as US or FL
    are parsed into numbers and written correctly in either order); otherwise e.g.
    palette LUT data would be corrupted. *Pixel Data* is handled apart.
    """
    for element in ds:
        if element.VR == VR.SQ:
            for item in element.value or []:
                _convert_elements(item, swap=swap)
            continue
        size = _SWAPPED_VRS.get(element.VR) if swap else None
        value = element.value
        if size is None or element.tag == 0x7FE00010 or not isinstance(value, bytes | bytearray):
            continue
        if len(value) % size == 0:
            element.value = np.frombuffer(value, f">u{size}").astype(f"<u{size}").tobytes()


def copy_dataset(ds: Dataset, source: str, target: str) -> Dataset:
    """Deep copy ``ds`` for writing in ``target`` (encoding metadata adjusted).

    pydicom's cached decoded pixel array is not copied. All elements are parsed (see
    :func:`_convert_elements`); a big endian source has its raw multi-byte values
    swapped and its recorded original encoding changed to little endian, which
    pydicom requires before it writes the dataset little endian.
    """
    memo: dict[int, Any] = {}
    cached = ds.__dict__.get("_pixel_array")
    if cached is not None:
        memo[id(cached)] = None
    out = copy.deepcopy(ds, memo)
    big_endian = source == ExplicitVRBigEndian
    _convert_elements(out, swap=big_endian)
    if big_endian:
        out.set_original_encoding(target == ImplicitVRLittleEndian, True)
    return out


def set_syntax(ds: Dataset, syntax: str) -> None:
    """Set the transfer syntax in ``ds.file_meta``, creating the file meta if needed."""
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
