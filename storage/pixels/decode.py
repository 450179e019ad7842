"""Decoding *Pixel Data* to numpy arrays, after every check that can run first.

:func:`decode_pixels` validates the geometry, the native length or the encapsulated
frame list and codestream headers, then decodes with pydicom's decoders (plus the
JPEG plugin of :mod:`storage.pixels.jpeg_plugin`, registered on import) and maps every
decoder failure to a :class:`~storage.pixels.errors.CodecError`. The checks are what
protect the process: decoding runs in whichever process calls it (compression
workers, but also the web server and the DICOM SCP when they transcode or render),
and a decoder that *crashes* on corrupt data cannot be caught in-process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from storage.pixels.codestreams import check_frame_header
from storage.pixels.errors import CodecError, CodecUnsupported, DecodeError, InvalidPixelData
from storage.pixels.frames import check_frame_list, encapsulated_frame, iter_encapsulated_frames
from storage.pixels.geometry import (
    DEFAULT_MAX_PIXEL_BYTES,
    PixelGeometry,
    check_native_length,
    has_pixel_data,
    pixel_geometry,
)
from storage.pixels.jpeg_plugin import register_jpeg_plugin
from storage.pixels.syntaxes import LOSSLESS_ENCAPSULATED, LOSSY_SYNTAXES, NATIVE_SYNTAXES, transfer_syntax

__all__ = ["decode_frame", "decode_pixels", "pixel_array"]

# Without it pydicom has no working decoder here for JPEG Lossless or 12-bit JPEG.
register_jpeg_plugin()


def _with_syntax(ds: Dataset, syntax: UID) -> Dataset:
    """Return ``ds`` itself, or a shallow view carrying ``syntax`` in its file meta.

    pydicom's decoders read the syntax from ``file_meta``; datasets read without
    file meta get a view (sharing the elements, not copying them) instead of being
    modified.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") == syntax:
        return ds
    view = Dataset(ds)
    view.file_meta = FileMetaDataset()
    view.file_meta.TransferSyntaxUID = syntax
    return view


def _prepare_decode(
    ds: Dataset, index: int | None, max_pixel_bytes: int, *, strict_length: bool = False
) -> tuple[UID, PixelGeometry, Dataset]:
    """Validate everything that can be validated before decoding."""
    if "PixelData" not in ds:
        if has_pixel_data(ds):
            raise CodecUnsupported("float pixel data is not supported")
        raise CodecUnsupported("dataset has no Pixel Data")
    syntax = transfer_syntax(ds)
    geometry = pixel_geometry(ds, max_pixel_bytes=max_pixel_bytes)
    if index is not None and not 0 <= index < geometry.frames:
        raise IndexError(f"frame index {index} out of range for {geometry.frames} frame(s)")
    if syntax in NATIVE_SYNTAXES:
        check_native_length(ds, geometry, strict=strict_length)
    else:
        if syntax not in LOSSY_SYNTAXES | LOSSLESS_ENCAPSULATED:
            raise CodecUnsupported(f"unknown transfer syntax {syntax}")
        check_frame_list(ds, geometry)
        if index is None:
            for number, frame in enumerate(iter_encapsulated_frames(ds, geometry)):
                check_frame_header(frame, syntax, geometry, number)
        else:
            check_frame_header(encapsulated_frame(ds, geometry, index), syntax, geometry, index)
    return syntax, geometry, _with_syntax(ds, syntax)


def decode_pixels(
    ds: Dataset,
    *,
    index: int | None = None,
    raw: bool = False,
    max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES,
    strict_length: bool = False,
) -> tuple[np.ndarray, dict[str, Any], PixelGeometry]:
    """Decode pixels with pydicom after validation; map every failure to CodecError.

    The common step of :func:`pixel_array`, :func:`decode_frame`, compression (which
    decodes the original with ``strict_length`` so excess bytes are refused rather
    than lost) and verification.

    Returns
    -------
    tuple[numpy.ndarray, dict, PixelGeometry]
        The array, pydicom's properties of it (e.g. the resulting
        ``photometric_interpretation``) and the validated geometry.
    """
    syntax, geometry, source = _prepare_decode(ds, index, max_pixel_bytes, strict_length=strict_length)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise CodecUnsupported(f"no decoder for {syntax.name}") from None
    if not decoder.is_available:
        raise CodecUnsupported(f"no decoder installed for {syntax.name}")
    try:
        arr, properties = decoder.as_array(source, index=index, raw=raw, allow_excess_frames=False)
    except CodecError:
        raise
    except MemoryError as exc:
        raise InvalidPixelData(f"out of memory decoding {syntax.name}") from exc
    except Exception as exc:
        raise DecodeError(f"cannot decode {syntax.name} pixel data: {exc}") from exc
    return arr, properties, geometry


def pixel_array(
    ds: Dataset,
    index: int | None = None,
    *,
    raw: bool = False,
    max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES,
) -> np.ndarray:
    """Decoded pixel values as a numpy array, after the safety checks.

    Parameters
    ----------
    ds : Dataset
        Any dataset with *Pixel Data* in a supported transfer syntax.
    index : int, optional
        Decode only this frame (0-based); all frames when ``None``.
    raw : bool
        ``False`` (default) converts YBR_FULL/YBR_FULL_422 to RGB like pydicom's
        ``Dataset.pixel_array``; ``True`` returns stored colour values.
    max_pixel_bytes : int
        Refuse images whose decoded size exceeds this.

    Returns
    -------
    numpy.ndarray
        Shaped (rows, cols[, samples]) for one frame, else (frames, rows, cols[, samples]).
        Palette colour data is returned as indices.

    Raises
    ------
    CodecError
        :class:`InvalidPixelData`, :class:`CodecUnsupported` or :class:`DecodeError`.
    IndexError
        ``index`` is out of range.
    """
    arr, _, _ = decode_pixels(ds, index=index, raw=raw, max_pixel_bytes=max_pixel_bytes)
    return arr


def decode_frame(
    ds: Dataset, index: int = 0, *, max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES
) -> tuple[np.ndarray, str]:
    """Decode one frame for display and say which colour model the result is in.

    Like :func:`pixel_array` with ``raw=False`` for a single frame, but also returns
    the *Photometric Interpretation* of the returned array, which differs from the
    dataset's when the decoder converted colours (YBR_FULL_422 to RGB, YBR_ICT/RCT to
    RGB).

    Returns
    -------
    tuple[numpy.ndarray, str]
        The frame, shaped (rows, cols) or (rows, cols, samples), and its colour model.
    """
    arr, properties, geometry = decode_pixels(ds, index=index, max_pixel_bytes=max_pixel_bytes)
    photometric = str(properties.get("photometric_interpretation") or geometry.photometric)
    return arr, photometric.strip().upper()
