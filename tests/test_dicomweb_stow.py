"""STOW-RS over real HTTP: the corpus through raw multipart and dicomweb-client, study-scoped
stores, store responses and statuses (PS3.18 10.5), and the preamble rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from pacs_lite import dicomfile
from pacs_lite.ingest import IngestRejected, check_uid
from tests.support.dicom import make_instance, part10
from tests.support.http import (
    DICOM_JSON,
    LiveServer,
    assert_json_error,
    encode_multipart,
    get_json,
    instance_count,
    serve_archive,
    split_multipart,
    stow,
    stow_content_type,
    value,
)
from tests.support.pacs import corpus_files

NOT_OF_STUDY = 0x0110
CANNOT_UNDERSTAND = 0xC000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve_archive(tmp_path_factory.mktemp("stow")) as (live, _archive, _config):
        yield live


def expected_sop_uid(data: bytes) -> str | None:
    """The SOP Instance UID ingest will accept ``data`` under, by the ingest path's own rules."""
    try:
        ts, body = dicomfile.split_received_part10(data)
        ds = dicomfile.parse_dataset(body, ts)
        for keyword in ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
            check_uid(ds.get(keyword), keyword)
        return check_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID")
    except (dicomfile.DicomFormatError, IngestRejected):
        return None


def sequence(doc: dict, tag: str) -> list[dict]:
    return doc.get(tag, {}).get("Value", [])


@pytest.mark.slow
def test_stow_corpus_raw_multipart(server: LiveServer) -> None:
    """Every corpus file in batches: stored exactly when ingest's rules accept it, clear failures otherwise."""
    files = corpus_files()
    stored: set[str] = set()
    for start in range(0, len(files), 40):
        blobs = [f.read_bytes() for f in files[start:start + 40]]
        expected = [expected_sop_uid(b) for b in blobs]
        response = stow(server.base, blobs, chunked=True)
        if all(expected):
            assert response.status_code == 200, response.text[:300]
        elif any(expected):
            assert response.status_code == 202, response.text[:300]
        else:
            assert response.status_code in (400, 409)
            continue
        assert response.headers["Content-Type"].startswith(DICOM_JSON)
        doc = response.json()
        referenced = {value(item, "00081155") for item in sequence(doc, "00081199")}
        assert referenced == {u for u in expected if u}
        failed = sequence(doc, "00081198")
        assert len(failed) == sum(1 for u in expected if not u)
        assert all(value(item, "00081197") == CANNOT_UNDERSTAND for item in failed)
        for item in sequence(doc, "00081199"):
            assert value(item, "00081190").startswith(server.base + "/studies/")
        stored |= referenced
    assert len(stored) > 120
    assert instance_count(server) == len(stored)


@pytest.mark.slow
def test_stow_corpus_with_dicomweb_client(server: LiveServer) -> None:
    """Every corpus file ingest accepts, as pydicom datasets through dicomweb-client (re-encoded by it)."""
    datasets = []
    for path in corpus_files():
        data = path.read_bytes()
        if expected_sop_uid(data):
            datasets.append(pydicom.dcmread(path))
    client = server.client(chunk_size=256 * 1024)
    for start in range(0, len(datasets), 40):
        batch = datasets[start:start + 40]
        response = client.store_instances(batch)
        assert "FailedSOPSequence" not in response
        assert [item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence] == [
            ds.SOPInstanceUID for ds in batch]


def test_stow_with_dicomweb_client_chunked(server: LiveServer) -> None:
    """dicomweb-client (chunked upload) stores; the pixel data read back equals what was sent."""
    names = ["CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_rle_2frame.dcm", "JPEG2000.dcm"]
    datasets = [pydicom.dcmread(pydicom.data.get_testdata_file(n)) for n in names]
    client = server.client(chunk_size=32 * 1024)
    response = client.store_instances(datasets)
    assert "FailedSOPSequence" not in response
    assert {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence} == {
        ds.SOPInstanceUID for ds in datasets
    }
    for ds in datasets:
        back = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                        media_types=(("application/dicom", "*"),))
        assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert back.PixelData == ds.PixelData
        assert back.PatientName == ds.PatientName


def test_stow_into_its_study(server: LiveServer) -> None:
    ds = make_instance()
    response = stow(server.base, [part10(ds)], study=ds.StudyInstanceUID)
    assert response.status_code == 200
    doc = response.json()
    assert value(doc, "00081190") == f"{server.base}/studies/{ds.StudyInstanceUID}"


def test_stow_instance_outside_the_url_study_is_refused(server: LiveServer) -> None:
    other = make_instance()
    target = generate_uid()
    response = stow(server.base, [part10(other)], study=target)
    assert response.status_code == 409
    failed = sequence(response.json(), "00081198")
    assert len(failed) == 1
    assert value(failed[0], "00081197") == NOT_OF_STUDY
    assert value(failed[0], "00081155") == other.SOPInstanceUID
    assert instance_count(server, SOPInstanceUID=other.SOPInstanceUID) == 0


def test_stow_mixed_study_batch_is_partial(server: LiveServer) -> None:
    study = generate_uid()
    good, bad = make_instance(study=study), make_instance()
    response = stow(server.base, [part10(good), part10(bad)], study=study)
    assert response.status_code == 202
    doc = response.json()
    assert [value(i, "00081155") for i in sequence(doc, "00081199")] == [good.SOPInstanceUID]
    assert [value(i, "00081197") for i in sequence(doc, "00081198")] == [NOT_OF_STUDY]
    assert "Warning" in response.headers
    assert instance_count(server, SOPInstanceUID=bad.SOPInstanceUID) == 0


def test_stow_duplicate_and_revision_are_successes(server: LiveServer) -> None:
    ds = make_instance()
    blob = part10(ds)
    assert stow(server.base, [blob]).status_code == 200
    assert stow(server.base, [blob]).status_code == 200
    ds.PatientName = "Revised^Name"
    assert stow(server.base, [part10(ds)]).status_code == 200
    assert instance_count(server, SOPInstanceUID=ds.SOPInstanceUID) == 1
    found = get_json(f"{server.base}/studies", params={"StudyInstanceUID": ds.StudyInstanceUID})
    assert found[0]["00100010"]["Value"][0]["Alphabetic"] == "Revised^Name"


def test_stow_instance_with_only_sop_uids_fails_with_c000(server: LiveServer) -> None:
    ds = make_instance()
    del ds.StudyInstanceUID
    del ds.SeriesInstanceUID
    response = stow(server.base, [part10(ds)])
    assert response.status_code == 409
    failed = sequence(response.json(), "00081198")
    assert value(failed[0], "00081197") == CANNOT_UNDERSTAND
    assert value(failed[0], "00081155") == ds.SOPInstanceUID


def test_stow_non_dicom_part_is_400_and_stores_nothing(server: LiveServer) -> None:
    before = instance_count(server)
    response = stow(server.base, [b"this is not DICOM" * 20])
    assert_json_error(response, 400)
    assert instance_count(server) == before


def test_stow_non_dicom_part_next_to_a_good_one(server: LiveServer) -> None:
    good = make_instance()
    response = stow(server.base, [b"MZ\x90\x00 not dicom", part10(good)])
    assert response.status_code == 202
    doc = response.json()
    assert [value(i, "00081155") for i in sequence(doc, "00081199")] == [good.SOPInstanceUID]
    failed = sequence(doc, "00081198")
    assert value(failed[0], "00081197") == CANNOT_UNDERSTAND and value(failed[0], "00081155") is None


def test_stow_part_of_another_media_type_is_refused(server: LiveServer) -> None:
    body = encode_multipart([({"Content-Type": "text/plain"}, part10(make_instance()))], "b1")
    response = requests.post(f"{server.base}/studies", data=body,
                             headers={"Content-Type": stow_content_type("b1")}, timeout=30)
    assert_json_error(response, 400)


@pytest.mark.parametrize("content_type, status", [
    ('multipart/related; type="application/dicom"', 400),  # no boundary
    ('multipart/related; type="application/dicom"; boundary=""', 400),
    ("application/dicom", 415),
    ("application/json", 415),
    ('multipart/related; type="application/dicom+json"; boundary=b1', 415),
    ('multipart/related; type="application/dicom+xml"; boundary=b1', 415),
])
def test_stow_bad_content_type(server: LiveServer, content_type: str, status: int) -> None:
    body = encode_multipart([({"Content-Type": "application/dicom"}, part10(make_instance()))], "b1")
    response = requests.post(f"{server.base}/studies", data=body, headers={"Content-Type": content_type}, timeout=30)
    assert_json_error(response, status)


def test_stow_with_content_encoding_is_refused(server: LiveServer) -> None:
    body = encode_multipart([({"Content-Type": "application/dicom"}, part10(make_instance()))], "b1")
    response = requests.post(f"{server.base}/studies", data=body, timeout=30,
                             headers={"Content-Type": stow_content_type("b1"), "Content-Encoding": "gzip"})
    assert_json_error(response, 415)


def test_stow_truncated_body_is_400(server: LiveServer) -> None:
    ds = make_instance()
    body = encode_multipart([({"Content-Type": "application/dicom"}, part10(ds))], "b1")
    truncated = body[: len(body) // 2]
    response = requests.post(f"{server.base}/studies", data=truncated, timeout=30,
                             headers={"Content-Type": stow_content_type("b1")})
    assert_json_error(response, 400)
    assert instance_count(server, SOPInstanceUID=ds.SOPInstanceUID) == 0


def test_stow_preamble_is_stored_as_zeros(server: LiveServer) -> None:
    """CVE-2019-11687: an executable preamble (``MZ``/``ELF``) never reaches storage."""
    for preamble in (b"MZ\x90\x00\x03" + b"\xcc" * 60, b"\x7fELF\x02\x01\x01" + b"A" * 100):
        ds = make_instance()
        response = stow(server.base, [part10(ds, preamble=preamble)])
        assert response.status_code == 200
        url = f"{server.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        back = requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
                            timeout=30)
        (headers, data), = split_multipart(back)
        assert data[:128] == b"\0" * 128
        assert data[128:132] == b"DICM"


def test_stow_chunked_raw_request(server: LiveServer) -> None:
    datasets = [make_instance(rows=256, columns=256) for _ in range(3)]
    response = stow(server.base, [part10(ds) for ds in datasets], chunked=True)
    assert response.status_code == 200
    assert len(sequence(response.json(), "00081199")) == 3


def test_stow_corpus_file_bytes_come_back_unchanged(server: LiveServer, tmp_path: Path) -> None:
    """``transfer-syntax=*`` returns the dataset bytes exactly as they were sent."""
    path = Path(pydicom.data.get_testdata_file("emri_small_jpeg_ls_lossless.dcm"))
    sent = path.read_bytes()
    assert stow(server.base, [sent]).status_code == 200
    ds = pydicom.dcmread(path)
    url = f"{server.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    back = requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
                        timeout=30)
    (headers, data), = split_multipart(back)
    assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.80"
    assert dicomfile.split_part10(data)[1] == dicomfile.split_part10(sent)[1]
