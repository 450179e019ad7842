"""An imagecodecs (libjpeg-turbo 3) JPEG decoding plugin for pydicom.

pydicom cannot decode JPEG Lossless (.4.57/.4.70) or 12-bit JPEG Extended (.4.51)
without pylibjpeg-libjpeg or GDCM, neither of which is installed. :func:`register_jpeg_plugin`
(called when :mod:`storage.pixels.decode` is imported) adds this module as a plugin
for those syntaxes, after pydicom's own plugins, so they can be decompressed and
rendered.

pydicom's decoding plugin contract (:mod:`pydicom.pixels.decoders`): the module named
in ``Decoder.add_plugin`` must provide ``is_available(uid)``,
``DECODER_DEPENDENCIES`` and the frame function, at module level. Those names are for
pydicom, not for callers.
"""

from __future__ import annotations

from typing import Any

from pydicom.pixels import get_decoder
from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1

from storage.pixels.codestreams import jpeg_header

try:  # imagecodecs is a hard requirement for the JPEG fallback decoder
    import imagecodecs

    _HAVE_IMAGECODECS = True
except ImportError:  # pragma: no cover - the project's venv always has it
    imagecodecs = None
    _HAVE_IMAGECODECS = False

__all__ = ["DECODER_DEPENDENCIES", "is_available", "register_jpeg_plugin"]

#: Syntaxes our imagecodecs (libjpeg-turbo 3) JPEG plugin can decode.
DECODER_DEPENDENCIES = {
    JPEGBaseline8Bit: ("imagecodecs",),
    JPEGExtended12Bit: ("imagecodecs",),
    JPEGLossless: ("imagecodecs",),
    JPEGLosslessSV1: ("imagecodecs",),
}


def is_available(uid: str) -> bool:
    """pydicom plugin hook: whether the imagecodecs JPEG decoder handles ``uid``."""
    return _HAVE_IMAGECODECS and uid in DECODER_DEPENDENCIES


def _decode_jpeg_frame(src: bytes, runner: Any) -> bytes:
    """pydicom plugin hook: decode one JPEG frame with libjpeg-turbo, no colour conversion.

    Returns the samples exactly as coded (pydicom converts YBR to RGB afterwards if
    asked), sign-extends signed lossless data from the JPEG precision, and tells
    pydicom the container size actually returned.
    """
    header = jpeg_header(src)
    if header is None:
        raise ValueError("no JPEG frame header")
    precision, rows, columns, components = header
    if (rows, columns, components) != (
        runner.rows,
        runner.columns,
        runner.samples_per_pixel,
    ):
        raise ValueError("JPEG frame header does not match the dataset")
    kwargs: dict[str, Any] = {}
    if components == 3:  # identical in/out colour spaces: libjpeg's null conversion
        kwargs = {"colorspace": "RGB", "outcolorspace": "RGB"}
    try:
        arr = imagecodecs.jpeg8_decode(src, **kwargs)
    except Exception:
        if runner.transfer_syntax not in (JPEGLossless, JPEGLosslessSV1):
            raise
        arr = imagecodecs.ljpeg_decode(src)
    expected = (rows, columns) if components == 1 else (rows, columns, components)
    if arr.shape != expected:
        raise ValueError(f"decoded shape {arr.shape} does not match {expected}")
    if runner.pixel_representation == 1 and precision < 8 * arr.dtype.itemsize:
        shift = 8 * arr.dtype.itemsize - precision
        signed = arr.view(f"i{arr.dtype.itemsize}")
        arr = (signed << shift) >> shift
    runner.set_option("bits_allocated", 8 * arr.dtype.itemsize)
    if components == 3:
        runner.set_option("planar_configuration", 0)
    return arr.tobytes()


def register_jpeg_plugin() -> None:
    """Add the imagecodecs JPEG decoder to pydicom's decoders (after its own plugins)."""
    if not _HAVE_IMAGECODECS:  # pragma: no cover
        return
    for uid in DECODER_DEPENDENCIES:
        decoder = get_decoder(uid)
        if "imagecodecs" in decoder.available_plugins:
            continue
        try:
            decoder.add_plugin("imagecodecs", (__name__, "_decode_jpeg_frame"))
        except ValueError:  # already registered (module reloaded)
            pass
