"""Helpers for the DIMSE tests: an in-process :class:`dicom_scp.DicomServer`, pixel comparison,
raw PDUs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import build_context

from dicom_scp import DicomServer
from harness.net import LOOPBACK
from pacs_lite.archive import Archive
from pacs_lite.config import Peer
from tests.support.pacs import make_config

VERIFICATION = "1.2.840.10008.1.1"
#: Our AE title in the tests.
SCP_AET = "PACSLITE"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
LITTLE_ENDIAN_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}


@contextlib.contextmanager
def running_scp(
    base_dir: Path,
    *,
    peers: list[dict[str, Any]] | None = None,
    index_url: str | None = None,
    server_kwargs: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Iterator[tuple[DicomServer, Archive]]:
    """An archive under ``base_dir`` (no compression) served on a free port, shut down afterwards.

    ``peers`` are ``[[dicom.peers]]`` tables (ae_title, host, port); ``sections`` override
    configuration keys.
    """
    dicom = {"port": 0, "ae_title": SCP_AET, **sections.pop("dicom", {})}
    compression = {"transfer_syntax": "none", **sections.pop("compression", {})}
    config = make_config(base_dir, index_url=index_url, dicom=dicom, compression=compression, **sections)
    if peers:
        config = dataclasses.replace(config, peers=tuple(Peer(**p) for p in peers))
    archive = Archive(config)
    server = DicomServer(archive, config, **(server_kwargs or {}))
    server.start()
    try:
        yield server, archive
    finally:
        server.shutdown(timeout=10)
        archive.close()


def pixel_difference(sent: Dataset, got: Dataset) -> str | None:
    """Why the pixel data of ``got`` is not that of ``sent``, or ``None`` when identical.

    Same transfer syntax (or both little-endian native): the encoded pixel bytes must be
    equal. Otherwise the decoded arrays must be equal (lossless transcoding).
    """
    sent_ts, got_ts = transfer_syntax(sent), transfer_syntax(got)
    for keyword in PIXEL_KEYWORDS:
        if (keyword in sent) != (keyword in got):
            return f"{keyword} present in only one of them"
        if keyword not in sent:
            continue
        same_encoding = sent_ts == got_ts or (sent_ts in LITTLE_ENDIAN_NATIVE and got_ts in LITTLE_ENDIAN_NATIVE)
        if same_encoding:
            if bytes(sent[keyword].value) != bytes(got[keyword].value):
                return f"{keyword} bytes differ ({sent_ts} vs {got_ts})"
        else:
            try:
                a, b = sent.pixel_array, got.pixel_array
            except Exception as exc:  # noqa: BLE001
                return f"cannot decode for comparison ({sent_ts} vs {got_ts}): {exc}"
            if a.shape != b.shape or not np.array_equal(a, b):
                return f"decoded pixels differ ({sent_ts} vs {got_ts})"
    return None


def transfer_syntax(ds: Dataset) -> str:
    """The dataset's transfer syntax: from its file meta, else from the encoding it was read in."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return str(meta.TransferSyntaxUID)
    implicit, little = ds.original_encoding
    return "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")


def associate_rq(contexts: Sequence[tuple[int, str, Sequence[str]]] = ((1, VERIFICATION, ()),), *,
                 calling: str = "RAW", called: str = SCP_AET, max_pdu: int = 16384) -> bytes:
    """The bytes of an A-ASSOCIATE-RQ proposing ``contexts`` ((id, abstract syntax, transfer syntaxes); none: the defaults)."""
    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title, prim.called_ae_title = calling, called
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.10.1447.99"
    prim.user_information = [max_length, impl]
    proposed = []
    for context_id, abstract_syntax, transfer_syntaxes in contexts:
        cx = build_context(abstract_syntax, list(transfer_syntaxes) or None)
        cx.context_id = context_id
        proposed.append(cx)
    prim.presentation_context_definition_list = proposed
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    return pdu.encode()


def pdu_header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def raw_connection(port: int, payload: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send ``payload`` on a fresh connection; return what the server answered before closing."""
    with socket.create_connection((LOOPBACK, port), timeout=read_timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)
