"""Lossless compression of native *Pixel Data* (:func:`compress`).

* **Lossless means bit-exact pixel values.** :func:`compress` decodes what it encoded
  and compares it with the original values (:mod:`storage.pixels.verify`); whatever a
  codec cannot represent exactly raises
  :class:`~storage.pixels.errors.CodecUnsupported` *before* encoding, with a
  ``reason`` that says why, so the caller can keep the original.
* **Unused high bits.** When *Bits Stored* < *Bits Allocated* the pixel value is the
  low *Bits Stored* bits. The codecs store only those, so the unused high bits do not
  survive compression. :func:`compress` therefore accepts unused bits only when they
  carry no information: all zero, or (signed data) a copy of the sign bit. Negative
  values stored *without* sign extension are accepted and come back sign-extended
  (same value). Anything else, e.g. retired overlay planes in bits 12-15, raises
  :class:`~storage.pixels.errors.CodecUnsupported`.
* **Colour.** RGB encoded with JPEG 2000 or HTJ2K uses the reversible colour transform
  and is labelled ``YBR_RCT`` as PS3.5 8.2.4 requires (about half the size of
  component-wise coding on photographs); decoding gives RGB back. JPEG-LS and RLE keep
  ``RGB``. All encapsulated output uses *Planar Configuration* 0 (PS3.5 8.2 and the
  note to G.2). Native ``YBR_FULL_422`` is refused: its chroma is subsampled on disk,
  and re-encoding would first have to upsample it.

Notes
-----
HTJ2K is encoded with ``imagecodecs.htj2k_encode`` (OpenJPH), which writes the sample
container size (8 or 16 bits) as the codestream precision rather than *Bits Stored*;
the coding is still reversible and the values are verified through pydicom's
independent OpenJPEG decoder. The other targets use pydicom's encoders. JPEG Lossless
SV1 (.4.70) is not offered as a target because pydicom 3.0 has no encoder for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import UID, ExplicitVRBigEndian, HTJ2KLossless, JPEG2000Lossless, JPEGLSLossless, RLELossless
from pydicom.valuerep import VR

from storage.pixels.datasets import copy_dataset, set_syntax
from storage.pixels.decode import decode_pixels
from storage.pixels.errors import CodecError, CodecUnsupported
from storage.pixels.geometry import (
    DEFAULT_MAX_PIXEL_BYTES,
    PixelGeometry,
    check_native_length,
    has_pixel_data,
    normalise,
    pixel_geometry,
)
from storage.pixels.syntaxes import LOSSLESS_SYNTAXES, NATIVE_SYNTAXES, resolve_target, transfer_syntax
from storage.pixels.verify import verify_lossless

try:  # imagecodecs is a hard requirement for HTJ2K
    import imagecodecs

    _HAVE_IMAGECODECS = True
except ImportError:  # pragma: no cover - the project's venv always has it
    imagecodecs = None
    _HAVE_IMAGECODECS = False

__all__ = ["compress"]

# Photometric interpretations the encoders accept from native input.
_ENCODABLE_PI = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL"})


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
        One of :data:`~storage.pixels.syntaxes.LOSSLESS_SYNTAXES` (UID or short name such as ``"jpeg-ls"``).
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
    target = resolve_target(target_uid)
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
    check_native_length(ds, geometry, strict=True)
    reason = _unsupported_reason(geometry, target)
    if reason:
        raise CodecUnsupported(reason)
    _check_unused_bits(ds, geometry, syntax)
    original, _, _ = decode_pixels(ds, raw=True, max_pixel_bytes=max_pixel_bytes, strict_length=True)
    original = normalise(original, geometry)
    frames = _encode_frames(original, geometry, target)
    total = sum(len(f) + (len(f) % 2) + 8 for f in frames)
    if total >= 2**32 - 8 * len(frames):
        raise CodecUnsupported("compressed data too large for a Basic Offset Table")

    out = copy_dataset(ds, syntax, target)
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
    set_syntax(out, target)
    if verify:
        verify_lossless(out, original, max_pixel_bytes)
    return out
