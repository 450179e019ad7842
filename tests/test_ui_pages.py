"""The built-in pages (``/ui``) over real HTTP, without a browser: study list (search, filters, sort,
pages), study page, ZIP download (streamed, same pixels as sent), escaping, CSP, English and Vietnamese,
partner scoping, and the message catalogs. The browser tests are in ``test_ui_browser.py``; both use the
archive :func:`build_hospital` fills with real images from pydicom-data and pydicom's test files,
compressed at rest."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from pacs_lite.archive import Archive
from pacs_lite.compression import run_one_job
from tests.support.dicom import make_instance
from tests.support.http import LiveServer, serve_archive, stow

NGUYEN = "Nguyễn^Văn^An"
NGUYEN_SHOWN = "Nguyễn Văn An"
XSS = "<img src=x onerror=alert(1)>"
XSS_STUDY = "<script>alert(2)</script>"
XSS_SERIES = "<img src=y onerror=alert(3)>"
FILLERS = 30
ZIP_NAME = re.compile(r"^S(\d{4}|_\d{3})/I\d{5}(-\d+)?\.dcm$")


@dataclass
class Hospital:
    """A live server and what was sent to it."""

    server: LiveServer
    archive: Archive
    sent: dict[str, Dataset] = field(default_factory=dict)  # SOP Instance UID -> dataset as sent
    nguyen_study: str = ""
    ct_series: str = ""
    mr_series: str = ""
    us_series: str = ""
    cr_study: str = ""
    xss_study: str = ""
    xss_series: str = ""
    ct_slices: int = 24

    @property
    def url(self) -> str:
        return self.server.url

    def page(self, path: str) -> str:
        return self.server.url + path

    def viewer(self, study: str, series: str) -> str:
        return self.page(f"/ui/studies/{study}/series/{series}")


def _retag(ds: Dataset, *, study: str, series: str, name: str, patient_id: str, series_number: int,
           **attributes: object) -> Dataset:
    """``ds`` moved into our study and series, with a new SOP Instance UID and the given patient."""
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID, ds.SeriesNumber = name, patient_id, series_number
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _read(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def _ct_slices(study: str, series: str, count: int) -> list[Dataset]:
    """``count`` CT slices of 512 x 512 made from the real slice 693_UNCR.dcm: shifted, with a bright
    disc that moves from slice to slice, so every slice looks different."""
    base = _read("693_UNCR.dcm")
    pixels = base.pixel_array
    yy, xx = np.mgrid[: pixels.shape[0], : pixels.shape[1]]
    out = []
    for k in range(count):
        ds = _read("693_UNCR.dcm")
        arr = np.roll(pixels, 3 * k - count, axis=0).copy()
        disc = (yy - 150 - 8 * k) ** 2 + (xx - 360) ** 2 < 30**2
        arr[disc] = 2500  # stored value: 1476 HU
        ds.PixelData = arr.astype(pixels.dtype).tobytes()
        _retag(ds, study=study, series=series, name=NGUYEN, patient_id="VN-0001", series_number=1,
               InstanceNumber=k + 1, ImagePositionPatient=[-122.0, -122.0, 2.5 * k], SliceLocation=2.5 * k,
               StudyDate="20200913", StudyTime="081500", AccessionNumber="ACC-NGUYEN-1",
               StudyDescription="CT ngực không cản quang", SeriesDescription="Ngực 2.5 mm", PatientSex="M",
               PatientBirthDate="19650412", ReferringPhysicianName="Lê^Minh")
        out.append(ds)
    return out


def build_hospital(server: LiveServer, archive: Archive) -> Hospital:
    """Send the test images over STOW-RS and compress what arrived uncompressed (JPEG-LS lossless)."""
    h = Hospital(server, archive)
    h.nguyen_study = generate_uid()
    h.ct_series, h.mr_series, h.us_series = generate_uid(), generate_uid(), generate_uid()
    nguyen = {"StudyDate": "20200913", "StudyTime": "081500", "AccessionNumber": "ACC-NGUYEN-1",
              "StudyDescription": "CT ngực không cản quang", "PatientSex": "M", "PatientBirthDate": "19650412"}
    datasets = _ct_slices(h.nguyen_study, h.ct_series, h.ct_slices)
    # a multi-frame MR (10 frames, stored JPEG-LS lossless as received)
    datasets.append(_retag(_read("emri_small_jpeg_ls_lossless.dcm"), study=h.nguyen_study, series=h.mr_series,
                           name=NGUYEN, patient_id="VN-0001", series_number=2, SeriesDescription="MR cine",
                           Modality="MR", InstanceNumber=1, **nguyen))
    # colour ultrasound (JPEG 2000 lossless, YBR_RCT)
    datasets.append(_retag(_read("US1_J2KR.dcm"), study=h.nguyen_study, series=h.us_series, name=NGUYEN,
                           patient_id="VN-0001", series_number=3, SeriesDescription="Siêu âm",
                           InstanceNumber=1, **nguyen))
    # a computed radiograph (JPEG 2000 lossless, MONOCHROME1) of another patient
    h.cr_study = generate_uid()
    datasets.append(_retag(_read("RG1_J2KR.dcm"), study=h.cr_study, series=generate_uid(), name="Trần^Thị^Bình",
                           patient_id="VN-0002", series_number=1, StudyDate="20190102", AccessionNumber="ACC-CR-1",
                           StudyDescription="Chest PA", InstanceNumber=1))
    # hostile text in every field the pages show
    h.xss_study, h.xss_series = generate_uid(), generate_uid()
    datasets.append(_retag(_read("CT_small.dcm"), study=h.xss_study, series=h.xss_series, name=XSS, patient_id=XSS,
                           series_number=1, StudyDescription=XSS_STUDY, SeriesDescription=XSS_SERIES,
                           StudyDate="20210301", AccessionNumber="<b>acc</b>", InstanceNumber=1))
    # small studies so that the list has more than one page
    start = dt.date(2018, 1, 1)
    for k in range(FILLERS):
        day = (start + dt.timedelta(days=10 * k)).strftime("%Y%m%d")
        datasets.append(make_instance(patient_name=f"Filler^Patient{k:02d}", patient_id=f"F{k:03d}", seed=k,
                                      modality="MR" if k % 3 == 0 else "CT", StudyDate=day,
                                      AccessionNumber=f"F-ACC-{k:02d}"))
    blobs = []
    for ds in datasets:
        h.sent[ds.SOPInstanceUID] = ds
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blobs.append(buf.getvalue())
    for i in range(0, len(blobs), 20):
        response = stow(server.base, blobs[i:i + 20])
        assert response.status_code == 200, response.text[:500]
    while run_one_job(archive, "ui-test-worker", 120):
        pass
    return h


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    with serve_archive(tmp_path_factory.mktemp("ui"), compression={"transfer_syntax": JPEGLSLossless}) as (
            server, archive, _config):
        yield build_hospital(server, archive)


def get(h: Hospital, path: str, **kwargs: object) -> requests.Response:
    response = requests.get(h.page(path), timeout=60, **kwargs)  # type: ignore[arg-type]
    return response


def rows_of(html: str) -> list[str]:
    """The study list's table rows as text (tags removed)."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in body.split("</tr>") if "<td" in row]


# -- the study list ----------------------------------------------------------------------------------


def test_root_redirects_to_the_study_list_with_its_query(hospital: Hospital) -> None:
    response = get(hospital, "/?name=nguyen", allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/ui/?name=nguyen")


def test_study_list_pages_and_sorts_on_the_server(hospital: Hospital) -> None:
    total = FILLERS + 3
    first = rows_of(get(hospital, "/ui/").text)
    assert len(first) == 25
    assert "1 Mar 2021" in first[0]  # newest first: the XSS study
    page = get(hospital, "/ui/?offset=25").text
    second = rows_of(page)
    assert len(second) == total - 25 and 'id="page-prev"' in page and 'id="page-next"' not in page
    oldest = rows_of(get(hospital, "/ui/?sort=date&limit=10").text)
    assert len(oldest) == 10 and "1 Jan 2018" in oldest[0] and "11 Jan 2018" in oldest[1]
    everything = rows_of(get(hospital, "/ui/?limit=100").text)
    assert len(everything) == total
    assert {r for r in first + second} == set(everything)


def test_name_search_ignores_case_and_diacritics(hospital: Hospital) -> None:
    for query in ("nguyen", "NGUYỄN", "van an", "nguyen an"):
        rows = rows_of(get(hospital, "/ui/", params={"name": query}).text)
        assert len(rows) == 1 and NGUYEN_SHOWN in rows[0], (query, rows)
        assert "13 Sep 2020" in rows[0] and "CT, MR, US" in rows[0]
    assert rows_of(get(hospital, "/ui/", params={"name": "tran"}).text)[0].startswith("Trần Thị Bình")
    assert rows_of(get(hospital, "/ui/", params={"name": "nobody"}).text) == []


@pytest.mark.parametrize(("params", "expected"), [
    ({"PatientID": "VN-0001"}, 1),
    ({"AccessionNumber": "acc-cr-1"}, 1),
    ({"Modality": "US"}, 1),
    ({"Modality": "MR"}, 1 + len(range(0, FILLERS, 3))),
    ({"from": "2019-01-01", "to": "2019-12-31"}, 1 + sum(
        1 for k in range(FILLERS) if (dt.date(2018, 1, 1) + dt.timedelta(days=10 * k)).year == 2019)),
    ({"from": "2020-09-13"}, 2),
    ({"to": "2018-01-11"}, 2),
])
def test_filters_in_the_url(hospital: Hospital, params: dict[str, str], expected: int) -> None:
    response = get(hospital, "/ui/", params={**params, "limit": "100"})
    assert response.status_code == 200
    assert len(rows_of(response.text)) == expected


@pytest.mark.parametrize("params", [{"from": "2020-02-31"}, {"from": "2021-01-01", "to": "2020-01-01"},
                                    {"Modality": "C T"}, {"name": "a\\b"}, {"PatientID": "x" * 65}])
def test_bad_filters_are_a_message_not_an_error(hospital: Hospital, params: dict[str, str]) -> None:
    response = get(hospital, "/ui/", params=params)
    assert response.status_code == 400 and response.headers["Content-Type"].startswith("text/html")
    assert 'class="error"' in response.text


# -- the study page and the viewer page --------------------------------------------------------------------


def test_study_page_shows_patient_series_thumbnails_and_links(hospital: Hospital) -> None:
    h = hospital
    html = get(h, f"/ui/studies/{h.nguyen_study}").text
    assert NGUYEN_SHOWN in html and "13 Sep 2020" in html and "12 Apr 1965" in html and "Lê Minh" in html
    for series in (h.ct_series, h.mr_series, h.us_series):
        assert f"/dicomweb/studies/{h.nguyen_study}/series/{series}/thumbnail" in html
        assert f"/ui/studies/{h.nguyen_study}/series/{series}" in html
    assert f"/ohif/viewer?StudyInstanceUIDs={h.nguyen_study}" in html
    assert f"/ui/studies/{h.nguyen_study}/download" in html
    assert "24 instances" in html and "10 frames" in html and " MB" in html
    thumb = get(h, f"/dicomweb/studies/{h.nguyen_study}/series/{h.ct_series}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["Content-Type"].startswith("image/")


def test_unknown_or_malformed_study_is_an_html_404(hospital: Hospital) -> None:
    for path in ("/ui/studies/1.2.3", "/ui/studies/not-a-uid", f"/ui/studies/{hospital.nguyen_study}/series/1.2.3",
                 "/ui/studies/1.2.3/download"):
        response = get(hospital, path)
        assert response.status_code == 404 and response.headers["Content-Type"].startswith("text/html"), path


def test_patient_data_is_escaped_on_every_page(hospital: Hospital) -> None:
    h = hospital
    for path in ("/ui/", f"/ui/studies/{h.xss_study}", f"/ui/studies/{h.xss_study}/series/{h.xss_series}"):
        html = get(h, path).text
        for attack in (XSS, XSS_STUDY, XSS_SERIES, "<b>acc</b>"):
            assert attack not in html, (path, attack)
        assert "&lt;img src=x onerror=alert(1)&gt;" in html, path


def test_every_page_sends_a_strict_csp(hospital: Hospital) -> None:
    h = hospital
    paths = ["/ui/", "/ui/?lang=vi", "/ui/?from=bad", f"/ui/studies/{h.nguyen_study}",
             f"/ui/studies/{h.nguyen_study}/series/{h.ct_series}", "/ui/studies/1.2.3"]
    for path in paths:
        response = get(h, path)
        assert response.headers["Content-Type"].startswith("text/html"), path
        csp = {d.split()[0]: d.split()[1:] for d in response.headers["Content-Security-Policy"].split("; ")}
        assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'self'"], path
        assert csp["style-src"] == ["'self'"] and csp["img-src"] == ["'self'", "blob:", "data:"], path
        assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"], path
        assert "unsafe" not in response.headers["Content-Security-Policy"]
        assert "<script>" not in response.text and " style=" not in response.text, path  # nothing inline
        assert not re.search(r"<[^>]*\son[a-z]+=", response.text), path


# -- languages ----------------------------------------------------------------------------------------------


def test_vietnamese_by_parameter_and_by_accept_language(hospital: Hospital) -> None:
    h = hospital
    vi = get(h, "/ui/?lang=vi").text
    assert '<html lang="vi">' in vi and "Tìm kiếm" in vi and "Tên bệnh nhân" in vi and "Ngày chụp" in vi
    assert 'href="/ui/studies/' in vi and "lang=vi" in vi  # links keep the language
    by_header = get(h, "/ui/", headers={"Accept-Language": "vi-VN,vi;q=0.9,en;q=0.5"}).text
    assert "Tìm kiếm" in by_header
    english = get(h, "/ui/", headers={"Accept-Language": "fr-FR"}).text
    assert '<html lang="en">' in english and "Search" in english
    study = get(h, f"/ui/studies/{h.nguyen_study}?lang=vi").text
    assert "Tải ca chụp (ZIP)" in study and "13 thg 9 2020" in study
    viewer = get(h, f"/ui/studies/{h.nguyen_study}/series/{h.ct_series}?lang=vi").text
    assert "Phổi" in viewer and "Trung thất" in viewer and "Đo dài" in viewer


def test_message_catalogs_are_complete_and_compiled() -> None:
    """Every string of the pages is in the Vietnamese catalog, translated, and the committed .mo matches the .po."""
    from babel.messages.extract import extract_from_dir
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    viewer = Path(__file__).resolve().parent.parent / "viewer"
    lc = viewer / "translations" / "vi" / "LC_MESSAGES"
    with open(lc / "messages.po", "rb") as f:
        po = read_po(f)
    with open(lc / "messages.mo", "rb") as f:
        mo = read_mo(f)
    method_map = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
    found = {msg[2] if isinstance(msg[2], str) else msg[2][0]
             for msg in extract_from_dir(str(viewer), method_map)}
    found = {m for m in found if m}
    assert found, "nothing extracted"
    missing = sorted(m for m in found if m not in po or not po[m].string)
    assert not missing, f"untranslated: {missing}"
    def normal(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
        return (text,) if isinstance(text, str) else tuple(text)

    for message in po:
        if message.id:
            compiled = mo[message.id]
            assert compiled is not None and normal(compiled.string) == normal(message.string), message.id


# -- the ZIP download ---------------------------------------------------------------------------------------


def _pixels(ds: Dataset) -> np.ndarray:
    return np.asarray(ds.pixel_array)


def test_study_zip_unpacks_to_the_pixels_that_were_sent(hospital: Hospital) -> None:
    h = hospital
    assert h.archive.catalog.lookup_instance(next(iter(h.sent))).transfer_syntax_uid == JPEGLSLossless
    response = get(h, f"/ui/studies/{h.nguyen_study}/download")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Disposition"] == 'attachment; filename="study-20200913.zip"'
    assert "Content-Length" not in response.headers  # streamed
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        names = zf.namelist()
        assert len(names) == h.ct_slices + 2 and len(set(names)) == len(names)
        assert all(ZIP_NAME.match(n) for n in names), names
        assert "S0001/I00001.dcm" in names and "S0001/I00024.dcm" in names and "S0002/I00001.dcm" in names
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        for name in names:
            got = pydicom.dcmread(io.BytesIO(zf.read(name)))
            sent = h.sent[got.SOPInstanceUID]
            assert got.StudyInstanceUID == h.nguyen_study
            np.testing.assert_array_equal(_pixels(got), _pixels(sent), err_msg=name)


def test_uncompressed_series_zip(hospital: Hospital) -> None:
    h = hospital
    response = get(h, f"/ui/studies/{h.nguyen_study}/series/{h.ct_series}/download?uncompressed=1")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        assert len(zf.namelist()) == h.ct_slices
        for name in zf.namelist()[:3]:
            got = pydicom.dcmread(io.BytesIO(zf.read(name)))
            assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            np.testing.assert_array_equal(_pixels(got), _pixels(h.sent[got.SOPInstanceUID]))


def test_zip_is_written_while_the_instances_are_read(hospital: Hospital, monkeypatch: pytest.MonkeyPatch) -> None:
    """The response starts after one instance has been read; each further one is read when the client
    has taken what came before (checked on the WSGI iterator itself: sockets would buffer megabytes)."""
    from viewer.app import create_app

    h = hospital
    retrieval = h.archive.retrieval
    reads: list[str] = []
    original = retrieval.instance

    def counting(inst, *args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(inst.sop_instance_uid)
        return original(inst, *args, **kwargs)

    monkeypatch.setattr(retrieval, "instance", counting)
    client = create_app(h.archive.config, h.archive).test_client()
    response = client.get(f"/ui/studies/{h.nguyen_study}/series/{h.ct_series}/download", buffered=False)
    assert response.status_code == 200 and reads == [reads[0]]
    body = io.BytesIO()
    seen = []
    for chunk in response.response:
        body.write(chunk)
        seen.append(len(reads))
    response.close()
    assert seen[0] == 1 and seen[-1] == h.ct_slices
    assert all(b - a <= 1 for a, b in zip(seen, seen[1:], strict=False)), seen  # one instance at a time
    with zipfile.ZipFile(body) as zf:
        assert len(zf.namelist()) == h.ct_slices and zf.testzip() is None


def test_a_failure_during_the_zip_aborts_the_download(hospital: Hospital, monkeypatch: pytest.MonkeyPatch) -> None:
    """An instance that cannot be read half-way leaves the client a broken download, never a ZIP that opens
    without it."""
    from pacs_lite.retrieval import Failure, RetrievalError

    h = hospital
    retrieval = h.archive.retrieval
    original = retrieval.instance
    calls = []

    def failing(inst, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(inst)
        if len(calls) == 5:
            raise RetrievalError(Failure.CORRUPT, "simulated corrupt object")
        return original(inst, *args, **kwargs)

    monkeypatch.setattr(retrieval, "instance", failing)
    try:
        body = requests.get(h.page(f"/ui/studies/{h.nguyen_study}/series/{h.ct_series}/download"), timeout=60).content
    except requests.RequestException:
        return  # the connection was cut: the browser reports a failed download
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(body))


def test_zip_names_are_generated_from_numbers_only() -> None:
    from viewer.ui import zip_names

    names = zip_names([("1.2", 1, 1), ("1.2", 1, 1), ("1.3", None, 7), ("1.4", None, None), ("1.2", 3, None)])
    assert names == ["S0001/I00001.dcm", "S0001/I00001-2.dcm", "S_002/I00007.dcm", "S_003/I00004.dcm",
                     "S0003/I00005.dcm"]


# -- formatting and scoping --------------------------------------------------------------------------------------


def test_names_and_dates_for_people() -> None:
    from flask import Flask

    from viewer.ui import byte_size, dicom_date, init_ui, person_name

    assert person_name("Nguyễn^Văn^An") == "Nguyễn Văn An"
    assert person_name("NGUYEN^VAN^AN") == "NGUYEN VAN AN"
    assert person_name("Smith^John^^Dr^Jr") == "Dr Smith John, Jr"
    assert person_name("=山田^太郎=やまだ^たろう") == "山田 太郎"
    assert person_name("") == "" and person_name(None) == ""
    app = Flask(__name__)
    init_ui(app)
    with app.test_request_context("/?lang=en"):
        assert dicom_date("20200913") == "13 Sep 2020"
        assert dicom_date("2020") == "2020" and dicom_date("20201340") == "20201340"
        assert byte_size(1536000) == "1.5 MB" and byte_size(999) == "999 B"
    with app.test_request_context("/?lang=vi"):
        assert dicom_date("20200913") == "13 thg 9 2020"
        assert byte_size(1536000) == "1,5 MB"


def test_pages_apply_the_callers_visibility(hospital: Hospital) -> None:
    """A partner that may see only the CR study sees nothing else on any page (partner scoping seam)."""
    from pacs_lite.catalog import Visibility
    from pacs_lite.catalog.models import Study
    from viewer.access import AccessPolicy, Principal
    from viewer.app import create_app

    h = hospital
    allowed = h.cr_study

    class OnlyOne(Visibility):
        def study_condition(self):  # type: ignore[no-untyped-def]
            return Study.study_instance_uid == allowed

    class Partner(AccessPolicy):
        def visibility_for(self, principal: Principal) -> Visibility:
            return OnlyOne()

    client = create_app(h.archive.config, h.archive, access=Partner()).test_client()
    rows = rows_of(client.get("/ui/?limit=100").get_data(as_text=True))
    assert len(rows) == 1 and "Trần Thị Bình" in rows[0]
    assert client.get(f"/ui/studies/{allowed}").status_code == 200
    for path in (f"/ui/studies/{h.nguyen_study}", f"/ui/studies/{h.nguyen_study}/series/{h.ct_series}",
                 f"/ui/studies/{h.nguyen_study}/download"):
        assert client.get(path).status_code == 404, path
