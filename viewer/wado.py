"""WADO-RS (PS3.18 10.4): instances, frames, bulk data, rendered images and thumbnails.

Instances of a study or series are streamed as ``multipart/related;
type="application/dicom"``: the response is a generator that reads, checks (SHA-256)
and, if asked, transcodes one instance at a time, so a study is never held in memory.
The first instance is read before the response starts, so that a missing, corrupt or
untranscodable object still yields a proper status; a failure later aborts the
stream (the client sees a truncated multipart body, never silently missing data).

Transfer syntaxes follow PS3.18 8.7.3: ``transfer-syntax=*`` means "as stored" (no
transcoding); no transfer-syntax means the media type's default (Explicit VR Little
Endian for ``application/dicom`` and ``application/octet-stream``). Frames are raw
(no item tags) and each part says its syntax: ``application/octet-stream;
transfer-syntax=UID``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from flask import Response
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from pacs_lite.catalog import Catalog, StoredInstance, Visibility
from pacs_lite.dicomheader import BINARY_VRS
from pacs_lite.retrieval import AS_STORED, Delivered, Failure, Option, RetrievalError, RetrievalService
from pacs_lite.syntaxes import FRAME_MEDIA_TYPES, NATIVE
from pacs_lite.tags import ENCAPSULATED_DOCUMENT, PIXEL_DATA

from . import multipart
from .errors import ApiError
from .mediatypes import (
    DICOM,
    MULTIPART,
    OCTET_STREAM,
    Alternative,
    MediaType,
    alternatives,
    parse_accept,
    parse_media_type,
)

log = logging.getLogger(__name__)

MAX_FRAMES_PER_REQUEST = 10_000
_FRAME_RE = re.compile(r"^[1-9][0-9]{0,8}$")
_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_INDEX_RE = re.compile(r"^(0|[1-9][0-9]{0,5})$")
MAX_BULK_DEPTH = 16

RENDER_TYPES = ("image/jpeg", "image/png")
RENDER_PARAMS = frozenset({"window", "viewport", "quality", "annotation", "charset", "iccprofile", "accept"})
VOI_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
DEFAULT_THUMBNAIL_SIZE = 128
MAX_RENDERED_FRAMES = 64
MAX_VIEWPORT = 4096


# -- lookups ------------------------------------------------------------------------------------


def find_instances(catalog: Catalog, study: str, series: str | None, sop: str | None,
                   visibility: Visibility) -> list[StoredInstance]:
    """The instances a WADO-RS path names, in series/instance order (404 if none)."""
    found = catalog.instances(study, series, sop, visibility=visibility)
    if not found:
        what = "instance" if sop else "series" if series else "study"
        raise ApiError(404, f"no such {what}")
    return found


def representative(catalog: Catalog, study: str, series: str | None, visibility: Visibility) -> StoredInstance:
    """The image that stands for a study or series: the middle image of its first series with images."""
    scope = {"StudyInstanceUID": study}
    if series is not None:
        scope["SeriesInstanceUID"] = series
    rows = [r for r in catalog.find("IMAGE", scope, visibility=visibility) if r.get("Rows")]
    if not rows:
        raise ApiError(404, "no image to render in this " + ("series" if series else "study"))
    first_series = rows[0]["SeriesInstanceUID"]
    rows = [r for r in rows if r["SeriesInstanceUID"] == first_series]
    chosen = rows[len(rows) // 2]
    return find_instances(catalog, study, chosen["SeriesInstanceUID"], chosen["SOPInstanceUID"], visibility)[0]


# -- instances --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceRequest:
    """What an instance retrieval asks for: multipart or not, and the options in order of preference."""

    multipart: bool
    options: tuple[Option, ...]


def _instance_option(alt: Alternative) -> Option:
    if alt.any_syntax:
        return AS_STORED
    if alt.transfer_syntaxes is None:  # the media type's default; sent as stored if it cannot be made
        return Option.exactly(ExplicitVRLittleEndian, or_as_stored=True)
    return Option.exactly(*alt.transfer_syntaxes)


def instance_request(accept: str | None, *, single: bool) -> InstanceRequest:
    """What an instance retrieval with this ``Accept`` asks for (406 if nothing fits)."""
    usable = [a for a in alternatives(accept, DICOM) if a.media_type == DICOM and (a.multipart or single)]
    if not usable:
        raise ApiError(406, 'instances are available as multipart/related; type="application/dicom"'
                       + (" or application/dicom" if single else ""))
    chosen = [a for a in usable if a.multipart == usable[0].multipart]
    return InstanceRequest(usable[0].multipart, tuple(_instance_option(a) for a in chosen))


def _dicom_part_headers(item: Delivered) -> dict[str, str]:
    return {"Content-Type": f"{DICOM}; transfer-syntax={item.transfer_syntax_uid}"}


def _instance_parts(retrieval: RetrievalService, first: Delivered, rest: Sequence[StoredInstance],
                    wanted: InstanceRequest) -> Iterator[tuple[Mapping[str, str], bytes]]:
    yield _dicom_part_headers(first), first.data
    del first  # hold one instance at a time, not the first one for the whole stream
    for inst in rest:
        try:
            item = retrieval.instance(inst, wanted.options)
        except Exception:
            log.exception("aborting a multipart WADO-RS response: an instance cannot be delivered")
            raise
        yield _dicom_part_headers(item), item.data
        del item


def retrieve_instances(catalog: Catalog, retrieval: RetrievalService, accept: str | None, study: str,
                       series: str | None, sop: str | None, visibility: Visibility) -> Response:
    """Stream the instances of a study, a series or one instance."""
    wanted = instance_request(accept, single=sop is not None)
    instances = find_instances(catalog, study, series, sop, visibility)
    first = retrieval.instance(instances[0], wanted.options)
    if not wanted.multipart:
        return Response(first.data, content_type=_dicom_part_headers(first)["Content-Type"])
    boundary = multipart.new_boundary()
    body = multipart.write_parts(boundary, _instance_parts(retrieval, first, instances[1:], wanted))
    return Response(body, content_type=multipart.content_type(DICOM, boundary))


# -- frames -----------------------------------------------------------------------------------


def parse_frame_numbers(text: str) -> list[int]:
    """``1,3,5`` -> ``[1, 3, 5]`` (1-based; 400 for anything else)."""
    items = text.split(",")
    if len(items) > MAX_FRAMES_PER_REQUEST:
        raise ApiError(400, f"more than {MAX_FRAMES_PER_REQUEST} frames requested")
    numbers = []
    for item in items:
        item = item.strip()
        if not _FRAME_RE.match(item):
            raise ApiError(400, f"invalid frame number {item[:20]!r}: frames are numbered from 1")
        numbers.append(int(item))
    return numbers


def _frame_alternative_ok(alt: Alternative, count: int) -> bool:
    if not alt.multipart and count != 1:
        return False
    return alt.media_type == OCTET_STREAM or alt.media_type in FRAME_MEDIA_TYPES


def _frame_option(alt: Alternative) -> Option:
    """What ``alt`` takes: octet-stream in the syntaxes named (default explicit VR little
    endian; ``*`` any), or an image media type in the syntaxes named (default: its family,
    produced in its first syntax)."""
    if alt.media_type == OCTET_STREAM:
        if alt.any_syntax:
            return AS_STORED
        return Option.exactly(*(alt.transfer_syntaxes or (ExplicitVRLittleEndian,)))
    family = FRAME_MEDIA_TYPES[alt.media_type]
    if alt.transfer_syntaxes is None or alt.any_syntax:
        return Option(frozenset(family), family[:1])
    return Option.exactly(*alt.transfer_syntaxes)


def frame_alternatives(accept: str | None, count: int) -> list[Alternative]:
    """The acceptable representations of ``count`` frames, best first (406 if there are none)."""
    usable = [a for a in alternatives(accept, OCTET_STREAM) if _frame_alternative_ok(a, count)]
    if not usable:
        raise ApiError(406, 'frames are available as multipart/related; type="application/octet-stream" '
                       "or an image media type (image/jls, image/jp2, image/jphc, image/jpeg...)")
    return usable


def retrieve_frames(catalog: Catalog, retrieval: RetrievalService, accept: str | None, study: str, series: str,
                    sop: str, frame_list: str, visibility: Visibility) -> Response:
    """Raw frames of one instance, in the stored syntax when acceptable."""
    numbers = parse_frame_numbers(frame_list)
    inst = find_instances(catalog, study, series, sop, visibility)[0]
    usable = frame_alternatives(accept, len(numbers))
    result = retrieval.frames(inst, numbers, [_frame_option(a) for a in usable])
    chosen = usable[result.option]
    part_type = f"{chosen.media_type}; transfer-syntax={result.transfer_syntax_uid}"
    if not chosen.multipart:
        return Response(result.frames[0], content_type=part_type)
    boundary = multipart.new_boundary()
    parts = (({"Content-Type": part_type}, frame) for frame in result.frames)
    return Response(multipart.write_parts(boundary, parts),
                    content_type=multipart.content_type(chosen.media_type, boundary))


# -- bulk data --------------------------------------------------------------------------------


def parse_bulk_path(path: str) -> list[int]:
    """``00880200/0/7FE00010`` -> ``[tag, index, tag]`` (tags at even positions; 400 otherwise)."""
    steps = path.strip("/").split("/")
    if not steps or len(steps) % 2 == 0 or len(steps) > 2 * MAX_BULK_DEPTH + 1:
        raise ApiError(400, "invalid bulk data path")
    out = []
    for i, step in enumerate(steps):
        pattern = _TAG_RE if i % 2 == 0 else _INDEX_RE
        if not pattern.match(step):
            raise ApiError(400, f"invalid bulk data path element {step[:20]!r}")
        out.append(int(step, 16) if i % 2 == 0 else int(step))
    return out


def _walk(ds: Dataset, steps: Sequence[int]) -> tuple[Dataset, bytes]:
    """The bytes of the element ``steps`` names, and the dataset holding it (404 if absent)."""
    current = ds
    for i in range(0, len(steps) - 1, 2):
        elem = current.get(Tag(steps[i]))
        if elem is None or elem.VR != "SQ" or steps[i + 1] >= len(elem.value or []):
            raise ApiError(404, "no such bulk data")
        current = elem.value[steps[i + 1]]
    elem = current.get(Tag(steps[-1]))
    if elem is None or elem.VR not in BINARY_VRS or not isinstance(elem.value, bytes | bytearray):
        raise ApiError(404, "no such bulk data")
    return current, bytes(elem.value)


def _bulk_single_type(accept: str | None, document_type: str | None) -> str | None:
    """The single-part media type to answer with, or ``None`` when multipart is preferred.

    Raises 406 when neither a single part nor multipart octet-stream is acceptable.
    """
    ranges = parse_accept(accept)
    if not ranges:
        return document_type or OCTET_STREAM
    for r in ranges:
        if document_type and r.mime == document_type:
            return document_type
        if r.mime == OCTET_STREAM:
            return OCTET_STREAM
        if r.mime in ("*/*", "application/*"):
            return document_type or OCTET_STREAM
        if _is_multipart_octets(r):
            return None
    raise ApiError(406, "bulk data is available as application/octet-stream (single or multipart)")


def _is_multipart_octets(r: MediaType) -> bool:
    if r.mime == "multipart/*":
        return True
    return r.mime == MULTIPART and parse_media_type(r.params.get("type", OCTET_STREAM)).mime in (OCTET_STREAM, "*/*")


def _accepts_multipart_octets(accept: str | None) -> bool:
    ranges = parse_accept(accept)
    return not ranges or any(r.mime == "*/*" or _is_multipart_octets(r) for r in ranges)


def retrieve_bulk(catalog: Catalog, retrieval: RetrievalService, accept: str | None, study: str, series: str,
                  sop: str, path: str, visibility: Visibility) -> Response:
    """The value at a BulkDataURI: single part when acceptable, else multipart."""
    steps = parse_bulk_path(path)
    inst = find_instances(catalog, study, series, sop, visibility)[0]
    if steps == [PIXEL_DATA]:
        return _pixel_bulk(retrieval, inst, accept)
    ds = retrieval.dataset(inst)
    holder, value = _walk(ds, steps)
    document_type = None
    if steps[-1] == ENCAPSULATED_DOCUMENT:
        document_type = str(holder.get("MIMETypeOfEncapsulatedDocument", "") or "").strip().lower() or None
    single = _bulk_single_type(accept, document_type)
    if single is not None:
        return Response(value, content_type=single)
    boundary = multipart.new_boundary()
    return Response(multipart.write_parts(boundary, [({"Content-Type": OCTET_STREAM}, value)]),
                    content_type=multipart.content_type(OCTET_STREAM, boundary))


def _pixel_bulk(retrieval: RetrievalService, inst: StoredInstance, accept: str | None) -> Response:
    """Pixel Data as bulk data: native pixels in one part, compressed ones one frame per part."""
    numbers = list(range(1, inst.number_of_frames + 1))
    try:
        result = retrieval.frames(inst, numbers, [AS_STORED])
    except RetrievalError as exc:
        if exc.kind is Failure.UNSUPPORTED:
            raise ApiError(404, "no such bulk data") from None
        raise
    part_type = f"{OCTET_STREAM}; transfer-syntax={result.transfer_syntax_uid}"
    chunks = [b"".join(result.frames)] if result.transfer_syntax_uid in NATIVE else result.frames
    if len(chunks) == 1 and _bulk_single_type(accept, None) is not None:
        return Response(chunks[0], content_type=part_type)
    if not _accepts_multipart_octets(accept):
        raise ApiError(406, 'pixel data of several frames is available as multipart/related; '
                       'type="application/octet-stream"')
    boundary = multipart.new_boundary()
    parts = (({"Content-Type": part_type}, chunk) for chunk in chunks)
    return Response(multipart.write_parts(boundary, parts), content_type=multipart.content_type(OCTET_STREAM, boundary))


# -- rendered and thumbnails ------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderOptions:
    """Validated ``window``, ``viewport`` and ``quality`` parameters."""

    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90


def _numbers(name: str, text: str, count: Sequence[int]) -> list[str]:
    items = [i.strip() for i in text.split(",")]
    if len(items) not in count or any(not i for i in items[:2]):
        raise ApiError(400, f"invalid {name} parameter")
    return items


def _positive_int(name: str, text: str, maximum: int) -> int:
    if not text.isdigit() or len(text) > 6 or not 1 <= int(text) <= maximum:
        raise ApiError(400, f"{name} must be an integer from 1 to {maximum}")
    return int(text)


def parse_render_options(args: Mapping[str, str], keys: Sequence[str]) -> RenderOptions:
    """Validate rendering parameters (PS3.18 8.3.5): ``window=c,w[,fn]``, ``viewport=vw,vh``, ``quality``."""
    unknown = [k for k in keys if k not in RENDER_PARAMS]
    if unknown:
        raise ApiError(400, f"unknown query parameter {unknown[0][:64]!r}")
    window = viewport = None
    quality = 90
    if "window" in args:
        items = _numbers("window", args["window"], (2, 3))
        try:
            center, width = float(items[0]), float(items[1])
        except ValueError:
            raise ApiError(400, "window center and width must be numbers") from None
        if not (math.isfinite(center) and math.isfinite(width) and width > 0):
            raise ApiError(400, "window needs a finite center and a positive width")
        function = items[2].lower() if len(items) == 3 else "linear"
        if function not in VOI_FUNCTIONS:
            raise ApiError(400, "window function must be linear, linear-exact or sigmoid")
        window = (center, width, VOI_FUNCTIONS[function])
    if "viewport" in args:
        items = _numbers("viewport", args["viewport"], (2, 6))
        width_px = _positive_int("viewport width", items[0], MAX_VIEWPORT)
        height_px = _positive_int("viewport height", items[1], MAX_VIEWPORT)
        viewport = (height_px, width_px)  # PS3.18: vw,vh; the renderer takes (rows, columns)
    if "quality" in args:
        quality = _positive_int("quality", args["quality"].strip(), 100)
    return RenderOptions(window, viewport, quality)


def _render_choice(accept: str | None, document_type: str | None) -> tuple[bool, str]:
    """(multipart?, media type) for a rendered resource; 406 if nothing fits."""
    ranges = parse_accept(accept)
    if not ranges:
        return False, document_type or "image/jpeg"
    for r in ranges:
        if r.mime in RENDER_TYPES or (document_type and r.mime == document_type):
            return False, r.mime
        if r.mime == "*/*":
            return False, document_type or "image/jpeg"
        if r.mime == "image/*":
            return False, "image/jpeg"
        if r.mime == MULTIPART:
            part = parse_media_type(r.params.get("type", "image/jpeg")).mime
            if part in RENDER_TYPES:
                return True, part
            if part in ("*/*", "image/*"):
                return True, "image/jpeg"
    raise ApiError(406, "rendered images are available as image/jpeg or image/png")


def _render_response(images: Sequence[bytes], media_type: str, as_multipart: bool) -> Response:
    if not as_multipart:
        if len(images) != 1:
            raise ApiError(406, "several frames can only be rendered as multipart/related")
        return Response(images[0], content_type=media_type)
    boundary = multipart.new_boundary()
    parts = (({"Content-Type": media_type}, image) for image in images)
    return Response(multipart.write_parts(boundary, parts), content_type=multipart.content_type(media_type, boundary))


def _render(retrieval: RetrievalService, ds: Dataset, frame: int, media_type: str, options: RenderOptions) -> bytes:
    return retrieval.render(ds, frame, media_type=media_type, window=options.window, viewport=options.viewport,
                            quality=options.quality)


def _document(ds: Dataset) -> tuple[str | None, bytes | None]:
    doc = ds.get("EncapsulatedDocument")
    mime = str(ds.get("MIMETypeOfEncapsulatedDocument", "") or "").strip().lower() or None
    return (mime, bytes(doc)) if isinstance(doc, bytes | bytearray) and mime else (None, None)


def _rendered_document(ds: Dataset, accept: str | None) -> Response:
    """An instance without pixels: its encapsulated document if that is acceptable, else 404."""
    document_type, document = _document(ds)
    _, media_type = _render_choice(accept, document_type)
    if document is not None and media_type == document_type:
        return Response(document, content_type=document_type)
    raise ApiError(404, "this instance has no image to render")


def retrieve_rendered(catalog: Catalog, retrieval: RetrievalService, accept: str | None, args: Mapping[str, str],
                      keys: Sequence[str], study: str, series: str | None, sop: str | None,
                      frame_list: str | None, visibility: Visibility, *, thumbnail: bool = False) -> Response:
    """A rendered image (or an encapsulated document) of a study, series, instance or frames.

    Study and series resources render their representative image (the middle image of
    the first series with images), which is what viewers use them for. Thumbnails
    default to the middle frame fitted into 128 x 128 pixels.
    """
    options = parse_render_options(args, keys)
    if thumbnail and options.viewport is None:
        options = RenderOptions(options.window, (DEFAULT_THUMBNAIL_SIZE, DEFAULT_THUMBNAIL_SIZE), options.quality)
    numbers = parse_frame_numbers(frame_list) if frame_list is not None else None
    if numbers is not None and len(numbers) > MAX_RENDERED_FRAMES:
        raise ApiError(400, f"at most {MAX_RENDERED_FRAMES} frames can be rendered in one request")
    if sop is None:
        inst = representative(catalog, study, series, visibility)
    else:
        inst = find_instances(catalog, study, series, sop, visibility)[0]
    ds = retrieval.dataset(inst)
    if "PixelData" not in ds:
        return _rendered_document(ds, accept)
    as_multipart, media_type = _render_choice(accept, None)
    if numbers is None:
        numbers = [(retrieval.frame_count(ds) // 2 if thumbnail else 0) + 1]
    images = [_render(retrieval, ds, n - 1, media_type, options) for n in numbers]
    return _render_response(images, media_type, as_multipart)
