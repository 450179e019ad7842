"""The HTTP server as deployed: ``python -m viewer.http_server --config FILE`` (gunicorn, gthread),
plus the cross-cutting parts of the application: access check, CORS and safety headers, JSON
errors, pages, health and readiness, and bounded memory while streaming."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests

from harness.net import LOOPBACK, free_port, listening_tcp_addresses, port_is_open
from harness.processes import ManagedProcess, rss_bytes
from pacs_lite.archive import Archive
from storage import StoreUnavailable
from tests.support.dicom import make_instance, part10
from tests.support.http import (
    LiveServer,
    assert_json_error,
    encode_multipart,
    serve_archive,
    split_multipart,
    stow,
    stow_content_type,
)
from viewer.access import AccessPolicy, is_loopback
from viewer.app import create_app

REPO = Path(__file__).resolve().parents[1]
ORIGIN = "https://viewer.example"


@dataclass
class Gunicorn:
    process: ManagedProcess
    url: str
    port: int

    @property
    def base(self) -> str:
        return self.url + "/dicomweb"

    def worker_pids(self) -> list[int]:
        assert self.process.pid is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    tmp = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    config = tmp / "pacs-lite.toml"
    config.write_text(f"""
[http]
host = "127.0.0.1"
port = {port}
workers = 1
threads = 4
cors_origins = ["{ORIGIN}"]

[index]
url = "sqlite:///{tmp}/index.db"

[storage]
path = "{tmp}/objects"

[compression]
transfer_syntax = "none"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_LITE_")}
    process = ManagedProcess([sys.executable, "-m", "viewer.http_server", "--config", config], tmp / "http.log",
                             env=env, cwd=REPO, name="pacs-lite-http")
    with process:
        process.wait_until(lambda: port_is_open(LOOPBACK, port), timeout=30, what="listening")
        yield Gunicorn(process, f"http://{LOOPBACK}:{port}", port)


# -- the deployed server --------------------------------------------------------------------------------


@pytest.mark.peers
def test_gunicorn_serves_health_and_binds_loopback_only(gunicorn: Gunicorn) -> None:
    assert requests.get(f"{gunicorn.url}/healthz", timeout=10).json() == {"status": "ok"}
    assert requests.get(f"{gunicorn.url}/readyz", timeout=10).json() == {"status": "ready"}
    assert listening_tcp_addresses(gunicorn.process.pid) == {(LOOPBACK, gunicorn.port)}
    assert len(gunicorn.worker_pids()) == 1
    assert "Control socket" not in gunicorn.process.log_tail(200)


@pytest.mark.peers
def test_gunicorn_stow_chunked_with_dicomweb_client_and_retrieve(gunicorn: Gunicorn) -> None:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(gunicorn.base)
    client.set_chunk_size(16 * 1024)  # forces Transfer-Encoding: chunked
    datasets = [pydicom.dcmread(pydicom.data.get_testdata_file(n))
                for n in ("CT_small.dcm", "emri_small_jpeg_ls_lossless.dcm")]
    result = client.store_instances(datasets)
    assert len(result.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in result
    ds = datasets[1]
    frames = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1, 2],
                                             media_types=(("application/octet-stream", "*"),))
    assert len(frames) == 2 and all(f.startswith(b"\xff\xd8") for f in frames)
    metadata = client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    # dicomweb-client sends "Host: 127.0.0.1" without the port; the base URL follows the Host header
    assert metadata[0]["7FE00010"]["BulkDataURI"].startswith(f"http://{LOOPBACK}/dicomweb/studies/")


@pytest.mark.peers
def test_gunicorn_access_log_has_no_query_strings(gunicorn: Gunicorn) -> None:
    requests.get(f"{gunicorn.base}/studies", params={"PatientName": "Secretname*"}, timeout=10)
    time.sleep(0.3)
    log = gunicorn.process.log_path.read_text()
    assert "/dicomweb/studies" in log
    assert "Secretname" not in log


@pytest.mark.peers
def test_gunicorn_ten_thousand_parts_and_streaming_memory(gunicorn: Gunicorn) -> None:
    """Hostile and large bodies are streamed: the worker's memory stays bounded."""
    worker = gunicorn.worker_pids()[0]
    tiny = encode_multipart([({"Content-Type": "application/dicom"}, b"tiny")] * 10_000, "b1")
    started = time.monotonic()
    response = requests.post(f"{gunicorn.base}/studies", data=tiny, headers={"Content-Type": stow_content_type("b1")},
                             timeout=60)
    assert_json_error(response, (400, 413))
    assert time.monotonic() - started < 20
    before = rss_bytes(worker)
    study = pydicom.uid.generate_uid()
    blobs = [part10(make_instance(study=study, rows=1024, columns=1024)) for _ in range(20)]  # 20 x 2 MiB
    assert stow(gunicorn.base, blobs, chunked=True).status_code == 200
    after_store = rss_bytes(worker)
    response = requests.get(f"{gunicorn.base}/studies/{study}", stream=True, timeout=60,
                            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    received = sum(len(chunk) for chunk in response.iter_content(1024 * 1024))
    assert received > 40 * 1024 * 1024
    after_retrieve = rss_bytes(worker)
    # the bodies are 40 MiB each way; holding either in memory would show here
    assert after_store - before < 24 * 1024**2, (before, after_store)
    assert after_retrieve - before < 24 * 1024**2, (before, after_retrieve)
    assert requests.get(f"{gunicorn.url}/healthz", timeout=10).status_code == 200


@pytest.mark.peers
def test_gunicorn_cors(gunicorn: Gunicorn) -> None:
    preflight = requests.options(f"{gunicorn.base}/studies", timeout=10, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, accept"})
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    for method in ("GET", "POST", "DELETE"):
        assert method in preflight.headers["Access-Control-Allow-Methods"]
    for header in ("Authorization", "Accept", "Content-Type"):
        assert header in preflight.headers["Access-Control-Allow-Headers"]
    plain = requests.get(f"{gunicorn.base}/studies", headers={"Origin": ORIGIN}, timeout=10)
    assert plain.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Warning" in plain.headers["Access-Control-Expose-Headers"]
    other = requests.get(f"{gunicorn.base}/studies", headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.peers
def test_entry_point_refuses_a_bad_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nport = 'eighty'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_LITE_")}
    with ManagedProcess([sys.executable, "-m", "viewer.http_server", "--config", bad], tmp_path / "log",
                        env=env, cwd=REPO) as process:
        assert process.proc is not None
        assert process.proc.wait(timeout=30) == 2
    assert "http.port" in (tmp_path / "log").read_text()


# -- the application, in process ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Archive]]:
    with serve_archive(tmp_path_factory.mktemp("app"), http={"cors_origins": ["*"]}) as (server, archive, _c):
        yield server, archive


def test_every_response_carries_safety_headers(live: tuple[LiveServer, Archive]) -> None:
    server, _ = live
    for response in (requests.get(f"{server.base}/studies", timeout=10),
                     requests.get(f"{server.base}/nope", timeout=10),
                     requests.get(f"{server.url}/", timeout=10),
                     requests.get(f"{server.url}/healthz", timeout=10)):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"


def test_wildcard_cors(live: tuple[LiveServer, Archive]) -> None:
    server, _ = live
    response = requests.get(f"{server.base}/studies", headers={"Origin": "https://any.example"}, timeout=10)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    error = requests.get(f"{server.base}/studies?limit=x", headers={"Origin": "https://any.example"}, timeout=10)
    assert error.status_code == 400 and error.headers["Access-Control-Allow-Origin"] == "*"


def test_errors_are_json(live: tuple[LiveServer, Archive]) -> None:
    server, _ = live
    assert_json_error(requests.get(f"{server.base}/nowhere/<script>", timeout=10), 404)
    doc = assert_json_error(requests.put(f"{server.base}/studies", timeout=10), 405)
    assert doc["error"] == "Method Not Allowed"
    assert_json_error(requests.delete(f"{server.base}/studies", timeout=10), 405)


def test_readyz_reports_a_broken_store(live: tuple[LiveServer, Archive], monkeypatch: pytest.MonkeyPatch) -> None:
    server, archive = live

    def down() -> None:
        raise StoreUnavailable("simulated")

    monkeypatch.setattr(archive.store, "check", down)
    response = requests.get(f"{server.url}/readyz", timeout=10)
    doc = assert_json_error(response, 503)
    assert "object store" in doc["reason"]
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_study_list_page_escapes_patient_data(live: tuple[LiveServer, Archive]) -> None:
    server, _ = live
    attack = "<img src=x onerror=alert(1)>"
    ds = make_instance(patient_name=attack, patient_id=attack, StudyDescription="<script>alert(2)</script>")
    assert stow(server.base, [part10(ds)]).status_code == 200
    page = requests.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<img src=x" not in page.text and "<script>alert" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    css = requests.get(f"{server.url}/static/style.css", timeout=10)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")


def test_multipart_responses_use_crlf_and_close(live: tuple[LiveServer, Archive]) -> None:
    server, _ = live
    ds = make_instance(rows=8, columns=8, frames=3)
    assert stow(server.base, [part10(ds)]).status_code == 200
    url = (f"{server.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/frames/1,2,3")
    response = requests.get(url, headers={"Accept": "multipart/related; type=application/octet-stream"}, timeout=10)
    parts = split_multipart(response)  # checks the framing strictly
    assert [len(body) for _, body in parts] == [128] * 3


# -- the access seam ---------------------------------------------------------------------------------------


def test_non_loopback_clients_are_refused(tmp_path: Path) -> None:
    from tests.support.pacs import make_config

    config = make_config(tmp_path, compression={"transfer_syntax": "none"})
    archive = Archive(config)
    try:
        app = create_app(config, archive)
        assert app.extensions["pacs_lite"] is archive
        client = app.test_client()
        remote = {"REMOTE_ADDR": "192.0.2.10"}
        for path in ("/dicomweb/studies", "/", "/healthz", "/dicomweb/studies/1.2.3/metadata"):
            response = client.get(path, environ_base=remote)
            assert response.status_code == 403, path
            assert response.json["error"] == "Forbidden"
        assert client.post("/dicomweb/studies", environ_base=remote).status_code == 403
        assert client.get("/dicomweb/studies", environ_base={"REMOTE_ADDR": "::ffff:127.0.0.1"}).status_code == 200
        assert client.get("/dicomweb/studies", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
        opened = create_app(config, archive, access=AccessPolicy(allow_remote=True)).test_client()
        assert opened.get("/dicomweb/studies", environ_base=remote).status_code == 200
    finally:
        archive.close()


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("")  # "" is a Unix socket
    assert not is_loopback("10.0.0.1") and not is_loopback("::ffff:10.0.0.1") and not is_loopback("garbage")


def test_delete_needs_the_admin_role(tmp_path: Path) -> None:
    from tests.support.pacs import make_config
    from viewer.access import Principal

    class ReadOnly(AccessPolicy):
        def authenticate(self, req: object) -> Principal:
            return Principal("viewer", frozenset({"read"}))

    config = make_config(tmp_path, compression={"transfer_syntax": "none"})
    archive = Archive(config)
    try:
        ds = make_instance()
        assert archive.ingest.ingest_part10(part10(ds)).ok
        client = create_app(config, archive, access=ReadOnly()).test_client()
        assert client.delete(f"/dicomweb/studies/{ds.StudyInstanceUID}").status_code == 403
        assert client.post("/dicomweb/studies", data=b"", content_type=stow_content_type("b")).status_code == 403
        assert client.get("/dicomweb/studies").status_code == 200
        assert archive.catalog.instances(ds.StudyInstanceUID)
    finally:
        archive.close()



def test_requests_relayed_by_a_local_proxy_are_refused(tmp_path) -> None:  # noqa: ANN001
    from tests.support.pacs import make_config
    from viewer.app import create_app

    app = create_app(make_config(tmp_path))
    client = app.test_client()
    assert client.get("/dicomweb/studies").status_code == 200
    refused = client.get("/dicomweb/studies", headers={"X-Forwarded-For": "203.0.113.7"})
    assert refused.status_code == 403
    assert refused.get_json()["reason"] if refused.is_json else True
