"""The catalog on both backends: indexing, counts, matching, revisions, deletion, jobs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pacs_lite import dicomfile
from pacs_lite.archive import Archive
from pacs_lite.catalog import Integrity, QueryError
from pacs_lite.maintenance import verify
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
        arch.catalog.jobs.add("test", {"n": i})
    taken: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := arch.catalog.jobs.claim(["test"], name)) is not None:
            with lock:
                taken.append(job[2]["n"])
            arch.catalog.jobs.finish(job[0])

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == list(range(20))
    assert arch.catalog.jobs.counts() == {"done": 20}


def test_expired_lease_is_claimed_again(arch: Archive) -> None:
    arch.catalog.jobs.add("test", {})
    first = arch.catalog.jobs.claim(["test"], "dead-worker", lease_seconds=-1)
    again = arch.catalog.jobs.claim(["test"], "live-worker")
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


# -- one write path: the same rules whether the series is known or new ----------------------------------


@pytest.mark.parametrize("later", ["known series", "new series", "new study"])
def test_a_corrected_attribute_shows_however_the_instance_arrives(arch: Archive, later: str) -> None:
    study, series = generate_uid(), generate_uid()
    _store(arch, make_instance(study=study, series=series, patient_id="P7", patient_name="Doe^Jon",
                               StudyDescription="Head", SeriesDescription="axial", PatientSex="M"))
    where = {"known series": (study, series), "new series": (study, generate_uid()),
             "new study": (generate_uid(), generate_uid())}[later]
    # a corrected name and descriptions; an empty value erases nothing
    _store(arch, make_instance(study=where[0], series=where[1], patient_id="P7", patient_name="Doe^Jöhn",
                               StudyDescription="Head CT", SeriesDescription="axial 2mm", PatientSex=""))
    [patient] = arch.catalog.find("PATIENT", {"PatientID": "P7"})
    assert (patient["PatientName"], patient["PatientSex"]) == ("Doe^Jöhn", "M")
    assert [r["PatientID"] for r in arch.catalog.find("PATIENT", {"PatientName": "DOE^JOHN"})] == ["P7"]
    assert arch.catalog.find("PATIENT", {"PatientName": "Doe^Jon"}) == []
    descriptions = {r["StudyInstanceUID"]: r["StudyDescription"] for r in arch.catalog.find("STUDY", {"PatientID": "P7"})}
    assert descriptions[where[0]] == "Head CT"
    assert descriptions[study] == ("Head" if later == "new study" else "Head CT")
    series_descriptions = {r["SeriesInstanceUID"]: r["SeriesDescription"]
                           for r in arch.catalog.find("SERIES", {"PatientID": "P7"})}
    assert series_descriptions[where[1]] == "axial 2mm"
    assert series_descriptions[series] == ("axial 2mm" if later == "known series" else "axial")
    assert patient["NumberOfPatientRelatedStudies"] == (2 if later == "new study" else 1)


@pytest.mark.parametrize("policy", ["revision", "reject"])
@pytest.mark.parametrize("moves", [False, True], ids=["same-series", "new-series"])
def test_duplicate_revision_and_conflict_are_decided_alike_in_a_known_or_new_series(
        tmp_path: Path, index_url: str, policy: str, moves: bool) -> None:
    archive = Archive(make_config(tmp_path, index_url=index_url, compression={"transfer_syntax": "none"},
                                  ingest={"duplicates": policy}))
    try:
        study, series = generate_uid(), generate_uid()
        ds = make_instance(study=study, series=series)
        _store(archive, ds)
        _store(archive, make_instance(study=study, series=series))  # the first series keeps an instance
        first = archive.catalog.lookup_instance(ds.SOPInstanceUID)
        assert archive.ingest.ingest_part10(part10(ds)).status == "duplicate"
        if moves:
            ds.SeriesInstanceUID = generate_uid()
        ds.SeriesDescription = "changed"
        result = archive.ingest.ingest_part10(part10(ds))
        again = archive.ingest.ingest_part10(part10(ds))
        current = archive.catalog.lookup_instance(ds.SOPInstanceUID)
        [row] = archive.catalog.find("STUDY", {"StudyInstanceUID": study})
        counts = {r["SeriesInstanceUID"]: r["NumberOfSeriesRelatedInstances"]
                  for r in archive.catalog.find("SERIES", {"StudyInstanceUID": study})}
        objects = {o.key for o in archive.store.iter_objects()}
        if policy == "revision":
            assert (result.status, again.status) == ("revised", "duplicate")
            assert current.series_instance_uid == ds.SeriesInstanceUID and current.object_key != first.object_key
            assert row["NumberOfStudyRelatedInstances"] == 2
            assert counts == ({series: 1, ds.SeriesInstanceUID: 1} if moves else {series: 2})
            assert row["NumberOfStudyRelatedSeries"] == len(counts)
            assert len(objects) == 3 and first.object_key in objects  # the older object is retained
        else:
            assert (result.status, again.status) == ("rejected", "rejected")
            assert result.dicom_status == again.dicom_status == 0x0111
            assert current == first
            assert (row["NumberOfStudyRelatedInstances"], counts) == (2, {series: 2})
            assert len(objects) == 2
        assert verify(archive, grace_seconds=0).clean
    finally:
        archive.close()


@pytest.mark.parametrize("damage", ["deleted", "marked corrupt"])
def test_a_resend_repairs_an_instance_whose_stored_object_is_gone(arch: Archive, damage: str) -> None:
    ds = make_instance()
    data = part10(ds)
    _store(arch, ds)
    before = arch.catalog.lookup_instance(ds.SOPInstanceUID)
    if damage == "deleted":
        arch.store.delete(before.object_key)
    else:
        arch.catalog.mark_integrity(ds.SOPInstanceUID, Integrity.CORRUPT)
    result = arch.ingest.ingest_part10(data)
    assert (result.status, result.dicom_status) == ("stored", 0), result
    after = arch.catalog.lookup_instance(ds.SOPInstanceUID)
    assert after.object_key != before.object_key and after.integrity == Integrity.OK
    assert dicomfile.split_part10(arch.retrieval.read(after))[1] == dicomfile.split_part10(data)[1]
    assert {o.key for o in arch.store.iter_objects()} == {after.object_key}  # the damaged copy is gone too
    assert verify(arch, grace_seconds=0).clean
    # the stored copy is whole now: a resend is a duplicate and leaves nothing behind
    assert arch.ingest.ingest_part10(data).status == "duplicate"
    assert {o.key for o in arch.store.iter_objects()} == {after.object_key}
    [row] = arch.catalog.find("STUDY", {"StudyInstanceUID": ds.StudyInstanceUID})
    assert row["NumberOfStudyRelatedInstances"] == 1


def test_a_new_instance_of_a_known_series_is_a_few_statements(arch: Archive) -> None:
    from sqlalchemy import event

    study, series = generate_uid(), generate_uid()
    _store(arch, make_instance(study=study, series=series, StudyDescription="Head"))
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().split()[0].upper() in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            statements.append(statement)

    event.listen(arch.catalog.write_engine, "before_cursor_execute", count)
    try:
        _store(arch, make_instance(study=study, series=series, StudyDescription="Head"))
        unchanged = len(statements)
        statements.clear()
        _store(arch, make_instance(study=study, series=series, StudyDescription="Head CT"))
        changed = len(statements)
    finally:
        event.remove(arch.catalog.write_engine, "before_cursor_execute", count)
    # look up the instance and the series (with its study and patient), insert, count series and study
    assert unchanged == 5
    assert changed == 6  # and one UPDATE of the study whose description changed
