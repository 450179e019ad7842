"""Rendering of DICOM frames to 8-bit JPEG or PNG for viewers and thumbnails.

The pipeline follows the DICOM grayscale and colour display chain (PS3.3 C.11, PS3.4
N.2): stored values -> Modality LUT (rescale slope/intercept or a Modality LUT
Sequence) -> VOI (window centre/width from the request, else from the dataset, else a
VOI LUT Sequence, else the frame's min/max) -> MONOCHROME1 / Presentation LUT Shape
inversion -> 8 bits. Colour images are converted to RGB (YBR via pydicom's
``convert_color_space``, PALETTE COLOR via ``apply_color_lut``) and scaled to 8 bits.

Decoding goes through :func:`storage.pixels.decode.decode_frame`, so the same size
limits and hostile-input checks apply, and only the requested frame is decoded. These
are pure functions of a dataset; the viewer calls them in its own (web server)
process for WADO-RS rendered resources and thumbnails.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    convert_color_space,
)

from storage.pixels.decode import decode_frame
from storage.pixels.errors import CodecUnsupported
from storage.pixels.geometry import DEFAULT_MAX_PIXEL_BYTES, frame_count

__all__ = ["MAX_OUTPUT_SIDE", "RENDER_MEDIA_TYPES", "render", "thumbnail"]

#: Media types :func:`render` produces.
RENDER_MEDIA_TYPES = frozenset({"image/jpeg", "image/png"})

#: Longest side of any rendered image: a viewport may enlarge small images (PS3.18
#: rendered resources fit the viewport) but never beyond this.
MAX_OUTPUT_SIDE = 4096

#: What pydicom raises for malformed LUT attributes (missing, wrong length or type).
_LUT_ERRORS = (AttributeError, IndexError, KeyError, TypeError, ValueError)

#: VOI LUT Function values (0028,1056) understood in ``window``.
VOI_FUNCTIONS = frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"})


def _frame_value(ds: Dataset, frame: int, sequence: str, keyword: str) -> object | None:
    """A functional-group attribute for ``frame``, else the top-level attribute.

    Enhanced multi-frame objects keep rescale and window values in the Per-frame or
    Shared Functional Groups (e.g. Pixel Value Transformation, Frame VOI LUT); classic
    objects keep them at the top level.
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    groups = []
    if per_frame and frame < len(per_frame):
        groups.append(per_frame[frame])
    if shared:
        groups.append(shared[0])
    for group in groups:
        items = group.get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return ds.get(keyword)


def _first_float(value: object | None) -> float | None:
    """First value of a possibly multi-valued DS/IS attribute as a finite float."""
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _modality(arr: np.ndarray, ds: Dataset, frame: int) -> np.ndarray:
    """Apply the Modality LUT: rescale slope/intercept, or a Modality LUT Sequence."""
    if "ModalityLUTSequence" in ds:
        try:
            return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
        except _LUT_ERRORS:  # malformed LUT: fall back to identity rather than fail
            return arr.astype(np.float32)
    slope = _first_float(_frame_value(ds, frame, "PixelValueTransformationSequence", "RescaleSlope"))
    intercept = _first_float(_frame_value(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept"))
    out = arr.astype(np.float32)
    if slope is not None and slope != 1.0:
        out *= np.float32(slope)
    if intercept:
        out += np.float32(intercept)
    return out


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Map values to [0, 1] with a VOI window (PS3.3 C.11.2.1.2-3)."""
    function = (function or "LINEAR").strip().upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (values - center) / width, -80.0, 80.0)))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    # LINEAR: defined for width >= 1
    width = max(width, 1.0)
    if width == 1.0:
        return (values > center - 0.5).astype(np.float32)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _grayscale(
    arr: np.ndarray,
    ds: Dataset,
    frame: int,
    photometric: str,
    window: tuple[float, float, str] | None,
) -> np.ndarray:
    """Stored grayscale values to display levels 0-255 (uint8)."""
    values = _modality(arr, ds, frame)
    scaled: np.ndarray | None = None
    if window is not None:
        center, width, function = window
        scaled = _window(values, float(center), float(width), function)
    else:
        center = _first_float(_frame_value(ds, frame, "FrameVOILUTSequence", "WindowCenter"))
        width = _first_float(_frame_value(ds, frame, "FrameVOILUTSequence", "WindowWidth"))
        if center is not None and width is not None and width > 0:
            function = _frame_value(ds, frame, "FrameVOILUTSequence", "VOILUTFunction")
            scaled = _window(values, center, width, str(function or "LINEAR"))
        elif "VOILUTSequence" in ds and np.all(np.mod(values, 1) == 0):
            scaled = _voi_lut(values, ds)
    if scaled is None:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    invert = photometric == "MONOCHROME1"
    if str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE":
        invert = not invert
    if invert:
        scaled = 1.0 - scaled
    return np.rint(np.nan_to_num(scaled) * 255.0).astype(np.uint8)


def _voi_lut(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Apply the first VOI LUT Sequence item, normalised by its nominal bit depth."""
    try:
        out = apply_voi(values.astype(np.int64), ds)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    except _LUT_ERRORS:  # malformed LUT: use min/max instead
        return None
    top = float(2**bits - 1) if 0 < bits <= 16 else float(out.max() or 1)
    return np.clip(out.astype(np.float32) / top, 0.0, 1.0)


def _to_8bit(arr: np.ndarray, bits: int) -> np.ndarray:
    """Scale unsigned colour samples with ``bits`` significant bits to 0-255."""
    if arr.dtype == np.uint8 and bits <= 8:
        return arr
    top = float(2**bits - 1) if 0 < bits <= 32 else float(arr.max() or 1)
    return np.rint(np.clip(arr.astype(np.float32) / top, 0.0, 1.0) * 255.0).astype(np.uint8)


def _display_array(
    ds: Dataset,
    frame: int,
    window: tuple[float, float, str] | None,
    max_pixel_bytes: int,
) -> np.ndarray:
    """Decode ``frame`` and turn it into an 8-bit grayscale (2-D) or RGB (3-D) array."""
    arr, photometric = decode_frame(ds, frame, max_pixel_bytes=max_pixel_bytes)
    bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    if arr.ndim == 2:
        if photometric == "PALETTE COLOR":
            try:
                rgb = apply_color_lut(arr, ds)
            except Exception as exc:
                raise CodecUnsupported(f"cannot apply the palette colour LUT: {exc}") from exc
            depth = 16 if rgb.dtype.itemsize > 1 else 8
            return _to_8bit(rgb, depth)
        return _grayscale(arr, ds, frame, photometric, window)
    if arr.ndim == 3 and arr.shape[2] == 3:
        if photometric.startswith("YBR"):
            try:
                arr = convert_color_space(arr, photometric, "RGB")
            except Exception as exc:
                raise CodecUnsupported(f"cannot convert {photometric} to RGB: {exc}") from exc
        if ds.get("PixelRepresentation", 0) == 1:
            arr = np.clip(arr, 0, None)
        return _to_8bit(arr, bits_stored)
    raise CodecUnsupported(f"cannot render {photometric} data of shape {arr.shape}")


def _fit(rows: int, columns: int, viewport: tuple[int, int] | None) -> tuple[int, int]:
    """Output (rows, columns) fitting ``viewport`` with the aspect ratio kept.

    Scales to the largest size inside the viewport (up or down), but never beyond
    :data:`MAX_OUTPUT_SIDE` on either side.
    """
    limit_rows, limit_cols = (MAX_OUTPUT_SIDE, MAX_OUTPUT_SIDE)
    if viewport is not None:
        v_rows, v_cols = (int(v) for v in viewport)
        if v_rows < 1 or v_cols < 1:
            raise ValueError(f"viewport must be positive, got {viewport}")
        limit_rows, limit_cols = (
            min(v_rows, MAX_OUTPUT_SIDE),
            min(v_cols, MAX_OUTPUT_SIDE),
        )
        scale = min(limit_rows / rows, limit_cols / columns)
    else:
        scale = min(1.0, limit_rows / rows, limit_cols / columns)
    return max(1, round(rows * scale)), max(1, round(columns * scale))


def render(
    ds: Dataset,
    frame: int | None = None,
    *,
    media_type: str = "image/jpeg",
    window: tuple[float, float, str] | None = None,
    viewport: tuple[int, int] | None = None,
    quality: int = 90,
    max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES,
) -> bytes:
    """Render one frame as an 8-bit JPEG or PNG.

    Parameters
    ----------
    ds : Dataset
        A dataset with *Pixel Data* in any syntax :mod:`storage.pixels` can decode.
    frame : int, optional
        0-based frame index; ``None`` renders the first frame.
    media_type : str
        ``"image/jpeg"`` (default) or ``"image/png"``.
    window : tuple[float, float, str], optional
        (centre, width, VOI LUT function: ``"LINEAR"``, ``"LINEAR_EXACT"`` or
        ``"SIGMOID"``) in modality units (e.g. HU), overriding the dataset's window.
        Ignored for colour images.
    viewport : tuple[int, int], optional
        (rows, columns) to fit the image into, keeping its aspect ratio; small
        images are enlarged to fit, but no side exceeds :data:`MAX_OUTPUT_SIDE`.
        Without a viewport the image keeps its size (shrunk only if over the cap).
    quality : int
        JPEG quality 1-100 (ignored for PNG).
    max_pixel_bytes : int
        Refuse images whose pixels exceed this many bytes (see :mod:`storage.pixels.geometry`).

    Returns
    -------
    bytes
        The encoded image.

    Raises
    ------
    CodecError
        The pixel data cannot be decoded or rendered, or ``media_type`` is not one
        of :data:`RENDER_MEDIA_TYPES` (:class:`CodecUnsupported`).
    IndexError
        ``frame`` is out of range.
    ValueError
        Bad ``window``, ``viewport`` or ``quality`` values.
    """
    media_type = media_type.strip().lower()
    if media_type not in RENDER_MEDIA_TYPES:
        raise CodecUnsupported(f"cannot render as {media_type}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be 1-100, got {quality}")
    if window is not None:
        center, width, function = window
        if not (math.isfinite(float(center)) and math.isfinite(float(width)) and float(width) > 0):
            raise ValueError(f"window needs a finite centre and a positive width, got {window}")
        if str(function).strip().upper() not in VOI_FUNCTIONS:
            raise ValueError(f"unknown VOI LUT function {function!r}")
    index = 0 if frame is None else frame
    pixels = _display_array(ds, index, window, max_pixel_bytes)
    image = Image.fromarray(np.ascontiguousarray(pixels))  # uint8: "L" or "RGB"
    rows, columns = _fit(pixels.shape[0], pixels.shape[1], viewport)
    if (rows, columns) != (pixels.shape[0], pixels.shape[1]):
        shrinking = rows < pixels.shape[0]
        resample = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC
        image = image.resize((columns, rows), resample, reducing_gap=3.0 if shrinking else None)
    out = io.BytesIO()
    if media_type == "image/jpeg":
        image.save(out, format="JPEG", quality=int(quality))
    else:  # zlib level 1: about 5x faster than Pillow's default 6, some 15% larger
        image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def thumbnail(ds: Dataset, size: int = 128, *, max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES) -> bytes:
    """A JPEG of the middle frame fitted into ``size`` x ``size`` pixels.

    The middle frame represents a multi-frame object (cine, volume) better than the
    first one; the dataset's own window is used.
    """
    middle = frame_count(ds) // 2
    return render(
        ds,
        middle,
        media_type="image/jpeg",
        viewport=(size, size),
        quality=80,
        max_pixel_bytes=max_pixel_bytes,
    )
