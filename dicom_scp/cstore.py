"""C-STORE straight off the socket: the receiving side of the Storage service, without pynetdicom's per-PDU path.

pynetdicom decodes every P-DATA-TF PDU into primitives, queues them between two
polling threads and rebuilds the message, which costs about 4 ms per C-STORE: more
than the whole ingest and the cap on what one association can deliver. Once an
association is established, :class:`StoreReceiver` reads the P-DATA-TF PDUs itself.
A message whose command is a C-STORE-RQ on an accepted storage context is assembled
here (fragments copied into one buffer as they arrive), handed to the ingest callback,
and answered with a C-STORE-RSP written to the socket. Anything else (C-ECHO, C-FIND,
A-RELEASE, A-ABORT, a malformed PDU) is handed back to pynetdicom to handle as usual:
the PDV items read so far re-encoded (one per P-DATA-TF), then the rest unread. So
every other service and every protocol rule stays with pynetdicom; pynetdicom's
``EVT_C_STORE`` and PDU/DIMSE notification events do not fire for stores served here.

It runs in the association's DUL thread, the only thread that reads or writes the
socket, and only while pynetdicom has no message of its own in progress on the
association, so its responses cannot interleave with pynetdicom's.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT

if TYPE_CHECKING:  # pragma: no cover
    from pynetdicom.association import Association

    from .transport import GuardedSocket

log = logging.getLogger("dicom_scp.cstore")

P_DATA_TF = 0x04
PDU_HEADER = struct.Struct(">BBL")
PDV_HEADER = struct.Struct(">LBB")
ELEMENT_HEADER = struct.Struct("<HHL")
#: Message control header bits (PS3.8 E.2)
COMMAND, LAST = 0x01, 0x02

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
NO_DATASET = 0x0101
#: Command elements (group 0000) read from a C-STORE-RQ
AFFECTED_SOP_CLASS = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
DATASET_TYPE = 0x0800
AFFECTED_SOP_INSTANCE = 0x1000
MAX_COMMAND_BYTES = 64 * 1024
#: Seconds to wait for the peer's next message before handing the socket back to pynetdicom
LINGER = 0.05

#: ``ingest(assoc, transfer_syntax, sop_class, sop_instance, dataset) -> (status, error_comment)``
StoreCallback = Callable[["Association", str, "str | None", "str | None", bytearray], tuple[int, str]]
#: ``idle(assoc)``: whether no handler of ours is working for the association through pynetdicom
IdleCallback = Callable[["Association"], bool]


def keep_alive(assoc: Association) -> None:
    """Restart the association's network idle timer: we are working for the peer, not idle.

    pynetdicom restarts that timer only when it reads a PDU itself and checks it between
    DIMSE messages, so a long C-MOVE, C-GET, C-FIND or C-STORE would otherwise be followed
    by an A-ABORT right after its final response.
    """
    timer = getattr(assoc.dul, "_idle_timer", None)
    if timer is not None:
        timer.restart()


class CommandError(ValueError):
    """A command set that cannot be parsed."""


def parse_command(data: bytes | bytearray) -> dict[int, bytes]:
    """The elements of a command set (implicit VR little endian, group 0000) by element number."""
    values: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            raise CommandError("truncated command element")
        group, element, length = ELEMENT_HEADER.unpack_from(data, pos)
        pos += 8
        if group != 0x0000 or length > end - pos:
            raise CommandError("malformed command set")
        values[element] = bytes(data[pos:pos + length])
        pos += length
    return values


def _us(values: dict[int, bytes], element: int) -> int | None:
    raw = values.get(element)
    return struct.unpack("<H", raw)[0] if raw is not None and len(raw) == 2 else None


def _uid(values: dict[int, bytes], element: int) -> str | None:
    raw = values.get(element)
    return None if raw is None else raw.decode("ascii", "replace").rstrip("\0 ")


def _pad(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def encode_command(elements: list[tuple[int, bytes]]) -> bytes:
    """A command set from ``(element, value)`` pairs in ascending order, with its group length."""
    body = b"".join(ELEMENT_HEADER.pack(0x0000, element, len(value)) + value for element, value in elements)
    return ELEMENT_HEADER.pack(0x0000, 0x0000, 4) + struct.pack("<L", len(body)) + body


def store_response(message_id: int, sop_class: bytes, sop_instance: bytes, status: int, comment: str = "") -> bytes:
    """The command set of a C-STORE-RSP echoing the request's UIDs (cut to 64 bytes)."""
    elements = [
        (AFFECTED_SOP_CLASS, _pad(sop_class.rstrip(b"\0 ")[:64], b"\0")),
        (COMMAND_FIELD, struct.pack("<H", C_STORE_RSP)),
        (0x0120, struct.pack("<H", message_id)),
        (DATASET_TYPE, struct.pack("<H", NO_DATASET)),
        (0x0900, struct.pack("<H", status)),
    ]
    if comment:
        elements.append((0x0902, _pad(comment.encode("ascii", "replace")[:64], b" ")))
    elements.append((AFFECTED_SOP_INSTANCE, _pad(sop_instance.rstrip(b"\0 ")[:64], b"\0")))
    return encode_command(elements)


def p_data_pdus(context_id: int, control: int, payload: bytes, max_pdu_length: int | None) -> bytes:
    """``payload`` as P-DATA-TF PDUs of one PDV each, fragmented to the peer's maximum PDU length."""
    room = (max_pdu_length or 0) - 6  # the PDV item header counts towards the PDU length
    if room <= 0 or room >= len(payload):
        return _pdu(context_id, control | LAST, payload)
    pieces = [payload[i:i + room] for i in range(0, len(payload), room)]
    return b"".join(_pdu(context_id, control | (LAST if i == len(pieces) - 1 else 0), piece)
                    for i, piece in enumerate(pieces))


def _pdu(context_id: int, control: int, fragment: bytes | memoryview) -> bytes:
    return (PDU_HEADER.pack(P_DATA_TF, 0, len(fragment) + 6) + PDV_HEADER.pack(len(fragment) + 2, context_id, control)
            + bytes(fragment))


def _encode_pdvs(items: Iterable[_Pdv]) -> bytes:
    """PDV items handed back to pynetdicom, one P-DATA-TF PDU each."""
    return b"".join(_pdu(item.context_id, item.control, item.fragment) for item in items)


@dataclass
class _Pdv:
    context_id: int
    control: int
    fragment: memoryview


class _Declined(Exception):
    """The next message is not ours: hand everything read for it back to pynetdicom."""


class _Closed(Exception):
    """The connection is gone (closed, timed out, or refused for a protocol violation)."""


class StoreReceiver:
    """Serves consecutive C-STORE requests of one association from its socket.

    Parameters
    ----------
    sock
        The association's :class:`~dicom_scp.transport.GuardedSocket`.
    assoc
        The association (acceptor side).
    storage_classes
        SOP Class UIDs of the storage service: C-STORE on other contexts goes to pynetdicom.
    ingest
        Called with each received dataset; returns the status and error comment to send.
    max_message_bytes
        Bytes of one message (PDU headers included) beyond which the connection is aborted
        rather than read on (the transport guard's limit; ingest refuses smaller oversized
        objects with a status).
    idle
        Whether our pynetdicom-side handlers are all done with the association.
    """

    def __init__(self, sock: GuardedSocket, assoc: Association, storage_classes: frozenset[str],
                 ingest: StoreCallback, max_message_bytes: int, idle: IdleCallback | None = None) -> None:
        self.sock = sock
        self.assoc = assoc
        self.storage_classes = storage_classes
        self.ingest = ingest
        self.max_message_bytes = max_message_bytes
        self.idle = idle
        self._contexts: dict[int, tuple[str, str]] | None = None
        self._items: deque[_Pdv] = deque()  # PDV items of the last PDU read, not yet consumed
        self._consumed: list[_Pdv] = []  # command PDVs of the message in progress, to hand back if declined
        self._foreign = b""  # a PDU read that is not a P-DATA-TF, to hand back
        self._message_bytes = 0  # PDU bytes read for the message in progress

    def active(self) -> bool:
        """Whether we may read the next message: established (Sta6) as acceptor, pynetdicom idle.

        pynetdicom is idle when it holds no partly received or queued message and none of
        our handlers is still working through it (a C-FIND sending its responses, say);
        otherwise what arrives belongs to, or must wait for, pynetdicom.
        """
        assoc = self.assoc
        dimse, dul = assoc.dimse, assoc.dul
        return (assoc.is_acceptor and assoc.is_established and dul.state_machine.current_state == "Sta6"
                and dimse.message is None and not dimse.msg_queue.queue and not dul.to_provider_queue.queue
                and (self.idle is None or self.idle(assoc)))

    def serve(self) -> None:
        """Handle C-STORE messages while they come; return when the next message is not one, or none comes.

        Whatever was read of a message that is not ours is handed back to pynetdicom. A
        closed or refused connection is reported to pynetdicom as a closed transport by
        the socket.
        """
        try:
            while True:
                self._consumed, self._foreign, self._message_bytes = [], b"", 0
                try:
                    self._serve_one()
                except _Declined:
                    self.sock.push_back(_encode_pdvs(self._consumed) + self._remaining_items() + self._foreign)
                    return
                if not self.active():  # pynetdicom has something to send or do first
                    self.sock.push_back(self._remaining_items())
                    return
                if not self._items and not self.sock.wait_readable(LINGER):
                    return
        except _Closed:
            self._items.clear()

    # -- one message ------------------------------------------------------------------------

    def _serve_one(self) -> None:
        command = bytearray()
        while True:
            pdv = self._next_pdv()
            self._consumed.append(pdv)
            if not pdv.control & COMMAND:
                raise _Declined  # data before a command: pynetdicom's protocol handling decides
            command += pdv.fragment
            if self._message_bytes > MAX_COMMAND_BYTES:
                raise _Declined
            if pdv.control & LAST:
                break
        context_id = pdv.context_id
        try:
            values = parse_command(command)
        except CommandError:
            raise _Declined from None
        context = self._context(context_id)
        message_id = _us(values, MESSAGE_ID)
        if (_us(values, COMMAND_FIELD) != C_STORE_RQ or context is None or message_id is None
                or _us(values, DATASET_TYPE) in (None, NO_DATASET)):
            raise _Declined
        dataset = self._read_dataset(context_id)
        keep_alive(self.assoc)
        status, comment = self.ingest(self.assoc, context[1], _uid(values, AFFECTED_SOP_CLASS),
                                     _uid(values, AFFECTED_SOP_INSTANCE), dataset)
        response = store_response(message_id, values.get(AFFECTED_SOP_CLASS, b""),
                                  values.get(AFFECTED_SOP_INSTANCE, b""), status & 0xFFFF, comment)
        if not self.sock.send_all(p_data_pdus(context_id, COMMAND, response, self._peer_max_pdu())):
            raise _Closed

    def _read_dataset(self, context_id: int) -> bytes:
        fragments: list[memoryview] = []  # views into the PDU bodies, joined once at the end
        while True:
            try:
                pdv = self._next_pdv()
            except _Declined:
                # an A-ABORT, A-RELEASE-RQ or other PDU in the middle of the data set: pynetdicom
                # handles it (the partial message is dropped, as pynetdicom itself would)
                self.sock.push_back(self._foreign)
                raise _Closed from None
            if pdv.control & COMMAND or pdv.context_id != context_id:
                self.sock.refuse("P-DATA-TF out of sequence in the middle of a C-STORE data set")
                raise _Closed
            if self._message_bytes > self.max_message_bytes:
                self.sock.refuse(f"DIMSE message exceeds {self.max_message_bytes} bytes")
                raise _Closed
            fragments.append(pdv.fragment)
            if pdv.control & LAST:
                return b"".join(fragments)
            if self._aborting():
                raise _Closed  # an abort or shutdown is waiting: pynetdicom goes ahead, the message is dropped

    # -- PDUs and PDVs ---------------------------------------------------------------------

    def _next_pdv(self) -> _Pdv:
        """The next PDV item, reading the next PDU when the last one is used up.

        Raises :class:`_Declined` (with the PDU header kept in ``_foreign``) when the next
        PDU is not a P-DATA-TF, and :class:`_Closed` when the connection ends or is refused.
        """
        if not self._items:
            self._read_pdu()
        return self._items.popleft()

    def _read_pdu(self) -> None:
        header = self.sock.read_exact(6)
        if len(header) < 6:
            raise _Closed
        pdu_type, _, length = PDU_HEADER.unpack(header)
        if pdu_type != P_DATA_TF:
            self._foreign = bytes(header)  # pynetdicom reads (and checks) the body itself
            raise _Declined
        if not self.sock.check_header(header):
            raise _Closed
        body = self.sock.read_exact(length)
        if len(body) < length:
            raise _Closed
        keep_alive(self.assoc)  # as pynetdicom does for every PDU it reads
        self._message_bytes += 6 + length
        items = split_pdvs(body)
        if items is None:
            self.sock.refuse("malformed P-DATA-TF (PDV item lengths do not add up)")
            raise _Closed
        self._items.extend(items)

    def _remaining_items(self) -> bytes:
        items = _encode_pdvs(self._items)
        self._items.clear()
        return items

    # -- the association -------------------------------------------------------------------

    def _context(self, context_id: int) -> tuple[str, str] | None:
        """(abstract syntax, transfer syntax) of an accepted storage context, else ``None``."""
        if self._contexts is None:
            self._contexts = {
                int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in self.assoc.accepted_contexts
                if str(cx.abstract_syntax) in self.storage_classes and cx.transfer_syntax
            }
        return self._contexts.get(context_id)

    def _peer_max_pdu(self) -> int | None:
        try:
            return self.assoc.requestor.maximum_length
        except Exception:  # noqa: BLE001
            return None

    def _aborting(self) -> bool:
        """Whether pynetdicom wants to abort the association or stop its threads."""
        dul = self.assoc.dul
        if getattr(dul, "_kill_thread", False) or getattr(self.assoc, "_kill", False):
            return True
        return any(isinstance(primitive, A_ABORT | A_P_ABORT) for primitive in list(dul.to_provider_queue.queue))


def split_pdvs(body: bytes | bytearray) -> list[_Pdv] | None:
    """The PDV items of a P-DATA-TF body, or ``None`` if their lengths do not add up."""
    view = memoryview(body)
    items: list[_Pdv] = []
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < 6:
            return None
        length, context_id, control = PDV_HEADER.unpack_from(body, pos)
        if length < 2 or pos + 4 + length > end:
            return None
        items.append(_Pdv(context_id, control, view[pos + 6:pos + 4 + length]))
        pos += 4 + length
    return items or None
