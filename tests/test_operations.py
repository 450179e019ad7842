"""Operating PACS-lite: start-up problems in one line, waiting for PostgreSQL and S3, rejected associations
named with their reason, imports of real-world folders, ``verify --repair``, lost objects on retrieval,
STOW-RS failure texts, and turning DELETE off.
"""

from __future__ import annotations

import copy
import io
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from harness import dcmtk
from harness.net import free_port, http_url, wait_for_port
from harness.postgres import PostgresServer
from harness.processes import ManagedProcess
from pacs_lite.archive import Archive
from pacs_lite.catalog import Integrity
from tests.support.dicom import make_instance, part10
from tests.support.http import assert_json_error, serve_archive, stow, value
from tests.support.pacs import make_config, pacs_lite

ROOT = Path(__file__).resolve().parent.parent


def serve_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACS_LITE_", "PACSLITE_"))}
    env.update({f"PACS_LITE_{k}": v for k, v in settings.items()})
    return env


@dataclass
class Node:
    """One ``pacs-lite serve`` in ``folder`` with a configuration file and free ports."""

    process: ManagedProcess
    dicom_port: int
    http_port: int

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log())) < count:
            assert self.process.running, f"server exited:\n{self.process.log_tail()}"
            assert time.monotonic() < deadline, f"{pattern!r} not logged {count} times:\n{self.process.log_tail()}"
            time.sleep(0.1)

    def readyz(self) -> requests.Response | None:
        try:
            return requests.get(http_url(self.http_port, "/readyz"), timeout=5)
        except requests.RequestException:
            return None

    def wait_ready(self, timeout: float = 90) -> None:
        self.process.wait_until(lambda: (r := self.readyz()) is not None and r.status_code == 200, timeout=timeout,
                                what="ready")
        wait_for_port("127.0.0.1", self.dicom_port, timeout=timeout)  # the DICOM process may come up later

    def terminate(self) -> int:
        return self.process.terminate_leader()


def start_node(folder: Path, toml: str = "", **settings: str) -> Node:
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    (folder / "pacs-lite.toml").write_text(toml)
    env = serve_env(DICOM_PORT=str(dicom_port), HTTP_PORT=str(http_port), HTTP_WORKERS="1",
                    COMPRESSION_TRANSFER_SYNTAX="none", COMPRESSION_WORKERS="1", **settings)
    process = ManagedProcess([sys.executable, "-m", "pacs_lite", "--config", "pacs-lite.toml", "serve"],
                             folder / "serve.log", env=env, cwd=folder, name="pacs-lite serve").start()
    return Node(process, dicom_port, http_port)


# -- start-up ----------------------------------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.parametrize("problem", ["port in use", "data folder", "tls certificate", "tls key"])
def test_start_up_problem_is_one_line_naming_the_key(tmp_path: Path, problem: str) -> None:
    settings = {"DICOM_PORT": str(free_port()), "HTTP_PORT": str(free_port())}
    holder = None
    if problem == "port in use":
        import socket

        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        settings["HTTP_PORT"] = str(holder.getsockname()[1])
        key = "http.port"
    elif problem == "data folder":
        (tmp_path / "a-file").write_text("not a folder")
        settings["STORAGE_PATH"] = str(tmp_path / "a-file" / "objects")
        key = "storage.path"
    elif problem == "tls certificate":
        settings.update(DICOM_TLS_CERT=str(tmp_path / "missing.pem"), DICOM_TLS_KEY=str(tmp_path / "missing.key"))
        key = "dicom.tls_cert"
    else:
        (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
        (tmp_path / "key.pem").write_text("nor a key\n")
        settings.update(DICOM_TLS_CERT=str(tmp_path / "cert.pem"), DICOM_TLS_KEY=str(tmp_path / "key.pem"))
        key = "dicom.tls_key"
    try:
        out = pacs_lite("serve", cwd=tmp_path, env={f"PACS_LITE_{k}": v for k, v in settings.items()}, timeout=60)
    finally:
        if holder is not None:
            holder.close()
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("pacs-lite: cannot start: ") and key in lines[0], lines[0]
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.peers
@pytest.mark.postgres
def test_start_up_waits_for_postgresql_and_readyz_says_what_is_missing(tmp_path: Path) -> None:
    pg = PostgresServer(tmp_path / "pg").start(private=True)
    try:
        url = pg.create_database().replace("postgres@", "postgres:s3cret-pw@")  # trust: the password is ignored
        pg.pause()  # the database "is still initialising"
        node = start_node(tmp_path / "node", INDEX_URL=url, STARTUP_WAIT_SECONDS="300")
        try:
            node.wait_log(r"waiting for the index database", count=3)
            wait_for_port("127.0.0.1", node.http_port, timeout=30)
            response = node.readyz()
            assert response is not None and response.status_code == 503
            assert "index database unavailable" in response.json()["reason"]
            assert requests.get(http_url(node.http_port, "/healthz"), timeout=5).status_code == 200
            pg.resume()
            node.wait_ready(timeout=120)
            assert node.terminate() == 0
        finally:
            node.process.stop()
    finally:
        pg.stop()
    log = node.log()
    attempts = re.findall(r"waiting for the index database (\S+): .*; attempt (\d+), next in ([\d.]+) s", log)
    assert attempts and all(a[0].startswith("postgresql://postgres:***@") for a in attempts), log[-3000:]
    delays = [float(a[2]) for a in attempts]
    assert delays[:3] == [0.5, 1.0, 2.0] and max(delays) <= 10.0, delays
    assert "s3cret-pw" not in log
    assert "answer after" in log and "Traceback" not in log


@pytest.mark.peers
def test_start_up_gives_up_on_the_object_store_after_wait_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    out = pacs_lite("serve", cwd=tmp_path, timeout=120, env={
        "PACS_LITE_DICOM_PORT": str(free_port()), "PACS_LITE_HTTP_PORT": str(free_port()),
        "PACS_LITE_STORAGE_BACKEND": "s3", "PACS_LITE_STORAGE_ENDPOINT": f"127.0.0.1:{free_port()}",
        "PACS_LITE_STORAGE_ACCESS_KEY": "k", "PACS_LITE_STORAGE_SECRET_KEY": "very-secret",
        "PACS_LITE_STARTUP_WAIT_SECONDS": "3"})
    assert out.returncode == 3
    assert time.monotonic() - started < 90
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("pacs-lite: cannot start: object store s3 http://127.0.0.1:") and "storage.endpoint" in last
    assert "startup.wait_seconds" in last
    assert len(re.findall(r"waiting for the object store .*; attempt \d+, next in", out.stderr)) >= 2
    assert "very-secret" not in out.stderr and "Traceback" not in out.stderr


# -- DICOM: rejections with their reason, lost objects ----------------------------------------------


@pytest.fixture(scope="module")
def dimse_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, dcmtk.Storescp, Path]]:
    folder = tmp_path_factory.mktemp("dimse-node")
    scp = dcmtk.Storescp(folder / "scp", ae_title="DEST")
    toml = (
        '[dicom]\nallow_any_caller = "false"\n'
        '[[dicom.peers]]\nae_title = "KNOWN"\nhost = "127.0.0.1"\nport = 104\n'
        '[[dicom.peers]]\nae_title = "FARAWAY"\nhost = "192.0.2.77"\nport = 104\n'
        f'[[dicom.peers]]\nae_title = "DEST"\nhost = "127.0.0.1"\nport = {scp.port}\n'
    )
    node = start_node(folder / "node", toml)
    try:
        node.wait_ready()
        with scp:
            yield node, scp, folder
    finally:
        node.process.stop()


@pytest.mark.peers
def test_rejected_associations_are_logged_with_their_reason(dimse_node: tuple[Node, dcmtk.Storescp, Path]) -> None:
    node, _, _ = dimse_node
    assert dcmtk.echoscu(node.dicom_port, aec="PACSLITE", aet="KNOWN").returncode == 0
    wrong_called = dcmtk.echoscu(node.dicom_port, aec="NOTPACS", aet="KNOWN")
    assert wrong_called.returncode != 0 and "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr
    unknown = dcmtk.echoscu(node.dicom_port, aec="PACSLITE", aet="STRANGER")
    assert unknown.returncode != 0 and "Calling AE Title Not Recognized" in unknown.stdout + unknown.stderr
    elsewhere = dcmtk.echoscu(node.dicom_port, aec="PACSLITE", aet="FARAWAY")
    assert elsewhere.returncode != 0
    node.wait_log(r"association rejected: ", count=3)
    log = node.log()
    assert "called AE 'NOTPACS', but this server is 'PACSLITE' (dicom.ae_title)" in log
    assert "calling AE 'STRANGER' at 127.0.0.1 is not a configured peer" in log
    assert "calling AE 'FARAWAY' connects from 127.0.0.1, but its [[dicom.peers]] entry names host 192.0.2.77" in log
    # each listener says once that it listens
    assert log.count("DICOM server PACSLITE listening on") == 1, log
    assert len(re.findall(r"Listening at: http://", log)) == 1, log


@pytest.mark.peers
def test_lost_object_fails_wado_cget_and_cmove_naming_the_instance(
        dimse_node: tuple[Node, dcmtk.Storescp, Path]) -> None:
    node, scp, folder = dimse_node
    study = pydicom.uid.generate_uid()
    instances = [make_instance(study=study, instance_number=i + 1) for i in range(2)]
    files = []
    for i, ds in enumerate(instances):
        files.append(folder / f"lost-{i}.dcm")
        files[-1].write_bytes(part10(ds))
    outcomes, _ = dcmtk.storescu(node.dicom_port, files, aec="PACSLITE", aet="KNOWN")
    assert all(o.outcome == "stored" for o in outcomes.values()), outcomes
    lost = instances[0]
    objects = {p.read_bytes(): p for p in (folder / "node" / "pacs-data" / "objects").rglob("*.dcm")}
    [path] = [p for data, p in objects.items() if lost.SOPInstanceUID.encode() in data]
    path.unlink()

    base = http_url(node.http_port, "/dicomweb")
    url = f"{base}/studies/{study}/series/{lost.SeriesInstanceUID}/instances/{lost.SOPInstanceUID}"
    response = requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'}, timeout=30)
    body = assert_json_error(response, 500)
    assert lost.SOPInstanceUID in body["reason"] and "missing" in body["reason"]

    got, proc = dcmtk.getscu(node.dicom_port, "STUDY", {"StudyInstanceUID": study}, folder / "got",
                             aec="PACSLITE", aet="KNOWN")
    assert dcmtk.final_suboperations(proc.stdout + proc.stderr) == {
        "remaining": 0, "completed": 1, "failed": 1, "warning": 0}
    assert len(got) == 1
    moved = dcmtk.movescu(node.dicom_port, "STUDY", {"StudyInstanceUID": study}, destination="DEST",
                          aec="PACSLITE", aet="KNOWN")
    output = moved.stdout + moved.stderr
    assert dcmtk.final_suboperations(output)["failed"] == 1
    assert "0xb000" in output.lower() and lost.SOPInstanceUID in output  # Warning, Failed SOP Instance UID List
    node.wait_log(rf"retrieve: instance {re.escape(lost.SOPInstanceUID)} cannot be delivered", count=2)
    log = node.log()
    assert f"stored object of instance {lost.SOPInstanceUID} is missing" in log
    assert "SOPClassUID" not in log and "C-STORE sub-operation failed" not in log
    assert "Test^Patient" not in log


# -- import -------------------------------------------------------------------------------------------


def raw_dataset(ds: Dataset, *, implicit: bool, little: bool) -> bytes:
    """``ds`` written without preamble and file meta, as some modalities and tools leave them."""
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, ds)
    return fp.getvalue()


def dicomdir() -> bytes:
    ds = Dataset()
    ds.FileSetID = "CD"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.slow
def test_import_skips_what_is_not_dicom_and_takes_datasets_without_meta(tmp_path: Path) -> None:
    cd = tmp_path / "cd"
    (cd / "IMAGES").mkdir(parents=True)
    normal, implicit, explicit, big, no_preamble = (make_instance(instance_number=i + 1) for i in range(5))
    (cd / "IMAGES" / "IM1").write_bytes(part10(normal))
    (cd / "IMAGES" / "IM2").write_bytes(raw_dataset(implicit, implicit=True, little=True))
    (cd / "IMAGES" / "IM3").write_bytes(raw_dataset(explicit, implicit=False, little=True))
    (cd / "IMAGES" / "IM4").write_bytes(raw_dataset(big, implicit=False, little=False))
    (cd / "IMAGES" / "IM5").write_bytes(part10(no_preamble)[132:])  # file meta, no preamble
    broken = make_instance()
    del broken.SOPInstanceUID
    broken.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    (cd / "IMAGES" / "BROKEN").write_bytes(part10(broken))
    (cd / "DICOMDIR").write_bytes(dicomdir())
    (cd / "README.TXT").write_text("Patient CD. Open viewer.exe.\n")
    (cd / "thumb.jpg").write_bytes(bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + b"\0" * 200)
    (cd / "empty").write_bytes(b"")
    server_folder = tmp_path / "server"
    server_folder.mkdir()
    out = pacs_lite("import", str(cd), cwd=server_folder)
    assert out.returncode == 1, out.stdout + out.stderr  # one DICOM object was rejected
    assert "10 files: 5 stored, 0 duplicates, 1 rejected, 0 failed, 4 skipped (not DICOM images)" in out.stdout
    for name in ("DICOMDIR", "README.TXT", "thumb.jpg", "empty"):
        assert re.search(rf"^skipped \S*{re.escape(name)}: ", out.stderr, re.MULTILINE), out.stderr
    assert re.search(r"^rejected \S*BROKEN: .*\(DICOM status 0x[0-9A-F]{4}\)$", out.stderr, re.MULTILINE), out.stderr
    for line in (out.stdout + out.stderr).splitlines():
        words = re.findall(r"[a-z]+", re.sub(r"\S*/\S*", " / ", line.lower()))  # the message, not the path
        assert not any(a == b for a, b in zip(words, words[1:], strict=False)), f"repeated word: {line}"
        first = line.split(" ", 1)[0]
        assert f": {first} " not in line, f"the status is said twice: {line}"
    assert f"archive: index sqlite:///{server_folder}/pacs-data/index.db, objects filesystem " \
           f"{server_folder}/pacs-data/objects" in out.stdout
    assert "Patient" not in out.stdout + out.stderr  # no patient data
    archive = Archive(make_config(server_folder))
    try:
        for ds in (normal, implicit, explicit, big, no_preamble):
            assert archive.catalog.lookup_instance(ds.SOPInstanceUID) is not None
    finally:
        archive.close()
    # the same import again in the same folder: duplicates, and no "new archive" note
    again = pacs_lite("import", "-q", str(cd / "IMAGES" / "IM2"), cwd=server_folder)
    assert "1 files: 0 stored, 1 duplicates" in again.stdout and "new archive" not in again.stderr
    # run somewhere else by mistake: it says which installation it wrote to, and that it is new
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stray = pacs_lite("import", str(cd / "IMAGES" / "IM1"), cwd=elsewhere)
    assert "a new archive was created" in stray.stderr and str(elsewhere) in stray.stdout


@pytest.mark.slow
def test_import_into_an_unreachable_index_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing to see")
    secret = f"pw-{os.getpid()}"
    out = pacs_lite("import", "notes.txt", cwd=tmp_path, timeout=120, env={
        "PACS_LITE_INDEX_URL": f"postgresql://pacs:{secret}@127.0.0.1:{free_port()}/pacs"})
    assert out.returncode == 3, out.stdout + out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("pacs-lite: cannot start: cannot open the archive (index postgresql://pacs:***@127.0.0.1:")
    assert secret not in out.stdout + out.stderr


# -- verify --repair -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_verify_repair_clears_every_fault_it_reports(tmp_path: Path) -> None:
    first = make_instance(instance_number=1)
    revised = copy.deepcopy(first)
    revised.SeriesDescription = "second version"
    other = make_instance(instance_number=2)
    for name, ds in (("a.dcm", first), ("b.dcm", other)):
        (tmp_path / name).write_bytes(part10(ds))
    (tmp_path / "a2.dcm").write_bytes(part10(revised))
    env = {"PACS_LITE_COMPRESSION_TRANSFER_SYNTAX": "none"}
    assert pacs_lite("import", "a.dcm", "b.dcm", cwd=tmp_path, env=env).returncode == 0
    assert pacs_lite("import", "a2.dcm", cwd=tmp_path, env=env).returncode == 0  # first becomes a revision
    objects = tmp_path / "pacs-data" / "objects"
    by_content = {p.read_bytes(): p for p in objects.rglob("*.dcm")}
    [old_revision] = [p for data, p in by_content.items()
                      if first.SOPInstanceUID.encode() in data and b"second version" not in data]
    [other_object] = [p for data, p in by_content.items() if other.SOPInstanceUID.encode() in data]
    damaged = bytearray(old_revision.read_bytes())
    damaged[-1] ^= 0xFF
    old_revision.write_bytes(bytes(damaged))
    kept = other_object.read_bytes()
    other_object.unlink()
    (objects / "notes.txt").write_text("someone's notes")

    out = pacs_lite("verify", "--grace", "0", cwd=tmp_path, env=env)
    assert out.returncode == 1
    assert "1 missing, 1 corrupt, 0 orphans, 1 stray" in out.stdout, out.stdout
    assert f"corrupt object (checksum mismatch): instance {first.SOPInstanceUID} (revision)" in out.stdout
    assert "stray object (not a key PACS-lite writes): notes.txt" in out.stdout
    repair = pacs_lite("verify", "--repair", "--grace", "0", cwd=tmp_path, env=env)
    assert repair.returncode == 1  # it found faults, and cleared them
    assert "1 orphans removed (stray objects included), 1 instances marked corrupt, 1 damaged revisions dropped" \
        in repair.stdout, repair.stdout
    assert not (objects / "notes.txt").exists() and not old_revision.exists()
    clean = pacs_lite("verify", "--grace", "0", cwd=tmp_path, env=env)
    assert clean.returncode == 0, clean.stdout
    assert f"known corrupt instance (marked by an earlier --repair; resend or delete it): {other.SOPInstanceUID}" \
        in clean.stdout
    # the lost object is put back (from a backup): --repair clears the mark
    other_object.write_bytes(kept)
    restored = pacs_lite("verify", "--repair", "--grace", "0", cwd=tmp_path, env=env)
    assert restored.returncode == 0 and "1 instances intact again" in restored.stdout, restored.stdout
    archive = Archive(make_config(tmp_path))
    try:
        assert archive.catalog.marked(Integrity.CORRUPT) == set()
        assert archive.catalog.lookup_instance(first.SOPInstanceUID) is not None  # the current version stays
    finally:
        archive.close()
    final = pacs_lite("verify", "--grace", "0", cwd=tmp_path, env=env)
    assert final.returncode == 0 and "checked 2 objects: 0 missing, 0 corrupt, 0 orphans, 0 stray" in final.stdout


# -- DICOMweb: STOW failure text, DELETE turned off, trusted networks -----------------------------------


def test_stow_failure_carries_its_reason_as_text(tmp_path: Path) -> None:
    with serve_archive(tmp_path) as (server, _, _):
        other = make_instance()
        response = stow(server.base, [part10(other)], study=pydicom.uid.generate_uid())
        assert response.status_code == 409
        [item] = response.json()["00081198"]["Value"]
        assert value(item, "00081197") == 0xC000 or value(item, "00081197") > 0
        comment = value(item, "00000902")
        assert isinstance(comment, str) and 0 < len(comment) <= 64 and "study" in comment.lower(), comment
        assert item["00000902"]["vr"] == "LO"
        # dicomweb-client and pydicom read the document
        parsed = Dataset.from_json(response.json())
        assert parsed.FailedSOPSequence[0].ErrorComment == comment


def test_delete_can_be_turned_off(tmp_path: Path) -> None:
    ds = make_instance()
    with serve_archive(tmp_path / "off", http={"allow_delete": False}) as (server, archive, _):
        assert stow(server.base, [part10(ds)]).status_code == 200
        response = requests.delete(f"{server.base}/studies/{ds.StudyInstanceUID}", timeout=30)
        body = assert_json_error(response, 405)
        assert "http.allow_delete" in body["reason"] and response.headers["Allow"] == "GET, POST"
        assert archive.catalog.lookup_instance(ds.SOPInstanceUID) is not None
    with serve_archive(tmp_path / "on") as (server, archive, _):
        assert stow(server.base, [part10(ds)]).status_code == 200
        assert requests.delete(f"{server.base}/studies/{ds.StudyInstanceUID}", timeout=30).status_code == 204
        assert archive.catalog.lookup_instance(ds.SOPInstanceUID) is None


def test_http_allow_from_admits_a_trusted_network_only(tmp_path: Path) -> None:
    from viewer.app import create_app

    for allow_from, expected in (([], 403), (["192.0.2.0/24"], 200), (["198.51.100.7"], 403)):
        config = make_config(tmp_path / str(len(allow_from)) / str(expected), http={"allow_from": allow_from})
        archive = Archive(config)
        try:
            client = create_app(config, archive).test_client()
            response = client.get("/dicomweb/studies", environ_base={"REMOTE_ADDR": "192.0.2.10"})
            assert response.status_code == expected, (allow_from, response.data)
            assert client.get("/dicomweb/studies", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
        finally:
            archive.close()


def test_documented_configuration_keys(tmp_path: Path) -> None:
    text = (ROOT / "config" / "pacs-lite.toml").read_text()
    for key in ("\nwait_seconds = 120\n", "\nallow_delete = true\n", "\nallow_from = []\n"):
        assert key in text
    out = pacs_lite("config", cwd=tmp_path, env={"PACS_LITE_HTTP_ALLOW_FROM": "192.0.2.0/24,2001:db8::/32",
                                                  "PACS_LITE_STARTUP_WAIT_SECONDS": "7"})
    assert out.returncode == 0, out.stderr
    assert '"allow_from": [\n      "192.0.2.0/24",\n      "2001:db8::/32"\n    ]' in out.stdout
    bad = pacs_lite("config", cwd=tmp_path, env={"PACS_LITE_HTTP_ALLOW_FROM": "the lan"})
    assert bad.returncode == 2 and "http.allow_from" in bad.stderr
