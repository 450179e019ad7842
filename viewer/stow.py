"""STOW-RS (PS3.18 10.5): store instances sent as ``multipart/related; type="application/dicom"``.

The body is parsed as it arrives (:class:`viewer.multipart.MultipartReader`): each part
goes through the one ingest path (:meth:`~pacs_lite.ingest.IngestService.ingest_part10`)
and is dropped before the next one is read, so a request holds at most one part in
memory. Limits come from ``[http] max_request_bytes`` and ``max_parts`` and from
``[ingest] max_object_bytes`` (a larger part is read, discarded and reported failed).

The response is a DICOM JSON store response (ReferencedSOPSequence, FailedSOPSequence
with FailureReason and the reason as text in ErrorComment (0000,0902), RetrieveURL). Status: 200 all stored; 202 some failed; 409 none
stored because of what the instances are (e.g. 0x0110: not of the study in the URL);
400 when a part is not DICOM at all (or the multipart is malformed); 503 when nothing
could be stored for lack of resources; 415 for a wrong content type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from flask import Response

from pacs_lite.archive import Archive
from pacs_lite.ingest import IngestResult, IngestStatus
from pacs_lite.status import Status

from . import multipart
from .errors import RETRY_AFTER_SECONDS, ApiError, json_bytes
from .mediatypes import DICOM, DICOM_JSON, MULTIPART, parse_media_type

log = logging.getLogger(__name__)

#: How much of an over-limit body is read (and discarded) so the client sees the answer.
DRAIN_LIMIT = 16 * 1024**2


@dataclass(frozen=True)
class PartOutcome:
    """What happened to one part: the ingest result, or why the part was refused before ingest."""

    index: int
    result: IngestResult
    too_large: bool = False

    @property
    def identified(self) -> bool:
        """Whether the part could be identified as a DICOM instance (it has a SOP Instance UID)."""
        return bool(self.result.sop_instance_uid)


def request_boundary(content_type: str | None, content_encoding: str | None) -> str:
    """The boundary of a STOW-RS request, after checking its media type (415/400)."""
    if content_encoding and content_encoding.strip().lower() not in ("", "identity"):
        raise ApiError(415, "Content-Encoding is not supported for STOW-RS; send the body unencoded")
    if not content_type:
        raise ApiError(415, 'STOW-RS needs Content-Type: multipart/related; type="application/dicom"')
    media = parse_media_type(content_type)
    if media.mime != MULTIPART:
        raise ApiError(415, 'STOW-RS needs Content-Type: multipart/related; type="application/dicom"')
    if "type" in media.params and parse_media_type(media.params["type"]).mime != DICOM:
        raise ApiError(415, "only application/dicom parts are supported (not DICOM JSON or XML with bulk data)")
    try:
        return multipart.check_boundary(media.params.get("boundary"))
    except multipart.MultipartError as exc:
        raise ApiError(400, str(exc)) from None


def _refused(status: int, reason: str) -> IngestResult:
    return IngestResult(IngestStatus.REJECTED, status, reason)


def store_part(archive: Archive, part: multipart.Part, study: str | None, max_object_bytes: int,
               study_allowed: Callable[[str], bool] | None = None) -> IngestResult:
    """Ingest one part (or refuse it without storing anything)."""
    if part.too_large:
        return _refused(Status.OUT_OF_RESOURCES, f"part larger than {max_object_bytes} bytes")
    ctype = part.content_type
    if ctype is not None:
        try:
            mime = parse_media_type(ctype).mime
        except ApiError:
            mime = ctype
        if mime != DICOM:
            return _refused(Status.CANNOT_UNDERSTAND, "part is not application/dicom")
    return archive.ingest.ingest_part10(part.body, source="", study_instance_uid=study, study_allowed=study_allowed)


def ingest_parts(archive: Archive, stream: BinaryIO, boundary: str, study: str | None, *, max_parts: int,
                 max_bytes: int, study_allowed: Callable[[str], bool] | None = None) -> list[PartOutcome]:
    """Read and store every part of a STOW-RS body (413/400 via :class:`ApiError`).

    ``study_allowed`` refuses (0x0124) parts of studies the caller may not add to.
    """
    max_object = archive.ingest.max_object_bytes
    reader = multipart.MultipartReader(stream, boundary, max_parts=max_parts, max_part_bytes=max_object,
                                       max_total_bytes=max_bytes)
    outcomes: list[PartOutcome] = []
    try:
        for index, part in enumerate(reader):
            result = store_part(archive, part, study, max_object, study_allowed)
            outcomes.append(PartOutcome(index, result, part.too_large))
            del part  # one part in memory at a time
    except multipart.MultipartError as exc:
        if isinstance(exc, multipart.LimitExceeded):
            reader.drain(DRAIN_LIMIT)
        stored = sum(1 for o in outcomes if o.result.ok)
        done = f" ({len(outcomes)} parts were processed before, {stored} stored)" if outcomes else ""
        raise ApiError(exc.status, f"{exc}{done}") from None
    if not outcomes:
        raise ApiError(400, "the request contains no parts")
    return outcomes


# -- the response -----------------------------------------------------------------------------------


def _instance_url(base: str, result: IngestResult) -> str:
    return (f"{base}/studies/{result.study_instance_uid}/series/{result.series_instance_uid}"
            f"/instances/{result.sop_instance_uid}")


def _ui(value: str) -> dict[str, object]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _referenced(base: str, result: IngestResult) -> dict[str, object]:
    return {
        "00081150": _ui(result.sop_class_uid),
        "00081155": _ui(result.sop_instance_uid),
        "00081190": {"vr": "UR", "Value": [_instance_url(base, result)]},
    }


def _failed(result: IngestResult) -> dict[str, object]:
    """A Failed SOP Sequence item: the Failure Reason code and, beside it, the reason as text.

    PS3.18's Store Instances Response Module has no text attribute for a failure (Failure Reason
    (0008,1197) is a code; Warning Reason (0008,1196) is for warnings only), so the text goes in an
    Error Comment (0000,0902), the element a DIMSE response carries it in, as dcm4chee-arc does. It is
    cut to 64 printable ASCII characters (LO) and never quotes element values (no patient data).
    """
    item: dict[str, object] = {
        "00081150": _ui(result.sop_class_uid),
        "00081155": _ui(result.sop_instance_uid),
        "00081197": {"vr": "US", "Value": [result.dicom_status]},
    }
    text = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in (result.reason or str(result.status)))
    item["00000902"] = {"vr": "LO", "Value": [text.strip()[:64] or str(result.status)]}
    return item


def store_response_document(outcomes: Iterable[PartOutcome], base: str, study: str | None) -> dict[str, object]:
    """The DICOM JSON store response (PS3.18 Table 10.5.3-3)."""
    outcomes = list(outcomes)
    ok = [o.result for o in outcomes if o.result.ok]
    failed = [o.result for o in outcomes if not o.result.ok]
    doc: dict[str, object] = {}
    studies = {r.study_instance_uid for r in ok}
    target = study or (next(iter(studies)) if len(studies) == 1 else None)
    if target:
        doc["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{target}"]}
    if failed:
        doc["00081198"] = {"vr": "SQ", "Value": [_failed(r) for r in failed]}
    if ok:
        doc["00081199"] = {"vr": "SQ", "Value": [_referenced(base, r) for r in ok]}
    return doc


def _status(outcomes: list[PartOutcome]) -> int:
    ok = [o for o in outcomes if o.result.ok]
    failed = [o for o in outcomes if not o.result.ok]
    if not failed:
        return 200
    if ok:
        return 202
    if any(o.too_large for o in failed):
        return 413
    if any(not o.identified for o in failed):
        return 400
    if all(o.result.dicom_status == Status.OUT_OF_RESOURCES and o.result.status is IngestStatus.FAILED for o in failed):
        return 503
    return 409


def _warning(outcomes: list[PartOutcome], host: str) -> str | None:
    """A ``Warning`` header naming the first failure, for humans reading logs."""
    for o in outcomes:
        if not o.result.ok:
            text = o.result.reason.encode("ascii", "replace").decode("ascii").replace('"', "'").replace("\\", "/")
            text = "".join(c for c in text if c.isprintable())[:200]
            return f'299 {host}: "part {o.index + 1}: {text}"'
    return None


def store_response(outcomes: list[PartOutcome], base: str, study: str | None, host: str) -> Response:
    """The HTTP response for a processed STOW-RS request."""
    status = _status(outcomes)
    headers = {}
    warning = _warning(outcomes, host)
    if warning:
        headers["Warning"] = warning
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if status == 413:
        failure = next(o for o in outcomes if o.too_large)
        raise ApiError(413, f"part {failure.index + 1}: {failure.result.reason}", headers=headers)
    if status == 400:
        failure = next(o for o in outcomes if not o.result.ok and not o.identified)
        raise ApiError(400, f"part {failure.index + 1} is not a DICOM instance: {failure.result.reason}"[:300],
                       headers=headers)
    body = json_bytes(store_response_document(outcomes, base, study))
    return Response(body, status=status, mimetype=DICOM_JSON, headers=headers)
