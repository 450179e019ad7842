"""Decompression and transcoding between transfer syntaxes.

:func:`decompress` writes native little endian *Pixel Data* from any supported
syntax; :func:`transcode` delivers a dataset in the syntax a peer asked for, through
:func:`decompress` and :func:`~storage.pixels.encode.compress`, and never re-encodes
a lossy source into a syntax that would claim it is lossless.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian
from pydicom.valuerep import VR

from storage.pixels.datasets import copy_dataset, set_syntax
from storage.pixels.decode import decode_pixels
from storage.pixels.encode import compress
from storage.pixels.errors import CodecUnsupported
from storage.pixels.frames import native_le_bytes
from storage.pixels.geometry import DEFAULT_MAX_PIXEL_BYTES, check_native_length, normalise, pixel_geometry
from storage.pixels.syntaxes import (
    LOSSLESS_ENCAPSULATED,
    LOSSLESS_SYNTAXES,
    LOSSY_METHODS,
    NATIVE_SYNTAXES,
    NATIVE_TARGETS,
    is_lossy,
    is_lossy_syntax,
    resolve_target,
    transfer_syntax,
)

__all__ = ["decompress", "transcode"]


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
    viewers expect. Lossy sources (see :func:`~storage.pixels.syntaxes.is_lossy`) get *Lossy Image
    Compression* "01" (plus the method, if absent) because their pixels are not the
    originals.
    Native sources are only re-encoded (byte order, VR); the pixel bytes are not
    decoded, so 1-bit and ``YBR_FULL_422`` data survive unchanged.

    Raises
    ------
    CodecUnsupported, InvalidPixelData, DecodeError
    """
    target = UID(str(target_uid).strip())
    if target not in NATIVE_TARGETS:
        raise CodecUnsupported(f"decompress() writes little endian native syntaxes, not {target}")
    if "PixelData" not in ds:
        raise CodecUnsupported("dataset has no Pixel Data")
    syntax = transfer_syntax(ds)
    if syntax in NATIVE_SYNTAXES:
        geometry = pixel_geometry(ds, max_pixel_bytes=max_pixel_bytes)
        check_native_length(ds, geometry, strict=False)
        data = native_le_bytes(ds, geometry, syntax)
        out = copy_dataset(ds, syntax, target)
        _set_native_pixels(out, data, geometry.bits_allocated)
        set_syntax(out, target)
        return out

    lossy = is_lossy(ds)
    # Colour conversion (YBR_FULL/_422 -> RGB) is itself lossy (rounding), so only
    # codestreams of a lossy syntax get it; lossless syntaxes keep the stored values.
    convert = is_lossy_syntax(syntax)
    arr, properties, geometry = decode_pixels(ds, raw=not convert, max_pixel_bytes=max_pixel_bytes)
    arr = normalise(arr, geometry)
    if geometry.bits_allocated == 1:
        data = np.packbits(arr.ravel(), bitorder="little").tobytes()
    else:
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    out = copy_dataset(ds, syntax, target)
    _set_native_pixels(out, data, geometry.bits_allocated)
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in out:
            delattr(out, keyword)
    out.PhotometricInterpretation = properties.get("photometric_interpretation", geometry.photometric)
    if geometry.samples > 1:
        out.PlanarConfiguration = 0
    if lossy:
        out.LossyImageCompression = "01"
        method = LOSSY_METHODS.get(syntax)
        if method and "LossyImageCompressionMethod" not in out:
            out.LossyImageCompressionMethod = method
    set_syntax(out, target)
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
    * a :data:`~storage.pixels.syntaxes.LOSSLESS_SYNTAXES` target:
      :func:`~storage.pixels.encode.compress`, decompressing lossless encapsulated
      sources first;
    * lossy source to a lossless encapsulated target, any other target (including
      lossy ones, which we do not encode) or unknown UID: :class:`CodecUnsupported`.
    """
    target = UID(resolve_target(target_uid))
    source = transfer_syntax(ds)
    if source == target:
        return ds
    if target in NATIVE_TARGETS:
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
    if source not in LOSSLESS_ENCAPSULATED:
        raise CodecUnsupported(f"unknown source transfer syntax {source}")
    native = decompress(ds, ExplicitVRLittleEndian, max_pixel_bytes=max_pixel_bytes)
    return compress(native, target, max_pixel_bytes=max_pixel_bytes)
