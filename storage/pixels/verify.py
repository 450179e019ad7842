"""Decode-and-compare verification of freshly compressed pixel data.

What makes the archive's "lossless" claim true: :func:`verify_lossless` decodes the
compressed dataset through pydicom's decoders (independent of the encoders that
wrote it) and requires the values to equal the originals exactly
(``numpy.array_equal``); any difference raises
:class:`~storage.pixels.errors.VerificationFailed`.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from storage.pixels.decode import decode_pixels
from storage.pixels.errors import CodecError, VerificationFailed
from storage.pixels.syntaxes import transfer_syntax

__all__ = ["verify_lossless"]


def verify_lossless(out: Dataset, original: np.ndarray, max_pixel_bytes: int) -> None:
    """Decode ``out`` through pydicom and compare with ``original`` exactly.

    Parameters
    ----------
    out : Dataset
        The freshly compressed dataset.
    original : numpy.ndarray
        The values that were encoded, shaped (frames, rows, cols[, samples]).
    max_pixel_bytes : int
        Size limit for the decode, as for the original.

    Raises
    ------
    VerificationFailed
        ``out`` does not decode, or decodes to other values.
    """
    try:
        decoded, _, _ = decode_pixels(out, raw=True, max_pixel_bytes=max_pixel_bytes)
    except CodecError as exc:
        raise VerificationFailed(f"compressed data does not decode: {exc}") from exc
    if decoded.size != original.size or not np.array_equal(decoded.reshape(original.shape), original):
        raise VerificationFailed(f"{transfer_syntax(out).name} round trip changed the pixel values")
