"""Tests for :mod:`storage.pixels`: compression, transcoding, frames and rendering.

The corpus is every readable DICOM file with *Pixel Data* shipped in pydicom's
``test_files`` folder and in the pydicom-data package: native files are compressed to
every lossless target and must round-trip bit-exactly through a Part-10 write and
read (or be refused with a reason); encapsulated files must decompress to what
pydicom decodes directly, refuse :func:`compress`, and refuse lossy-to-lossless
re-encoding. Frame splitting is compared with pydicom's own, rendering with Pillow,
and hostile datasets must fail fast, with a :class:`CodecError`, without allocating
what their attributes ask for.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import io
import time
import tracemalloc
import warnings
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames, parse_basic_offsets, parse_fragments
from pydicom.pixels import pixel_array as pydicom_pixel_array
from pydicom.tag import Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from storage import pixels
from storage.pixels import CodecError, CodecUnsupported, InvalidPixelData, encode

# --------------------------------------------------------------------------- corpus


def _data_roots() -> list[tuple[str, Path]]:
    """(label, folder) of the two test-image collections that are installed."""
    roots = [("pydicom", Path(pydicom.__file__).parent / "data" / "test_files")]
    try:
        dist = importlib.metadata.distribution("pydicom-data")
        roots.append(("pydicom-data", Path(str(dist.locate_file("data_store/data")))))
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - optional package
        pass
    return [(label, path) for label, path in roots if path.is_dir()]


def _collect() -> tuple[list, list]:
    """Split the corpus into native and encapsulated files, each as pytest params."""
    native, encapsulated = [], []
    for label, root in _data_roots():
        for path in sorted(root.rglob("*")):
            if not path.is_file():
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(path, force=True, defer_size="1 KB")
                if "PixelData" not in ds:
                    continue
                syntax = pixels.transfer_syntax(ds)
            except Exception:  # noqa: BLE001 - not DICOM, or unusable: not part of the corpus
                continue
            param = pytest.param(path, id=f"{label}/{path.relative_to(root)}")
            (native if syntax in pixels.NATIVE_SYNTAXES else encapsulated).append(param)
    return native, encapsulated


NATIVE_FILES, ENCAPSULATED_FILES = _collect()
TARGETS = [pytest.param(uid, id=name) for name, uid in pixels.LOSSLESS_SYNTAXES.items()]

#: Common cases every lossless target must keep handling: CT and MR (signed/unsigned,
#: 12-16 bits, MONOCHROME1/2), 8-bit RGB in both planar configurations, palette colour,
#: multi-frame, big endian, implicit VR and deflated sources.
MUST_SUPPORT = {
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "693_UNCR.dcm",
    "MR2_UNCR.dcm",
    "RG3_UNCR.dcm",
    "eCT_Supplemental.dcm",
    "emri_small.dcm",
    "SC_rgb.dcm",
    "SC_rgb_2frame.dcm",
    "US1_UNCR.dcm",
    "color-pl.dcm",
    "OBXXXX1A.dcm",
    "image_dfl.dcm",
}


@functools.cache
def _file_bytes(path: Path) -> bytes:
    return path.read_bytes()


def _read(path: Path) -> Dataset:
    """A fresh dataset for ``path`` (cached bytes, new objects each call)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(_file_bytes(path)), force=True)


def _reference(ds: Dataset) -> np.ndarray | None:
    """What pydicom decodes, or (no transfer syntax in the file) what storage.pixels infers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ds.pixel_array
        except Exception:  # noqa: BLE001 - pydicom cannot decode it; try with an inferred syntax
            pass
        if getattr(ds, "file_meta", None) is not None and "TransferSyntaxUID" in ds.file_meta:
            return None
        try:
            return pixels.pixel_array(ds)
        except CodecError:
            return None


def _roundtrip(ds: Dataset) -> Dataset:
    """Write ``ds`` as Part 10 and read it back."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _make_dataset(
    arr: np.ndarray,
    *,
    bits_stored: int,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    syntax: str = ExplicitVRLittleEndian,
    pixel_bytes: bytes | None = None,
) -> Dataset:
    """A minimal Secondary Capture dataset holding ``arr`` (frames, rows, cols[, 3])."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    frames, rows, columns = arr.shape[:3]
    samples = arr.shape[3] if arr.ndim == 4 else 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes() if pixel_bytes is None else pixel_bytes
    ds["PixelData"].VR = "OW" if arr.dtype.itemsize > 1 else "OB"
    return ds


def _name(path: Path) -> str:
    return path.name


# --------------------------------------------------------------------------- native files


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("path", NATIVE_FILES)
def test_compress_native_roundtrip(path: Path, target: str) -> None:
    """Every native image compresses to every target bit-exactly, or is refused with a reason."""
    ds = _read(path)
    reference = _reference(ds)
    if reference is None:  # unusable pixel data: must fail cleanly, not crash
        with pytest.raises(CodecError):
            pixels.compress(ds, target)
        return
    before_pixels, before_syntax = ds.PixelData, pixels.transfer_syntax(ds)
    # The built-in verification is exercised on every image up to 1 MP; above that the
    # Part-10 round trip below is the (stronger) check and one decode less keeps it fast.
    verify = reference.size <= 1_000_000 * (3 if reference.ndim > 2 and reference.shape[-1] == 3 else 1)
    try:
        out = pixels.compress(ds, target, verify=verify)
    except CodecUnsupported as exc:
        assert exc.reason, "CodecUnsupported must say why"
        assert _name(path) not in MUST_SUPPORT, f"{_name(path)} regressed: {exc.reason}"
        return
    # The input is untouched; the output is a new, encapsulated dataset.
    assert out is not ds
    assert ds.PixelData is before_pixels and pixels.transfer_syntax(ds) == before_syntax
    assert out.file_meta.TransferSyntaxUID == target
    assert out.SOPInstanceUID == ds.SOPInstanceUID
    assert out.get("LossyImageCompression") == ds.get("LossyImageCompression")
    frames = pixels.frame_count(ds)
    assert parse_fragments(out.PixelData)[0] == frames + 1  # Basic Offset Table + one per frame
    assert len(parse_basic_offsets(out.PixelData)) == (frames if frames > 1 else 1)
    back = _roundtrip(out)
    assert back.file_meta.TransferSyntaxUID == target
    assert np.array_equal(back.pixel_array, reference)


def test_must_support_files_are_in_the_corpus() -> None:
    """Guard against the regression list silently matching nothing."""
    names = {_name(p.values[0]) for p in NATIVE_FILES}
    assert MUST_SUPPORT <= names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("liver.dcm", "1-bit"),
        ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422"),
        ("rtdose.dcm", "32"),
        ("MR_small_padded.dcm", "excess"),
    ],
)
def test_unsupported_reasons(name: str, expected: str) -> None:
    """The refusals we know of come with an explanation a human can act on."""
    path = next(p.values[0] for p in NATIVE_FILES if _name(p.values[0]) == name)
    with pytest.raises(CodecUnsupported) as info:
        pixels.compress(_read(path), JPEGLSLossless)
    assert expected in info.value.reason


def test_compress_accepts_short_names_and_rejects_other_targets() -> None:
    ds = _read(next(p.values[0] for p in NATIVE_FILES if _name(p.values[0]) == "CT_small.dcm"))
    assert pixels.compress(ds, "htj2k").file_meta.TransferSyntaxUID == HTJ2KLossless
    for target in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.3.4", ExplicitVRLittleEndian):
        with pytest.raises(CodecUnsupported):
            pixels.compress(ds, target)


def test_rgb_photometric_per_target() -> None:
    """RGB becomes YBR_RCT (reversible colour transform) only in the JPEG 2000 family."""
    ds = _read(next(p.values[0] for p in NATIVE_FILES if _name(p.values[0]) == "color-pl.dcm"))
    assert ds.PlanarConfiguration == 1
    expected = {JPEGLSLossless: "RGB", RLELossless: "RGB", JPEG2000Lossless: "YBR_RCT", HTJ2KLossless: "YBR_RCT"}
    for target, photometric in expected.items():
        out = pixels.compress(ds, target)
        assert out.PhotometricInterpretation == photometric
        assert out.PlanarConfiguration == 0
        assert np.array_equal(_roundtrip(out).pixel_array, ds.pixel_array)


# --------------------------------------------------------------------------- unused high bits


def _mr(rows: int = 32, columns: int = 48, frames: int = 2, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-2048, 2048, (frames, rows, columns), dtype=np.int16)


@pytest.mark.parametrize("target", TARGETS)
def test_signed_12_bit_with_or_without_sign_extension(target: str) -> None:
    """Negative 12-bit values stored without sign extension come back sign-extended, equal."""
    values = _mr()
    extended = _make_dataset(values, bits_stored=12, signed=True)
    unextended = _make_dataset(
        values, bits_stored=12, signed=True, pixel_bytes=(values & 0x0FFF).astype("<i2").tobytes()
    )
    for ds in (extended, unextended):
        assert np.array_equal(ds.pixel_array, values)
        assert np.array_equal(_roundtrip(pixels.compress(ds, target)).pixel_array, values)


@pytest.mark.parametrize("target", TARGETS)
def test_information_in_unused_bits_is_refused(target: str) -> None:
    """Bits above Bits Stored that are not zero / a sign extension would be lost."""
    values = (_mr() & 0x0FFF).astype(np.uint16)
    garbage = values.copy()
    garbage[0, 3, 5] |= 0x4000  # e.g. a retired overlay plane in bit 14
    ds = _make_dataset(values, bits_stored=12, pixel_bytes=garbage.astype("<u2").tobytes())
    with pytest.raises(CodecUnsupported, match="above Bits Stored"):
        pixels.compress(ds, target)
    signed = _mr()
    bad = signed.view(np.uint16).copy()
    bad[1, 0, 0] = 0x7000 | (bad[1, 0, 0] & 0x07FF)  # positive value with unused bits set
    ds = _make_dataset(signed, bits_stored=12, signed=True, pixel_bytes=bad.astype("<u2").tobytes())
    with pytest.raises(CodecUnsupported, match="above Bits Stored"):
        pixels.compress(ds, target)


def test_padding_value_outside_bits_stored_is_refused() -> None:
    """Padding pixels of 0xFFFF in 12-bit data would not survive: keep the original."""
    values = (_mr(frames=1) & 0x0FFF).astype(np.uint16)
    values[0, :4, :] = 0xFFFF
    ds = _make_dataset(values, bits_stored=12)
    ds.PixelPaddingValue = 0xFFFF
    with pytest.raises(CodecUnsupported, match="above Bits Stored"):
        pixels.compress(ds, JPEGLSLossless)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_ybr_full_uncompressed.dcm", "US1_UNCR.dcm", "emri_small.dcm"])
def test_compress_then_decompress_restores_the_stored_bytes(name: str, target: str) -> None:
    """Stored values survive byte for byte, colour model included (YBR_FULL stays YBR_FULL)."""
    ds = _read(next(p.values[0] for p in NATIVE_FILES if _name(p.values[0]) == name))
    back = pixels.decompress(_roundtrip(pixels.compress(ds, target)))
    assert back.PhotometricInterpretation == ds.PhotometricInterpretation
    assert back.PixelData == ds.PixelData
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_verification_catches_a_lying_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """If an encoder produced different pixels, compress raises instead of returning them."""
    real = encode._encode_htj2k

    def off_by_one(frame: np.ndarray, geometry: pixels.PixelGeometry) -> bytes:
        return real(frame ^ 1, geometry)

    monkeypatch.setattr(encode, "_encode_htj2k", off_by_one)
    with pytest.raises(pixels.VerificationFailed):
        pixels.compress(_ct(), HTJ2KLossless)
    assert pixels.compress(_ct(), HTJ2KLossless, verify=False)  # the unverified path would not notice


@pytest.mark.parametrize("target", TARGETS)
def test_odd_sizes_and_8_bit_in_16_bit_container(target: str) -> None:
    """Odd dimensions and Bits Stored 8 in a 16-bit container round-trip or are refused."""
    rng = np.random.default_rng(3)
    for arr, bits in (
        (rng.integers(0, 256, (3, 37, 41), dtype=np.uint16), 8),
        (rng.integers(0, 4096, (1, 33, 65), dtype=np.uint16), 12),
        (rng.integers(0, 256, (2, 35, 33, 3), dtype=np.uint8), 8),
    ):
        ds = _make_dataset(arr, bits_stored=bits, photometric="RGB" if arr.ndim == 4 else "MONOCHROME2")
        try:
            out = pixels.compress(ds, target)
        except CodecUnsupported as exc:
            assert exc.reason
            continue
        assert np.array_equal(_roundtrip(out).pixel_array, arr if arr.shape[0] > 1 else arr[0])


# --------------------------------------------------------------------------- encapsulated files


@pytest.mark.slow
@pytest.mark.parametrize("path", ENCAPSULATED_FILES)
def test_encapsulated_input(path: Path) -> None:
    """Compressed inputs: decompression equals direct decoding; no lossless re-claims."""
    ds = _read(path)
    syntax = pixels.transfer_syntax(ds)
    assert pixels.transcode(ds, syntax) is ds
    with pytest.raises(CodecUnsupported):
        pixels.compress(ds, JPEGLSLossless)
    reference = _reference(ds)
    if reference is None:  # pydicom cannot decode it either: a clean CodecError
        with pytest.raises(CodecError):
            pixels.transcode(ds, ExplicitVRLittleEndian)
        return
    if reference.nbytes <= 20_000_000:  # large ones are covered by the transcode below
        assert np.array_equal(pixels.pixel_array(ds), reference)
    native = pixels.transcode(ds, ExplicitVRLittleEndian)
    assert native.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    if reference.nbytes <= 20_000_000:
        assert np.array_equal(_roundtrip(native).pixel_array, reference)
    else:  # skip writing ~100 MB: native pixels are compared in place
        assert np.array_equal(pixels.pixel_array(native), reference)
    lossy = pixels.is_lossy(ds)
    if lossy:
        assert native.LossyImageCompression == "01"
        for target in pixels.LOSSLESS_SYNTAXES.values():
            with pytest.raises(CodecUnsupported, match="lossy"):
                pixels.transcode(ds, target)
    elif reference.nbytes <= 2_000_000:  # lossless to lossless (bounded to keep the suite fast)
        target = HTJ2KLossless if syntax != HTJ2KLossless else JPEGLSLossless
        try:
            out = pixels.transcode(ds, target)
        except CodecUnsupported as exc:
            assert exc.reason
        else:
            assert np.array_equal(_roundtrip(out).pixel_array, reference)


def test_transcode_native_to_native_and_unknown_targets() -> None:
    path = next(p.values[0] for p in NATIVE_FILES if _name(p.values[0]) == "MR_small_bigendian.dcm")
    ds = _read(path)
    assert pixels.transfer_syntax(ds) == ExplicitVRBigEndian
    for target in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        out = pixels.transcode(ds, target)
        back = _roundtrip(out)
        assert back.file_meta.TransferSyntaxUID == target
        assert np.array_equal(back.pixel_array, ds.pixel_array)
    for target in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91", "1.2.3"):
        with pytest.raises(CodecUnsupported):
            pixels.transcode(ds, target)
    with pytest.raises(CodecUnsupported, match="little endian"):
        pixels.transcode(_ct(), ExplicitVRBigEndian)  # retired: read, never written


def test_jpeg_lossless_decoder_plugin_matches_uncompressed_original() -> None:
    """JPEG Lossless (.4.70) decodes via the imagecodecs plugin to the exact original."""
    jpeg = next(p.values[0] for p in ENCAPSULATED_FILES if _name(p.values[0]) == "SC_rgb_jpeg_gdcm.dcm")
    original = next(p.values[0] for p in NATIVE_FILES if _name(p.values[0]) == "SC_rgb.dcm")
    ds = _read(jpeg)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    assert np.array_equal(pixels.pixel_array(ds), _read(original).pixel_array)


# --------------------------------------------------------------------------- frames


def _native_frame_array(data: bytes, ds: Dataset) -> np.ndarray:
    """Interpret :func:`pixels.get_frame` output (little endian) as a frame array."""
    rows, columns, samples = ds.Rows, ds.Columns, ds.get("SamplesPerPixel", 1)
    if ds.BitsAllocated == 1:
        return np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: rows * columns].reshape(rows, columns)
    kind = "i" if ds.PixelRepresentation else "u"
    arr = np.frombuffer(data, f"<{kind}{ds.BitsAllocated // 8}")
    spare = ds.BitsAllocated - ds.BitsStored  # get_frame is raw: apply Bits Stored as pydicom does
    if spare:
        arr = (arr << spare) >> spare if ds.PixelRepresentation else arr & ((1 << ds.BitsStored) - 1)
    if samples == 1:
        return arr.reshape(rows, columns)
    if ds.get("PlanarConfiguration", 0) == 1:
        return arr.reshape(samples, rows, columns).transpose(1, 2, 0)
    return arr.reshape(rows, columns, samples)


@pytest.mark.parametrize("path", NATIVE_FILES)
def test_get_frame_native(path: Path) -> None:
    """Native frames equal pydicom's own per-frame decoding (little endian, repacked bits)."""
    ds = _read(path)
    if _reference(ds) is None:  # malformed: a clean CodecError
        with pytest.raises(CodecError):
            pixels.get_frame(ds, 0)
        return
    has_syntax = "TransferSyntaxUID" in getattr(ds, "file_meta", {})
    frames = pixels.frame_count(ds)
    for index in range(frames):
        data = pixels.get_frame(ds, index)
        if has_syntax:
            expected = pydicom_pixel_array(ds, index=index, raw=True)
        else:  # no syntax in the file: pydicom cannot split it; compare with our decoding
            expected = pixels.pixel_array(ds, index, raw=True)
        if ds.PhotometricInterpretation == "YBR_FULL_422":  # chroma-subsampled on disk
            assert len(data) == ds.Rows * ds.Columns * 2
            continue
        assert np.array_equal(_native_frame_array(data, ds), expected)
    for bad in (frames, -1):
        with pytest.raises(IndexError):
            pixels.get_frame(ds, bad)


def test_get_frame_unaligned_bit_packed_frames() -> None:
    """1-bit frames of 3x3 pixels start mid-byte; each comes back re-packed from bit 0."""
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2, (5, 3, 3), dtype=np.uint8)
    packed = np.packbits(bits.ravel(), bitorder="little").tobytes()
    ds = _make_dataset(bits, bits_stored=1, pixel_bytes=packed + b"\0" * (len(packed) % 2))
    ds.BitsAllocated = 1
    assert np.array_equal(ds.pixel_array, bits)
    for index in range(5):
        assert np.array_equal(_native_frame_array(pixels.get_frame(ds, index), ds), bits[index])


@pytest.mark.parametrize("path", ENCAPSULATED_FILES)
def test_get_frame_encapsulated(path: Path) -> None:
    """Encapsulated frames equal pydicom's frame split (fragments joined, no item tags)."""
    ds = _read(path)
    frames = pixels.frame_count(ds)
    try:
        expected = list(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception:  # noqa: BLE001 - pydicom cannot split it: we must fail cleanly
        with pytest.raises(CodecError):
            pixels.get_frame(ds, 0)
        return
    if len(expected) < frames:
        with pytest.raises(CodecError):
            pixels.get_frame(ds, frames - 1)
        return
    assert [pixels.get_frame(ds, i) for i in range(frames)] == expected[:frames]
    with pytest.raises(IndexError):
        pixels.get_frame(ds, frames)


@pytest.mark.parametrize(
    ("target", "decode"),
    [
        (JPEGLSLossless, imagecodecs.jpegls_decode),
        (HTJ2KLossless, imagecodecs.htj2k_decode),
        (JPEG2000Lossless, imagecodecs.jpeg2k_decode),
    ],
    ids=["jpeg-ls", "htj2k", "jpeg2000"],
)
def test_frames_of_compressed_output_decode_independently(target: str, decode) -> None:  # noqa: ANN001
    """Each frame located through the Basic Offset Table is a complete codestream."""
    values = (_mr(rows=40, columns=36, frames=6) & 0x0FFF).astype(np.uint16)
    out = pixels.compress(_make_dataset(values, bits_stored=12), target)
    for index in range(6):
        assert np.array_equal(decode(pixels.get_frame(out, index)), values[index])


def test_syntax_classification() -> None:
    lossless = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"]
    lossless += ["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80"]
    lossless += ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.5"]
    lossy = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"]
    lossy += ["1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.4.100"]
    for uid in lossless:
        assert pixels.is_lossless_syntax(uid) and not pixels.is_lossy_syntax(uid), uid
    for uid in lossy:
        assert pixels.is_lossy_syntax(uid) and not pixels.is_lossless_syntax(uid), uid
    assert not pixels.is_lossless_syntax("1.2.3.4") and not pixels.is_lossy_syntax("1.2.3.4")
    assert set(pixels.LOSSLESS_SYNTAXES.values()) <= set(filter(pixels.is_lossless_syntax, lossless))
    assert pixels.NATIVE_SYNTAXES == frozenset(lossless[:4])


def test_has_pixel_data() -> None:
    ds = Dataset()
    assert not pixels.has_pixel_data(ds)
    ds.FloatPixelData = b"\0" * 16
    assert pixels.has_pixel_data(ds)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with pytest.raises(CodecUnsupported, match="float"):
        pixels.compress(ds, JPEGLSLossless)


# --------------------------------------------------------------------------- hostile input


def _absurd(syntax: str) -> Dataset:
    """65535 x 65535 x 1000 frames of 16-bit pixels, backed by 8 bytes of data."""
    ds = _make_dataset(np.zeros((1, 2, 2), np.uint16), bits_stored=16, syntax=syntax)
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 1000
    if syntax != ExplicitVRLittleEndian:
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    return ds


#: Everything that decodes pixels (compress refuses encapsulated input up front).
_DECODING = {
    "compress": lambda ds: pixels.compress(ds, JPEGLSLossless),
    "decompress": lambda ds: pixels.decompress(ds),
    "transcode": lambda ds: pixels.transcode(ds, HTJ2KLossless),
    "pixel_array": lambda ds: pixels.pixel_array(ds),
    "render": lambda ds: pixels.render(ds),
    "thumbnail": lambda ds: pixels.thumbnail(ds),
}
_OPERATIONS = {**_DECODING, "get_frame": lambda ds: pixels.get_frame(ds, pixels.frame_count(ds) - 1)}


def _fails_fast(operation, ds: Dataset, error: type[Exception] = CodecError) -> None:  # noqa: ANN001
    """``operation(ds)`` raises ``error`` within a second and allocates under 16 MiB."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(error):
            operation(ds)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 16 * 1024 * 1024, f"peak allocation {peak} bytes"


@pytest.mark.parametrize("operation", list(_OPERATIONS.values()), ids=list(_OPERATIONS))
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEGLSLossless], ids=["native", "jpeg-ls"])
def test_absurd_geometry_fails_fast(operation, syntax: str) -> None:  # noqa: ANN001
    _fails_fast(operation, _absurd(syntax))
    with pytest.raises(InvalidPixelData, match="limit"):
        pixels.pixel_array(_absurd(syntax))


@pytest.mark.parametrize("operation", list(_OPERATIONS.values()), ids=list(_OPERATIONS))
def test_frames_without_fragments_fail_fast(operation) -> None:  # noqa: ANN001
    """Within the size limit, but 1000 frames claimed over a single fragment."""
    ds = _absurd(JPEGLSLossless)
    ds.Rows = ds.Columns = 512
    _fails_fast(operation, ds)
    with pytest.raises(InvalidPixelData, match="fragment"):
        pixels.pixel_array(ds)


def _jpeg_ls_mr(frames: int = 1) -> Dataset:
    values = (_mr(rows=64, columns=64, frames=frames) & 0x0FFF).astype(np.uint16)
    return pixels.compress(_make_dataset(values, bits_stored=12), JPEGLSLossless)


def _j2k_mr() -> Dataset:
    values = (_mr(rows=64, columns=64, frames=1) & 0x0FFF).astype(np.uint16)
    return pixels.compress(_make_dataset(values, bits_stored=12), JPEG2000Lossless)


def test_codestream_header_bombs_are_refused_before_decoding() -> None:
    """A 64x64 dataset whose codestream header claims 60000x60000 is never decoded."""
    jls = _jpeg_ls_mr()
    frame = bytearray(pixels.get_frame(jls, 0))
    sof = frame.index(b"\xff\xf7")
    frame[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    jls.PixelData = encapsulate([bytes(frame)])
    for operation in _DECODING.values():
        _fails_fast(operation, jls)
    with pytest.raises(InvalidPixelData, match="60000x60000"):
        pixels.pixel_array(jls)

    j2k = _j2k_mr()
    frame = bytearray(pixels.get_frame(j2k, 0))
    siz = frame.index(b"\xff\x51")
    frame[siz + 6 : siz + 14] = (60000).to_bytes(4, "big") * 2
    j2k.PixelData = encapsulate([bytes(frame)])
    for operation in _DECODING.values():
        _fails_fast(operation, j2k)
    with pytest.raises(InvalidPixelData, match="60000x60000"):
        pixels.pixel_array(j2k)


def test_truncated_pixel_data() -> None:
    """Truncated native data, truncated and corrupted codestreams: CodecError, not a crash."""
    truncated = next(p.values[0] for p in NATIVE_FILES if _name(p.values[0]) == "MR_truncated.dcm")
    for operation in _OPERATIONS.values():
        with pytest.raises(CodecError):
            operation(_read(truncated))
    values = (_mr(frames=1) & 0x0FFF).astype(np.uint16)
    native = _make_dataset(values, bits_stored=12)
    native.PixelData = native.PixelData[:-100]
    for operation in _OPERATIONS.values():
        with pytest.raises(CodecError):
            operation(native)
    for ds in (_jpeg_ls_mr(), _j2k_mr()):
        frame = pixels.get_frame(ds, 0)
        for damaged in (frame[: len(frame) // 3], frame[:40] + bytes(len(frame) - 40)):
            broken = copy.deepcopy(ds)
            broken.PixelData = encapsulate([damaged])
            with pytest.raises(CodecError):
                pixels.decompress(broken)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("Rows", 0),
        ("Columns", 70000),
        ("NumberOfFrames", 0),
        ("NumberOfFrames", b"12abc "),
        ("BitsAllocated", 12),
        ("BitsStored", 0),
        ("BitsStored", 17),
        ("SamplesPerPixel", 2),
        ("PixelRepresentation", 2),
        ("PhotometricInterpretation", ""),
    ],
)
def test_invalid_image_pixel_attributes(keyword: str, value: object) -> None:
    ds = _make_dataset((_mr(frames=1) & 0x0FFF).astype(np.uint16), bits_stored=12)
    if isinstance(value, bytes):  # as read from a file: pydicom keeps the invalid IS as text
        tag = Tag(keyword)
        ds[tag] = RawDataElement(tag, "IS", len(value), value, 0, False, True)
    else:
        setattr(ds, keyword, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for operation in _OPERATIONS.values():
            with pytest.raises(InvalidPixelData):
                operation(ds)


def test_size_limit_is_configurable() -> None:
    ds = _make_dataset((_mr(frames=2) & 0x0FFF).astype(np.uint16), bits_stored=12)
    with pytest.raises(InvalidPixelData, match="limit"):
        pixels.compress(ds, JPEGLSLossless, max_pixel_bytes=1000)
    with pytest.raises(InvalidPixelData, match="limit"):
        pixels.render(ds, max_pixel_bytes=1000)
    assert pixels.compress(ds, JPEGLSLossless, max_pixel_bytes=ds.Rows * ds.Columns * 4)


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("path", NATIVE_FILES + ENCAPSULATED_FILES)
def test_render_every_image(path: Path) -> None:
    """JPEG fitted into a viewport and full-size PNG of the first frame decode with Pillow."""
    ds = _read(path)
    try:
        rendered = pixels.render(ds, viewport=(128, 96))
    except CodecError:  # only acceptable where pydicom cannot decode the image either
        assert _reference(ds) is None
        return
    rows, columns = ds.Rows, ds.Columns
    jpeg = Image.open(io.BytesIO(rendered))
    assert jpeg.format == "JPEG"
    width, height = jpeg.size
    assert width <= 96 and height <= 128 and (width == 96 or height == 128)
    assert abs(width / height - columns / rows) <= 0.05 * columns / rows + 1 / min(width, height)
    colour = ds.get("SamplesPerPixel", 1) == 3 or ds.PhotometricInterpretation == "PALETTE COLOR"
    assert jpeg.mode == ("RGB" if colour else "L")
    if rows * columns <= 1_000_000:  # full-size PNG (one decode less for the big ones)
        png = Image.open(io.BytesIO(pixels.render(ds, media_type="image/png")))
        assert png.format == "PNG" and png.size == (columns, rows)
        assert png.mode == jpeg.mode


def _ct() -> Dataset:
    return _read(next(p.values[0] for p in NATIVE_FILES if _name(p.values[0]) == "CT_small.dcm"))


def test_render_window_rescale_and_functions() -> None:
    """A window in modality units (HU) applies after the rescale; functions differ."""
    ds = _ct()
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    png = pixels.render(ds, media_type="image/png", window=(100.0, 1.0, "LINEAR"))
    thresholded = np.asarray(Image.open(io.BytesIO(png)))
    assert np.array_equal(thresholded == 255, hu > 99.5)
    linear = pixels.render(ds, media_type="image/png", window=(40, 400, "LINEAR"))
    sigmoid = pixels.render(ds, media_type="image/png", window=(40, 400, "SIGMOID"))
    default = pixels.render(ds, media_type="image/png")
    assert len({linear, sigmoid, default}) == 3
    for bad in ((40, 0, "LINEAR"), (40, 400, "CUBIC"), (float("nan"), 1, "LINEAR")):
        with pytest.raises(ValueError):
            pixels.render(ds, window=bad)


def test_render_monochrome1_is_inverted() -> None:
    values = np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64)
    mono2 = _make_dataset(values, bits_stored=12)
    mono1 = _make_dataset(values, bits_stored=12, photometric="MONOCHROME1")
    a = np.asarray(Image.open(io.BytesIO(pixels.render(mono2, media_type="image/png"))), dtype=int)
    b = np.asarray(Image.open(io.BytesIO(pixels.render(mono1, media_type="image/png"))), dtype=int)
    assert a[0, 0] == 0 and a[-1, -1] == 255
    assert np.array_equal(a, 255 - b)


def test_render_viewport_and_thumbnail_sizes() -> None:
    ds = _ct()  # 128 x 128
    assert Image.open(io.BytesIO(pixels.render(ds, viewport=(256, 512)))).size == (256, 256)
    assert Image.open(io.BytesIO(pixels.render(ds, viewport=(10**6, 10**6)))).size == (4096, 4096)
    thumb = Image.open(io.BytesIO(pixels.thumbnail(ds, 64)))
    assert thumb.format == "JPEG" and thumb.size == (64, 64)
    with pytest.raises(CodecUnsupported):
        pixels.render(ds, media_type="image/gif")
    with pytest.raises(IndexError):
        pixels.render(ds, 1)
    with pytest.raises(ValueError):
        pixels.render(ds, viewport=(0, 10))


# --------------------------------------------------------------------------- measurement


def test_compression_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    """Raw pixel bytes / compressed bytes per target for two CTs (printed with ``-s``)."""
    names = ("CT_small.dcm", "693_UNCR.dcm")
    lines = []
    for path in (p.values[0] for p in NATIVE_FILES if _name(p.values[0]) in names):
        ds = _read(path)
        raw = ds.Rows * ds.Columns * pixels.frame_count(ds) * ds.BitsAllocated // 8
        for name, uid in pixels.LOSSLESS_SYNTAXES.items():
            started = time.perf_counter()
            out = pixels.compress(ds, uid)
            elapsed = time.perf_counter() - started
            ratio = raw / len(out.PixelData)
            lines.append(f"{path.name:14} {name:9} {ratio:5.2f}x  {elapsed * 1000:6.1f} ms (with verification)")
            assert ratio > 1.0 if name == "rle" else ratio > 1.8, (path.name, name, ratio)
    with capsys.disabled():
        print("\n" + "\n".join(lines))
