"""Lossless pixel-data compression, decompression and frame access.

PACS-lite archives images losslessly: a worker process calls :func:`compress` to
re-encode natively stored pixel data with one of :data:`LOSSLESS_SYNTAXES`,
:func:`transcode` to deliver an instance in the transfer syntax a peer asked for,
:func:`get_frame` to serve single frames (WADO-RS) and :func:`pixel_array` to feed the
renderer. Every function here is a pure function of a :class:`pydicom.dataset.Dataset`:
inputs are never modified, results are new datasets.

Design decisions
----------------
* **Lossless means bit-exact pixel values.** :func:`compress` decodes what it encoded
  and compares it with the original values (``numpy.array_equal``) before returning;
  any difference raises :class:`VerificationFailed`. Whatever a codec cannot represent
  exactly raises :class:`CodecUnsupported` *before* encoding, with a ``reason`` that
  says why, so the caller can keep the original.
* **Unused high bits.** When *Bits Stored* < *Bits Allocated* the pixel value is the
  low *Bits Stored* bits. The codecs store only those, so the unused high bits do not
  survive compression. :func:`compress` therefore accepts unused bits only when they
  carry no information: all zero, or (signed data) a copy of the sign bit. Negative
  values stored *without* sign extension are accepted and come back sign-extended
  (same value). Anything else, e.g. retired overlay planes in bits 12-15, raises
  :class:`CodecUnsupported`.
* **Hostile input.** Before anything is decoded, :func:`pixel_geometry` checks the
  *Image Pixel* attributes and refuses images whose decoded size exceeds
  ``max_pixel_bytes`` (default 2 GiB) using exact integer arithmetic. Native *Pixel
  Data* must be as long as the attributes say; every encapsulated frame must exist and
  its codestream header (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ) must describe the
  same rows, columns and samples, so that a 64x64 dataset cannot smuggle in a
  60000x60000 codestream that the decoder would allocate for. All failures are
  :class:`CodecError` subclasses. (A decoder *crash* on corrupt data cannot be caught
  in-process; that is why these functions run in a separate worker process.)
* **Colour.** RGB encoded with JPEG 2000 or HTJ2K uses the reversible colour transform
  and is labelled ``YBR_RCT`` as PS3.5 8.2.4 requires (about half the size of
  component-wise coding on photographs); decoding gives RGB back. JPEG-LS and RLE keep
  ``RGB``. All encapsulated output uses *Planar Configuration* 0 (PS3.5 8.2 and the
  note to G.2). Native ``YBR_FULL_422`` is refused: its chroma is subsampled on disk,
  and re-encoding would first have to upsample it.
* **Extra decoders.** pydicom cannot decode JPEG Lossless (.4.57/.4.70) or 12-bit JPEG
  Extended (.4.51) without pylibjpeg-libjpeg or GDCM, neither of which is installed.
  This module registers an ``imagecodecs`` (libjpeg-turbo 3) decoding plugin with
  pydicom for those syntaxes at import time, so they can be decompressed and rendered.
  pydicom's own plugins keep priority.

Notes
-----
HTJ2K is encoded with ``imagecodecs.htj2k_encode`` (OpenJPH), which writes the sample
container size (8 or 16 bits) as the codestream precision rather than *Bits Stored*;
the coding is still reversible and the values are verified through pydicom's
independent OpenJPEG decoder. JPEG Lossless SV1 (.4.70) is not offered as a target
because pydicom 3.0 has no encoder for it.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames, parse_fragments
from pydicom.encaps import get_frame as _encaps_get_frame
from pydicom.pixels import get_decoder, get_encoder
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
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
    RLELossless,
)
from pydicom.valuerep import VR

try:  # imagecodecs is a hard requirement for HTJ2K and the JPEG fallback decoder
    import imagecodecs

    _HAVE_IMAGECODECS = True
except ImportError:  # pragma: no cover - the project's venv always has it
    imagecodecs = None
    _HAVE_IMAGECODECS = False

__all__ = [
    "DEFAULT_LOSSLESS_TARGET",
    "DEFAULT_MAX_PIXEL_BYTES",
    "LOSSLESS_SYNTAXES",
    "NATIVE_SYNTAXES",
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
    "frame_media_type",
    "get_frame",
    "has_pixel_data",
    "is_lossless_syntax",
    "is_lossy",
    "is_lossy_syntax",
    "pixel_array",
    "pixel_geometry",
    "transcode",
    "transfer_syntax",
]

#: Refuse images whose decoded pixels would need more memory than this (2 GiB).
DEFAULT_MAX_PIXEL_BYTES = 2 * 1024**3

#: Lossless targets :func:`compress` can produce, by short name.
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
_NATIVE_TARGETS = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})

#: Encapsulated syntaxes that guarantee the decoded pixels equal the original ones.
_LOSSLESS_ENCAPSULATED: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.1.98",  # Encapsulated Uncompressed Explicit VR LE
        JPEGLossless,  # .4.57  JPEG Lossless, Non-Hierarchical (Process 14)
        JPEGLosslessSV1,  # .4.70  JPEG Lossless, Process 14, Selection Value 1
        JPEGLSLossless,  # .4.80
        JPEG2000Lossless,  # .4.90
        JPEG2000MCLossless,  # .4.92  JPEG 2000 Part 2 multi-component, lossless only
        "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
        HTJ2KLossless,  # .4.201 HTJ2K (Lossless Only)
        HTJ2KLosslessRPCL,  # .4.202 HTJ2K with RPCL Options (Lossless Only)
        RLELossless,  # 1.2.5
        "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
    }
)

#: Syntaxes that are lossy or *may* be lossy ("may be lossy" counts as lossy: the
#: transfer syntax alone gives no guarantee, see :func:`is_lossy`).
_LOSSY_SYNTAXES: frozenset[str] = frozenset(
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
        "1.2.840.10008.1.2.4.94",  # JPIP Referenced (pixels not in the object)
        "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
        "1.2.840.10008.1.2.4.100",  # MPEG2 and later video syntaxes
        "1.2.840.10008.1.2.4.100.1",
        "1.2.840.10008.1.2.4.101",
        "1.2.840.10008.1.2.4.101.1",
        "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.102.1",
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.103.1",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.104.1",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.105.1",
        "1.2.840.10008.1.2.4.106",
        "1.2.840.10008.1.2.4.106.1",
        "1.2.840.10008.1.2.4.107",  # HEVC
        "1.2.840.10008.1.2.4.108",
        "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression (of a lossy JPEG)
        "1.2.840.10008.1.2.4.112",  # JPEG XL (may be lossy)
        HTJ2K,  # .4.203 HTJ2K (may be lossy)
        "1.2.840.10008.1.2.4.204",  # JPIP HTJ2K Referenced
        "1.2.840.10008.1.2.4.205",  # JPIP HTJ2K Referenced Deflate
    }
)

#: Value of (0028,2114) Lossy Image Compression Method per lossy syntax (PS3.3 C.7.6.1.1.5.1).
_LOSSY_METHODS: dict[str, str] = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
    JPEG2000MC: "ISO_15444_2",
    HTJ2K: "ISO_15444_15",
}

#: Media types for single frames per PS3.18 Table 8.7.3-5 (compressed bulkdata).
_FRAME_MEDIA_TYPES: dict[str, str] = {
    JPEGBaseline8Bit: "image/jpeg",
    JPEGExtended12Bit: "image/jpeg",
    JPEGLossless: "image/jpeg",
    JPEGLosslessSV1: "image/jpeg",
    JPEGLSLossless: "image/jls",
    JPEGLSNearLossless: "image/jls",
    JPEG2000Lossless: "image/jp2",
    JPEG2000: "image/jp2",
    JPEG2000MCLossless: "image/jpx",
    JPEG2000MC: "image/jpx",
    HTJ2KLossless: "image/jphc",
    HTJ2KLosslessRPCL: "image/jphc",
    HTJ2K: "image/jphc",
    RLELossless: "image/dicom-rle",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.1.98": "application/octet-stream",
}

_J2K_FAMILY = frozenset(
    {JPEG2000Lossless, JPEG2000, JPEG2000MCLossless, JPEG2000MC, HTJ2KLossless} | {HTJ2KLosslessRPCL, HTJ2K}
)
_JPEG_FAMILY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1})
_JPEGLS_FAMILY = frozenset({JPEGLSLossless, JPEGLSNearLossless})

# Photometric interpretations the encoders accept from native input.
_ENCODABLE_PI = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL"})


# --------------------------------------------------------------------------- errors


class CodecError(Exception):
    """Base class of every error raised by this module."""


class CodecUnsupported(CodecError):
    """The operation cannot be done losslessly or at all for this data.

    Raised for unknown or unproducible transfer syntaxes, for pixel data a codec
    cannot represent exactly (bit depths, colour models, float data ...), for
    already-compressed input to :func:`compress` and for lossy sources asked to be
    re-encoded losslessly. The original data is fine; keep it as it is.

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


# --------------------------------------------------------------------------- syntaxes


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
    return uid in NATIVE_SYNTAXES or uid in _LOSSLESS_ENCAPSULATED


def is_lossy_syntax(uid: str) -> bool:
    """Whether ``uid`` names a transfer syntax that is, or may be, lossy.

    "May be lossy" syntaxes (JPEG 2000 .4.91, HTJ2K .4.203, JPEG XL .4.112) count as
    lossy because the syntax alone does not guarantee exact pixels. Unknown UIDs are
    neither lossless nor lossy.
    """
    return str(uid).strip() in _LOSSY_SYNTAXES


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
    may_be_lossless = syntax in {JPEG2000, JPEG2000MC, HTJ2K, "1.2.840.10008.1.2.4.112"}
    return not (may_be_lossless and flag == "00")


def frame_media_type(transfer_syntax_uid: str) -> str:
    """Media type of one frame served in ``transfer_syntax_uid`` (PS3.18 8.7.3.3).

    ``application/octet-stream`` for the native syntaxes (frames from
    :func:`get_frame` are little endian), otherwise the compressed bulkdata type:
    ``image/jpeg``, ``image/jls``, ``image/jp2``, ``image/jpx``, ``image/jphc``,
    ``image/dicom-rle`` (the current name; older drafts used ``image/x-dicom-rle``)
    or ``image/jxl``.

    Raises
    ------
    CodecUnsupported
        For video and unknown syntaxes, which have no per-frame media type.
    """
    uid = str(transfer_syntax_uid).strip()
    if uid in NATIVE_SYNTAXES:
        return "application/octet-stream"
    try:
        return _FRAME_MEDIA_TYPES[uid]
    except KeyError:
        raise CodecUnsupported(f"no frame media type for transfer syntax {uid}") from None


def has_pixel_data(ds: Dataset) -> bool:
    """Whether the dataset holds pixels: *Pixel Data*, *Float* or *Double Float Pixel Data*.

    Only integer *Pixel Data* can be compressed; the float variants make
    :func:`compress` raise :class:`CodecUnsupported`.
    """
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


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


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class PixelGeometry:
    """Validated *Image Pixel* attributes of a dataset.

    Attributes
    ----------
    rows, columns, frames, samples : int
        Image size; ``samples`` is *Samples per Pixel*.
    bits_allocated, bits_stored, high_bit, pixel_representation : int
        Sample layout; ``pixel_representation`` 1 means signed.
    photometric : str
        *Photometric Interpretation*.
    planar_configuration : int
        0 (colour-by-pixel) or 1 (colour-by-plane); 0 for single-sample data.
    """

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    high_bit: int
    pixel_representation: int
    photometric: str
    planar_configuration: int

    @property
    def native_frame_bits(self) -> int:
        """Bits one frame occupies in native encoding (YBR_FULL_422 stores 2 samples/px)."""
        samples = 2 if self.photometric == "YBR_FULL_422" and self.samples == 3 else self.samples
        return self.rows * self.columns * samples * self.bits_allocated

    @property
    def native_bytes(self) -> int:
        """Bytes of all frames in native encoding, before padding to even length."""
        return (self.native_frame_bits * self.frames + 7) // 8

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded array (1-bit data is unpacked to one byte per pixel)."""
        itemsize = max(1, (self.bits_allocated + 7) // 8)
        return self.rows * self.columns * self.samples * self.frames * itemsize

    @property
    def container_dtype(self) -> np.dtype:
        """Native-endian numpy dtype of one sample (uint8 for 1-bit data)."""
        kind = "i" if self.pixel_representation else "u"
        return np.dtype(f"{kind}{max(1, self.bits_allocated // 8)}")


def _int_attr(ds: Dataset, keyword: str, default: int | None = None) -> int:
    """Read an integer attribute, raising :class:`InvalidPixelData` when unusable."""
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise InvalidPixelData(f"missing {keyword}")
        value = default
    if isinstance(value, list | tuple) or hasattr(value, "__len__") and not isinstance(value, str):
        raise InvalidPixelData(f"{keyword} is multi-valued")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidPixelData(f"{keyword} is not an integer: {value!r}") from None
    if number != float(value):
        raise InvalidPixelData(f"{keyword} is not an integer: {value!r}")
    return number


def pixel_geometry(ds: Dataset, *, max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES) -> PixelGeometry:
    """Validate the *Image Pixel* attributes and return them.

    The check uses Python integers, so absurd values cannot overflow, and runs
    before anything is decoded or allocated.

    Raises
    ------
    InvalidPixelData
        Missing or out-of-range attributes, or a decoded size over ``max_pixel_bytes``.
    """
    try:
        rows = _int_attr(ds, "Rows")
        columns = _int_attr(ds, "Columns")
        frames = _int_attr(ds, "NumberOfFrames", 1)
        samples = _int_attr(ds, "SamplesPerPixel", 1)
        bits_allocated = _int_attr(ds, "BitsAllocated")
        bits_stored = _int_attr(ds, "BitsStored", bits_allocated)
        high_bit = _int_attr(ds, "HighBit", bits_stored - 1)
        pixel_representation = _int_attr(ds, "PixelRepresentation", 0)
        planar = _int_attr(ds, "PlanarConfiguration", 0) if samples > 1 else 0
    except InvalidPixelData:
        raise
    except Exception as exc:  # pydicom may raise while converting a bad value
        raise InvalidPixelData(f"unreadable Image Pixel attribute: {exc}") from exc
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not 1 <= rows <= 0xFFFF or not 1 <= columns <= 0xFFFF:
        raise InvalidPixelData(f"invalid image size {rows}x{columns}")
    if frames < 1:
        raise InvalidPixelData(f"invalid Number of Frames {frames}")
    if samples not in (1, 3, 4):
        raise InvalidPixelData(f"invalid Samples per Pixel {samples}")
    if bits_allocated != 1 and (bits_allocated % 8 or not 8 <= bits_allocated <= 64):
        raise InvalidPixelData(f"invalid Bits Allocated {bits_allocated}")
    if not 1 <= bits_stored <= bits_allocated:
        raise InvalidPixelData(f"invalid Bits Stored {bits_stored} for Bits Allocated {bits_allocated}")
    if not bits_stored - 1 <= high_bit < bits_allocated:
        raise InvalidPixelData(f"invalid High Bit {high_bit}")
    if pixel_representation not in (0, 1):
        raise InvalidPixelData(f"invalid Pixel Representation {pixel_representation}")
    if planar not in (0, 1):
        raise InvalidPixelData(f"invalid Planar Configuration {planar}")
    if not photometric:
        raise InvalidPixelData("missing Photometric Interpretation")
    geometry = PixelGeometry(
        rows=rows,
        columns=columns,
        frames=frames,
        samples=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        high_bit=high_bit,
        pixel_representation=pixel_representation,
        photometric=photometric,
        planar_configuration=planar,
    )
    size = max(geometry.decoded_bytes, geometry.native_bytes)
    if size > max_pixel_bytes:
        raise InvalidPixelData(
            f"pixel data of {rows}x{columns}x{samples} samples x {frames} frames x "
            f"{bits_allocated} bits needs {size} bytes, over the {max_pixel_bytes} byte limit"
        )
    return geometry


def frame_count(ds: Dataset) -> int:
    """Number of frames: (0028,0008) *Number of Frames*, 1 when absent or empty.

    Raises
    ------
    InvalidPixelData
        When the value is not a positive integer.
    """
    frames = _int_attr(ds, "NumberOfFrames", 1)
    if frames < 1:
        raise InvalidPixelData(f"invalid Number of Frames {frames}")
    return frames


def _check_native_length(ds: Dataset, geometry: PixelGeometry, *, strict: bool) -> None:
    """Check the native *Pixel Data* length against the attributes.

    The value may carry one trailing pad byte (odd lengths are padded to even).
    Shorter data is always refused (:class:`InvalidPixelData`); longer data is
    refused with :class:`CodecUnsupported` when ``strict`` (the excess bytes would be
    lost on re-encoding) and tolerated otherwise (pydicom ignores them when decoding).
    """
    actual = len(ds.PixelData or b"")
    expected = geometry.native_bytes
    if actual < expected:
        raise InvalidPixelData(f"Pixel Data is truncated: {actual} bytes, expected {expected}")
    if strict and actual > expected + (expected % 2):
        raise CodecUnsupported(
            f"Pixel Data holds {actual} bytes but the image needs {expected}; the excess bytes would be lost"
        )


def _frame_list_check(ds: Dataset, geometry: PixelGeometry) -> None:
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


def _iter_encapsulated_frames(ds: Dataset, geometry: PixelGeometry) -> Iterator[bytes]:
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


# --------------------------------------------------------------------------- codestreams


def _jpeg_header(src: bytes) -> tuple[int, int, int, int] | None:
    """Return (precision, rows, columns, components) from a JPEG / JPEG-LS frame header.

    Walks the marker segments from SOI to the first SOFn (ITU T.81 B.2) or SOF55
    (JPEG-LS, T.87). Returns ``None`` when no frame header precedes the first scan.
    """
    if src[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(src)
    while pos + 4 <= end:
        if src[pos] != 0xFF:
            return None
        marker = src[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        (length,) = struct.unpack(">H", src[pos + 2 : pos + 4])
        is_sof = (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7
        if is_sof:
            if pos + 10 > end:
                return None
            precision = src[pos + 4]
            rows, columns = struct.unpack(">HH", src[pos + 5 : pos + 9])
            return precision, rows, columns, src[pos + 9]
        if marker == 0xDA or length < 2:  # start of scan without a frame header
            return None
        pos += 2 + length
    return None


def _j2k_header(src: bytes) -> tuple[int, int, int, int] | None:
    """Return (precision, rows, columns, components) from a JPEG 2000 SIZ segment.

    Finds SOC+SIZ (ITU T.800 A.5.1), also inside a (non-conformant) JP2 wrapper.
    """
    pos = src.find(b"\xff\x4f\xff\x51")
    if pos < 0 or pos + 4 + 38 + 3 > len(src):
        return None
    siz = src[pos + 4 :]
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", siz[4:20])
    (components,) = struct.unpack(">H", siz[36:38])
    precision = (siz[38] & 0x7F) + 1
    return precision, ysiz - yosiz, xsiz - xosiz, components


def _check_frame_header(src: bytes, syntax: str, geometry: PixelGeometry, index: int) -> None:
    """Refuse a frame whose codestream header contradicts the dataset.

    Decoders allocate from the codestream header, not from the DICOM attributes, so
    a forged header could demand gigabytes from a few bytes of Pixel Data.
    """
    if syntax in _J2K_FAMILY:
        header = _j2k_header(src)
        kind = "JPEG 2000 SIZ"
    elif syntax in _JPEG_FAMILY or syntax in _JPEGLS_FAMILY:
        header = _jpeg_header(src)
        kind = "JPEG frame header"
    else:
        return
    if header is None:
        raise InvalidPixelData(f"frame {index}: no {kind} found")
    _, rows, columns, components = header
    if (rows, columns) != (
        geometry.rows,
        geometry.columns,
    ) or components != geometry.samples:
        raise InvalidPixelData(
            f"frame {index}: {kind} says {rows}x{columns}x{components}, dataset says "
            f"{geometry.rows}x{geometry.columns}x{geometry.samples}"
        )


# --------------------------------------------------------------------------- decoding


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
        _check_native_length(ds, geometry, strict=strict_length)
    else:
        if syntax not in _LOSSY_SYNTAXES | _LOSSLESS_ENCAPSULATED:
            raise CodecUnsupported(f"unknown transfer syntax {syntax}")
        _frame_list_check(ds, geometry)
        if index is None:
            for number, frame in enumerate(_iter_encapsulated_frames(ds, geometry)):
                _check_frame_header(frame, syntax, geometry, number)
        else:
            _check_frame_header(_encapsulated_frame(ds, geometry, index), syntax, geometry, index)
    return syntax, geometry, _with_syntax(ds, syntax)


def _decode(
    ds: Dataset,
    *,
    index: int | None = None,
    raw: bool = False,
    max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES,
    strict_length: bool = False,
) -> tuple[np.ndarray, dict[str, Any], PixelGeometry]:
    """Decode pixels with pydicom after validation; map every failure to CodecError."""
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
    arr, _, _ = _decode(ds, index=index, raw=raw, max_pixel_bytes=max_pixel_bytes)
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
    arr, properties, geometry = _decode(ds, index=index, max_pixel_bytes=max_pixel_bytes)
    photometric = str(properties.get("photometric_interpretation") or geometry.photometric)
    return arr, photometric.strip().upper()


# --------------------------------------------------------------------------- frames


def _encapsulated_frame(ds: Dataset, geometry: PixelGeometry, index: int) -> bytes:
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


def _native_le_bytes(ds: Dataset, geometry: PixelGeometry, syntax: str) -> bytes:
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
        _frame_list_check(ds, geometry)
        return _encapsulated_frame(ds, geometry, index)
    _check_native_length(ds, geometry, strict=False)
    frame_bits = geometry.native_frame_bits
    if syntax == ExplicitVRBigEndian:
        data = _native_le_bytes(ds, geometry, syntax)
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


# --------------------------------------------------------------------------- encoding


def _unsupported_reason(geometry: PixelGeometry, target: str) -> str | None:
    """Why ``target`` cannot hold this (native) pixel data exactly, or ``None``.

    Mirrors PS3.5 section 8.2 (as encoded in pydicom's ENCODING_PROFILES) plus the
    empirically found limits of the encoders installed here.
    """
    g = geometry
    name = UID(target).name
    if g.bits_allocated == 1:
        return "1-bit (bit-packed) pixel data: encapsulated syntaxes need Bits Allocated >= 8"
    if g.samples not in (1, 3):
        return f"Samples per Pixel {g.samples} is not supported by {name}"
    if g.photometric not in _ENCODABLE_PI:
        if g.photometric == "YBR_FULL_422":
            return "native YBR_FULL_422 is chroma-subsampled; it cannot be re-encoded losslessly"
        return f"Photometric Interpretation {g.photometric} cannot be encoded"
    if (g.samples == 1) != (g.photometric in {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"}):
        return f"Samples per Pixel {g.samples} does not match {g.photometric}"
    if g.high_bit != g.bits_stored - 1:
        return f"High Bit {g.high_bit} is not Bits Stored - 1: pixel values are not LSB-aligned"
    if g.pixel_representation and g.photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        return f"signed {g.photometric} data is not allowed by PS3.5 8.2"
    if g.photometric == "PALETTE COLOR" and g.bits_allocated not in (8, 16):
        return "PALETTE COLOR needs Bits Allocated 8 or 16"
    if target == JPEGLSLossless:
        if g.bits_allocated not in (8, 16) or not 2 <= g.bits_stored <= 16:
            return f"JPEG-LS takes 2-16 bit samples, not {g.bits_stored} of {g.bits_allocated}"
        if g.photometric == "YBR_FULL" and g.bits_stored > 8:
            return "JPEG-LS allows YBR_FULL only for 8-bit samples"
    elif target == RLELossless:
        if g.bits_allocated not in (8, 16):
            return f"RLE Lossless (PS3.5 Table 8.2.2-1) takes Bits Allocated 8 or 16, not {g.bits_allocated}"
        if g.photometric == "YBR_FULL" and g.bits_allocated != 8:
            return "RLE allows YBR_FULL only for 8-bit samples"
        if g.bits_allocated == 16 and g.bits_stored <= 8:
            # RLE byte segments follow Bits Allocated (PS3.5 G.2), but pydicom 3.0 hands
            # its RLE encoders 1-byte samples when Bits Stored <= 8: wrong segment count.
            return "pydicom's RLE encoder mishandles Bits Stored <= 8 in a 16-bit container"
    elif target == JPEG2000Lossless:
        if min(g.rows, g.columns) < 32:
            return "OpenJPEG codes 6 resolution levels, which needs at least 32 rows and columns"
        if g.bits_stored > 24:
            return f"OpenJPEG encodes at most 24-bit samples, not {g.bits_stored}"
        if g.bits_allocated > 32:
            return f"Bits Allocated {g.bits_allocated} is not supported by JPEG 2000"
    elif target == HTJ2KLossless:
        if g.bits_allocated not in (8, 16):
            return (
                "HTJ2K via OpenJPH codes the whole sample container; OpenJPEG cannot decode "
                f"{g.bits_allocated}-bit precision, so only Bits Allocated 8 or 16 are used"
            )
    else:
        return f"{name} is not a lossless target this archive can produce"
    return None


def _check_unused_bits(ds: Dataset, geometry: PixelGeometry, syntax: str) -> None:
    """Refuse data whose bits above *Bits Stored* carry information.

    Accepted: all-zero unused bits, or for signed data a sign extension. Checked one
    frame at a time on the stored bytes, to bound temporary memory.
    """
    g = geometry
    spare = g.bits_allocated - g.bits_stored
    if spare == 0 or g.bits_allocated == 1:
        return
    itemsize = g.bits_allocated // 8
    order = ">" if syntax == ExplicitVRBigEndian and itemsize > 1 else "<"
    dtype = np.dtype(f"{order}u{itemsize}")
    data = ds.PixelData
    frame_bytes = g.native_frame_bits // 8
    spare_mask = (1 << spare) - 1
    for frame in range(g.frames):
        values = np.frombuffer(data, dtype, count=frame_bytes // itemsize, offset=frame * frame_bytes)
        unused = values >> np.array(g.bits_stored, dtype=dtype)
        if g.pixel_representation:
            negative = ((values >> np.array(g.bits_stored - 1, dtype=dtype)) & 1).astype(bool)
            ok = (unused == 0) | (negative & (unused == spare_mask))
        else:
            ok = unused == 0
        if not ok.all():
            count = int(ok.size - np.count_nonzero(ok))
            raise CodecUnsupported(
                f"{count} sample(s) in frame {frame} use the {spare} bit(s) above Bits Stored "
                f"({g.bits_stored}); they would be lost (overlay or garbage bits)"
            )


def _encode_htj2k(frame: np.ndarray, geometry: PixelGeometry) -> bytes:
    """Encode one frame reversibly with OpenJPH; RGB uses the RCT."""
    if not _HAVE_IMAGECODECS:  # pragma: no cover
        raise CodecUnsupported("imagecodecs is not installed")
    data = np.ascontiguousarray(frame.astype(geometry.container_dtype, copy=False))
    rgb = geometry.samples == 3 and geometry.photometric == "RGB"
    return bytes(imagecodecs.htj2k_encode(data, reversible=True, rgb=rgb))


def _output_photometric(geometry: PixelGeometry, target: str) -> str:
    """Photometric Interpretation of the compressed result (RCT for J2K-family RGB)."""
    if geometry.photometric == "RGB" and target in (JPEG2000Lossless, HTJ2KLossless):
        return "YBR_RCT"
    return geometry.photometric


def _encode_frames(arr: np.ndarray, geometry: PixelGeometry, target: str) -> list[bytes]:
    """Encode each frame of ``arr`` (frames, rows, cols[, samples]) for ``target``."""
    if target == HTJ2KLossless:
        try:
            return [_encode_htj2k(frame, geometry) for frame in arr]
        except CodecError:
            raise
        except Exception as exc:
            raise CodecUnsupported(f"HTJ2K encoder refused the data: {exc}") from exc
    encoder = get_encoder(target)
    if not encoder.is_available:
        raise CodecUnsupported(f"no encoder installed for {UID(target).name}")
    options: dict[str, Any] = {
        "rows": geometry.rows,
        "columns": geometry.columns,
        "samples_per_pixel": geometry.samples,
        "bits_allocated": geometry.bits_allocated,
        "bits_stored": geometry.bits_stored,
        "pixel_representation": geometry.pixel_representation,
        "photometric_interpretation": _output_photometric(geometry, target),
        "number_of_frames": 1,
        "planar_configuration": 0,
    }
    if target == JPEG2000Lossless:
        options["use_mct"] = options["photometric_interpretation"] == "YBR_RCT"
    frames = []
    for frame in arr:
        try:
            frames.append(bytes(encoder.encode(np.ascontiguousarray(frame), **options)))
        except Exception as exc:
            raise CodecUnsupported(f"{UID(target).name} encoder refused the data: {exc}") from exc
    return frames


#: Byte-swap unit of the VRs pydicom keeps as raw bytes (PS3.5 7.3).
_SWAPPED_VRS = {VR.OW: 2, VR.OL: 4, VR.OF: 4, VR.OD: 8, VR.OV: 8}


def _convert_elements(ds: Dataset, *, swap: bool) -> None:
    """Turn every raw element into a parsed one, byte-swapping big endian raw values.

    Parsing (by iterating) matters because pydicom writes still-raw elements
    verbatim when it believes the encoding is unchanged; a file whose body was
    actually implicit VR under an explicit VR transfer syntax would then be written
    with empty VRs. With ``swap``, OW/OL/OF/OD/OV values, which pydicom keeps as
    bytes, are converted from big to little endian (numeric VRs such as US or FL
    are parsed into numbers and written correctly in either order); otherwise e.g.
    palette LUT data would be corrupted. *Pixel Data* is handled apart.
    """
    for element in ds:
        if element.VR == VR.SQ:
            for item in element.value or []:
                _convert_elements(item, swap=swap)
            continue
        size = _SWAPPED_VRS.get(element.VR) if swap else None
        value = element.value
        if size is None or element.tag == 0x7FE00010 or not isinstance(value, bytes | bytearray):
            continue
        if len(value) % size == 0:
            element.value = np.frombuffer(value, f">u{size}").astype(f"<u{size}").tobytes()


def _copy_dataset(ds: Dataset, source: str, target: str) -> Dataset:
    """Deep copy ``ds`` for writing in ``target`` (encoding metadata adjusted).

    pydicom's cached decoded pixel array is not copied. All elements are parsed (see
    :func:`_convert_elements`); a big endian source has its raw multi-byte values
    swapped and its recorded original encoding changed to little endian, which
    pydicom requires before it writes the dataset little endian.
    """
    memo: dict[int, Any] = {}
    cached = ds.__dict__.get("_pixel_array")
    if cached is not None:
        memo[id(cached)] = None
    out = copy.deepcopy(ds, memo)
    big_endian = source == ExplicitVRBigEndian
    _convert_elements(out, swap=big_endian)
    if big_endian:
        out.set_original_encoding(target == ImplicitVRLittleEndian, True)
    return out


def _set_syntax(ds: Dataset, syntax: str) -> None:
    """Set the transfer syntax in ``ds.file_meta``, creating the file meta if needed."""
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)


def _normalise(arr: np.ndarray, geometry: PixelGeometry) -> np.ndarray:
    """Shape (frames, rows, cols[, samples]) in the native-endian container dtype."""
    shape = (geometry.frames, geometry.rows, geometry.columns)
    if geometry.samples > 1:
        shape += (geometry.samples,)
    return arr.astype(geometry.container_dtype, copy=False).reshape(shape)


def _resolve_target(target_uid: str) -> str:
    """Accept a UID or a :data:`LOSSLESS_SYNTAXES` short name."""
    target = str(target_uid).strip()
    return LOSSLESS_SYNTAXES.get(target, target)


def compress(
    ds: Dataset,
    target_uid: str,
    *,
    verify: bool = True,
    max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES,
) -> Dataset:
    """Losslessly compress natively encoded *Pixel Data*, returning a new dataset.

    Parameters
    ----------
    ds : Dataset
        A dataset in a native syntax (implicit/explicit little endian, big endian or
        deflated). It is not modified.
    target_uid : str
        One of :data:`LOSSLESS_SYNTAXES` (UID or short name such as ``"jpeg-ls"``).
    verify : bool
        Decode the result and require ``numpy.array_equal`` with the original values.
        Leave on: it is what makes the archive's "lossless" claim true.
    max_pixel_bytes : int
        Refuse images whose pixels exceed this many bytes.

    Returns
    -------
    Dataset
        A copy with one fragment per frame, a filled Basic Offset Table (PS3.5 A.4),
        the new transfer syntax, *Planar Configuration* 0, RGB relabelled ``YBR_RCT``
        for JPEG 2000/HTJ2K, and everything else (SOP Instance UID, *Lossy Image
        Compression*) unchanged.

    Raises
    ------
    CodecUnsupported
        The target cannot represent the data exactly, the input is already
        compressed, or the target is not one we produce; ``.reason`` says which.
    InvalidPixelData
        Malformed or oversized pixel data.
    VerificationFailed
        The decoded result differs from the original.
    """
    target = _resolve_target(target_uid)
    if target not in LOSSLESS_SYNTAXES.values():
        raise CodecUnsupported(f"{target} is not a lossless target this archive can produce")
    if "PixelData" not in ds:
        if has_pixel_data(ds):
            raise CodecUnsupported("float pixel data cannot be compressed")
        raise CodecUnsupported("dataset has no Pixel Data")
    syntax = transfer_syntax(ds)
    if syntax not in NATIVE_SYNTAXES:
        raise CodecUnsupported(f"already encapsulated ({syntax.name}); use transcode()")
    geometry = pixel_geometry(ds, max_pixel_bytes=max_pixel_bytes)
    _check_native_length(ds, geometry, strict=True)
    reason = _unsupported_reason(geometry, target)
    if reason:
        raise CodecUnsupported(reason)
    _check_unused_bits(ds, geometry, syntax)
    original, _, _ = _decode(ds, raw=True, max_pixel_bytes=max_pixel_bytes, strict_length=True)
    original = _normalise(original, geometry)
    frames = _encode_frames(original, geometry, target)
    total = sum(len(f) + (len(f) % 2) + 8 for f in frames)
    if total >= 2**32 - 8 * len(frames):
        raise CodecUnsupported("compressed data too large for a Basic Offset Table")

    out = _copy_dataset(ds, syntax, target)
    out.PixelData = encapsulate(frames, fragments_per_frame=1, has_bot=True)
    element = out["PixelData"]
    element.VR = VR.OB
    element.is_undefined_length = True
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in out:
            delattr(out, keyword)
    out.PhotometricInterpretation = _output_photometric(geometry, target)
    if geometry.samples > 1:
        out.PlanarConfiguration = 0
    _set_syntax(out, target)
    if verify:
        _verify(out, original, geometry, max_pixel_bytes)
    return out


def _verify(out: Dataset, original: np.ndarray, geometry: PixelGeometry, max_pixel_bytes: int) -> None:
    """Decode ``out`` through pydicom and compare with ``original`` exactly."""
    try:
        decoded, _, _ = _decode(out, raw=True, max_pixel_bytes=max_pixel_bytes)
    except CodecError as exc:
        raise VerificationFailed(f"compressed data does not decode: {exc}") from exc
    if decoded.size != original.size or not np.array_equal(decoded.reshape(original.shape), original):
        raise VerificationFailed(f"{transfer_syntax(out).name} round trip changed the pixel values")


# --------------------------------------------------------------------------- decompression


def decompress(
    ds: Dataset,
    target_uid: str = ExplicitVRLittleEndian,
    *,
    max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES,
) -> Dataset:
    """Return a copy of ``ds`` with native little-endian *Pixel Data*.

    Parameters
    ----------
    ds : Dataset
        Any dataset with *Pixel Data* in a supported syntax (native or encapsulated).
    target_uid : str
        Explicit VR Little Endian (default), Implicit VR Little Endian or Deflated
        Explicit VR Little Endian.
    max_pixel_bytes : int
        Refuse images whose decoded pixels exceed this many bytes.

    Notes
    -----
    Sources in a lossless syntax keep their stored values exactly, colour model
    included (JPEG 2000 ``YBR_RCT`` comes back as ``RGB``, which is what the
    codestream reconstructs). Sources in a lossy syntax are converted to ``RGB`` as
    viewers expect. Lossy sources (see :func:`is_lossy`) get *Lossy Image
    Compression* "01" (plus the method, if absent) because their pixels are not the
    originals.
    Native sources are only re-encoded (byte order, VR); the pixel bytes are not
    decoded, so 1-bit and ``YBR_FULL_422`` data survive unchanged.

    Raises
    ------
    CodecUnsupported, InvalidPixelData, DecodeError
    """
    target = UID(str(target_uid).strip())
    if target not in _NATIVE_TARGETS:
        raise CodecUnsupported(f"decompress() writes little endian native syntaxes, not {target}")
    if "PixelData" not in ds:
        raise CodecUnsupported("dataset has no Pixel Data")
    syntax = transfer_syntax(ds)
    if syntax in NATIVE_SYNTAXES:
        geometry = pixel_geometry(ds, max_pixel_bytes=max_pixel_bytes)
        _check_native_length(ds, geometry, strict=False)
        data = _native_le_bytes(ds, geometry, syntax)
        out = _copy_dataset(ds, syntax, target)
        _set_native_pixels(out, data, geometry.bits_allocated)
        _set_syntax(out, target)
        return out

    lossy = is_lossy(ds)
    # Colour conversion (YBR_FULL/_422 -> RGB) is itself lossy (rounding), so only
    # codestreams of a lossy syntax get it; lossless syntaxes keep the stored values.
    convert = is_lossy_syntax(syntax)
    arr, properties, geometry = _decode(ds, raw=not convert, max_pixel_bytes=max_pixel_bytes)
    arr = _normalise(arr, geometry)
    if geometry.bits_allocated == 1:
        data = np.packbits(arr.ravel(), bitorder="little").tobytes()
    else:
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    out = _copy_dataset(ds, syntax, target)
    _set_native_pixels(out, data, geometry.bits_allocated)
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in out:
            delattr(out, keyword)
    out.PhotometricInterpretation = properties.get("photometric_interpretation", geometry.photometric)
    if geometry.samples > 1:
        out.PlanarConfiguration = 0
    if lossy:
        out.LossyImageCompression = "01"
        method = _LOSSY_METHODS.get(syntax)
        if method and "LossyImageCompressionMethod" not in out:
            out.LossyImageCompressionMethod = method
    _set_syntax(out, target)
    return out


def _set_native_pixels(ds: Dataset, data: bytes, bits_allocated: int) -> None:
    """Store native pixel bytes: padded to even length, OB/OW, defined length."""
    if len(data) % 2:
        data += b"\x00"
    ds.PixelData = data
    element = ds["PixelData"]
    element.VR = VR.OB if bits_allocated <= 8 else VR.OW
    element.is_undefined_length = False


def transcode(ds: Dataset, target_uid: str, *, max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES) -> Dataset:
    """Deliver ``ds`` in ``target_uid``, never claiming losslessness falsely.

    * same syntax: returns ``ds`` itself (no copy);
    * native little endian target: :func:`decompress` (lossy sources stay marked
      lossy with *Lossy Image Compression* "01");
    * a :data:`LOSSLESS_SYNTAXES` target: :func:`compress`, decompressing lossless
      encapsulated sources first;
    * lossy source to a lossless encapsulated target, any other target (including
      lossy ones, which we do not encode) or unknown UID: :class:`CodecUnsupported`.
    """
    target = UID(_resolve_target(target_uid))
    source = transfer_syntax(ds)
    if source == target:
        return ds
    if target in _NATIVE_TARGETS:
        return decompress(ds, target, max_pixel_bytes=max_pixel_bytes)
    if target == ExplicitVRBigEndian:
        raise CodecUnsupported("Explicit VR Big Endian is retired: only little endian native syntaxes are written")
    if target not in LOSSLESS_SYNTAXES.values():
        raise CodecUnsupported(f"cannot produce transfer syntax {target}")
    if is_lossy(ds):
        raise CodecUnsupported(
            f"source is lossy ({source.name}); re-encoding it as {target.name} would claim losslessness falsely"
        )
    if source in NATIVE_SYNTAXES:
        return compress(ds, target, max_pixel_bytes=max_pixel_bytes)
    if source not in _LOSSLESS_ENCAPSULATED:
        raise CodecUnsupported(f"unknown source transfer syntax {source}")
    native = decompress(ds, ExplicitVRLittleEndian, max_pixel_bytes=max_pixel_bytes)
    return compress(native, target, max_pixel_bytes=max_pixel_bytes)


# --------------------------------------------------------------------------- pydicom plugin
# pydicom decoding plugin contract (pydicom.pixels.decoders): the module named in
# ``Decoder.add_plugin`` must provide ``is_available(uid)``, ``DECODER_DEPENDENCIES``
# and the frame function. These two names are for pydicom, not for callers.

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
    header = _jpeg_header(src)
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


def _register_jpeg_plugin() -> None:
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


_register_jpeg_plugin()
