"""Pixel data of DICOM datasets: lossless compression, decompression, frames, rendering.

PACS-lite archives images losslessly. The compression workers call :func:`compress`
to re-encode natively stored pixel data with one of :data:`LOSSLESS_SYNTAXES`; the
retrieval path calls :func:`transcode` to deliver an instance in the transfer syntax
a peer asked for and :func:`get_frame` to serve single frames (WADO-RS); the viewer
calls :func:`render` and :func:`thumbnail`. Every function is a pure function of a
:class:`pydicom.dataset.Dataset`: inputs are never modified, results are new datasets
(or bytes). Every failure is a :class:`CodecError`.

Modules, in the order they build on each other:

* :mod:`~storage.pixels.errors`: :class:`CodecError` and its subclasses.
* :mod:`~storage.pixels.syntaxes`: transfer syntax groups (native, lossless, lossy),
  and the lossless targets.
* :mod:`~storage.pixels.geometry`: the *Image Pixel* attributes, validated (size
  limit included) before anything is decoded.
* :mod:`~storage.pixels.codestreams`: JPEG / JPEG-LS / JPEG 2000 frame headers,
  which must agree with the dataset.
* :mod:`~storage.pixels.frames`: single frames without decoding.
* :mod:`~storage.pixels.jpeg_plugin`: an imagecodecs JPEG decoder plugin for pydicom.
* :mod:`~storage.pixels.decode`: checked decoding to numpy arrays.
* :mod:`~storage.pixels.verify`: decode-and-compare verification of compressed data.
* :mod:`~storage.pixels.datasets`: dataset copies for writing in another syntax.
* :mod:`~storage.pixels.encode`: lossless compression.
* :mod:`~storage.pixels.transcoding`: decompression and transcoding.
* :mod:`~storage.pixels.rendering`: 8-bit JPEG/PNG rendering for viewers.

Decoding runs in whichever process calls it: the compression workers, but also the
web server and the DICOM SCP when they transcode or render. The checks made before
decoding (:mod:`~storage.pixels.geometry`, :mod:`~storage.pixels.codestreams`) are
what protect those processes, since a decoder that crashes on corrupt data cannot be
caught in-process.

This sub-package imports numpy, pydicom and the codecs; :mod:`storage` itself does
not import it, so the object stores stay light.
"""

from __future__ import annotations

from storage.pixels.decode import decode_frame, pixel_array
from storage.pixels.encode import compress
from storage.pixels.errors import CodecError, CodecUnsupported, DecodeError, InvalidPixelData, VerificationFailed
from storage.pixels.frames import get_frame
from storage.pixels.geometry import DEFAULT_MAX_PIXEL_BYTES, PixelGeometry, frame_count, has_pixel_data, pixel_geometry
from storage.pixels.rendering import MAX_OUTPUT_SIDE, RENDER_MEDIA_TYPES, render, thumbnail
from storage.pixels.syntaxes import (
    DEFAULT_LOSSLESS_TARGET,
    LOSSLESS_SYNTAXES,
    NATIVE_SYNTAXES,
    is_lossless_syntax,
    is_lossy,
    is_lossy_syntax,
    transfer_syntax,
)
from storage.pixels.transcoding import decompress, transcode

__all__ = [
    "DEFAULT_LOSSLESS_TARGET",
    "DEFAULT_MAX_PIXEL_BYTES",
    "LOSSLESS_SYNTAXES",
    "MAX_OUTPUT_SIDE",
    "NATIVE_SYNTAXES",
    "RENDER_MEDIA_TYPES",
    "CodecError",
    "CodecUnsupported",
    "DecodeError",
    "InvalidPixelData",
    "PixelGeometry",
    "VerificationFailed",
    "compress",
    "decode_frame",
    "decompress",
    "frame_count",
    "get_frame",
    "has_pixel_data",
    "is_lossless_syntax",
    "is_lossy",
    "is_lossy_syntax",
    "pixel_array",
    "pixel_geometry",
    "render",
    "thumbnail",
    "transcode",
    "transfer_syntax",
]
