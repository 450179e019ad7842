"""The one retrieval path: DIMSE C-GET/C-MOVE and WADO-RS read objects through here.

Stored bytes are served as they are whenever the requester accepts their transfer
syntax; otherwise the object is transcoded (see :mod:`storage.codecs`), never from a
lossy original into something that claims to be lossless. Every read is checked
against the SHA-256 recorded at ingest: a corrupt object is an error, never data.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from storage import ChecksumMismatch, ObjectNotFound, ObjectStore, StoreError

from . import dicomfile
from .catalog import Catalog, StoredInstance
from .metrics import count_error

log = logging.getLogger(__name__)

EXPLICIT_LE = dicomfile.EXPLICIT_LE


class RetrievalError(Exception):
    """An instance cannot be delivered; ``kind`` says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "missing", "corrupt", "unavailable", "unsupported", "not-found"


@dataclass(frozen=True)
class Delivered:
    """A Part-10 object ready to send and the transfer syntax it is in."""

    data: bytes
    transfer_syntax_uid: str


class RetrievalService:
    """Reads instances from the store, checks them and transcodes when asked."""

    def __init__(self, catalog: Catalog, store: ObjectStore) -> None:
        self.catalog = catalog
        self.store = store

    def read(self, inst: StoredInstance) -> bytes:
        """The stored Part-10 bytes of ``inst``, checked against their recorded SHA-256.

        Compression may replace the object between the index lookup and this read: a
        missing object whose instance now points elsewhere is read again from there.
        """
        try:
            return self._get(inst)
        except RetrievalError as exc:
            if exc.kind != "missing":
                raise
            current = self.catalog.lookup_instance(inst.sop_instance_uid)
            if current is None or current.object_key == inst.object_key:
                log.error("stored object missing (key %s)", inst.object_key)
                raise
            return self._get(current)

    def _get(self, inst: StoredInstance) -> bytes:
        try:
            return self.store.get(inst.object_key, expected_sha256=inst.object_sha256)
        except ChecksumMismatch:
            count_error("checksum_mismatch")
            log.error("stored object of an instance fails its checksum (key %s)", inst.object_key)
            raise RetrievalError("corrupt", "stored object is corrupt (checksum mismatch)") from None
        except ObjectNotFound:
            raise RetrievalError("missing", "stored object is missing") from None
        except StoreError as exc:
            count_error("store_unavailable")
            raise RetrievalError("unavailable", f"storage unavailable: {exc}") from None

    def dataset(self, inst: StoredInstance, *, stop_before_pixels: bool = False) -> Dataset:
        """The stored instance as a pydicom dataset."""
        return dicomfile.read_part10(self.read(inst), stop_before_pixels=stop_before_pixels)

    def deliver(self, inst: StoredInstance, accepted: Sequence[str] | None) -> Delivered:
        """The instance in a transfer syntax from ``accepted`` (in order of preference).

        ``None`` or ``"*"`` in ``accepted`` means the stored bytes as they are.
        """
        data = self.read(inst)
        stored = inst.transfer_syntax_uid
        if accepted is None or "*" in accepted or stored in accepted:
            return Delivered(data, stored)
        return self.transcode(data, stored, accepted)

    def transcode(self, data: bytes, stored: str, accepted: Sequence[str]) -> Delivered:
        """Re-encode a Part-10 object to the first syntax of ``accepted`` that we can produce."""
        from storage import codecs

        ds = dicomfile.read_part10(data)
        errors = []
        for target in accepted:
            try:
                out = codecs.transcode(ds, target)
            except codecs.CodecError as exc:
                errors.append(f"{target}: {exc}")
                continue
            return Delivered(encode_part10(out, target), target)
        raise RetrievalError("unsupported", "cannot provide any requested transfer syntax: " + "; ".join(errors)[:400])

    def frames(self, inst: StoredInstance, numbers: Sequence[int], accepted: Sequence[str] | None) -> tuple[list[bytes], str]:
        """Raw frames (1-based ``numbers``) in the stored syntax, or transcoded to one accepted."""
        from storage import codecs

        ds = self.dataset(inst)
        if accepted is not None and "*" not in accepted and inst.transfer_syntax_uid not in accepted:
            errors = []
            for target in accepted:
                try:
                    ds = codecs.transcode(ds, target)
                    break
                except codecs.CodecError as exc:
                    errors.append(str(exc))
            else:
                raise RetrievalError("unsupported", "cannot provide the requested transfer syntax: " + "; ".join(errors)[:300])
        try:
            total = codecs.frame_count(ds)
        except codecs.CodecError as exc:
            raise RetrievalError("unsupported", str(exc)) from None
        for n in numbers:
            if n < 1 or n > total:
                raise RetrievalError("not-found", f"frame {n} does not exist (the instance has {total})")
        ts = ds.file_meta.TransferSyntaxUID
        if ts in (dicomfile.EXPLICIT_BE, dicomfile.IMPLICIT_LE, dicomfile.DEFLATED_LE):
            ts = EXPLICIT_LE  # native frames come out as little-endian pixel bytes
        try:
            return [codecs.get_frame(ds, n - 1) for n in numbers], ts
        except codecs.CodecError as exc:
            raise RetrievalError("unsupported", str(exc)) from None


def encode_part10(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """Write ``ds`` as a Part-10 object in ``transfer_syntax_uid`` with a zeroed preamble."""
    ds.file_meta.TransferSyntaxUID = transfer_syntax_uid
    buf = io.BytesIO()
    ds.preamble = b"\0" * 128
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()
