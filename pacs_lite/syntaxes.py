"""Transfer syntax groups the archive decides with, named from :mod:`pydicom.uid`.

Only groups live here; single syntaxes are ``pydicom.uid`` names
(``ExplicitVRLittleEndian``, ``JPEGLSLossless``, ...) wherever they are used.
"""

from __future__ import annotations

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
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

#: JPEG XL (PS3.5 A.4.12): pydicom 3.0 has no names for them yet.
JPEG_XL = (UID("1.2.840.10008.1.2.4.110"), UID("1.2.840.10008.1.2.4.111"), UID("1.2.840.10008.1.2.4.112"))

#: Media types of one compressed frame and the syntaxes each carries; the first is the
#: default when a request names no transfer-syntax (PS3.18 Table 8.7.3-5).
FRAME_MEDIA_TYPES: dict[str, tuple[UID, ...]] = {
    "image/jpeg": (JPEGLosslessSV1, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless),
    "image/jls": (JPEGLSLossless, JPEGLSNearLossless),
    "image/jp2": (JPEG2000Lossless, JPEG2000),
    "image/jpx": (JPEG2000MCLossless, JPEG2000MC),
    "image/jphc": (HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K),
    "image/dicom-rle": (RLELossless,),
    "image/x-dicom-rle": (RLELossless,),  # the name of earlier editions
    "image/jxl": JPEG_XL,
}
