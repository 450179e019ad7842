"""Transfer syntax groups the archive decides with, named from :mod:`pydicom.uid`.

Only groups live here; single syntaxes are ``pydicom.uid`` names
(``ExplicitVRLittleEndian``, ``JPEGLSLossless``, ...) wherever they are used.
"""

from __future__ import annotations

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UncompressedTransferSyntaxes,
)

#: Syntaxes whose Pixel Data is native (not encapsulated), big endian included.
NATIVE: frozenset[UID] = frozenset(UncompressedTransferSyntaxes)

#: Native syntaxes in little endian byte order: their pixel bytes are identical, so a
#: peer that accepts one of them can be sent an object stored in another as it is.
LITTLE_ENDIAN_NATIVE: frozenset[UID] = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})

#: The syntaxes every DICOM application supports, best first (what we offer as a fallback).
UNCOMPRESSED_OFFER: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

__all__ = ["LITTLE_ENDIAN_NATIVE", "NATIVE", "UNCOMPRESSED_OFFER", "ExplicitVRBigEndian"]
