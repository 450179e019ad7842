"""C-FIND at every level with every matching type (findscu), character sets, errors, C-CANCEL."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from dicom_scp import DicomServer
from harness import dcmtk
from pacs_lite.archive import Archive
from tests.support.dicom import make_instance, part10
from tests.support.dimse import SCP_AET, running_scp

VIETNAMESE = "Nguyễn^Văn^An"
CANCEL_SERIES_SIZE = 50


@dataclass
class Study:
    uid: str
    patient_id: str
    date: str
    series: dict[str, tuple[str, int]] = field(default_factory=dict)  # uid -> (modality, instances)


@dataclass
class FindFixture:
    server: DicomServer
    archive: Archive
    workdir: Path
    studies: dict[str, Study]
    instances: dict[str, list[str]]  # series uid -> SOP instance UIDs in order

    def find(self, level: str, keys: dict[str, str], model: str = "-S") -> list[Dataset]:
        found, proc = dcmtk.findscu(self.server.port, level, keys, self.workdir / "find", aec=SCP_AET, model=model)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return found


PATIENTS = {
    "PID-A": (VIETNAMESE, "19800101", "M"),
    "PID-B": ("DOE^JOHN", "19750505", "M"),
    "PID-C": ("SMITH^JANE", "19900909", "F"),
    "PID-D": ("NGUYEN^THI^BINH", "19851212", "F"),
}
# study key -> (patient, date, time, accession, description, [(modality, count), ...])
STUDIES = {
    "A1": ("PID-A", "20200115", "101500", "ACC-A1", "CT ABDOMEN", [("CT", 3), ("MR", 1)]),
    "A2": ("PID-A", "20210620", "083000", "ACC-A2", "MR HEAD", [("MR", 2)]),
    "B1": ("PID-B", "20191231", "235959", "ACC-B1", "CHEST XRAY", [("CR", 1)]),
    "C1": ("PID-C", "20220301", "120000", "ACC-C1", "CT CHEST", [("CT", 2), ("OT", CANCEL_SERIES_SIZE)]),
    "D1": ("PID-D", "20200201", "090000", "ACC-D1", "US NECK", [("US", 1)]),
}


def study_instance(
    patient_id: str, study_uid: str, study_key: str, series_uid: str, series_number: int, modality: str, number: int
) -> bytes:
    name, birth, sex = PATIENTS[patient_id]
    _, date, time, accession, description, _ = STUDIES[study_key]
    ds = make_instance(
        study=study_uid,
        series=series_uid,
        sop_class=SecondaryCaptureImageStorage,
        instance_number=number,
        patient_id=patient_id,
        patient_name=name,
        modality=modality,
        rows=2,
        columns=2,
        bits=8,
        ImageType=["ORIGINAL", "PRIMARY"],
        AcquisitionNumber=100 + number,
        PatientBirthDate=birth,
        PatientSex=sex,
        StudyDate=date,
        StudyTime=time,
        AccessionNumber=accession,
        StudyDescription=description,
        StudyID=study_key,
        SeriesNumber=series_number,
        SeriesDescription=f"{modality} series {series_number}",
    )
    return part10(ds)


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FindFixture]:
    workdir = tmp_path_factory.mktemp("dimse-find")
    with running_scp(workdir / "pacs") as (server, archive):
        studies: dict[str, Study] = {}
        instances: dict[str, list[str]] = {}
        for key, (pid, date, _, _, _, series) in STUDIES.items():
            study = Study(generate_uid(), pid, date)
            studies[key] = study
            for n, (modality, count) in enumerate(series, 1):
                series_uid = generate_uid()
                study.series[series_uid] = (modality, count)
                instances[series_uid] = []
                for i in range(1, count + 1):
                    data = study_instance(pid, study.uid, key, series_uid, n, modality, i)
                    result = archive.ingest.ingest_part10(data)
                    assert result.ok, result.reason
                    instances[series_uid].append(result.sop_instance_uid)
        yield FindFixture(server, archive, workdir, studies, instances)


def _ids(found: list[Dataset], keyword: str) -> set[str]:
    return {str(ds.get(keyword, "")) for ds in found}


@pytest.mark.peers
def test_patient_level_universal(fx: FindFixture) -> None:
    found = fx.find("PATIENT", {"PatientID": "", "PatientName": "", "NumberOfPatientRelatedStudies": ""}, model="-P")
    assert _ids(found, "PatientID") == set(PATIENTS)
    by_id = {str(ds.PatientID): ds for ds in found}
    assert int(by_id["PID-A"].NumberOfPatientRelatedStudies) == 2
    assert str(by_id["PID-B"].PatientName) == "DOE^JOHN"


@pytest.mark.peers
def test_study_single_value_and_return_keys(fx: FindFixture) -> None:
    keys = {
        "PatientID": "PID-B",
        "StudyInstanceUID": "",
        "StudyDate": "",
        "AccessionNumber": "",
        "StudyDescription": "",
        "ModalitiesInStudy": "",
        "NumberOfStudyRelatedInstances": "",
        "InstitutionName": "",
    }
    found = fx.find("STUDY", keys)
    assert len(found) == 1
    ds = found[0]
    assert ds.StudyInstanceUID == fx.studies["B1"].uid
    assert ds.StudyDate == "20191231"
    assert ds.AccessionNumber == "ACC-B1"
    assert ds.StudyDescription == "CHEST XRAY"
    assert list(ds.ModalitiesInStudy) == ["CR"] or ds.ModalitiesInStudy == "CR"
    assert int(ds.NumberOfStudyRelatedInstances) == 1
    assert "InstitutionName" in ds and not ds.InstitutionName  # requested, unknown: returned empty
    assert "SpecificCharacterSet" not in ds  # ASCII only


@pytest.mark.peers
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("NGUYEN*", {"A1", "A2", "D1"}),  # no diacritics in the query: they are ignored in the names
        ("nguyen*", {"A1", "A2", "D1"}),  # person names match case-insensitively
        ("Nguyễn*", {"A1", "A2"}),  # diacritics in the query must match
        ("SMIT?^JANE", {"C1"}),
        ("*JOHN", {"B1"}),
        ("DOE^JOHN", {"B1"}),
    ],
)
def test_patient_name_matching(fx: FindFixture, value: str, expected: set[str]) -> None:
    keys = {"SpecificCharacterSet": "ISO_IR 192", "PatientName": value, "StudyInstanceUID": ""}
    found = fx.find("STUDY", keys)
    assert _ids(found, "StudyInstanceUID") == {fx.studies[k].uid for k in expected}


@pytest.mark.peers
def test_vietnamese_name_returned_in_utf8(fx: FindFixture) -> None:
    found = fx.find("STUDY", {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Nguyễn*", "PatientID": ""})
    assert found
    for ds in found:
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == VIETNAMESE


@pytest.mark.peers
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20200101-20201231", {"A1", "D1"}),
        ("20210101-", {"A2", "C1"}),
        ("-20191231", {"B1"}),
        ("20200115", {"A1"}),
    ],
)
def test_study_date_ranges(fx: FindFixture, value: str, expected: set[str]) -> None:
    found = fx.find("STUDY", {"StudyDate": value, "StudyInstanceUID": ""})
    assert _ids(found, "StudyInstanceUID") == {fx.studies[k].uid for k in expected}


@pytest.mark.peers
def test_uid_list_matching(fx: FindFixture) -> None:
    wanted = [fx.studies["A1"].uid, fx.studies["C1"].uid]
    found = fx.find("STUDY", {"StudyInstanceUID": "\\".join(wanted)})
    assert _ids(found, "StudyInstanceUID") == set(wanted)


@pytest.mark.peers
def test_modalities_in_study(fx: FindFixture) -> None:
    found = fx.find("STUDY", {"ModalitiesInStudy": "MR", "StudyInstanceUID": ""})
    assert _ids(found, "StudyInstanceUID") == {fx.studies["A1"].uid, fx.studies["A2"].uid}


@pytest.mark.peers
def test_universal_study_query(fx: FindFixture) -> None:
    found = fx.find("STUDY", {"StudyInstanceUID": ""})
    assert _ids(found, "StudyInstanceUID") == {s.uid for s in fx.studies.values()}


@pytest.mark.peers
def test_series_level(fx: FindFixture) -> None:
    study = fx.studies["A1"]
    keys = {
        "StudyInstanceUID": study.uid,
        "SeriesInstanceUID": "",
        "Modality": "",
        "SeriesNumber": "",
        "NumberOfSeriesRelatedInstances": "",
    }
    found = fx.find("SERIES", keys)
    got = {str(ds.SeriesInstanceUID): (str(ds.Modality), int(ds.NumberOfSeriesRelatedInstances)) for ds in found}
    assert got == study.series
    ct = fx.find("SERIES", {**keys, "Modality": "CT"})
    assert [str(ds.Modality) for ds in ct] == ["CT"]
    # lenient hierarchy: a series-level query without the study UID still works, and
    # the responses carry the study's unique key anyway
    wild = fx.find("SERIES", {"Modality": "C?", "SeriesInstanceUID": ""})
    assert all(ds.StudyInstanceUID for ds in wild)
    assert _ids(wild, "SeriesInstanceUID") >= {
        u for s in fx.studies.values() for u, (m, _) in s.series.items() if m in ("CT", "CR")
    }


@pytest.mark.peers
def test_image_level_with_keys_from_stored_metadata(fx: FindFixture) -> None:
    study = fx.studies["A1"]
    series_uid = next(u for u, (m, _) in study.series.items() if m == "CT")
    keys = {
        "StudyInstanceUID": study.uid,
        "SeriesInstanceUID": series_uid,
        "SOPInstanceUID": "",
        "InstanceNumber": "",
        "AcquisitionNumber": "",
        "ImageType": "",
        "Rows": "",
    }
    found = fx.find("IMAGE", keys)
    assert _ids(found, "SOPInstanceUID") == set(fx.instances[series_uid])
    for ds in found:
        assert int(ds.AcquisitionNumber) == 100 + int(ds.InstanceNumber)  # not an index column: from metadata
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY"]
        assert int(ds.Rows) == 2
    one = fx.find("IMAGE", {**keys, "InstanceNumber": "2"})
    assert [int(ds.InstanceNumber) for ds in one] == [2]


@pytest.mark.peers
def test_patient_root_study_level(fx: FindFixture) -> None:
    found = fx.find("STUDY", {"PatientID": "PID-A", "StudyInstanceUID": "", "StudyDate": ""}, model="-P")
    assert _ids(found, "StudyInstanceUID") == {fx.studies["A1"].uid, fx.studies["A2"].uid}


# -- errors and cancel (pynetdicom SCU: findscu cannot send C-CANCEL mid-query) -----------------


def _pynetdicom_find(
    port: int, query: Dataset, model: str = StudyRootQueryRetrieveInformationModelFind
) -> list[tuple[Dataset, Dataset | None]]:
    ae = AE("FINDSCU")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP_AET)
    assert assoc.is_established
    try:
        return list(assoc.send_c_find(query, model))
    finally:
        assoc.release()


@pytest.mark.parametrize(
    ("keys", "status", "comment"),
    [
        ({"QueryRetrieveLevel": "STUDY", "StudyDate": "2020-01-01"}, 0xA900, "date"),
        ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.abc"}, 0xA900, "UID"),
        ({"StudyInstanceUID": ""}, 0xA900, "Level"),
        ({"QueryRetrieveLevel": "PATIENT", "PatientID": ""}, 0xA900, "level"),  # no PATIENT level in Study Root
        ({"QueryRetrieveLevel": "STUDY", "StudyTime": "1pm"}, 0xA900, "time"),
    ],
)
def test_bad_queries_fail_with_a_comment(fx: FindFixture, keys: dict[str, str], status: int, comment: str) -> None:
    query = Dataset()
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    responses = _pynetdicom_find(fx.server.port, query)
    final = responses[-1][0]
    assert final.Status == status
    assert comment.lower() in str(final.get("ErrorComment", "")).lower()
    assert len(responses) == 1


def test_c_cancel_stops_a_long_query(fx: FindFixture) -> None:
    series_uid = next(u for u, (m, _) in fx.studies["C1"].series.items() if m == "OT")
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.SeriesInstanceUID = series_uid
    query.SOPInstanceUID = ""
    query.InstanceNumber = ""
    model = StudyRootQueryRetrieveInformationModelFind
    ae = AE("FINDSCU")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", fx.server.port, ae_title=SCP_AET)
    assert assoc.is_established
    statuses: list[int] = []
    try:
        cx_id = assoc._get_valid_context(model, "", "scu").context_id
        for status, _ in assoc.send_c_find(query, model, msg_id=7):
            statuses.append(int(status.Status))
            if len(statuses) == 1:
                assoc.send_c_cancel(7, cx_id)
        # the association stays usable after a cancel
        again = [int(s.Status) for s, _ in assoc.send_c_find(_study_query(fx.studies["B1"].uid), model)]
    finally:
        assoc.release()
    assert statuses[-1] == 0xFE00
    assert statuses.count(0xFF00) < CANCEL_SERIES_SIZE
    assert again == [0xFF00, 0x0000]


def _study_query(uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = uid
    return query


def test_concurrent_queries(fx: FindFixture) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            out = _pynetdicom_find(fx.server.port, _study_query(""), PatientRootQueryRetrieveInformationModelFind)
            assert out[-1][0].Status == 0x0000
            assert len(out) == len(fx.studies) + 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


@pytest.mark.peers
def test_responses_are_valid_dicom(fx: FindFixture) -> None:
    found = fx.find(
        "STUDY",
        {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "*", "PatientBirthDate": "", "StudyInstanceUID": ""},
    )
    for ds in found:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=False)
        again = pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True)
        assert again.QueryRetrieveLevel == "STUDY"
