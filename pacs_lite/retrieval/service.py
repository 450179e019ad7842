"""The one retrieval path: WADO-RS and DIMSE C-GET/C-MOVE read objects through here.

Every read is checked against the SHA-256 recorded at ingest: a corrupt object is an
error, never data. What goes out is decided by one :func:`~pacs_lite.retrieval.plan.plan`
per request; this module carries it out: the stored bytes as they are whenever the plan
says so, otherwise the object is transcoded (:mod:`storage.pixels`), never from a lossy
original into something that claims to be lossless. Rendering (JPEG/PNG for viewers and
thumbnails) also runs here, so the web and DICOM layers never touch pixel code.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from storage import ChecksumMismatch, ObjectNotFound, ObjectStore, StoreError

from .. import dicomfile
from ..catalog import Catalog, StoredInstance
from ..metrics import count_error
from ..syntaxes import LITTLE_ENDIAN_NATIVE, UNCOMPRESSED_OFFER
from .plan import AS_STORED, Carrier, Option, Step, plan, sent_syntax

if TYPE_CHECKING:  # pragma: no cover
    from storage import pixels

log = logging.getLogger(__name__)

T = TypeVar("T")


class Failure(StrEnum):
    """Why an instance cannot be delivered."""

    MISSING = "missing"  # the index has it, the store does not
    CORRUPT = "corrupt"  # the stored bytes fail their checksum
    UNAVAILABLE = "unavailable"  # the store cannot be reached now
    UNSUPPORTED = "unsupported"  # nothing the caller accepts can be produced
    NOT_FOUND = "not-found"  # a frame that does not exist
    INVALID = "invalid"  # a rendering parameter the image cannot honour


class RetrievalError(Exception):
    """An instance cannot be delivered; :attr:`kind` says why."""

    def __init__(self, kind: Failure, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Delivered:
    """A Part-10 object ready to send, the transfer syntax it is in and the option it satisfies."""

    data: bytes
    transfer_syntax_uid: str
    option: int = 0


@dataclass(frozen=True)
class Frames:
    """Frames ready to send (raw, no item tags), their transfer syntax and the option they satisfy."""

    frames: list[bytes]
    transfer_syntax_uid: str
    option: int = 0


def _pixels() -> pixels:
    """The pixel code, imported on first use: processes that never touch pixels never load the codecs."""
    from storage import pixels

    return pixels


class RetrievalService:
    """Reads instances from the store, checks them and produces what a plan asks for."""

    def __init__(self, catalog: Catalog, store: ObjectStore) -> None:
        self.catalog = catalog
        self.store = store

    # -- reading -----------------------------------------------------------------------------

    def read(self, inst: StoredInstance) -> bytes:
        """The stored Part-10 bytes of ``inst``, checked against their recorded SHA-256.

        Compression may replace the object between the index lookup and this read: a
        missing object whose instance now points elsewhere is read again from there.
        """
        try:
            return self._get(inst)
        except RetrievalError as exc:
            if exc.kind is not Failure.MISSING:
                raise
            current = self.catalog.lookup_instance(inst.sop_instance_uid)
            if current is None or current.object_key == inst.object_key:
                log.error("stored object of instance %s is missing (key %s)", inst.sop_instance_uid, inst.object_key)
                raise
            return self._get(current)

    def _get(self, inst: StoredInstance) -> bytes:
        try:
            return self.store.get(inst.object_key, expected_sha256=inst.object_sha256)
        except ChecksumMismatch:
            count_error("checksum_mismatch")
            log.error("stored object of instance %s fails its checksum (key %s)", inst.sop_instance_uid,
                      inst.object_key)
            raise RetrievalError(Failure.CORRUPT, f"the stored object of instance {inst.sop_instance_uid} is corrupt "
                                                  "(checksum mismatch); see `pacs-lite verify`") from None
        except ObjectNotFound:
            raise RetrievalError(Failure.MISSING, f"the stored object of instance {inst.sop_instance_uid} is missing; "
                                                  "see `pacs-lite verify`") from None
        except StoreError as exc:
            count_error("store_unavailable")
            raise RetrievalError(Failure.UNAVAILABLE, f"storage unavailable: {exc}") from None

    def dataset(self, inst: StoredInstance, *, stop_before_pixels: bool = False) -> Dataset:
        """The stored instance as a pydicom dataset (values read lazily)."""
        return dicomfile.read_part10(self.read(inst), stop_before_pixels=stop_before_pixels)

    # -- what goes out -----------------------------------------------------------------------

    def instance(self, inst: StoredInstance, options: Sequence[Option] = (AS_STORED,)) -> Delivered:
        """The instance as a Part-10 object, as the first workable step of the plan for ``options``."""
        steps = self._plan(inst, options, Carrier.OBJECT)
        data = self.read(inst)
        if steps[0].syntax is None:
            return Delivered(data, inst.transfer_syntax_uid, steps[0].option)
        ds = dicomfile.read_part10(data)

        def produce(syntax: str) -> bytes:
            return encode_part10(_pixels().transcode(ds, syntax), syntax)

        step, out = _first_workable(steps, produce, lambda: data)
        return Delivered(out, step.syntax or inst.transfer_syntax_uid, step.option)

    def dataset_for_peer(self, inst: StoredInstance, accepted: Sequence[str]) -> Dataset:
        """The instance as a dataset for a C-STORE to a peer that accepted the syntaxes ``accepted``.

        Sent as stored when the peer accepted that; otherwise transcoded, to an
        uncompressed syntax first (every peer decodes it; a compressed target may fail).
        pynetdicom encodes the dataset for the presentation context it picks, so nothing
        is written as Part-10 and parsed back here.
        """
        preferred = [ts for ts in UNCOMPRESSED_OFFER if ts in accepted] + list(accepted)
        steps = self._plan(inst, [Option.exactly(*preferred)], Carrier.DATASET)
        ds = self.dataset(inst)
        if steps[0].syntax is None:
            return ds

        def produce(syntax: str) -> Dataset:
            # a decoded dataset is explicit VR little endian; pynetdicom writes the VR form of
            # whichever little endian context the peer accepted, so that is what is made
            made = ExplicitVRLittleEndian if syntax in LITTLE_ENDIAN_NATIVE else syntax
            out = _pixels().transcode(ds, made)
            if made == ExplicitVRBigEndian:  # retired: pynetdicom sends only what was read in that byte order
                return dicomfile.read_part10(encode_part10(out, made))
            return out

        _, out = _first_workable(steps, produce, lambda: ds)
        return out

    def frames(self, inst: StoredInstance, numbers: Sequence[int], options: Sequence[Option] = (AS_STORED,)) -> Frames:
        """Raw frames (1-based ``numbers``), as the first workable step of the plan for ``options``."""
        steps = self._plan(inst, options, Carrier.FRAMES)
        ds = self.dataset(inst)
        total = self.frame_count(ds)
        for n in numbers:
            if n < 1 or n > total:
                raise RetrievalError(Failure.NOT_FOUND, f"frame {n} does not exist (the instance has {total})")
        px = _pixels()

        def produce(syntax: str | None) -> list[bytes]:
            source = ds if syntax is None else px.transcode(ds, syntax)
            return [px.get_frame(source, n - 1) for n in numbers]

        step, out = _first_workable(steps, produce, lambda: produce(None))
        return Frames(out, sent_syntax(step.syntax or inst.transfer_syntax_uid, Carrier.FRAMES), step.option)

    def _plan(self, inst: StoredInstance, options: Sequence[Option], carrier: Carrier) -> list[Step]:
        steps = plan(inst.transfer_syntax_uid, options, carrier)
        if not steps:
            raise RetrievalError(Failure.UNSUPPORTED, "none of the requested transfer syntaxes can be provided")
        return steps

    # -- pixels for viewers ----------------------------------------------------------------------

    def frame_count(self, ds: Dataset) -> int:
        """Frames in the dataset's pixel data (:class:`RetrievalError` if it cannot be read)."""
        px = _pixels()
        try:
            return px.frame_count(ds)
        except px.CodecError as exc:
            raise RetrievalError(Failure.UNSUPPORTED, str(exc)[:300]) from None

    def render(self, ds: Dataset, frame: int, *, media_type: str, window: tuple[float, float, str] | None = None,
               viewport: tuple[int, int] | None = None, quality: int = 90) -> bytes:
        """Frame ``frame`` (0-based) of ``ds`` as an 8-bit JPEG or PNG."""
        px = _pixels()
        try:
            return px.render(ds, frame, media_type=media_type, window=window, viewport=viewport, quality=quality)
        except IndexError:
            raise RetrievalError(Failure.NOT_FOUND, f"frame {frame + 1} does not exist") from None
        except px.CodecError as exc:
            raise RetrievalError(Failure.UNSUPPORTED, f"this image cannot be rendered: {exc}"[:300]) from None
        except ValueError as exc:
            raise RetrievalError(Failure.INVALID, str(exc)[:300]) from None


def _first_workable(steps: Sequence[Step], produce: Callable[[str], T], as_stored: Callable[[], T]) -> tuple[Step, T]:
    """The first step of a plan whose output can be produced (transcoding may fail for a target)."""
    px = _pixels()
    errors = []
    for step in steps:
        if step.syntax is None and errors:
            log.info("requested transfer syntaxes unavailable for an instance; sending it as stored")
        try:
            return step, as_stored() if step.syntax is None else produce(step.syntax)
        except px.CodecError as exc:
            errors.append(f"{step.syntax or 'as stored'}: {exc}")
    raise RetrievalError(Failure.UNSUPPORTED,
                         "cannot provide any requested transfer syntax: " + "; ".join(errors)[:400])


def encode_part10(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """Write ``ds`` as a Part-10 object in ``transfer_syntax_uid`` with a zeroed preamble."""
    ds.file_meta.TransferSyntaxUID = transfer_syntax_uid
    buf = io.BytesIO()
    ds.preamble = b"\0" * 128
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()
