"""Transfer syntax groups the archive decides with, named from :mod:`pydicom.uid`.

Only groups live here; single syntaxes are ``pydicom.uid`` names
(``uid.ExplicitVRLittleEndian``, ``uid.JPEGLSLossless``, ...) wherever they are used.
"""

from __future__ import annotations

from pydicom import uid
from pydicom.uid import UID

#: Syntaxes whose Pixel Data is native (not encapsulated), big endian included.
NATIVE: frozenset[UID] = frozenset(uid.UncompressedTransferSyntaxes)

#: Native syntaxes in little endian byte order: their pixel bytes are identical, so a
#: peer that accepts one of them can be sent an object stored in another as it is.
LITTLE_ENDIAN_NATIVE: frozenset[UID] = frozenset(
    {uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian})

#: The syntaxes every DICOM application supports, best first (what we offer as a fallback).
UNCOMPRESSED_OFFER: tuple[UID, ...] = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian)

#: JPEG XL (PS3.5 A.4.12): pydicom 3.0 has no names for them yet.
JPEG_XL = (UID("1.2.840.10008.1.2.4.110"), UID("1.2.840.10008.1.2.4.111"), UID("1.2.840.10008.1.2.4.112"))

#: Media types of one compressed frame and the syntaxes each carries; the first is the
#: default when a request names no transfer-syntax (PS3.18 Table 8.7.3-5).
FRAME_MEDIA_TYPES: dict[str, tuple[UID, ...]] = {
    "image/jpeg": (uid.JPEGLosslessSV1, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless),
    "image/jls": (uid.JPEGLSLossless, uid.JPEGLSNearLossless),
    "image/jp2": (uid.JPEG2000Lossless, uid.JPEG2000),
    "image/jpx": (uid.JPEG2000MCLossless, uid.JPEG2000MC),
    "image/jphc": (uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K),
    "image/dicom-rle": (uid.RLELossless,),
    "image/x-dicom-rle": (uid.RLELossless,),  # the name of earlier editions
    "image/jxl": JPEG_XL,
}
