"""Transport hardening for pynetdicom 3.0.4: PDU size guard, socket tuning, TLS off the accept thread.

pynetdicom's DUL reads a PDU as ``recv(6)`` (type, reserved byte, 32-bit length) and then
``recv(length)``, buffering whatever length the peer claims before anything checks it,
so a peer claiming a 4 GiB PDU makes the server try to hold 4 GiB. Here:

* :class:`GuardedSocket` (an :class:`~pynetdicom.transport.AssociationSocket`) checks
  every PDU header it hands to the DUL against :class:`TransportLimits`: a P-DATA-TF may
  not exceed the maximum PDU length we advertised (plus a little slack for peers that
  count the PDV header), other PDUs 64 KiB, and the dataset bytes of one DIMSE message
  may not exceed ``max_message_bytes``. On a violation it sends an A-ABORT (source
  service-provider, reason invalid-PDU-parameter), closes the connection and hands the
  DUL an empty read, which it treats as a closed transport. The body is read with
  ``recv_into`` into one buffer of the (checked) size instead of 4 KiB appends.
* :class:`GuardedRequestHandler` reads the first PDU header itself, before pynetdicom
  creates an association (and its threads): anything but an A-ASSOCIATE-RQ of sane
  size is refused at once. It also finishes the TLS handshake with a timeout in the
  connection's own thread (pynetdicom does it in the accept loop, where one silent
  client would stall every other), and runs the association to its end so that the
  number of connections can be capped and one log line written per association.
* Every socket gets ``TCP_NODELAY``, and ``TCP_QUICKACK`` is re-armed after each
  ``recv`` (Linux clears it), so a sender using Nagle's algorithm (dcmtk ``storescu``
  without ``TCP_NODELAY=1``) is not stalled by our delayed ACKs, about 40 ms per
  instance otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import (
    AddressInformation,
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from .cstore import COMMAND, LAST, P_DATA_TF, IdleCallback, StoreCallback, StoreReceiver, split_pdvs

log = logging.getLogger("dicom_scp.transport")

PDU_HEADER_LENGTH = 6
A_ASSOCIATE_RQ = 0x01
KNOWN_PDU_TYPES = frozenset(range(0x01, 0x08))
#: Allowance over the advertised maximum PDU length (peers that count the PDV header).
PDU_SLACK = 64
#: Largest A-ASSOCIATE-RQ/AC/RJ, A-RELEASE or A-ABORT PDU we accept.
MAX_CONTROL_PDU = 64 * 1024
#: Allowance over ``max_message_bytes`` (command sets, PDV headers).
MESSAGE_SLACK = 1024 * 1024

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


@dataclass(frozen=True)
class TransportLimits:
    """What one connection may send us, and how long it may keep us waiting.

    Parameters
    ----------
    max_pdu_length
        The maximum PDU length we advertise (variable field of a P-DATA-TF).
    max_message_bytes
        The most dataset bytes one DIMSE message may carry.
    acse_timeout
        Seconds to wait for the TLS handshake and the A-ASSOCIATE-RQ.
    network_timeout
        Seconds a blocked read or write may take once associated.
    max_control_pdu
        The largest PDU of any other type.
    """

    max_pdu_length: int
    max_message_bytes: int
    acse_timeout: float
    network_timeout: float
    max_control_pdu: int = MAX_CONTROL_PDU

    def pdu_limit(self, pdu_type: int) -> int:
        """The largest length field we accept for a PDU of ``pdu_type``."""
        if pdu_type == P_DATA_TF:
            return (self.max_pdu_length or MAX_CONTROL_PDU) + PDU_SLACK
        return self.max_control_pdu


def check_pdu_header(
    header: bytes | bytearray, limits: TransportLimits, *, first: bool = False, message_bytes: int = 0
) -> str | None:
    """Why the PDU announced by ``header`` must be refused, or ``None`` if it may be read.

    Parameters
    ----------
    header
        The six header bytes.
    first
        Whether this is the first PDU on an accepted connection (must be an A-ASSOCIATE-RQ).
    message_bytes
        Dataset bytes of the DIMSE message in progress, received so far.
    """
    pdu_type, _, length = struct.unpack(">BBL", bytes(header))
    if first and pdu_type != A_ASSOCIATE_RQ:
        return f"first PDU is of type 0x{pdu_type:02X}, not an A-ASSOCIATE-RQ"
    if pdu_type not in KNOWN_PDU_TYPES:
        return None  # pynetdicom answers an unknown PDU type with an A-ABORT itself
    limit = limits.pdu_limit(pdu_type)
    if length > limit:
        return f"PDU of type 0x{pdu_type:02X} claims {length} bytes (limit {limit})"
    if pdu_type == P_DATA_TF and message_bytes + length > limits.max_message_bytes + MESSAGE_SLACK:
        return f"DIMSE message exceeds {limits.max_message_bytes} bytes"
    return None


def abort_pdu(reason: int = 0x06) -> bytes:
    """An A-ABORT PDU from the service provider (reason 6: invalid PDU parameter value)."""
    return struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0x02, reason)


def tune_socket(sock: socket.socket) -> None:
    """Disable Nagle's algorithm and ask for immediate ACKs on a connected TCP socket."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        quickack(sock)
    except OSError:
        pass  # not TCP (tests may hand us a socketpair) or already closed


def quickack(sock: socket.socket) -> None:
    """Re-arm ``TCP_QUICKACK`` (Linux clears it after some ACKs); a no-op elsewhere."""
    if _TCP_QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError:
            pass


def recv_exact(sock: socket.socket, nr_bytes: int, timeout: float | None = None) -> bytearray:
    """Read ``nr_bytes`` (fewer only if the peer closed); re-arms ``TCP_QUICKACK`` after each read.

    ``timeout`` bounds the whole read, not each ``recv``: a peer trickling one byte at a
    time (slowloris) cannot hold the connection's thread longer than that. Raises
    :class:`TimeoutError` when it passes.
    """
    buf = bytearray(nr_bytes)
    got = 0
    previous = sock.gettimeout()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with memoryview(buf) as view:
            while got < nr_bytes:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"{nr_bytes - got} of {nr_bytes} bytes not received in {timeout} s")
                    sock.settimeout(remaining)
                n = sock.recv_into(view[got:], nr_bytes - got)
                if n == 0:
                    break
                got += n
                quickack(sock)
    finally:
        if deadline is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(previous)
    if got < nr_bytes:
        del buf[got:]
    return buf


def _pdv_data_bytes(body: bytes | bytearray, pending: int) -> int:
    """Dataset bytes of the DIMSE message in progress after the P-DATA-TF ``body``."""
    for item in split_pdvs(body) or ():
        if not item.control & COMMAND:  # a data set fragment
            pending = 0 if item.control & LAST else pending + len(item.fragment)
    return pending


class StoreServingDUL(DULServiceProvider):
    """pynetdicom's DUL reactor that gives the C-STORE receiver the first look at incoming data.

    Each round of the reactor, before pynetdicom polls the socket, a :class:`GuardedSocket`
    serves the C-STORE requests waiting on it (:meth:`GuardedSocket.serve_stores`).
    """

    def _is_transport_event(self) -> bool:
        sock = self.socket
        if self.state_machine.current_state != "Sta13" and isinstance(sock, GuardedSocket) and sock.serve_stores():
            return False
        return super()._is_transport_event()


class GuardedSocket(AssociationSocket):
    """An :class:`AssociationSocket` that refuses oversized PDUs before reading them.

    Parameters
    ----------
    assoc, client_socket, address
        As for :class:`~pynetdicom.transport.AssociationSocket`.
    limits
        What the peer may send.
    pushback
        Bytes already read from ``client_socket`` (the first PDU header), served first.
    """

    def __init__(
        self,
        assoc: Association,
        client_socket: socket.socket | None = None,
        address: AddressInformation | None = None,
        *,
        limits: TransportLimits,
        pushback: bytes | bytearray = b"",
    ) -> None:
        super().__init__(assoc, client_socket, address)
        self.limits = limits
        self.violation: str | None = None
        self._pushback = bytearray(pushback)
        self._body_expected: int | None = None
        self._body_type = 0
        self._message_bytes = 0
        self.store_receiver: StoreReceiver | None = None
        if client_socket is not None:
            tune_socket(client_socket)

    def connect(self, primitive: Any) -> None:
        """Connect as association requestor, then tune the socket."""
        super().connect(primitive)
        if self.socket is not None and self._is_connected:
            tune_socket(self.socket)

    @property
    def ready(self) -> bool:
        """Whether pynetdicom has data to read: bytes read ahead or handed back, or data on the socket.

        Polls the socket as pynetdicom's own property does; serving C-STORE requests is
        :meth:`serve_stores`, which the reactor (:class:`StoreServingDUL`) calls first.
        """
        if self.socket is None or not self._is_connected:
            return False
        return bool(self._pushback) or AssociationSocket.ready.fget(self)  # type: ignore[attr-defined]

    def serve_stores(self) -> bool:
        """Let the :attr:`store_receiver` serve the C-STORE requests waiting on an established association.

        Returns ``True`` when it read from the socket and handed nothing back, so there
        is nothing for pynetdicom to read this round; ``False`` when pynetdicom should
        look (no receiver, not its turn, nothing waiting, or a message handed back).
        """
        receiver = self.store_receiver
        if self.socket is None or not self._is_connected or self._pushback:
            return False
        if receiver is None or not receiver.active() or not AssociationSocket.ready.fget(self):  # type: ignore[attr-defined]
            return False
        receiver.serve()
        if not self._is_connected:
            self.event_queue.put("Evt17")  # closed or refused while serving: a closed transport
            return True
        return not self._pushback

    # -- what the store receiver uses -------------------------------------------------------

    def read_exact(self, nr_bytes: int) -> bytearray:
        """``nr_bytes`` from the peer (fewer only when the connection was lost, and then closed)."""
        return self._read(nr_bytes)

    def push_back(self, data: bytes) -> None:
        """Bytes to serve to pynetdicom's next reads, before anything else from the socket."""
        self._pushback[:0] = data

    def check_header(self, header: bytes | bytearray, *, message_bytes: int = 0) -> bool:
        """Check a PDU header against the limits; refuse the connection (and say ``False``) if it fails."""
        reason = check_pdu_header(header, self.limits, message_bytes=message_bytes)
        if reason is not None:
            self.refuse(reason)
            return False
        return True

    def send_all(self, data: bytes) -> bool:
        """Write ``data`` within the network timeout; on failure close the connection and say ``False``."""
        sock = self.socket
        if sock is None or not self._is_connected:
            return False
        try:
            sock.sendall(data)
        except (OSError, ValueError) as exc:
            self._lost(exc)
            return False
        return True

    def wait_readable(self, timeout: float) -> bool:
        """Whether data arrives within ``timeout`` seconds."""
        sock = self.socket
        if sock is None or not self._is_connected:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            readable, _, _ = select.select([sock], [], [], timeout)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def recv(self, nr_bytes: int) -> bytearray:
        """Read a PDU header (checked against the limits) or the body it announced."""
        if self.socket is None or not self._is_connected:
            return bytearray()
        if self._body_expected is not None and nr_bytes == self._body_expected:
            self._body_expected = None
            body = self._read(nr_bytes)
            if self._body_type == P_DATA_TF and len(body) == nr_bytes:
                self._message_bytes = _pdv_data_bytes(body, self._message_bytes)
            return body
        data = self._read(nr_bytes)
        if nr_bytes == PDU_HEADER_LENGTH and len(data) == PDU_HEADER_LENGTH:
            if not self.check_header(data, message_bytes=self._message_bytes):
                return bytearray()
            self._body_type = data[0]
            self._body_expected = struct.unpack_from(">L", data, 2)[0]
        return data

    def _read(self, nr_bytes: int) -> bytearray:
        head = b""
        if self._pushback:
            head = bytes(self._pushback[:nr_bytes])
            del self._pushback[:nr_bytes]
            if len(head) == nr_bytes:
                return bytearray(head)
        try:
            rest = recv_exact(cast(socket.socket, self.socket), nr_bytes - len(head), self.limits.network_timeout)
        except (OSError, ValueError) as exc:  # timeout, reset, TLS error, closed
            self._lost(exc)
            return bytearray(head)
        if len(head) + len(rest) < nr_bytes:
            self._drop()
        return bytearray(head) + rest if head else rest

    def refuse(self, reason: str) -> None:
        """Send an A-ABORT and close the connection (the DUL then sees a closed transport)."""
        self.violation = reason
        log.warning("aborting connection with %s: %s", self._peer_ip(), reason)
        sock = self.socket
        if sock is not None:
            try:
                sock.settimeout(1.0)
                sock.sendall(abort_pdu())
            except (OSError, ValueError):
                pass
        self._drop()

    def _lost(self, exc: BaseException) -> None:
        """A read or write failed (timeout, reset, TLS error): log it and close the connection."""
        log.info("connection to %s lost: %s", self._peer_ip(), type(exc).__name__)
        self._drop()

    def _drop(self) -> None:
        """Close the socket without queueing a transport event (the DUL's empty read does)."""
        self._shutdown_socket()
        self._is_connected = False

    def _peer_ip(self) -> str:
        try:
            return str(self.assoc.requestor.address if self.assoc.is_acceptor else self.assoc.acceptor.address)
        except Exception:  # noqa: BLE001 - logging must not fail
            return "?"


class TunedApplicationEntity(ApplicationEntity):
    """An AE whose outgoing associations (C-MOVE, N-EVENT-REPORT) use :class:`GuardedSocket`."""

    transport_limits: TransportLimits | None = None

    def _create_socket(
        self, assoc: Association, address: AddressInformation, tls_args: tuple[ssl.SSLContext, str] | None
    ) -> AssociationSocket:
        limits = self.transport_limits or TransportLimits(
            self.maximum_pdu_size, 4 * 1024**3, float(self.acse_timeout or 30), float(self.network_timeout or 60)
        )
        sock = GuardedSocket(assoc, address=address, limits=limits)
        sock.tls_args = tls_args
        return sock


class GuardedRequestHandler(RequestHandler):
    """Accepts one connection: TLS handshake, first-PDU check, then the association to its end."""

    server: GuardedAssociationServer

    def handle(self) -> None:
        srv = self.server
        sock = cast(socket.socket, self.request)
        peer = str(self.client_address[0])
        limits = srv.limits
        tune_socket(sock)
        sock.settimeout(limits.acse_timeout)
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.warning("TLS handshake with %s failed: %s", peer, _tls_reason(exc))
                return
        try:
            header = recv_exact(sock, PDU_HEADER_LENGTH, limits.acse_timeout)
        except (OSError, ValueError):
            header = bytearray()
        if len(header) < PDU_HEADER_LENGTH:
            log.info("connection from %s closed or timed out before an association request", peer)
            return
        reason = check_pdu_header(header, limits, first=True)
        if reason is not None:
            log.warning("refusing connection from %s: %s", peer, reason)
            try:
                sock.settimeout(1.0)
                sock.sendall(abort_pdu())
            except (OSError, ValueError):
                pass
            return
        if srv.closing:
            return
        sock.settimeout(limits.network_timeout)
        started = time.monotonic()
        assoc = self._create_guarded_association(header)
        srv.association_started(assoc)
        try:
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            assoc.join()
        finally:
            srv.association_finished(assoc, time.monotonic() - started)

    def _create_guarded_association(self, header: bytes | bytearray) -> Association:
        """pynetdicom's ``RequestHandler._create_association`` with a :class:`GuardedSocket`."""
        assoc = Association(self.ae, MODE_ACCEPTOR)
        assoc.dul = StoreServingDUL(assoc)
        assoc.acse_timeout, assoc.network_timeout = assoc.acse_timeout, assoc.network_timeout  # onto the new DUL
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        srv = self.server
        sock = GuardedSocket(assoc, client_socket=self.request, limits=srv.limits, pushback=header)
        if srv.ingest_c_store is not None:
            sock.store_receiver = StoreReceiver(sock, assoc, srv.storage_classes, srv.ingest_c_store,
                                                srv.limits.max_message_bytes + MESSAGE_SLACK, srv.idle)
        assoc.set_socket(sock)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event, handlers in self.server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler in cast(list, handlers):
                    assoc.bind(event, handler[0], handler[1])
        return assoc


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return type(exc).__name__


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a connection cap and :class:`GuardedRequestHandler`.

    Parameters
    ----------
    ae, address, ae_title, contexts, ssl_context, evt_handlers
        As for :class:`~pynetdicom.transport.AssociationServer`.
    limits
        Transport limits for every accepted connection.
    max_connections
        Connections (handshaking, waiting for the request, or associated) served at once;
        more are closed on accept.
    on_started, on_finished
        Called with each association when it starts, and with it and its duration when it ends.
    ingest_c_store, storage_classes, idle
        Where C-STORE requests on contexts of ``storage_classes`` go, read straight off the
        socket by a :class:`~dicom_scp.cstore.StoreReceiver` (``None``: pynetdicom's handlers),
        and whether our pynetdicom-side handlers are done with an association.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        ae: ApplicationEntity,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[Any],
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list[Any] | None = None,
        *,
        limits: TransportLimits,
        max_connections: int,
        on_started: Callable[[Association], None] | None = None,
        on_finished: Callable[[Association, float], None] | None = None,
        ingest_c_store: StoreCallback | None = None,
        storage_classes: frozenset[str] = frozenset(),
        idle: IdleCallback | None = None,
    ) -> None:
        self.limits = limits
        self.ingest_c_store = ingest_c_store
        self.storage_classes = storage_classes
        self.idle = idle
        self.closing = False
        self._slots = threading.BoundedSemaphore(max_connections)
        self._on_started = on_started
        self._on_finished = on_finished
        self._refused_at = 0.0
        super().__init__(
            ae,
            address,
            ae_title,
            contexts,
            ssl_context,
            evt_handlers=evt_handlers,
            request_handler=GuardedRequestHandler,
        )

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept; wrap in TLS without handshaking (the connection's thread does that, with a timeout)."""
        client, address = cast(socket.socket, self.socket).accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self.closing:
            return False
        if self._slots.acquire(blocking=False):
            return True
        now = time.monotonic()
        if now - self._refused_at > 10:
            self._refused_at = now
            log.warning(
                "connection limit reached: closing new connections (from %s and maybe others)", client_address[0]
            )
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - one connection must never take the server down
            log.exception("error serving a connection from %s", client_address[0])
        finally:
            self._slots.release()
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error serving a connection from %s", client_address[0])

    def association_started(self, assoc: Association) -> None:
        if self._on_started is not None:
            self._on_started(assoc)

    def association_finished(self, assoc: Association, duration: float) -> None:
        if self._on_finished is not None:
            try:
                self._on_finished(assoc, duration)
            except Exception:  # noqa: BLE001
                log.exception("association bookkeeping failed")


def make_ssl_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """A server TLS context: TLS 1.2 or newer; client certificates required when ``ca`` is set."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca:
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context
