"""The *Image Pixel* attributes, validated before anything is decoded.

:func:`pixel_geometry` checks the attributes with exact integer arithmetic and refuses
images whose decoded size exceeds ``max_pixel_bytes`` (default 2 GiB), so absurd or
hostile values fail fast with :class:`~storage.pixels.errors.InvalidPixelData`
instead of making a decoder allocate for them. :func:`check_native_length` holds
native *Pixel Data* to the length the attributes imply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from storage.pixels.errors import CodecUnsupported, InvalidPixelData

__all__ = [
    "DEFAULT_MAX_PIXEL_BYTES",
    "PixelGeometry",
    "check_native_length",
    "frame_count",
    "has_pixel_data",
    "normalise",
    "pixel_geometry",
]

#: Refuse images whose decoded pixels would need more memory than this (2 GiB).
DEFAULT_MAX_PIXEL_BYTES = 2 * 1024**3


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


def has_pixel_data(ds: Dataset) -> bool:
    """Whether the dataset holds pixels: *Pixel Data*, *Float* or *Double Float Pixel Data*.

    Only integer *Pixel Data* can be compressed; the float variants make
    :func:`~storage.pixels.encode.compress` raise :class:`CodecUnsupported`.
    """
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def check_native_length(ds: Dataset, geometry: PixelGeometry, *, strict: bool) -> None:
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


def normalise(arr: np.ndarray, geometry: PixelGeometry) -> np.ndarray:
    """Shape (frames, rows, cols[, samples]) in the native-endian container dtype."""
    shape = (geometry.frames, geometry.rows, geometry.columns)
    if geometry.samples > 1:
        shape += (geometry.samples,)
    return arr.astype(geometry.container_dtype, copy=False).reshape(shape)
