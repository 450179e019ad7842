"""The catalog on both backends: indexing, counts, matching, revisions, deletion, jobs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pacs_lite.archive import Archive
from pacs_lite.catalog import QueryError
from tests.support.dicom import make_instance, part10
from tests.support.pacs import make_config


@pytest.fixture
def arch(tmp_path: Path, index_url: str) -> Archive:
    archive = Archive(make_config(tmp_path, index_url=index_url, compression={"transfer_syntax": "none"}))
    yield archive
    archive.close()


def _store(arch: Archive, ds: Dataset) -> None:
    result = arch.ingest.ingest_part10(part10(ds))
    assert result.ok, result.reason


def test_counts_and_levels(arch: Archive) -> None:
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    for i in range(5):
        _store(arch, make_instance(study=study, series=series[i % 2], modality="CT" if i % 2 == 0 else "SR",
                                   patient_id="P1", patient_name="Doe^John", instance_number=i + 1))
    [row] = arch.catalog.find("STUDY", {"StudyInstanceUID": study})
    assert row["NumberOfStudyRelatedInstances"] == 5
    assert row["NumberOfStudyRelatedSeries"] == 2
    assert row["ModalitiesInStudy"] == ["CT", "SR"]
    rows = arch.catalog.find("SERIES", {"StudyInstanceUID": study})
    assert sorted(r["NumberOfSeriesRelatedInstances"] for r in rows) == [2, 3]
    assert len(arch.catalog.find("IMAGE", {"SeriesInstanceUID": series[0]})) == 3
    [patient] = arch.catalog.find("PATIENT", {"PatientID": "P1"})
    assert patient["NumberOfPatientRelatedStudies"] == 1
    assert arch.catalog.find("STUDY", {"ModalitiesInStudy": "SR"})[0]["StudyInstanceUID"] == study
    assert arch.catalog.find("STUDY", {"ModalitiesInStudy": "MR"}) == []


def test_matching_rules(arch: Archive) -> None:
    a = make_instance(patient_id="A1", patient_name="Nguyễn^Văn^An", StudyDate="20240115",
                      AccessionNumber="ACC1", StudyDescription="CT Head")
    b = make_instance(patient_id="B2", patient_name="Smith^Anne", StudyDate="20240301",
                      AccessionNumber="ACC2", StudyDescription="MR Knee")
    for ds in (a, b):
        _store(arch, ds)

    def studies(**filters: str) -> set[str]:
        return {r["PatientID"] for r in arch.catalog.find("STUDY", filters)}

    assert studies(PatientID="A1") == {"A1"}
    assert studies(PatientName="NGUYEN*") == {"A1"}
    assert studies(PatientName="nguyen*") == {"A1"}
    assert studies(PatientName="Nguyễn*") == {"A1"}
    assert studies(PatientName="Nguyen^Van^An") == {"A1"}
    assert studies(PatientName="Sm?th*") == {"B2"}
    assert studies(PatientName="*") == {"A1", "B2"}
    assert studies(StudyDate="20240101-20240131") == {"A1"}
    assert studies(StudyDate="20240201-") == {"B2"}
    assert studies(StudyDate="-20240201") == {"A1"}
    assert studies(StudyDate="20240301") == {"B2"}
    assert studies(AccessionNumber="ACC1") == {"A1"}
    assert studies(StudyDescription="*knee*") == {"B2"}
    assert studies(StudyInstanceUID=f"{a.StudyInstanceUID}\\{b.StudyInstanceUID}") == {"A1", "B2"}
    assert studies(PatientID="") == {"A1", "B2"}
    assert studies(PatientID="100%") == set()  # SQL wildcards in values are literals
    fuzzy = {r["PatientID"] for r in arch.catalog.find("STUDY", {"PatientName": "van"}, fuzzy=True)}
    assert fuzzy == {"A1"}
    with pytest.raises(QueryError):
        arch.catalog.find("STUDY", {"StudyDate": "2024-01-01-"})
    with pytest.raises(QueryError):
        arch.catalog.find("STUDY", {"StudyInstanceUID": "../../x"})
    with pytest.raises(QueryError):
        arch.catalog.find("STUDY", {"SeriesNumber": "1"})


def test_revision_keeps_the_older_object(arch: Archive) -> None:
    ds = make_instance()
    _store(arch, ds)
    first = arch.catalog.lookup_instance(ds.SOPInstanceUID)
    ds.SeriesDescription = "corrected"
    result = arch.ingest.ingest_part10(part10(ds))
    assert result.status == "revised"
    current = arch.catalog.lookup_instance(ds.SOPInstanceUID)
    assert current.object_key != first.object_key
    assert arch.store.exists(first.object_key), "the older revision must be retained"
    keys = {k for k, *_ in arch.catalog.iter_objects()}
    assert {first.object_key, current.object_key} <= keys
    [row] = arch.catalog.find("STUDY", {"StudyInstanceUID": ds.StudyInstanceUID})
    assert row["NumberOfStudyRelatedInstances"] == 1


def test_delete_updates_counts_and_returns_keys(arch: Archive) -> None:
    study, series = generate_uid(), generate_uid()
    items = [make_instance(study=study, series=series) for _ in range(3)]
    for ds in items:
        _store(arch, ds)
    keys = arch.catalog.delete(study, series, items[0].SOPInstanceUID)
    assert len(keys) == 1
    [row] = arch.catalog.find("STUDY", {"StudyInstanceUID": study})
    assert row["NumberOfStudyRelatedInstances"] == 2
    assert len(arch.catalog.delete(study)) == 2
    assert arch.catalog.find("STUDY", {"StudyInstanceUID": study}) == []
    assert arch.catalog.delete(study) is None


def test_series_metadata_is_cached_until_the_series_changes(arch: Archive) -> None:
    study, series = generate_uid(), generate_uid()
    _store(arch, make_instance(study=study, series=series))
    blob1, v1 = arch.catalog.series_metadata(study, series)
    blob2, v2 = arch.catalog.series_metadata(study, series)
    assert (blob1, v1) == (blob2, v2)
    _store(arch, make_instance(study=study, series=series))
    _, v3 = arch.catalog.series_metadata(study, series)
    assert v3 > v1


def test_jobs_are_claimed_once(arch: Archive) -> None:
    for i in range(20):
        arch.catalog.add_job("test", {"n": i})
    taken: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := arch.catalog.claim_job(["test"], name)) is not None:
            with lock:
                taken.append(job[2]["n"])
            arch.catalog.finish_job(job[0])

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == list(range(20))
    assert arch.catalog.job_counts() == {"done": 20}


def test_expired_lease_is_claimed_again(arch: Archive) -> None:
    arch.catalog.add_job("test", {})
    first = arch.catalog.claim_job(["test"], "dead-worker", lease_seconds=-1)
    again = arch.catalog.claim_job(["test"], "live-worker")
    assert first is not None and again is not None
    assert again[0] == first[0] and again[3] == 2


def test_concurrent_ingest_of_one_study(arch: Archive) -> None:
    study, series = generate_uid(), generate_uid()
    items = [make_instance(study=study, series=series, patient_id="RACE") for _ in range(24)]
    errors: list[str] = []

    def send(chunk: list[Dataset]) -> None:
        for ds in chunk:
            r = arch.ingest.ingest_part10(part10(ds))
            if not r.ok:
                errors.append(r.reason)

    threads = [threading.Thread(target=send, args=(items[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    [row] = arch.catalog.find("STUDY", {"StudyInstanceUID": study})
    assert row["NumberOfStudyRelatedInstances"] == 24
    assert row["NumberOfStudyRelatedSeries"] == 1
