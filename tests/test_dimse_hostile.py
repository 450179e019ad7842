"""Hostile DIMSE input: bad UIDs, command/dataset mismatch, truncated datasets, oversized PDUs,
junk on the port, unknown callers. Each gets a clear status or a rejection, nothing is
stored, memory stays bounded, and a normal storescu works right after.
"""

from __future__ import annotations

import io
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from dicom_scp import DicomServer
from harness import dcmtk
from harness.processes import rss_bytes
from pacs_lite.archive import Archive
from tests.support.dimse import SCP_AET, associate_rq, pdu_header, raw_connection, running_scp

CT_SMALL = get_testdata_file("CT_small.dcm")
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
A_ABORT = 0x07
SECRET_NAME = "SECRETIVE^PERSONNAME"
SECRET_ID = "PID-SECRET-4711"


@dataclass
class Hostile:
    server: DicomServer
    archive: Archive
    workdir: Path

    def snapshot(self) -> tuple[dict[str, int], set[str]]:
        """Index counts and object keys: must not change when an attack is refused."""
        return self.archive.catalog.counts(), {o.key for o in self.archive.store.iter_objects()}

    def reference_store(self) -> None:
        """A legitimate storescu still succeeds."""
        outcomes, proc = dcmtk.storescu(self.server.port, [CT_SMALL], aec=SCP_AET)
        assert outcomes[CT_SMALL].outcome == "stored", proc.stdout[-1500:] + proc.stderr[-1500:]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    workdir = tmp_path_factory.mktemp("dimse-hostile")
    with running_scp(workdir / "pacs", dicom={"acse_timeout": 2}) as (server, archive):
        h = Hostile(server, archive, workdir)
        h.reference_store()  # the baseline object
        yield h


@pytest.fixture
def scu(hostile: Hostile) -> Iterator[Association]:
    ae = AE("HOSTILE")
    ae.add_requested_context(CT_STORAGE, [EXPLICIT_LE])
    assoc = ae.associate("127.0.0.1", hostile.server.port, ae_title=SCP_AET)
    assert assoc.is_established
    yield assoc
    if assoc.is_established:
        assoc.release()


def ct_dataset(**changes: str) -> Dataset:
    ds = pydicom.dcmread(CT_SMALL)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def encoded(ds: Dataset) -> bytes:
    return encode(ds, False, True)  # explicit VR little endian


def send_raw_c_store(
    assoc: Association, sop_class: str, sop_instance: str, dataset: bytes, transfer_syntax: str = EXPLICIT_LE
) -> Dataset:
    """A C-STORE whose command and dataset bytes are exactly what the caller says."""
    req = C_STORE()
    req.MessageID = 1
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = sop_instance
    req.Priority = 2
    req.DataSet = io.BytesIO(dataset)
    context = assoc._get_valid_context(sop_class, transfer_syntax, "scu", allow_conversion=False)
    assoc._reactor_checkpoint.clear()  # what send_c_store does: pause the reactor, send, await the answer
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(req, context.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert rsp is not None, "no C-STORE response (association aborted?)"
    status = Dataset()
    status.Status = rsp.Status
    if rsp.ErrorComment:
        status.ErrorComment = rsp.ErrorComment
    return status


# -- UIDs and datasets --------------------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.parametrize("uid", ["../../../tmp/evil", "/etc/passwd", "1.2\\3", "1.2.3\0.4", "1.2.abc.4", ""])
def test_bad_sop_instance_uid_is_refused(hostile: Hostile, scu: Association, uid: str) -> None:
    before = hostile.snapshot()
    _config.ENFORCE_UID_CONFORMANCE = False
    status = send_raw_c_store(scu, CT_STORAGE, uid or "1.2.3", encoded(ct_dataset(SOPInstanceUID=uid)))
    assert status.Status in (0xC000, 0xA900)
    assert status.ErrorComment
    assert hostile.snapshot() == before
    assert not Path("/tmp/evil").exists()


@pytest.mark.peers
def test_pynetdicom_send_c_store_with_path_uid(hostile: Hostile, scu: Association) -> None:
    before = hostile.snapshot()
    ds = ct_dataset(SOPInstanceUID="../../../tmp/evil")
    status = scu.send_c_store(ds)
    assert status.Status == 0xC000
    assert "UID" in status.ErrorComment
    assert hostile.snapshot() == before


@pytest.mark.peers
def test_command_uid_differs_from_dataset(hostile: Hostile, scu: Association) -> None:
    before = hostile.snapshot()
    ds = ct_dataset(SOPInstanceUID="1.2.826.0.1.3680043.10.1447.5.1")
    status = send_raw_c_store(scu, CT_STORAGE, "1.2.826.0.1.3680043.10.1447.5.2", encoded(ds))
    assert status.Status == 0xA900
    assert "differs" in status.ErrorComment
    class_status = send_raw_c_store(
        scu,
        CT_STORAGE,
        ds.SOPInstanceUID,
        encoded(ct_dataset(SOPInstanceUID=ds.SOPInstanceUID, SOPClassUID="1.2.840.10008.5.1.4.1.1.4")),
    )
    assert class_status.Status == 0xA900
    assert hostile.snapshot() == before


@pytest.mark.peers
def test_malicious_study_uid(hostile: Hostile, scu: Association) -> None:
    before = hostile.snapshot()
    ds = ct_dataset(SOPInstanceUID="1.2.826.0.1.3680043.10.1447.5.3", StudyInstanceUID="../../studies")
    status = send_raw_c_store(scu, CT_STORAGE, ds.SOPInstanceUID, encoded(ds))
    assert status.Status == 0xC000 and "Study" in status.ErrorComment
    assert hostile.snapshot() == before


@pytest.mark.peers
@pytest.mark.parametrize("cut", [1, 100, 1000, 5000])
def test_truncated_dataset(hostile: Hostile, scu: Association, cut: int) -> None:
    before = hostile.snapshot()
    ds = ct_dataset(SOPInstanceUID=f"1.2.826.0.1.3680043.10.1447.6.{cut}")
    data = encoded(ds)
    status = send_raw_c_store(scu, CT_STORAGE, ds.SOPInstanceUID, data[:-cut])
    assert status.Status == 0xC000
    assert status.ErrorComment
    assert hostile.snapshot() == before
    assert scu.is_established  # a dataset problem never aborts the association


@pytest.mark.peers
def test_garbage_dataset(hostile: Hostile, scu: Association) -> None:
    before = hostile.snapshot()
    status = send_raw_c_store(scu, CT_STORAGE, "1.2.826.0.1.3680043.10.1447.7", b"\xff" * 4096)
    assert status.Status == 0xC000
    assert hostile.snapshot() == before


@pytest.mark.peers
def test_element_claiming_huge_length(hostile: Hostile, scu: Association) -> None:
    before = hostile.snapshot()
    ds = ct_dataset(SOPInstanceUID="1.2.826.0.1.3680043.10.1447.8")
    data = encoded(ds) + struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, 0xFFFFFFF0)  # private OB, 4 GiB
    status = send_raw_c_store(scu, CT_STORAGE, ds.SOPInstanceUID, data)
    assert status.Status == 0xC000
    assert hostile.snapshot() == before


@pytest.mark.peers
def test_storescu_with_path_uid_file(hostile: Hostile) -> None:
    before = hostile.snapshot()
    path = hostile.workdir / "evil.dcm"
    ds = ct_dataset(SOPInstanceUID="../../../tmp/evil")
    ds.file_meta.MediaStorageSOPInstanceUID = "../../../tmp/evil"
    ds.save_as(path, enforce_file_format=False)
    outcomes, _ = dcmtk.storescu(hostile.server.port, [path], aec=SCP_AET)
    assert outcomes[str(path)].outcome == "failed"
    assert outcomes[str(path)].status == 0xC000 and "UID" in outcomes[str(path)].comment
    assert hostile.snapshot() == before
    hostile.reference_store()


# -- the transport ------------------------------------------------------------------------------


@pytest.mark.peers
def test_associate_rq_claiming_4_gib(hostile: Hostile) -> None:
    rss = rss_bytes()
    answer = raw_connection(hostile.server.port, pdu_header(0x01, 0xFFFFFFF0) + b"\0" * 1024)
    assert answer[:1] == bytes([A_ABORT])  # refused with an A-ABORT, connection closed
    assert rss_bytes() - rss < 100 * 1024**2
    hostile.reference_store()


@pytest.mark.peers
def test_dozen_huge_pdus_at_once(hostile: Hostile) -> None:
    rss = rss_bytes()
    threads_before = threading.active_count()
    answers: list[bytes] = []

    def attack(length: int) -> None:
        answers.append(raw_connection(hostile.server.port, pdu_header(0x01, length) + b"\x55" * 65536))

    threads = [threading.Thread(target=attack, args=(n,)) for n in [0xFFFFFFF0, 100 * 1024**2] * 6]
    for t in threads:
        t.start()
    hostile.reference_store()  # during the attack
    for t in threads:
        t.join(30)
    assert len(answers) == 12 and all(a[:1] == bytes([A_ABORT]) for a in answers)
    assert rss_bytes() - rss < 100 * 1024**2
    deadline = time.monotonic() + 10
    while threading.active_count() > threads_before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert threading.active_count() <= threads_before + 2
    hostile.reference_store()


@pytest.mark.peers
def test_p_data_larger_than_negotiated(hostile: Hostile) -> None:
    rss = rss_bytes()
    with socket.create_connection(("127.0.0.1", hostile.server.port), timeout=10) as sock:
        sock.sendall(associate_rq())
        ac = sock.recv(65536)
        assert ac[:1] == b"\x02"  # A-ASSOCIATE-AC
        sock.sendall(pdu_header(0x04, 0xFFFFFFF0) + b"\0" * 4096)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert answer[:1] == bytes([A_ABORT])
    assert rss_bytes() - rss < 100 * 1024**2
    hostile.reference_store()


@pytest.mark.peers
@pytest.mark.parametrize("junk", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x09\x00\x00\x00\x00\x04abcd", b"\x01"])
def test_junk_on_the_port(hostile: Hostile, junk: bytes) -> None:
    start = time.monotonic()
    answer = raw_connection(hostile.server.port, junk, read_timeout=10)
    assert answer in (b"",) or answer[:1] == bytes([A_ABORT])
    assert time.monotonic() - start < 8  # closed at once, or at the ACSE timeout for a partial header
    hostile.reference_store()


@pytest.mark.peers
def test_unknown_pdu_after_association(hostile: Hostile) -> None:
    with socket.create_connection(("127.0.0.1", hostile.server.port), timeout=10) as sock:
        sock.sendall(associate_rq())
        assert sock.recv(65536)[:1] == b"\x02"
        sock.sendall(b"\x09\x00\x00\x00\x00\x04abcd")
        answer = sock.recv(64)
    assert answer[:1] == bytes([A_ABORT])
    hostile.reference_store()


@pytest.mark.peers
def test_wrong_called_ae_title(hostile: Hostile) -> None:
    outcomes, proc = dcmtk.storescu(hostile.server.port, [CT_SMALL], aec="SOMEONEELSE")
    assert "Called AE Title Not Recognized" in proc.stdout + proc.stderr
    assert outcomes[CT_SMALL].outcome != "stored"


@pytest.mark.peers
def test_no_patient_data_in_logs(hostile: Hostile, caplog: pytest.LogCaptureFixture) -> None:
    ds = ct_dataset(
        PatientName=SECRET_NAME,
        PatientID=SECRET_ID,
        SOPInstanceUID="1.2.826.0.1.3680043.10.1447.9",
        StudyInstanceUID="1.2.826.0.1.3680043.10.1447.9.1",
        SeriesInstanceUID="1.2.826.0.1.3680043.10.1447.9.2",
    )
    path = hostile.workdir / "secret.dcm"
    ds.save_as(path)
    bad = ct_dataset(PatientName=SECRET_NAME, PatientID=SECRET_ID, SOPInstanceUID="1.2.826.0.1.3680043.10.1447.9.x")
    bad_path = hostile.workdir / "secret-bad.dcm"
    bad.save_as(bad_path, enforce_file_format=False)
    with caplog.at_level(logging.DEBUG):
        outcomes, _ = dcmtk.storescu(hostile.server.port, [path, bad_path], aec=SCP_AET)
        found, _ = dcmtk.findscu(
            hostile.server.port,
            "STUDY",
            {"PatientName": "SECRETIVE*", "PatientID": ""},
            hostile.workdir / "find",
            aec=SCP_AET,
        )
        dcmtk.getscu(
            hostile.server.port,
            "STUDY",
            {"StudyInstanceUID": ds.StudyInstanceUID},
            hostile.workdir / "get",
            aec=SCP_AET,
        )
    assert outcomes[str(path)].outcome == "stored" and outcomes[str(bad_path)].outcome == "failed"
    assert [str(d.PatientID) for d in found] == [SECRET_ID]
    text = caplog.text
    assert "association from STORESCU" in text  # the per-association line is there
    assert SECRET_NAME not in text and "SECRETIVE" not in text and SECRET_ID not in text


# -- access policy ---------------------------------------------------------------------------


@pytest.mark.peers
def test_unknown_calling_ae_is_rejected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    peers = [
        {"ae_title": "GOODPEER", "host": "127.0.0.1", "port": 104},
        {"ae_title": "FARPEER", "host": "127.0.0.2", "port": 104},
    ]
    with running_scp(tmp_path, peers=peers, dicom={"allow_any_caller": "false"}) as (server, archive):
        with caplog.at_level(logging.INFO):
            evil, evil_proc = dcmtk.storescu(server.port, [CT_SMALL], aec=SCP_AET, aet="EVIL")
            far, far_proc = dcmtk.storescu(server.port, [CT_SMALL], aec=SCP_AET, aet="FARPEER")  # right AE, wrong host
            echo = dcmtk.echoscu(server.port, aec=SCP_AET, aet="EVIL")
        for proc in (evil_proc, far_proc):
            assert "Calling AE Title Not Recognized" in proc.stdout + proc.stderr
        assert evil[CT_SMALL].outcome != "stored" and far[CT_SMALL].outcome != "stored"
        assert echo.returncode != 0
        assert archive.catalog.counts()["instances"] == 0
        assert "'EVIL' at 127.0.0.1 is not a configured peer" in caplog.text
        good, _ = dcmtk.storescu(server.port, [CT_SMALL], aec=SCP_AET, aet="GOODPEER")
        assert good[CT_SMALL].outcome == "stored"


def test_maximum_associations(tmp_path: Path) -> None:
    with running_scp(tmp_path, dicom={"max_associations": 2}) as (server, _):
        ae = AE("MANY")
        ae.add_requested_context("1.2.840.10008.1.1")
        held = [ae.associate("127.0.0.1", server.port, ae_title=SCP_AET) for _ in range(2)]
        try:
            assert all(a.is_established for a in held)
            third = ae.associate("127.0.0.1", server.port, ae_title=SCP_AET)
            assert third.is_rejected
            rj = third.acceptor.primitive
            assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)  # transient, local limit
        finally:
            for assoc in held:
                assoc.release()
        again = ae.associate("127.0.0.1", server.port, ae_title=SCP_AET)
        assert again.is_established
        again.release()


@pytest.mark.peers
def test_slowloris_is_cut_off(tmp_path: Path) -> None:
    """A peer trickling bytes is dropped when one PDU takes longer than the timeout, not per byte."""

    def trickle(sock: socket.socket, data: bytes, interval: float = 0.25) -> float:
        start = time.monotonic()
        try:
            for byte in data:
                sock.sendall(bytes([byte]))
                time.sleep(interval)
            sock.recv(64)  # the server's answer or EOF
        except OSError:
            pass
        return time.monotonic() - start

    with running_scp(tmp_path, dicom={"acse_timeout": 2, "network_timeout": 1}) as (server, _):
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            assert trickle(sock, associate_rq()) < 5  # 244 bytes would take 60 s
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(associate_rq())
            assert sock.recv(65536)[:1] == b"\x02"
            assert trickle(sock, pdu_header(0x04, 200) + b"\0" * 200) < 5
        assert dcmtk.echoscu(server.port, aec=SCP_AET).returncode == 0


@pytest.mark.peers
def test_object_size_cap(tmp_path: Path) -> None:
    """Slightly over ingest.max_object_bytes: a failure status; far over it: the transport aborts
    before buffering the dataset (the guard allows 1 MiB of slack)."""
    big = get_testdata_file("RG1_UNCR.dcm", read=False) or ""
    if not big:
        pytest.skip("pydicom-data not installed")
    with running_scp(tmp_path, ingest={"max_object_bytes": 4096}) as (server, archive):
        rss = rss_bytes()
        small, _ = dcmtk.storescu(server.port, [CT_SMALL], aec=SCP_AET)
        assert small[CT_SMALL].outcome == "failed" and small[CT_SMALL].status == 0xA700
        huge, proc = dcmtk.storescu(server.port, [big], aec=SCP_AET)
        assert huge[big].outcome != "stored"
        assert rss_bytes() - rss < 50 * 1024**2
        assert archive.catalog.counts()["instances"] == 0
        assert dcmtk.echoscu(server.port, aec=SCP_AET).returncode == 0
