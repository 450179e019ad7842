"""Storage Commitment Push Model: N-ACTION in, N-EVENT-REPORT out on a new association.

The requester is a pynetdicom AE that is also an N-EVENT-REPORT SCP on a free port and
is configured as a peer. Reports list exact successes and failures (0x0112 unknown or
deleted, 0x0119 class mismatch, 0x0110 object missing or corrupt), and a report that
could not be delivered is delivered after a restart.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, StorageCommitmentPushModelInstance
from pynetdicom.transport import ThreadedAssociationServer

from harness.net import free_port
from pacs_lite.archive import Archive
from tests.support.dicom import make_instance, part10
from tests.support.dimse import SCP_AET, running_scp

CALLER = "COMMITSCU"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
FAST_RETRY = {"commitment_retry_base": 0.2, "job_poll_interval": 0.2}


class ReportReceiver:
    """The requester's N-EVENT-REPORT SCP: collects (event type, event information)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reports: queue.Queue[tuple[int, Dataset, str]] = queue.Queue()
        self.ae = AE(CALLER)
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self.server: ThreadedAssociationServer | None = None

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        self.reports.put((int(event.request.EventTypeID), event.event_information, event.assoc.requestor.ae_title))
        return 0x0000, None

    def start(self) -> ReportReceiver:
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)]
        )
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def next_report(self, timeout: float = 15) -> tuple[int, Dataset, str]:
        return self.reports.get(timeout=timeout)


def request_commitment(
    port: int, refs: list[tuple[str, str]], *, calling: str = CALLER, transaction: str | None = None
) -> tuple[Dataset, str]:
    """Send N-ACTION (Request Storage Commitment); return the response status and the transaction UID."""
    transaction = transaction or generate_uid()
    info = Dataset()
    info.TransactionUID = transaction
    items = []
    for sop_class, sop_uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        items.append(item)
    info.ReferencedSOPSequence = items
    ae = AE(calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", port, ae_title=SCP_AET)
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, StorageCommitmentPushModelInstance)
    finally:
        assoc.release()
    return status, transaction


def _refs(seq_name: str, ds: Dataset) -> dict[str, int | None]:
    return {
        str(i.ReferencedSOPInstanceUID): (int(i.FailureReason) if "FailureReason" in i else None)
        for i in ds.get(seq_name, [])
    }


def store_instances(archive: Archive, count: int) -> list[str]:
    study, series = generate_uid(), generate_uid()
    uids = []
    for n in range(1, count + 1):
        ds = make_instance(study=study, series=series, sop_class=SC_STORAGE, instance_number=n)
        result = archive.ingest.ingest_part10(part10(ds))
        assert result.ok
        uids.append(result.sop_instance_uid)
    return uids


@pytest.fixture
def receiver() -> Iterator[ReportReceiver]:
    rx = ReportReceiver(free_port()).start()
    yield rx
    rx.stop()


def test_commitment_success_and_every_failure_reason(tmp_path: Path, receiver: ReportReceiver) -> None:
    peers = [{"ae_title": CALLER, "host": "127.0.0.1", "port": receiver.port}]
    with running_scp(tmp_path, peers=peers, server_kwargs=FAST_RETRY) as (server, archive):
        ok1, ok2, deleted, removed, corrupted = store_instances(archive, 5)
        ct = archive.ingest.ingest_part10(Path(get_testdata_file("CT_small.dcm")).read_bytes()).sop_instance_uid
        # deleted properly: index row and object gone
        inst = archive.catalog.lookup_instance(deleted)
        for key in archive.catalog.delete(inst.study_instance_uid, inst.series_instance_uid, deleted) or []:
            archive.store.delete(key)
        # removed behind our back: the index still has it, the object is gone
        archive.store.delete(archive.catalog.lookup_instance(removed).object_key)
        # corrupted behind our back: same key, different bytes
        key = archive.catalog.lookup_instance(corrupted).object_key
        path = archive.store._path(key)
        path.write_bytes(path.read_bytes()[:-1] + b"\x01")
        unknown = generate_uid()
        refs = [
            (SC_STORAGE, ok1),
            (SC_STORAGE, ok2),
            (SC_STORAGE, unknown),
            (MR_STORAGE, ct),
            (SC_STORAGE, deleted),
            (SC_STORAGE, removed),
            (SC_STORAGE, corrupted),
        ]
        status, transaction = request_commitment(server.port, refs)
        assert status.Status == 0x0000
        event_type, info, sender = receiver.next_report()
        assert sender == SCP_AET
        assert event_type == 2
        assert str(info.TransactionUID) == transaction
        assert set(_refs("ReferencedSOPSequence", info)) == {ok1, ok2}
        assert _refs("FailedSOPSequence", info) == {
            unknown: 0x0112,
            ct: 0x0119,
            deleted: 0x0112,
            removed: 0x0110,
            corrupted: 0x0110,
        }
        # all committed: event type 1, no failed sequence
        status, transaction = request_commitment(server.port, [(SC_STORAGE, ok1), (SC_STORAGE, ok2)])
        event_type, info, _ = receiver.next_report()
        assert (event_type, str(info.TransactionUID)) == (1, transaction)
        assert "FailedSOPSequence" not in info
        deadline = time.monotonic() + 5
        while archive.catalog.jobs.counts().get("done") != 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # the job is marked done just after the report is acknowledged
        assert archive.catalog.jobs.counts() == {"done": 2}


def test_commitment_refused_for_unknown_caller(tmp_path: Path, receiver: ReportReceiver) -> None:
    peers = [{"ae_title": CALLER, "host": "127.0.0.1", "port": receiver.port}]
    with running_scp(tmp_path, peers=peers, server_kwargs=FAST_RETRY) as (server, archive):
        uid = store_instances(archive, 1)[0]
        status, _ = request_commitment(server.port, [(SC_STORAGE, uid)], calling="STRANGER")
        assert status.Status == 0x0124
        assert "peer" in status.ErrorComment
        assert archive.catalog.jobs.counts() == {}
        bad, _ = request_commitment(server.port, [], calling=CALLER)
        assert bad.Status == 0x0115


def test_report_delivered_after_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nobody listens here yet: the peer is down
    peers = [{"ae_title": CALLER, "host": "127.0.0.1", "port": port}]
    with (
        caplog.at_level(logging.WARNING),
        running_scp(tmp_path, peers=peers, server_kwargs=FAST_RETRY) as (
            server,
            archive,
        ),
    ):
        uid = store_instances(archive, 1)[0]
        status, transaction = request_commitment(server.port, [(SC_STORAGE, uid)])
        assert status.Status == 0x0000
        deadline = time.monotonic() + 15
        while "not delivered" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "not delivered" in caplog.text  # tried, failed, requeued with a backoff
    # the server is gone with the report undelivered; the peer comes up; a new server starts
    rx = ReportReceiver(port).start()
    try:
        with running_scp(tmp_path, peers=peers, server_kwargs=FAST_RETRY):
            event_type, info, _ = rx.next_report(timeout=20)
        assert (event_type, str(info.TransactionUID)) == (1, transaction)
        assert set(_refs("ReferencedSOPSequence", info)) == {uid}
    finally:
        rx.stop()
