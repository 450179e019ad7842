"""The ack ledger: what a sender was told is stored, checked against what comes back.

Every success a sender received (storescu, STOW-RS) is recorded with the SOP Instance
UID and a SHA-256 of the decoded pixel values; :meth:`Ledger.missing` retrieves each
entry through WADO-RS and reports the ones that are absent or differ.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import requests
from pydicom.uid import generate_uid

from harness.dcmtk import StoreOutcome
from tests.support.dicom import make_instance, part10, read_dataset
from tests.support.http import split_multipart

EXPLICIT = "1.2.840.10008.1.2.1"


def pixel_hash(ds: pydicom.Dataset) -> str:
    arr = np.ascontiguousarray(ds.pixel_array)
    return hashlib.sha256(arr.astype(arr.dtype.newbyteorder("<")).tobytes()).hexdigest()


@dataclass(frozen=True)
class Entry:
    study: str
    series: str
    sop: str
    pixels: str


def write_series(folder: Path, count: int, *, size: int = 64, patient_id: str = "LEDGER", seed: int = 0) -> list[Path]:
    """``count`` small CT instances of one new study, as files."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        ds = make_instance(
            study=study,
            series=series,
            patient_id=patient_id,
            rows=size,
            columns=size,
            seed=seed * 100000 + i,
            instance_number=i + 1,
        )
        path = folder / f"{i:05d}.dcm"
        path.write_bytes(part10(ds))
        paths.append(path)
    return paths


class Ledger:
    """Acknowledged instances, thread-safe."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self._lock = threading.Lock()

    def record_file(self, path: str | os.PathLike[str]) -> None:
        self.record(read_dataset(path))

    def record(self, ds: pydicom.Dataset) -> None:
        entry = Entry(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, pixel_hash(ds))
        with self._lock:
            self.entries[entry.sop] = entry

    def record_acks(self, outcomes: Mapping[str, StoreOutcome]) -> int:
        """Record the files :func:`harness.dcmtk.storescu` reports stored; return how many."""
        stored = [path for path, o in outcomes.items() if o.outcome == "stored"]
        for path in stored:
            self.record_file(path)
        return len(stored)

    def missing(self, dicomweb: str) -> list[str]:
        """Entries that WADO-RS cannot return with identical pixels (empty when all is well)."""
        problems = []
        session = requests.Session()
        for e in list(self.entries.values()):
            url = f"{dicomweb}/studies/{e.study}/series/{e.series}/instances/{e.sop}"
            resp = session.get(
                url,
                headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}'},
                timeout=60,
            )
            if resp.status_code != 200:
                problems.append(f"{e.sop}: HTTP {resp.status_code}")
                continue
            parts = split_multipart(resp)
            if len(parts) != 1:
                problems.append(f"{e.sop}: {len(parts)} parts")
                continue
            ds = read_dataset(parts[0][1])
            if pixel_hash(ds) != e.pixels:
                problems.append(f"{e.sop}: pixel data differs")
        return problems
