"""Transfer syntax groups and what they say about a dataset's pixels.

Which syntaxes are native, which guarantee bit-exact pixels and which are (or may
be) lossy; the lossless targets the archive produces; the media type of a single
frame per syntax (PS3.18). Single syntaxes are :mod:`pydicom.uid` names; a UID
string appears only where pydicom 3.0 has no name for it.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import (
    HEVCM10P51,
    HEVCMP51,
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    MPEG2MPHL,
    MPEG2MPHLF,
    MPEG2MPML,
    MPEG2MPMLF,
    MPEG4HP41,
    MPEG4HP41BD,
    MPEG4HP41BDF,
    MPEG4HP41F,
    MPEG4HP42STEREO,
    MPEG4HP42STEREOF,
    MPEG4HP422D,
    MPEG4HP422DF,
    MPEG4HP423D,
    MPEG4HP423DF,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
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
    JPIPHTJ2KReferenced,
    JPIPHTJ2KReferencedDeflate,
    RLELossless,
)

from storage.pixels.errors import CodecUnsupported

__all__ = [
    "DEFAULT_LOSSLESS_TARGET",
    "J2K_FAMILY",
    "JPEGLS_FAMILY",
    "JPEG_FAMILY",
    "LOSSLESS_ENCAPSULATED",
    "LOSSLESS_SYNTAXES",
    "LOSSY_METHODS",
    "LOSSY_SYNTAXES",
    "NATIVE_SYNTAXES",
    "NATIVE_TARGETS",
    "is_lossless_syntax",
    "is_lossy",
    "is_lossy_syntax",
    "resolve_target",
    "transfer_syntax",
]

# Syntaxes of PS3.5 2024 that pydicom 3.0 has no name for (named as pydicom 3.1 does).
_EncapsulatedUncompressedExplicitVRLittleEndian = "1.2.840.10008.1.2.1.98"
_DeflatedImageFrameCompression = "1.2.840.10008.1.2.8.1"
_JPEGXLLossless = "1.2.840.10008.1.2.4.110"
_JPEGXLJPEGRecompression = "1.2.840.10008.1.2.4.111"
_JPEGXL = "1.2.840.10008.1.2.4.112"

#: Lossless targets :func:`~storage.pixels.encode.compress` can produce, by short name.
LOSSLESS_SYNTAXES: dict[str, str] = {
    "jpeg-ls": JPEGLSLossless,  # 1.2.840.10008.1.2.4.80
    "htj2k": HTJ2KLossless,  # 1.2.840.10008.1.2.4.201
    "jpeg2000": JPEG2000Lossless,  # 1.2.840.10008.1.2.4.90
    "rle": RLELossless,  # 1.2.840.10008.1.2.5
}

#: The archive's default target: best ratio of the four on CT/MR and widely supported.
DEFAULT_LOSSLESS_TARGET = "jpeg-ls"

#: Transfer syntaxes whose Pixel Data is stored uncompressed (not encapsulated).
NATIVE_SYNTAXES: frozenset[str] = frozenset(
    {
        ImplicitVRLittleEndian,  # 1.2.840.10008.1.2
        ExplicitVRLittleEndian,  # 1.2.840.10008.1.2.1
        ExplicitVRBigEndian,  # 1.2.840.10008.1.2.2 (retired)
        DeflatedExplicitVRLittleEndian,  # 1.2.840.10008.1.2.1.99
    }
)

#: Native syntaxes we write when decompressing (big endian is retired: read only).
NATIVE_TARGETS = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})

#: Encapsulated syntaxes that guarantee the decoded pixels equal the original ones.
LOSSLESS_ENCAPSULATED: frozenset[str] = frozenset(
    {
        _EncapsulatedUncompressedExplicitVRLittleEndian,  # 1.2.1.98
        JPEGLossless,  # .4.57  JPEG Lossless, Non-Hierarchical (Process 14)
        JPEGLosslessSV1,  # .4.70  JPEG Lossless, Process 14, Selection Value 1
        JPEGLSLossless,  # .4.80
        JPEG2000Lossless,  # .4.90
        JPEG2000MCLossless,  # .4.92  JPEG 2000 Part 2 multi-component, lossless only
        _JPEGXLLossless,  # .4.110
        HTJ2KLossless,  # .4.201 HTJ2K (Lossless Only)
        HTJ2KLosslessRPCL,  # .4.202 HTJ2K with RPCL Options (Lossless Only)
        RLELossless,  # 1.2.5
        _DeflatedImageFrameCompression,  # 1.2.8.1
    }
)

#: Syntaxes that are lossy or *may* be lossy ("may be lossy" counts as lossy: the
#: transfer syntax alone gives no guarantee, see :func:`is_lossy`).
LOSSY_SYNTAXES: frozenset[str] = frozenset(
    {
        JPEGBaseline8Bit,  # .4.50
        JPEGExtended12Bit,  # .4.51
        "1.2.840.10008.1.2.4.52",  # retired JPEG processes 3-13, 15-29 (all DCT/lossy)
        "1.2.840.10008.1.2.4.53",
        "1.2.840.10008.1.2.4.54",
        "1.2.840.10008.1.2.4.55",
        "1.2.840.10008.1.2.4.56",
        "1.2.840.10008.1.2.4.59",
        "1.2.840.10008.1.2.4.60",
        "1.2.840.10008.1.2.4.61",
        "1.2.840.10008.1.2.4.62",
        "1.2.840.10008.1.2.4.63",
        "1.2.840.10008.1.2.4.64",
        "1.2.840.10008.1.2.4.65",
        "1.2.840.10008.1.2.4.66",
        JPEGLSNearLossless,  # .4.81
        JPEG2000,  # .4.91  (may be lossy)
        JPEG2000MC,  # .4.93  (may be lossy)
        "1.2.840.10008.1.2.4.94",  # JPIP Referenced (not named by pydicom 3.0)
        "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
        MPEG2MPML,  # .4.100: MPEG2 and later video syntaxes
        MPEG2MPMLF,
        MPEG2MPHL,
        MPEG2MPHLF,
        MPEG4HP41,
        MPEG4HP41F,
        MPEG4HP41BD,
        MPEG4HP41BDF,
        MPEG4HP422D,
        MPEG4HP422DF,
        MPEG4HP423D,
        MPEG4HP423DF,
        MPEG4HP42STEREO,
        MPEG4HP42STEREOF,
        HEVCMP51,  # .4.107 HEVC
        HEVCM10P51,
        _JPEGXLJPEGRecompression,  # .4.111 (of a lossy JPEG)
        _JPEGXL,  # .4.112 (may be lossy)
        HTJ2K,  # .4.203 HTJ2K (may be lossy)
        JPIPHTJ2KReferenced,  # .4.204 (pixels not in the object)
        JPIPHTJ2KReferencedDeflate,  # .4.205
    }
)

#: Value of (0028,2114) Lossy Image Compression Method per lossy syntax (PS3.3 C.7.6.1.1.5.1).
LOSSY_METHODS: dict[str, str] = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
    JPEG2000MC: "ISO_15444_2",
    HTJ2K: "ISO_15444_15",
}

#: Codestream families, for reading frame headers (:mod:`storage.pixels.codestreams`).
J2K_FAMILY = frozenset(
    {JPEG2000Lossless, JPEG2000, JPEG2000MCLossless, JPEG2000MC, HTJ2KLossless} | {HTJ2KLosslessRPCL, HTJ2K}
)
JPEG_FAMILY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1})
JPEGLS_FAMILY = frozenset({JPEGLSLossless, JPEGLSNearLossless})


def is_lossless_syntax(uid: str) -> bool:
    """Whether ``uid`` names a transfer syntax that guarantees bit-exact pixels.

    True for the native syntaxes (including deflate and big endian) and for the
    lossless-only encapsulated syntaxes: JPEG Lossless (.4.57, .4.70), JPEG-LS
    Lossless (.4.80), JPEG 2000 Lossless (.4.90, .4.92), HTJ2K Lossless (.4.201) and
    HTJ2K Lossless RPCL (.4.202), JPEG XL Lossless (.4.110), RLE Lossless, Deflated
    Image Frame Compression and Encapsulated Uncompressed. HTJ2K (.4.203) and JPEG
    2000 (.4.91) *may* be lossy and are therefore not lossless syntaxes.
    """
    uid = str(uid).strip()
    return uid in NATIVE_SYNTAXES or uid in LOSSLESS_ENCAPSULATED


def is_lossy_syntax(uid: str) -> bool:
    """Whether ``uid`` names a transfer syntax that is, or may be, lossy.

    "May be lossy" syntaxes (JPEG 2000 .4.91, HTJ2K .4.203, JPEG XL .4.112) count as
    lossy because the syntax alone does not guarantee exact pixels. Unknown UIDs are
    neither lossless nor lossy.
    """
    return str(uid).strip() in LOSSY_SYNTAXES


def is_lossy(ds: Dataset) -> bool:
    """Whether the dataset's pixels have (possibly) been through lossy compression.

    True when (0028,2110) *Lossy Image Compression* is ``"01"``, when the transfer
    syntax is lossy-only, or when it *may* be lossy (.4.91, .4.203, .4.112) and the
    dataset does not explicitly declare ``"00"``.
    """
    flag = str(ds.get("LossyImageCompression", "") or "").strip()
    if flag == "01":
        return True
    try:
        syntax = transfer_syntax(ds)
    except CodecUnsupported:
        return False
    if not is_lossy_syntax(syntax):
        return False
    may_be_lossless = syntax in {JPEG2000, JPEG2000MC, HTJ2K, _JPEGXL}
    return not (may_be_lossless and flag == "00")


def transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax the dataset's *Pixel Data* is encoded in.

    Taken from ``file_meta.TransferSyntaxUID``; for datasets read without file meta
    information it is inferred from the encoding pydicom parsed them with.

    Raises
    ------
    CodecUnsupported
        When neither is available (an in-memory dataset without file meta).
    """
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return UID(str(uid).strip())
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        raise CodecUnsupported("dataset has no Transfer Syntax UID")
    if not little:
        return ExplicitVRBigEndian
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def resolve_target(target_uid: str) -> str:
    """Accept a UID or a :data:`LOSSLESS_SYNTAXES` short name."""
    target = str(target_uid).strip()
    return LOSSLESS_SYNTAXES.get(target, target)
