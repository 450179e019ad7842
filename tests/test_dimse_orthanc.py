"""Interoperability with a real Orthanc: echo, find, move and store in both directions.

Every transfer checks, through Orthanc's REST API or our archive, that the instances
arrived with the pixel data that was sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicom_scp import DicomServer
from harness import dcmtk
from harness.orthanc import Orthanc
from pacs_lite.archive import Archive
from tests.support.dicom import read_dataset
from tests.support.dimse import SCP_AET, pixel_difference, running_scp

pytestmark = pytest.mark.peers  # Orthanc and dcmtk

FILES = {
    "ct": get_testdata_file("CT_small.dcm"),  # explicit VR little endian
    "mr": get_testdata_file("MR_small.dcm"),
    "jpeg": get_testdata_file("SC_rgb_jpeg_gdcm.dcm"),  # JPEG baseline: lossy, sent as stored
    "j2k": get_testdata_file("MR_small_jp2klossless.dcm"),
    "rle": get_testdata_file("MR_small_RLE.dcm"),
}


@dataclass
class Pair:
    server: DicomServer
    archive: Archive
    orthanc: Orthanc
    sent: dict[str, Path]  # SOP Instance UID -> file
    workdir: Path

    def study_of(self, name: str) -> str:
        return str(pydicom.dcmread(FILES[name], stop_before_pixels=True).StudyInstanceUID)

    def sop_of(self, name: str) -> str:
        return str(pydicom.dcmread(FILES[name], stop_before_pixels=True).SOPInstanceUID)

    def check_in_orthanc(self, name: str) -> None:
        uid = self.sop_of(name)
        data = self.orthanc.instance_file(uid)
        assert data is not None, f"{name} did not arrive in Orthanc"
        assert pixel_difference(read_dataset(FILES[name]), read_dataset(data)) is None

    def forget_in_orthanc(self) -> None:
        for study in self.orthanc.rest("/studies"):
            self.orthanc.rest(f"/studies/{study}", "DELETE")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("dimse-orthanc")
    orthanc = Orthanc(workdir / "orthanc")
    peers = [{"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}]
    with running_scp(workdir / "pacs", peers=peers) as (server, archive):
        orthanc.modalities = {"pacslite": (SCP_AET, "127.0.0.1", server.port)}
        orthanc.start()
        try:
            # MR_small and its compressed variants share a SOP Instance UID: store only the
            # variant each test needs, in its own study below; here the baseline set
            run = dcmtk.store_in_own_syntax(
                server.port, [FILES["ct"], FILES["jpeg"], FILES["j2k"]], workdir / "storescu", aec=SCP_AET
            )
            assert all(o.outcome == "stored" for o in run.outcomes.values()), run.outcomes
            sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): Path(p) for p in run.order}
            yield Pair(server, archive, orthanc, sent, workdir)
        finally:
            orthanc.stop()


def test_orthanc_echoes_us(pair: Pair) -> None:
    assert pair.orthanc.rest("/modalities/pacslite/echo", "POST", json_body={}) == {}


def test_orthanc_finds_our_studies(pair: Pair) -> None:
    query = pair.orthanc.rest(
        "/modalities/pacslite/query",
        "POST",
        json_body={"Level": "Study", "Query": {"StudyInstanceUID": "", "PatientName": "", "StudyDate": ""}},
    )
    answers = pair.orthanc.rest(f"/queries/{query['ID']}/answers?expand&simplify")
    found = {a["StudyInstanceUID"] for a in answers}
    assert {pair.study_of("ct"), pair.study_of("jpeg"), pair.study_of("j2k")} <= found


@pytest.mark.parametrize("name", ["ct", "jpeg", "j2k"])
def test_orthanc_moves_a_study_from_us(pair: Pair, name: str) -> None:
    pair.forget_in_orthanc()
    job = pair.orthanc.rest(
        "/modalities/pacslite/move",
        "POST",
        json_body={
            "Level": "Study",
            "Resources": [{"StudyInstanceUID": pair.study_of(name)}],
            "TargetAet": pair.orthanc.aet,
            "Synchronous": True,
        },
    )
    assert job is not None
    pair.check_in_orthanc(name)


def test_we_move_a_study_to_orthanc(pair: Pair) -> None:
    pair.forget_in_orthanc()
    studies = [pair.study_of(n) for n in ("ct", "jpeg", "j2k")]
    proc = dcmtk.movescu(
        pair.server.port,
        "STUDY",
        {"StudyInstanceUID": "\\".join(studies)},
        destination=pair.orthanc.aet,
        aec=SCP_AET,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = dcmtk.final_suboperations(proc.stdout + proc.stderr)
    assert counts.get("failed") == 0 and counts.get("completed") == 3, counts
    for name in ("ct", "jpeg", "j2k"):
        pair.check_in_orthanc(name)


@pytest.mark.parametrize("name", ["mr", "rle"])
def test_orthanc_stores_to_us(pair: Pair, name: str) -> None:
    data = Path(FILES[name]).read_bytes()
    orthanc_id = pair.orthanc.upload(data)["ID"]
    pair.orthanc.rest("/modalities/pacslite/store", "POST", json_body={"Resources": [orthanc_id], "Synchronous": True})
    inst = pair.archive.catalog.lookup_instance(pair.sop_of(name))
    assert inst is not None
    stored = read_dataset(pair.archive.retrieval.read(inst))
    assert pixel_difference(read_dataset(data), stored) is None
    pair.orthanc.rest(f"/instances/{orthanc_id}", "DELETE")
