"""Helpers for the DIMSE tests: an in-process :class:`dicom_scp.DicomServer`, pixel comparison,
raw PDUs, process memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_scp import DicomServer
from pacs_lite.archive import Archive
from pacs_lite.config import Peer
from tests.support.net import LOOPBACK
from tests.support.pacs import make_config

#: Our AE title in the tests.
SCP_AET = "PACSLITE"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
LITTLE_ENDIAN_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}


@contextlib.contextmanager
def running_scp(
    base_dir: Path,
    *,
    peers: list[dict[str, Any]] | None = None,
    index_url: str | None = None,
    server_kwargs: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Iterator[tuple[DicomServer, Archive]]:
    """An archive under ``base_dir`` (no compression) served on a free port, shut down afterwards.

    ``peers`` are ``[[dicom.peers]]`` tables (ae_title, host, port); ``sections`` override
    configuration keys.
    """
    dicom = {"port": 0, "ae_title": SCP_AET, **sections.pop("dicom", {})}
    compression = {"transfer_syntax": "none", **sections.pop("compression", {})}
    config = make_config(base_dir, index_url=index_url, dicom=dicom, compression=compression, **sections)
    if peers:
        config = dataclasses.replace(config, peers=tuple(Peer(**p) for p in peers))
    archive = Archive(config)
    server = DicomServer(archive, config, **(server_kwargs or {}))
    server.start()
    try:
        yield server, archive
    finally:
        server.shutdown(timeout=10)
        archive.close()


def make_instance(
    *,
    study_uid: str,
    series_uid: str,
    number: int = 1,
    sop_uid: str | None = None,
    patient_id: str = "PID-TEST",
    patient_name: str = "TEST^PATIENT",
    modality: str = "OT",
    **attributes: Any,
) -> bytes:
    """A small Secondary Capture instance (2x2 pixels) as Part-10 bytes, in UTF-8."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, number
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.AcquisitionNumber = 100 + number
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes([number % 256] * 4)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def pixel_difference(sent: Dataset, got: Dataset) -> str | None:
    """Why the pixel data of ``got`` is not that of ``sent``, or ``None`` when identical.

    Same transfer syntax (or both little-endian native): the encoded pixel bytes must be
    equal. Otherwise the decoded arrays must be equal (lossless transcoding).
    """
    sent_ts, got_ts = transfer_syntax(sent), transfer_syntax(got)
    for keyword in PIXEL_KEYWORDS:
        if (keyword in sent) != (keyword in got):
            return f"{keyword} present in only one of them"
        if keyword not in sent:
            continue
        same_encoding = sent_ts == got_ts or (sent_ts in LITTLE_ENDIAN_NATIVE and got_ts in LITTLE_ENDIAN_NATIVE)
        if same_encoding:
            if bytes(sent[keyword].value) != bytes(got[keyword].value):
                return f"{keyword} bytes differ ({sent_ts} vs {got_ts})"
        else:
            try:
                a, b = sent.pixel_array, got.pixel_array
            except Exception as exc:  # noqa: BLE001
                return f"cannot decode for comparison ({sent_ts} vs {got_ts}): {exc}"
            if a.shape != b.shape or not np.array_equal(a, b):
                return f"decoded pixels differ ({sent_ts} vs {got_ts})"
    return None


def transfer_syntax(ds: Dataset) -> str:
    """The dataset's transfer syntax: from its file meta, else from the encoding it was read in."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return str(meta.TransferSyntaxUID)
    implicit, little = ds.original_encoding
    return "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")


def read(path_or_bytes: str | Path | bytes) -> Dataset:
    if isinstance(path_or_bytes, bytes):
        return pydicom.dcmread(io.BytesIO(path_or_bytes), force=True)
    return pydicom.dcmread(path_or_bytes, force=True)


def rss_bytes() -> int:
    """Resident set size of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pdu_header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def raw_connection(port: int, payload: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send ``payload`` on a fresh connection; return what the server answered before closing."""
    with socket.create_connection((LOOPBACK, port), timeout=read_timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)
