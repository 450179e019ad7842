"""Access to single frames of *Pixel Data* without decoding.

Encapsulated frames are located through the Basic or Extended Offset Table (or
*Number of Frames* without one) and returned as codestreams; native frames are sliced
out as little-endian bytes. This is what WADO-RS serves as frame bulkdata and what
the decoder is given when only one frame is wanted.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, parse_fragments
from pydicom.encaps import get_frame as _encaps_get_frame
from pydicom.uid import ExplicitVRBigEndian
from pydicom.valuerep import VR

from storage.pixels.errors import CodecError, CodecUnsupported, InvalidPixelData
from storage.pixels.geometry import DEFAULT_MAX_PIXEL_BYTES, PixelGeometry, check_native_length, pixel_geometry
from storage.pixels.syntaxes import NATIVE_SYNTAXES, transfer_syntax

__all__ = ["check_frame_list", "encapsulated_frame", "get_frame", "iter_encapsulated_frames", "native_le_bytes"]


def check_frame_list(ds: Dataset, geometry: PixelGeometry) -> None:
    """Cheap structural check of encapsulated *Pixel Data* before any frame is read.

    PS3.5 A.4: every frame occupies at least one fragment of its own, so fewer
    fragments than frames means the data is truncated or the frame count is a lie.
    """
    data = ds.PixelData
    try:
        count, _ = parse_fragments(data)
    except Exception as exc:
        raise InvalidPixelData(f"malformed encapsulated Pixel Data: {exc}") from exc
    if count < geometry.frames:
        raise InvalidPixelData(
            f"Number of Frames is {geometry.frames} but the encapsulated Pixel Data has only {count} fragment(s)"
        )


def _extended_offsets(ds: Dataset) -> tuple[bytes, bytes] | None:
    """The *Extended Offset Table* and its lengths, when the dataset has both."""
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        return ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths
    return None


def iter_encapsulated_frames(ds: Dataset, geometry: PixelGeometry) -> Iterator[bytes]:
    """Yield each encapsulated frame's codestream, raising :class:`InvalidPixelData`."""
    try:
        yield from generate_frames(
            ds.PixelData,
            number_of_frames=geometry.frames,
            extended_offsets=_extended_offsets(ds),
        )
    except CodecError:
        raise
    except Exception as exc:
        raise InvalidPixelData(f"cannot split encapsulated Pixel Data into frames: {exc}") from exc


def encapsulated_frame(ds: Dataset, geometry: PixelGeometry, index: int) -> bytes:
    """One encapsulated frame's codestream (fragments joined, no item tags)."""
    try:
        return _encaps_get_frame(
            ds.PixelData,
            index,
            number_of_frames=geometry.frames,
            extended_offsets=_extended_offsets(ds),
        )
    except Exception as exc:
        raise InvalidPixelData(f"cannot extract frame {index}: {exc}") from exc


def native_le_bytes(ds: Dataset, geometry: PixelGeometry, syntax: str) -> bytes:
    """All native frames as little-endian bytes, without padding.

    Big endian data is byte-swapped per sample. Explicit VR Big Endian stores OW
    values as 16-bit words, so 1- and 8-bit data in an OW element also has its
    byte pairs swapped (PS3.5 7.3, pydicom's ``be_swap_ow``); for an odd number of
    bytes the last one sits in the (swapped) pad position.
    """
    size = geometry.native_bytes
    if syntax != ExplicitVRBigEndian:
        return bytes(ds.PixelData[:size])
    bits = geometry.bits_allocated
    if bits <= 8:
        if ds["PixelData"].VR != VR.OW:
            return bytes(ds.PixelData[:size])
        even = size + size % 2
        words = bytes(ds.PixelData[:even]).ljust(even, b"\0")
        return np.frombuffer(words, ">u2").astype("<u2").tobytes()[:size]
    itemsize = bits // 8
    values = np.frombuffer(ds.PixelData, f">u{itemsize}", count=size // itemsize)
    return values.astype(f"<u{itemsize}").tobytes()


def get_frame(ds: Dataset, index: int, *, max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES) -> bytes:
    """Raw bytes of one frame (0-based) in the dataset's own transfer syntax.

    Encapsulated data gives the frame's codestream (fragments joined, item tags
    removed), located via the Basic or Extended Offset Table or, without one, via
    *Number of Frames*. Native data gives the frame's slice in little-endian byte
    order (PS3.18 octet-stream bulkdata; big endian sources are swapped). For
    *Bits Allocated* 1 the frame's bits are re-packed to start at bit 0 of the first
    byte, because frame boundaries need not fall on byte boundaries.

    Raises
    ------
    IndexError
        ``index`` is negative or not below the number of frames.
    CodecError
        Malformed or oversized pixel data.
    """
    if "PixelData" not in ds:
        raise CodecUnsupported("dataset has no Pixel Data")
    syntax = transfer_syntax(ds)
    geometry = pixel_geometry(ds, max_pixel_bytes=max_pixel_bytes)
    if not isinstance(index, int | np.integer) or not 0 <= index < geometry.frames:
        raise IndexError(f"frame index {index} out of range for {geometry.frames} frame(s)")
    index = int(index)
    if syntax not in NATIVE_SYNTAXES:
        check_frame_list(ds, geometry)
        return encapsulated_frame(ds, geometry, index)
    check_native_length(ds, geometry, strict=False)
    frame_bits = geometry.native_frame_bits
    if syntax == ExplicitVRBigEndian:
        data = native_le_bytes(ds, geometry, syntax)
    else:
        data = ds.PixelData
    if frame_bits % 8 == 0:
        start = index * frame_bits // 8
        return bytes(data[start : start + frame_bits // 8])
    # Bit-packed frames that do not start on a byte boundary.
    first_bit = index * frame_bits
    chunk = np.frombuffer(
        data,
        np.uint8,
        count=(first_bit + frame_bits + 7) // 8 - first_bit // 8,
        offset=first_bit // 8,
    )
    bits = np.unpackbits(chunk, bitorder="little")[first_bit % 8 : first_bit % 8 + frame_bits]
    return np.packbits(bits, bitorder="little").tobytes()
