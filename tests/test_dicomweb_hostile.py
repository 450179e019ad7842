"""Hostile DICOMweb input (test battery 6.C C1 and C3): every attack gets a clear 4xx within
bounded time, nothing is stored, and the server keeps serving afterwards."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from harness.net import LOOPBACK
from tests.support.dicom import make_instance, part10
from tests.support.http import (
    LiveServer,
    assert_json_error,
    encode_multipart,
    get_json,
    instance_count,
    serve_archive,
    stow,
    stow_content_type,
    value,
)

MAX_PARTS = 50
MAX_REQUEST = 1024 * 1024
MAX_OBJECT = 64 * 1024


@dataclass
class Servers:
    default: LiveServer
    limited: LiveServer
    image: object  # an instance stored on both, for WADO attacks


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with serve_archive(tmp_path_factory.mktemp("hostile")) as (default, _a, _c), serve_archive(
            tmp_path_factory.mktemp("limited"), http={"max_parts": MAX_PARTS, "max_request_bytes": MAX_REQUEST},
            ingest={"max_object_bytes": MAX_OBJECT}) as (limited, _a2, _c2):
        image = make_instance(rows=16, columns=16, frames=2)
        for server in (default, limited):
            assert stow(server.base, [part10(image)]).status_code == 200
        yield Servers(default, limited, image)


def still_serving(server: LiveServer) -> None:
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert stow(server.base, [part10(make_instance())]).status_code == 200


def post(server: LiveServer, body: bytes, boundary: str = "b1", **headers: str) -> requests.Response:
    return requests.post(f"{server.base}/studies", data=body, timeout=60,
                         headers={"Content-Type": stow_content_type(boundary), **headers})


# -- STOW (C1) ----------------------------------------------------------------------------------------


def test_ten_thousand_tiny_parts(servers: Servers) -> None:
    server = servers.default
    before = instance_count(server)
    body = encode_multipart([({"Content-Type": "application/dicom"}, b"x" * 8)] * 10_000, "b1")
    started = time.monotonic()
    response = post(server, body)
    elapsed = time.monotonic() - started
    assert_json_error(response, (400, 413))
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert instance_count(server) == before
    still_serving(server)


def test_too_many_parts_on_a_limited_server(servers: Servers) -> None:
    body = encode_multipart([({"Content-Type": "application/dicom"}, b"x")] * (MAX_PARTS + 1), "b1")
    doc = assert_json_error(post(servers.limited, body), 413)
    assert str(MAX_PARTS) in doc["reason"]


def test_oversized_part_is_read_and_refused(servers: Servers) -> None:
    server = servers.limited
    big = make_instance(rows=256, columns=256)  # 128 KiB of pixels
    small = make_instance()
    assert_json_error(stow(server.base, [part10(big)]), 413)
    mixed = stow(server.base, [part10(big), part10(small)])
    assert mixed.status_code == 202
    failed = mixed.json()["00081198"]["Value"]
    assert value(failed[0], "00081197") == 0xA700
    assert get_json(f"{server.base}/instances", params={"SOPInstanceUID": big.SOPInstanceUID}) == []


def test_oversized_body(servers: Servers) -> None:
    server = servers.limited
    blobs = [part10(make_instance(rows=100, columns=100)) for _ in range(80)]  # ~1.6 MB in total
    assert_json_error(stow(server.base, blobs), 413)  # Content-Length says so up front
    assert_json_error(stow(server.base, blobs, chunked=True), 413)  # counted while streaming
    still_serving(server)


def test_lying_content_length(servers: Servers) -> None:
    """``Content-Length: 4294967295`` with a tiny body: refused at once, not waited for."""
    request = (f"POST /dicomweb/studies HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
               f"Content-Type: {stow_content_type('b1')}\r\nContent-Length: 4294967295\r\n\r\n--b1\r\n").encode()
    with socket.create_connection((LOOPBACK, servers.limited.port), timeout=10) as sock:
        sock.sendall(request)
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413") or reply.startswith(b"HTTP/1.0 413"), reply[:100]


def test_crlf_floods(servers: Servers) -> None:
    """CVE-2023-46136 class: megabytes of CRLFs cost linear time and end in a 400."""
    server = servers.default
    started = time.monotonic()
    assert_json_error(post(server, b"\r\n" * 1_000_000 + b"--b1\r\n\r\nx\r\n--b1--\r\n"), 400)
    flood_part = b"--b1\r\nContent-Type: application/dicom\r\n\r\n" + b"\r\n" * 2_000_000 + b"\r\n--b1--\r\n"
    assert_json_error(post(server, flood_part), 400)
    header_flood = b"--b1\r\n" + b"X-A: b\r\n" * 5000 + b"\r\nx\r\n--b1--\r\n"
    assert_json_error(post(server, header_flood), 400)
    assert time.monotonic() - started < 20
    still_serving(server)


@pytest.mark.parametrize("body", [
    b"",
    b"--b1--\r\n",
    b"no boundary at all",
    b"--b1\r\nContent-Type: application/dicom\r\n\r\nabc",  # no closing delimiter
    b"--b1\r\nbroken header line\r\n\r\nabc\r\n--b1--\r\n",
    b"--b1junk\r\n\r\nabc\r\n--b1--\r\n",
])
def test_malformed_multipart(servers: Servers, body: bytes) -> None:
    assert_json_error(post(servers.default, body), 400)


def test_gzip_bomb_and_xml_are_refused(servers: Servers) -> None:
    body = encode_multipart([({"Content-Type": "application/dicom"}, b"\x1f\x8b" + b"\0" * 100)], "b1")
    assert_json_error(post(servers.default, body, **{"Content-Encoding": "gzip"}), 415)
    xxe = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
    xml_body = encode_multipart([({"Content-Type": "application/dicom+xml"}, xxe)], "b1")
    response = requests.post(f"{servers.default.base}/studies", data=xml_body, timeout=30,
                             headers={"Content-Type": 'multipart/related; type="application/dicom+xml"; boundary=b1'})
    assert_json_error(response, 415)


def test_dicomdir_with_path_traversal_is_not_stored(servers: Servers) -> None:
    server = servers.default
    before = instance_count(server)
    dicomdir = Path(pydicom.data.get_testdata_file("DICOMDIR")).read_bytes()
    response = stow(server.base, [dicomdir])
    assert response.status_code in (400, 409)
    assert instance_count(server) == before


def test_missing_uids_and_bad_uids(servers: Servers) -> None:
    server = servers.default
    no_uids = make_instance()
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        delattr(no_uids, keyword)
    no_uids.file_meta.MediaStorageSOPInstanceUID = "1.2.3"  # the dataset itself names no instance
    assert_json_error(stow(server.base, [part10(no_uids)]), 400)
    evil = make_instance(study="1.2.3", sop=generate_uid())
    evil.StudyInstanceUID = "../../../../tmp/evil"
    response = stow(server.base, [part10(evil)])
    assert response.status_code == 409
    assert value(response.json()["00081198"]["Value"][0], "00081197") == 0xC000


# -- WADO (C3) --------------------------------------------------------------------------------------------


def test_path_traversal_and_odd_segments(servers: Servers) -> None:
    base = servers.default.base
    ds = servers.image
    for path in ("/studies/..%2F..%2F..%2Fetc%2Fpasswd", f"/studies/{ds.StudyInstanceUID}/series/..%252F..%252Fetc",
                 f"/studies/{ds.StudyInstanceUID}%00/metadata", "/studies/%2e%2e%2f%2e%2e/metadata",
                 f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{'9' * 65}",
                 f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
                 "/bulk/..%2F..%2Fetc%2Fpasswd",
                 "/studies/1..2/metadata", "/studies/.1/metadata", "/studies/1./metadata"):
        response = requests.get(base + path, timeout=30)
        assert_json_error(response, (400, 404))
    for path in (f"/studies/{ds.StudyInstanceUID}%0A/metadata",  # "$" in a regex lets a trailing newline through
                 f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}%0A/metadata"):
        assert_json_error(requests.get(base + path, timeout=30), 400)


def test_frames_and_accept_combinations(servers: Servers) -> None:
    ds = servers.image
    url = (f"{servers.default.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")
    for frames, status in (("0", 400), ("-1", 400), ("999999", 404), ("1,2,3", 404), (",", 400)):
        assert_json_error(requests.get(f"{url}/frames/{frames}", timeout=30), status)
    for accept, status in (
        ('multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.91', 406),
        ("multipart/related; type=application/octet-stream; transfer-syntax=../../etc", 400),
        ("text/html", 406), ("application/dicom; q=abc", 400), ("a" * 9000, 400), (";;;", 400),
    ):
        assert_json_error(requests.get(f"{url}/frames/1", headers={"Accept": accept}, timeout=30), status)
    ranged = requests.get(url, headers={"Range": "bytes=0-99"}, timeout=30)
    assert ranged.status_code in (200, 206, 416)


def test_server_survives_everything(servers: Servers) -> None:
    for server in (servers.default, servers.limited):
        still_serving(server)
