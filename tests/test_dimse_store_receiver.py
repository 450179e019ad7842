"""The C-STORE receiver that reads P-DATA-TF PDUs straight off the socket (dicom_scp.cstore).

Messages are built by pynetdicom's own DIMSE encoder and then laid out in PDUs the way
other implementations may send them: command and data set in one PDU, the end of one
message and the start of the next sharing a PDU, an A-ABORT in the middle of a data set,
a peer that accepts only tiny PDUs. Everything that is not a C-STORE must still reach
pynetdicom intact.
"""

from __future__ import annotations

import io
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification

from dicom_scp import DicomServer
from harness import dcmtk
from pacs_lite.archive import Archive
from tests.support.dimse import SCP_AET, associate_rq, pdu_header, running_scp

CT_SMALL = get_testdata_file("CT_small.dcm")
EXPLICIT_LE = "1.2.840.10008.1.2.1"
STORE_CX, ECHO_CX = 1, 3


@dataclass
class Scp:
    server: DicomServer
    archive: Archive

    def stored(self, sop_uid: str) -> bool:
        return self.archive.catalog.lookup_instance(sop_uid) is not None


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scp]:
    with running_scp(tmp_path_factory.mktemp("store-receiver")) as (server, archive):
        yield Scp(server, archive)


# -- building PDUs with pynetdicom's encoder ------------------------------------------------------


def ct_instance() -> tuple[str, bytes]:
    """A fresh SOP Instance UID and the explicit VR little endian data set of CT_small with it."""
    ds = pydicom.dcmread(CT_SMALL)
    ds.SOPInstanceUID = generate_uid()
    return ds.SOPInstanceUID, encode(ds, False, True)


def store_pdvs(message_id: int, sop_uid: str, dataset: bytes, fragment: int = 4096) -> list[bytes]:
    """The PDV items of a C-STORE-RQ, as pynetdicom fragments it."""
    req = C_STORE()
    req.MessageID = message_id
    req.AffectedSOPClassUID = CTImageStorage
    req.AffectedSOPInstanceUID = sop_uid
    req.Priority = 2
    req.DataSet = io.BytesIO(dataset)
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    return _pdvs(msg.encode_msg(STORE_CX, fragment + 6))


def echo_pdvs(message_id: int) -> list[bytes]:
    req = C_ECHO()
    req.MessageID = message_id
    req.AffectedSOPClassUID = Verification
    msg = C_ECHO_RQ()
    msg.primitive_to_message(req)
    return _pdvs(msg.encode_msg(ECHO_CX, 16384))


def _pdvs(p_datas: Iterator[object]) -> list[bytes]:
    items = []
    for p_data in p_datas:
        for context_id, data in p_data.presentation_data_value_list:  # type: ignore[attr-defined]
            items.append(struct.pack(">LB", len(data) + 1, context_id) + data)
    return items


def p_data(*items: bytes) -> bytes:
    body = b"".join(items)
    return pdu_header(0x04, len(body)) + body


RELEASE_RQ = pdu_header(0x05, 4) + b"\0\0\0\0"
ABORT = pdu_header(0x07, 4) + b"\0\0\0\0"


class RawPeer:
    """An association over a plain socket: we write PDUs, and read and decode what comes back."""

    def __init__(self, port: int, max_pdu: int = 16384) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(associate_rq([(STORE_CX, CTImageStorage, [EXPLICIT_LE]), (ECHO_CX, Verification, [])],
                                       calling="RAWSCU", max_pdu=max_pdu))
        pdu_type, body = self.read_pdu()
        assert pdu_type == 0x02, f"association not accepted (PDU type 0x{pdu_type:02X})"
        self.pdu_lengths: list[int] = []

    def read_pdu(self) -> tuple[int, bytes]:
        header = self._exact(6)
        pdu_type, _, length = struct.unpack(">BBL", header)
        return pdu_type, self._exact(length)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the server")
            data += chunk
        return data

    def response(self) -> Dataset:
        """The next command set from the server (reassembled from as many PDUs as it takes)."""
        command = b""
        while True:
            pdu_type, body = self.read_pdu()
            assert pdu_type == 0x04, f"expected P-DATA-TF, got PDU type 0x{pdu_type:02X}"
            self.pdu_lengths.append(len(body) + 6)
            pos = 0
            while pos < len(body):
                length, _context, control = struct.unpack_from(">LBB", body, pos)
                assert control & 0x01, "the server sent a data set where a command was expected"
                command += body[pos + 6:pos + 4 + length]
                pos += 4 + length
                if control & 0x02:
                    return decode(io.BytesIO(command), True, True)

    def release(self) -> None:
        self.sock.sendall(RELEASE_RQ)
        pdu_type, _ = self.read_pdu()
        assert pdu_type == 0x06  # A-RELEASE-RP
        self.sock.close()


def assert_store_success(rsp: Dataset, message_id: int, sop_uid: str) -> None:
    assert rsp.CommandField == 0x8001
    assert rsp.Status == 0x0000, rsp.get("ErrorComment")
    assert rsp.MessageIDBeingRespondedTo == message_id
    assert rsp.AffectedSOPInstanceUID == sop_uid
    assert rsp.AffectedSOPClassUID == CTImageStorage


# -- tests -------------------------------------------------------------------------------------


def test_command_and_data_set_in_one_pdu(scp: Scp) -> None:
    sop, dataset = ct_instance()
    peer = RawPeer(scp.server.port)
    peer.sock.sendall(p_data(*store_pdvs(7, sop, dataset)))
    assert_store_success(peer.response(), 7, sop)
    peer.release()
    assert scp.stored(sop)


def test_messages_sharing_pdus_and_an_echo_between_them(scp: Scp) -> None:
    """End of one data set + next command in one PDU; a C-ECHO (pynetdicom's) riding the same way."""
    first, ds1 = ct_instance()
    second, ds2 = ct_instance()
    one, two, echo = store_pdvs(1, first, ds1), store_pdvs(2, second, ds2), echo_pdvs(3)
    peer = RawPeer(scp.server.port)
    peer.sock.sendall(p_data(*one[:-1]) + p_data(one[-1], *two[:1]) + p_data(*two[1:-1]))
    assert_store_success(peer.response(), 1, first)
    peer.sock.sendall(p_data(two[-1], *echo))
    assert_store_success(peer.response(), 2, second)
    echo_rsp = peer.response()
    assert echo_rsp.CommandField == 0x8030 and echo_rsp.Status == 0 and echo_rsp.MessageIDBeingRespondedTo == 3
    peer.release()
    assert scp.stored(first) and scp.stored(second)


@pytest.mark.peers
def test_abort_in_the_middle_of_a_data_set_stores_nothing(scp: Scp) -> None:
    sop, dataset = ct_instance()
    items = store_pdvs(1, sop, dataset)
    assert len(items) > 3
    peer = RawPeer(scp.server.port)
    peer.sock.sendall(p_data(*items[:3]) + ABORT)
    time.sleep(0.5)
    peer.sock.close()
    assert not scp.stored(sop)
    outcomes, proc = dcmtk.storescu(scp.server.port, [CT_SMALL], aec=SCP_AET)
    assert outcomes[CT_SMALL].outcome in ("stored", "duplicate"), proc.stdout[-800:]


def test_connection_lost_in_the_middle_of_a_data_set(scp: Scp) -> None:
    sop, dataset = ct_instance()
    items = store_pdvs(1, sop, dataset)
    peer = RawPeer(scp.server.port)
    peer.sock.sendall(p_data(*items[:2]))
    peer.sock.close()
    time.sleep(0.5)
    assert not scp.stored(sop)
    assert scp.server.active_associations == 0 or _settles(scp)


def _settles(scp: Scp) -> bool:
    deadline = time.monotonic() + 10
    while scp.server.active_associations and time.monotonic() < deadline:
        time.sleep(0.1)
    return scp.server.active_associations == 0


def test_response_is_fragmented_to_the_peers_maximum_pdu_length(scp: Scp) -> None:
    sop, dataset = ct_instance()
    peer = RawPeer(scp.server.port, max_pdu=64)
    peer.sock.sendall(p_data(*store_pdvs(5, sop, dataset)))
    rsp = peer.response()
    assert_store_success(rsp, 5, sop)
    assert len(peer.pdu_lengths) > 1 and max(peer.pdu_lengths) <= 64 + 6
    peer.release()


def test_data_set_after_a_foreign_command_is_refused(scp: Scp) -> None:
    """A PDU out of sequence in a data set (a command PDV): the association is aborted, nothing stored."""
    sop, dataset = ct_instance()
    items = store_pdvs(1, sop, dataset)
    peer = RawPeer(scp.server.port)
    peer.sock.sendall(p_data(*items[:2]) + p_data(*echo_pdvs(2)))
    pdu_type, _ = peer.read_pdu()
    assert pdu_type == 0x07  # A-ABORT
    peer.sock.close()
    assert not scp.stored(sop)


def test_idle_timer_restarts_with_every_stored_instance(tmp_path: Path) -> None:
    """Stores that go on longer than network_timeout in total must not trip the idle timer."""
    with running_scp(tmp_path, dicom={"network_timeout": 1}) as (server, archive):
        peer = RawPeer(server.port)
        sops = []
        for n in range(1, 7):
            sop, dataset = ct_instance()
            peer.sock.sendall(p_data(*store_pdvs(n, sop, dataset)))
            assert_store_success(peer.response(), n, sop)
            sops.append(sop)
            time.sleep(0.4)
        peer.release()
        assert all(archive.catalog.lookup_instance(s) is not None for s in sops)


def test_stores_mixed_with_echo_and_find_on_one_association(scp: Scp) -> None:
    ae = AE("MIXEDSCU")
    ae.add_requested_context(CTImageStorage, [EXPLICIT_LE])
    ae.add_requested_context(Verification)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", scp.server.port, ae_title=SCP_AET)
    assert assoc.is_established
    try:
        ds = pydicom.dcmread(CT_SMALL)
        sops = []
        for _ in range(3):
            ds.SOPInstanceUID = generate_uid()
            sops.append(ds.SOPInstanceUID)
            assert assoc.send_c_store(ds).Status == 0
            assert assoc.send_c_echo().Status == 0
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = ds.StudyInstanceUID
        query.SeriesInstanceUID = ds.SeriesInstanceUID
        query.SOPInstanceUID = ""
        found = {str(identifier.SOPInstanceUID)
                 for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                 if status and status.Status == 0xFF00}
        assert set(sops) <= found
        ds.SOPInstanceUID = generate_uid()
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()
    assert scp.stored(str(ds.SOPInstanceUID))


@pytest.mark.peers
def test_flood_of_empty_fragments_is_cut_off(tmp_path: Path) -> None:
    """Empty data set fragments add no bytes but do count: past the message limit, an A-ABORT."""
    with running_scp(tmp_path, ingest={"max_object_bytes": 4096}) as (server, archive):
        sop, dataset = ct_instance()
        command = store_pdvs(1, sop, dataset)[0]
        empty = struct.pack(">LBB", 2, STORE_CX, 0x00)  # a data set fragment of no bytes, not the last
        peer = RawPeer(server.port)
        peer.sock.sendall(p_data(command))
        answer = None
        try:
            for _ in range(400):  # 400 PDUs of 16 KiB: far past 4 KiB + the 1 MiB allowance
                peer.sock.sendall(p_data(*[empty] * 2700))
        except OSError:
            pass  # the server closed the connection while we were still sending
        try:
            answer, _ = peer.read_pdu()
        except TimeoutError:
            answer = -1  # the server is still reading: the flood was not cut off
        except (OSError, ConnectionError):
            answer = None  # reset after the A-ABORT
        peer.sock.close()
        assert answer in (0x07, None)
        assert archive.catalog.lookup_instance(sop) is None
        outcomes, proc = dcmtk.storescu(server.port, [CT_SMALL], aec=SCP_AET)
        assert outcomes[CT_SMALL].outcome == "failed"  # too large for this archive, but answered
