"""Frame headers read from JPEG, JPEG-LS and JPEG 2000 codestreams.

Decoders allocate from the codestream header, not from the DICOM attributes, so
every encapsulated frame's header (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ) must
describe the rows, columns and samples the dataset declares: a 64x64 dataset must
not smuggle in a 60000x60000 codestream. :func:`check_frame_header` enforces that
before anything is decoded; :func:`jpeg_header` also serves the JPEG decoder plugin.
"""

from __future__ import annotations

import struct

from storage.pixels.errors import InvalidPixelData
from storage.pixels.geometry import PixelGeometry
from storage.pixels.syntaxes import J2K_FAMILY, JPEG_FAMILY, JPEGLS_FAMILY

__all__ = ["check_frame_header", "jpeg_header"]


def jpeg_header(src: bytes) -> tuple[int, int, int, int] | None:
    """Return (precision, rows, columns, components) from a JPEG / JPEG-LS frame header.

    Walks the marker segments from SOI to the first SOFn (ITU T.81 B.2) or SOF55
    (JPEG-LS, T.87). Returns ``None`` when no frame header precedes the first scan.
    """
    if src[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(src)
    while pos + 4 <= end:
        if src[pos] != 0xFF:
            return None
        marker = src[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        (length,) = struct.unpack(">H", src[pos + 2 : pos + 4])
        is_sof = (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7
        if is_sof:
            if pos + 10 > end:
                return None
            precision = src[pos + 4]
            rows, columns = struct.unpack(">HH", src[pos + 5 : pos + 9])
            return precision, rows, columns, src[pos + 9]
        if marker == 0xDA or length < 2:  # start of scan without a frame header
            return None
        pos += 2 + length
    return None


def _j2k_header(src: bytes) -> tuple[int, int, int, int] | None:
    """Return (precision, rows, columns, components) from a JPEG 2000 SIZ segment.

    Finds SOC+SIZ (ITU T.800 A.5.1), also inside a (non-conformant) JP2 wrapper.
    """
    pos = src.find(b"\xff\x4f\xff\x51")
    if pos < 0 or pos + 4 + 38 + 3 > len(src):
        return None
    siz = src[pos + 4 :]
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", siz[4:20])
    (components,) = struct.unpack(">H", siz[36:38])
    precision = (siz[38] & 0x7F) + 1
    return precision, ysiz - yosiz, xsiz - xosiz, components


def check_frame_header(src: bytes, syntax: str, geometry: PixelGeometry, index: int) -> None:
    """Refuse a frame whose codestream header contradicts the dataset.

    Decoders allocate from the codestream header, not from the DICOM attributes, so
    a forged header could demand gigabytes from a few bytes of Pixel Data.
    """
    if syntax in J2K_FAMILY:
        header = _j2k_header(src)
        kind = "JPEG 2000 SIZ"
    elif syntax in JPEG_FAMILY or syntax in JPEGLS_FAMILY:
        header = jpeg_header(src)
        kind = "JPEG frame header"
    else:
        return
    if header is None:
        raise InvalidPixelData(f"frame {index}: no {kind} found")
    _, rows, columns, components = header
    if (rows, columns) != (
        geometry.rows,
        geometry.columns,
    ) or components != geometry.samples:
        raise InvalidPixelData(
            f"frame {index}: {kind} says {rows}x{columns}x{components}, dataset says "
            f"{geometry.rows}x{geometry.columns}x{geometry.samples}"
        )
