"""Exceptions raised by :mod:`storage.pixels`.

Every failure of the pixel code is a :class:`CodecError`, so callers that only need
to know "this image cannot be handled" catch one class; the subclasses say why
(:class:`CodecUnsupported` carries a ``reason`` fit for logs and metrics).
"""

from __future__ import annotations

__all__ = ["CodecError", "CodecUnsupported", "DecodeError", "InvalidPixelData", "VerificationFailed"]


class CodecError(Exception):
    """Base class of every error raised by :mod:`storage.pixels`."""


class CodecUnsupported(CodecError):
    """The operation cannot be done losslessly or at all for this data.

    Raised for unknown or unproducible transfer syntaxes, for pixel data a codec
    cannot represent exactly (bit depths, colour models, float data ...), for
    already-compressed input to :func:`~storage.pixels.encode.compress` and for lossy
    sources asked to be re-encoded losslessly. The original data is fine; keep it as
    it is.

    Attributes
    ----------
    reason : str
        A short human-readable explanation, suitable for logs and metrics.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidPixelData(CodecError):
    """The *Image Pixel* attributes or the *Pixel Data* are malformed or too large.

    Truncated or oversized native data, absurd geometry, missing frames, codestream
    headers that contradict the dataset. Nothing is decoded when this is raised.
    """


class DecodeError(CodecError):
    """A decoder failed on the pixel data (corrupt codestream or no working decoder)."""


class VerificationFailed(CodecError):
    """The re-decoded pixels of a freshly compressed dataset differ from the original."""
