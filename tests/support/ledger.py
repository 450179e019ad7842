"""The ack ledger: what a sender was told is stored, checked against what comes back.

Every success a sender received (storescu, STOW-RS) is recorded with the SOP Instance
UID and a SHA-256 of the decoded pixel values; :meth:`Ledger.missing` retrieves each
entry through WADO-RS and reports the ones that are absent or differ.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import requests

from tests.support.dicom import make_instance, part10

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
    from pydicom.uid import generate_uid

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


def storescu(
    host: str,
    port: int,
    ae_title: str,
    files: list[Path],
    *,
    timeout: float = 600,
    nodelay: bool = True,
    extra: list[str] | None = None,
) -> dict[Path, bool]:
    """Send ``files`` on one association; return which ones were acknowledged with success."""
    env = {"TCP_NODELAY": "1"} if nodelay else {}
    import os

    proc = subprocess.run(
        [
            "storescu",
            "-v",
            "-aec",
            ae_title,
            "-to",
            "60",
            "-ta",
            "60",
            "-td",
            "60",
            *(extra or []),
            host,
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    results: dict[Path, bool] = {}
    current: Path | None = None
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"I: Sending file: (.*)$", line)
        if m:
            current = Path(m.group(1))
            continue
        if current is not None and "Received Store Response" in line:
            results[current] = "(Success)" in line or "Warning" in line
            current = None
    return results


class Ledger:
    """Acknowledged instances, thread-safe."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self._lock = threading.Lock()

    def record_file(self, path: Path) -> None:
        ds = pydicom.dcmread(path)
        self.record(ds)

    def record(self, ds: pydicom.Dataset) -> None:
        entry = Entry(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, pixel_hash(ds))
        with self._lock:
            self.entries[entry.sop] = entry

    def record_acks(self, acks: dict[Path, bool]) -> int:
        n = 0
        for path, ok in acks.items():
            if ok:
                self.record_file(path)
                n += 1
        return n

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
            parts = split_multipart(resp.content, resp.headers["Content-Type"])
            if len(parts) != 1:
                problems.append(f"{e.sop}: {len(parts)} parts")
                continue
            ds = pydicom.dcmread(io.BytesIO(parts[0]))
            if pixel_hash(ds) != e.pixels:
                problems.append(f"{e.sop}: pixel data differs")
        return problems


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The part bodies of a multipart/related response (a small reader for tests)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    assert m, content_type
    delimiter = b"--" + m.group(1).encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        parts.append(data[:-2] if data.endswith(b"\r\n") else data)
    return parts
