"""Small, valid DICOM instances for tests: one builder, one writer, one reader.

:func:`make_instance` builds a dataset, :func:`part10` turns it into file bytes and
:func:`read_dataset` reads bytes or a file back.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

#: Attributes :func:`make_instance` takes as named arguments, never through ``attributes``.
_NAMED = {
    "StudyInstanceUID": "study",
    "SeriesInstanceUID": "series",
    "SOPInstanceUID": "sop",
    "SOPClassUID": "sop_class",
    "PatientID": "patient_id",
    "PatientName": "patient_name",
    "Modality": "modality",
    "InstanceNumber": "instance_number",
    "Rows": "rows",
    "Columns": "columns",
    "NumberOfFrames": "frames",
    "BitsStored": "bits",
}


def make_instance(
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    sop_class: str = CTImageStorage,
    patient_id: str = "PID1",
    patient_name: str = "Test^Patient",
    modality: str = "CT",
    instance_number: int = 1,
    rows: int = 16,
    columns: int = 16,
    frames: int = 1,
    bits: int = 12,
    pixels: bool = True,
    seed: int = 0,
    **attributes: Any,
) -> Dataset:
    """A small, valid instance with file meta (Explicit VR Little Endian) and a realistic header.

    By default a 16x16 CT image in UTF-8 (``ISO_IR 192``), 12 bits stored in 16, new UIDs.

    Parameters
    ----------
    study, series, sop
        The Study, Series and SOP Instance UIDs (new ones when not given).
    sop_class
        The SOP Class UID (the header is the same whatever the class).
    rows, columns, frames
        Image size; ``frames > 1`` also sets Number of Frames.
    bits
        Bits Stored; up to 8 are allocated in 8 bits (OB pixel data), more in 16 (OW).
    pixels
        ``False`` leaves out the image pixel module (for documents and the like).
    seed
        Seed of the random pixel values (the same seed gives the same pixels).
    attributes
        Any other attribute by DICOM keyword, set last (overriding the header defaults);
        ``None`` leaves that attribute out, e.g. ``StudyTime=None``.
    """
    if named := sorted(keyword for keyword in attributes if keyword in _NAMED):
        raise TypeError("give " + ", ".join(f"{k} as {_NAMED[k]}=" for k in named))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "A1"
    ds.StudyID = "1"
    ds.StudyDescription = "Study"
    ds.ReferringPhysicianName = "Ref^Doc"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    if pixels:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        if frames > 1:
            ds.NumberOfFrames = frames
        allocated = 8 if bits <= 8 else 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits, bits - 1, 0
        dtype = np.uint8 if allocated == 8 else np.uint16
        rng = np.random.default_rng(seed)
        ds.PixelData = rng.integers(0, 1 << bits, size=(frames, rows, columns), dtype=dtype).tobytes()
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def part10(ds: Dataset, *, preamble: bytes | None = None) -> bytes:
    """``ds`` (with its file meta) written as a Part-10 file; optionally with a custom preamble."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    if preamble is not None:
        data = preamble.ljust(128, b"\0")[:128] + data[128:]
    return data


def read_dataset(source: bytes | str | os.PathLike[str]) -> Dataset:
    """The dataset in Part-10 bytes or a file (read with ``force``: a missing preamble is fine)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return pydicom.dcmread(io.BytesIO(source), force=True)
    return pydicom.dcmread(source, force=True)
