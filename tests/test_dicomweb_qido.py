"""QIDO-RS over real HTTP: every endpoint, every matching type, fuzzy matching, includefield,
paging with the server limit, OHIF's exact requests, and hostile parameters (6.C C2)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from pydicom.uid import generate_uid

from tests.support.dicom import make_instance, part10
from tests.support.http import (
    DICOM_JSON,
    LiveServer,
    assert_json_error,
    get_json,
    serve_archive,
    stow,
    value,
)

MAX_LIMIT = 25
PAGING_STUDIES = 30
XSS = "<script>alert(1)</script>"
#: The patient and study attributes the tests match on: only those a study is given are set.
UNSET = dict.fromkeys(["PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber",
                       "StudyDescription", "ReferringPhysicianName", "StudyID"])


@dataclass
class Fixture:
    server: LiveServer
    nguyen_study: str
    nguyen_series: list[str]
    smith_study: str
    obrien_study: str
    xss_study: str
    sop_uids: list[str]


def _study(patient: dict, study_attrs: dict, series: list[tuple[str, str, int]]) -> list:
    """Instances (8x8) of one study: ``series`` is a list of (modality, description, number of instances)."""
    study = generate_uid()
    out = []
    for number, (modality, description, count) in enumerate(series, start=1):
        series_uid = generate_uid()
        for i in range(count):
            out.append(make_instance(study=study, series=series_uid, modality=modality, instance_number=i + 1,
                                     rows=8, columns=8, SeriesDescription=description, SeriesNumber=number,
                                     SeriesDate="20240105", **{**UNSET, **patient, **study_attrs}))
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    with serve_archive(tmp_path_factory.mktemp("qido"), http={"qido_max_limit": MAX_LIMIT}) as (server, _a, _c):
        nguyen = _study({"patient_name": "Nguyễn^Văn^An", "patient_id": "VN001", "PatientBirthDate": "19800102",
                         "PatientSex": "M", "SpecificCharacterSet": "ISO_IR 192"},
                        {"StudyDate": "20240105", "StudyTime": "101500", "AccessionNumber": "ACC-1",
                         "StudyDescription": "CT Chest", "ReferringPhysicianName": "House^Gregory", "StudyID": "S1"},
                        [("CT", "Axial", 3), ("SR", "Report", 1)])
        smith = _study({"patient_name": "Smith^John", "patient_id": "P002", "PatientBirthDate": "19700101",
                        "PatientSex": "M"},
                       {"StudyDate": "20231201", "StudyTime": "090000", "AccessionNumber": "ACC-2",
                        "StudyDescription": "MR Brain"},
                       [("MR", "T1", 2)])
        obrien = _study({"patient_name": "O'Brien^Mary", "patient_id": "P003", "PatientSex": "F"},
                        {"StudyDate": "20220615", "AccessionNumber": "ACC-3", "StudyDescription": "Follow-up"},
                        [("CT", "Low dose", 1), ("PR", "", 1)])
        xss = _study({"patient_name": "<img src=x onerror=alert(1)>", "patient_id": XSS},
                     {"StudyDate": "20210101", "StudyDescription": XSS}, [("OT", XSS, 1)])
        paging = []
        for i in range(PAGING_STUDIES):
            paging += _study({"patient_name": "Paging^Test", "patient_id": "PAGE"},
                             {"StudyDate": f"2019{1 + i // 28:02d}{1 + i % 28:02d}"}, [("US", "", 1)])
        everything = nguyen + smith + obrien + xss + paging
        response = stow(server.base, [part10(ds) for ds in everything])
        assert response.status_code == 200, response.text[:300]
        yield Fixture(
            server, nguyen[0].StudyInstanceUID,
            list(dict.fromkeys(ds.SeriesInstanceUID for ds in nguyen)),
            smith[0].StudyInstanceUID, obrien[0].StudyInstanceUID, xss[0].StudyInstanceUID,
            [ds.SOPInstanceUID for ds in nguyen],
        )


def studies(env: Fixture, **params: str) -> list[dict]:
    return get_json(f"{env.server.base}/studies", params=params)


def study_uids(results: list[dict]) -> set[str]:
    return {value(r, "0020000D") for r in results}


# -- OHIF -------------------------------------------------------------------------------------------

STUDY_REQUIRED = ["0020000D", "00080020", "00080030", "00080050", "00100010", "00100020", "00100030", "00100040",
                  "00201206", "00201208", "00081030", "00080061", "00080090", "00081190"]


def test_ohif_study_list_request(env: Fixture) -> None:
    url = (f"{env.server.base}/studies?limit=101&offset=0"
           "&includefield=00081030,00080060,00080090,00100030&PatientID=VN001")
    response = requests.get(url, headers={"Accept": "application/dicom+json"}, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == DICOM_JSON
    (study,) = response.json()
    for tag in STUDY_REQUIRED:
        assert tag in study, tag
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Nguyễn^Văn^An"}]}
    assert value(study, "00080005") == "ISO_IR 192"
    assert study["00080061"]["Value"] == ["CT", "SR"]
    assert value(study, "00201206") == 2 and value(study, "00201208") == 4
    assert value(study, "00081030") == "CT Chest"
    assert value(study, "00100030") == "19800102"
    assert value(study, "00081190") == f"{env.server.base}/studies/{env.nguyen_study}"
    assert list(study) == sorted(study)


def test_ohif_study_list_with_ohif_filters(env: Fixture) -> None:
    found = studies(env, PatientName="*smith*", StudyDate="19700102-20991231", ModalitiesInStudy="MR",
                    AccessionNumber="*ACC-2*", StudyDescription="*brain*", limit="101", offset="0",
                    fuzzymatching="true")
    assert study_uids(found) == {env.smith_study}
    uid_list = "\\".join([env.smith_study, env.obrien_study])
    assert study_uids(studies(env, StudyInstanceUID=uid_list)) == {env.smith_study, env.obrien_study}


def test_ohif_series_request(env: Fixture) -> None:
    series = get_json(f"{env.server.base}/studies/{env.nguyen_study}/series?includefield=0008103E,00080021")
    assert [value(s, "0020000E") for s in series] == env.nguyen_series
    for s in series:
        for tag in ("0020000D", "0020000E", "00080060", "00200011", "00080021", "00201209", "0008103E"):
            assert tag in s, tag
    assert [value(s, "00201209") for s in series] == [3, 1]
    filtered = get_json(f"{env.server.base}/studies/{env.nguyen_study}/series",
                        params={"SeriesInstanceUID": env.nguyen_series[1]})
    assert [value(s, "00080060") for s in filtered] == ["SR"]


def test_ohif_instance_fallback_request(env: Fixture) -> None:
    url = f"{env.server.base}/studies/{env.nguyen_study}/series/{env.nguyen_series[0]}/instances"
    found = get_json(url, params={"limit": "1", "includefield": "00080018"})
    assert len(found) == 1 and value(found[0], "00080018") == env.sop_uids[0]


# -- matching ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, expected", [
    ({"PatientID": "P002"}, "smith"),
    ({"00100020": "P002"}, "smith"),
    ({"PatientName": "Smith^John"}, "smith"),
    ({"PatientName": "smith^john"}, "smith"),
    ({"PatientName": "Smi*"}, "smith"),
    ({"PatientName": "Sm?th*"}, "smith"),
    ({"PatientName": "NGUYEN*"}, "nguyen"),
    ({"PatientName": "Nguyễn*"}, "nguyen"),
    ({"PatientName": "O'Brien*"}, "obrien"),
    ({"StudyDate": "20231201"}, "smith"),
    ({"StudyDate": "20231101-20231231"}, "smith"),
    ({"StudyDate": "20240101-"}, "nguyen"),
    ({"StudyDate": "20220101-20221231"}, "obrien"),
    ({"StudyTime": "1015-1016"}, "nguyen"),
    ({"AccessionNumber": "ACC-3"}, "obrien"),
    ({"StudyDescription": "ct chest"}, "nguyen"),
    ({"StudyDescription": "*low*"}, "obrien"),
    ({"StudyDescription": "low"}, None),
    ({"ModalitiesInStudy": "PR"}, "obrien"),
    ({"ModalitiesInStudy": "SR\\PR"}, {"nguyen", "obrien"}),
    ({"Modality": "MR"}, "smith"),
    ({"ReferringPhysicianName": "House*"}, "nguyen"),
    ({"PatientBirthDate": "19700101"}, "smith"),
    ({"PatientSex": "F"}, "obrien"),
    ({"StudyID": "S1"}, "nguyen"),
    ({"PatientID": "nobody"}, None),
])
def test_study_matching(env: Fixture, params: dict, expected: str | set[str] | None) -> None:
    names = {"smith": env.smith_study, "nguyen": env.nguyen_study, "obrien": env.obrien_study}
    wanted = {expected} if isinstance(expected, str) else expected or set()
    assert study_uids(studies(env, **params)) == {names[n] for n in wanted}


def test_fuzzy_matching_finds_vietnamese_name(env: Fixture) -> None:
    assert study_uids(studies(env, PatientName="nguyen", fuzzymatching="true")) == {env.nguyen_study}
    assert study_uids(studies(env, PatientName="van an", fuzzymatching="true")) == {env.nguyen_study}
    assert studies(env, PatientName="nguyen", fuzzymatching="false") == []


def test_no_match_is_200_with_empty_array(env: Fixture) -> None:
    response = requests.get(f"{env.server.base}/studies", params={"PatientID": "nope"}, timeout=30)
    assert response.status_code == 200 and response.json() == []
    response = requests.get(f"{env.server.base}/studies/{generate_uid()}/series", timeout=30)
    assert response.status_code == 200 and response.json() == []


def test_every_search_endpoint(env: Fixture) -> None:
    base, study, series = env.server.base, env.nguyen_study, env.nguyen_series
    assert len(get_json(f"{base}/studies/{study}/series")) == 2
    assert {value(s, "0020000E") for s in get_json(f"{base}/series", params={"Modality": "SR"})} >= {series[1]}
    unscoped = get_json(f"{base}/series", params={"SeriesInstanceUID": series[0]})
    assert value(unscoped[0], "00100020") == "VN001"  # study attributes on unscoped series searches
    assert len(get_json(f"{base}/studies/{study}/series/{series[0]}/instances")) == 3
    in_study = get_json(f"{base}/studies/{study}/instances")
    assert {value(i, "00080018") for i in in_study} == set(env.sop_uids)
    assert value(in_study[0], "0020000E") in series
    one = get_json(f"{base}/instances", params={"SOPInstanceUID": env.sop_uids[1]})
    assert value(one[0], "0020000D") == study and value(one[0], "00100020") == "VN001"
    for tag in ("00080016", "00080018", "00200013", "00280010", "00280011"):
        assert tag in one[0]
    assert value(one[0], "00280010") == 8
    assert value(one[0], "00081190").endswith(f"/instances/{env.sop_uids[1]}")
    by_number = get_json(f"{base}/studies/{study}/series/{series[0]}/instances", params={"InstanceNumber": "2"})
    assert [value(i, "00080018") for i in by_number] == [env.sop_uids[1]]
    listed = get_json(f"{base}/instances", params={"SOPInstanceUID": "\\".join(env.sop_uids[:2])})
    assert {value(i, "00080018") for i in listed} == set(env.sop_uids[:2])


# -- includefield -----------------------------------------------------------------------------------


def test_includefield_forms(env: Fixture) -> None:
    base = f"{env.server.base}/studies"
    plain = get_json(base, params={"PatientID": "VN001"})[0]
    assert "00201200" not in plain
    for params in ({"includefield": "NumberOfPatientRelatedStudies"}, {"includefield": "00201200"},
                   {"includefield": ["00081030", "00201200"]}, {"includefield": "00081030,00201200"},
                   {"includefield": "all"}):
        found = get_json(base, params={"PatientID": "VN001", **params})[0]
        assert value(found, "00201200") == 1, params


def test_instance_includefield_from_stored_metadata(env: Fixture) -> None:
    url = f"{env.server.base}/studies/{env.nguyen_study}/series/{env.nguyen_series[0]}/instances"
    found = get_json(url, params={"includefield": "BitsAllocated,00280004"})
    assert all(value(i, "00280100") == 16 and value(i, "00280004") == "MONOCHROME2" for i in found)
    everything = get_json(url, params={"includefield": "all", "limit": "1"})[0]
    assert value(everything, "00280101") == 12
    assert everything["7FE00010"]["BulkDataURI"].startswith(env.server.base + "/studies/")


# -- paging -----------------------------------------------------------------------------------------


def test_server_limit_warning_and_paging(env: Fixture) -> None:
    url = f"{env.server.base}/studies"
    response = requests.get(url, params={"PatientID": "PAGE"}, timeout=30)
    assert len(response.json()) == MAX_LIMIT
    assert response.headers["Warning"].startswith("299 ")
    assert "exceeded the maximum supported by the server" in response.headers["Warning"]
    capped = requests.get(url, params={"PatientID": "PAGE", "limit": "1000000000"}, timeout=30)
    assert len(capped.json()) == MAX_LIMIT and "Warning" in capped.headers
    seen: list[str] = []
    for offset in range(0, PAGING_STUDIES + 10, 10):
        page = requests.get(url, params={"PatientID": "PAGE", "limit": "10", "offset": str(offset)}, timeout=30)
        assert "Warning" not in page.headers
        seen += [value(s, "0020000D") for s in page.json()]
    assert len(seen) == PAGING_STUDIES == len(set(seen))
    last = requests.get(url, params={"PatientID": "PAGE", "offset": "25"}, timeout=30)
    assert len(last.json()) == 5 and "Warning" not in last.headers


# -- hostile parameters (6.C C2) ---------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {"limit": "-1"}, {"limit": "abc"}, {"offset": "-1"}, {"offset": "abc"}, {"offset": "1e3"},
    {"limit": "99999999999999999999"}, {"fuzzymatching": "maybe"}, {"includefield": "NotAKeyword"},
    {"includefield": "00081111.00081150"}, {"Foo": "1"}, {"99999999": "1"}, {"00080080": "x"},
    {"InstitutionName": "x"}, {"SOPInstanceUID": "1.2.3"}, {"StudyDate": "2024"}, {"StudyDate": "20241301"},
    {"StudyDate": "20240230"}, {"StudyDate": "20240101-20230101"}, {"StudyDate": "-"}, {"StudyTime": "25x"},
    {"StudyInstanceUID": XSS}, {"StudyInstanceUID": "1.2.3\\../../etc"}, {"PatientID": "a\x00b"},
    {"PatientName": "x" * 2000}, {"PatientID": ["a", "b"]}, {"NumberOfStudyRelatedInstances": "many"},
])
def test_bad_parameters_are_400(env: Fixture, params: dict) -> None:
    response = requests.get(f"{env.server.base}/studies", params=params, timeout=30)
    assert_json_error(response, 400)


def test_hostile_values_are_never_reflected_as_html(env: Fixture) -> None:
    for params in ({"PatientName": XSS}, {"PatientID": "' OR 1=1 --"}, {"StudyDescription": "%' OR '1'='1"},
                   {"PatientName": "Ω" * 500}, {"PatientName": "*"}, {"StudyInstanceUID": XSS}):
        response = requests.get(f"{env.server.base}/studies", params=params, timeout=30)
        assert response.status_code in (200, 400)
        assert b"<script" not in response.content
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    stored = studies(env, StudyInstanceUID=env.xss_study)
    assert value(stored[0], "00081030") == XSS  # data is returned as data: JSON, escaped
    raw = requests.get(f"{env.server.base}/studies", params={"StudyInstanceUID": env.xss_study}, timeout=30)
    assert b"<script" not in raw.content and b"\\u003cscript" in raw.content


def test_unsupported_accept_is_406(env: Fixture) -> None:
    response = requests.get(f"{env.server.base}/studies", timeout=30,
                            headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert_json_error(response, 406)


def test_path_uid_validation(env: Fixture) -> None:
    for path in ("/studies/1.2.abc/series", "/studies/" + "1." * 40 + "1/series", "/studies/..%2F..%2Fetc/series",
                 "/studies/%2e%2e/series"):
        response = requests.get(env.server.base + path, timeout=30)
        assert_json_error(response, (400, 404))
    assert requests.get(f"{env.server.base}/studies", timeout=30).status_code == 200


def test_qido_with_dicomweb_client(env: Fixture) -> None:
    client = env.server.client()
    found = client.search_for_studies(search_filters={"PatientName": "nguyen"}, fuzzymatching=True)
    assert study_uids(found) == {env.nguyen_study}
    series = client.search_for_series(env.nguyen_study)
    assert len(series) == 2
    instances = client.search_for_instances(env.nguyen_study, env.nguyen_series[0], fields=["BitsStored"])
    assert {value(i, "00280101") for i in instances} == {12}
    paged = client.search_for_studies(search_filters={"PatientID": "PAGE"}, limit=7, offset=3)
    assert len(paged) == 7


def test_person_name_groups(env: Fixture) -> None:
    ds = make_instance(patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう", patient_id="JP001",
                       SpecificCharacterSet="ISO_IR 192", **UNSET)
    assert stow(env.server.base, [part10(ds)]).status_code == 200
    (found,) = studies(env, PatientID="JP001")
    assert found["00100010"]["Value"] == [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎",
                                          "Phonetic": "やまだ^たろう"}]
    assert value(found, "00080005") == "ISO_IR 192"
    assert study_uids(studies(env, PatientName="yamada*")) == {ds.StudyInstanceUID}


def test_accept_query_parameter(env: Fixture) -> None:
    url = f"{env.server.base}/studies"
    assert requests.get(url, params={"accept": "application/dicom+json"}, timeout=30).status_code == 200
    assert_json_error(requests.get(url, params={"accept": "text/html"}, timeout=30), 406)
