"""WADO-RS metadata (PS3.18 10.4.1.1.2): DICOM JSON precomputed at ingest, served gzip'd.

The catalog keeps each series' metadata as one gzip'd JSON array with a placeholder
for the base URL of its BulkDataURIs (:meth:`~pacs_lite.catalog.Catalog.series_metadata`).
Serving it means replacing the placeholder with this request's base URL; the result is
kept in a small per-application LRU (:class:`MetadataCache`) keyed by the series'
metadata version, so a repeated request costs one index read and no JSON work. Study
metadata is the concatenation of its series. Responses carry an ``ETag`` (a hash of
the body) and answer ``If-None-Match`` with 304.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from flask import Response, request

from pacs_lite.catalog import Catalog, Visibility
from pacs_lite.dicomheader import resolve_base

from .errors import ApiError
from .mediatypes import DICOM_JSON, accepts_gzip

GZIP_LEVEL = 6
MIN_GZIP_BYTES = 1024


@dataclass(frozen=True)
class Body:
    """A metadata document ready to send: its gzip encoding and its entity tag."""

    gz: bytes
    etag: str


class MetadataCache:
    """A thread-safe LRU of resolved metadata bodies, bounded in entries and bytes.

    Parameters
    ----------
    max_bytes
        Total size of the gzip bodies kept.
    max_entries
        Number of bodies kept.
    """

    def __init__(self, max_bytes: int = 64 * 1024**2, max_entries: int = 512) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._items: OrderedDict[Hashable, Body] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Body | None:
        with self._lock:
            body = self._items.get(key)
            if body is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return body

    def put(self, key: Hashable, body: Body) -> None:
        if len(body.gz) > self.max_bytes // 4:
            return  # one huge study must not flush everything else
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old.gz)
            self._items[key] = body
            self._size += len(body.gz)
            while self._items and (self._size > self.max_bytes or len(self._items) > self.max_entries):
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted.gz)

    def __len__(self) -> int:
        return len(self._items)


def make_body(document: bytes) -> Body:
    """Gzip ``document`` (a JSON array) and tag it."""
    gz = gzip.compress(document, compresslevel=GZIP_LEVEL, mtime=0)
    return Body(gz, _etag(gz))


def _etag(gz: bytes) -> str:
    return 'W/"' + hashlib.blake2b(gz, digest_size=12).hexdigest() + '"'


def _resolved_series(cache: MetadataCache, study: str, series: str, blob: bytes, version: int,
                     base: str) -> Body:
    key = ("series", study, series, version, base)
    body = cache.get(key)
    if body is None:
        body = make_body(resolve_base(gzip.decompress(blob), base))
        cache.put(key, body)
    return body


def series_body(catalog: Catalog, cache: MetadataCache, study: str, series: str, *,
                visibility: Visibility, base: str) -> Body:
    """The resolved metadata of one series (404 if it does not exist or is not visible)."""
    found = catalog.series_metadata(study, series, visibility=visibility)
    if found is None:
        raise ApiError(404, "no such series")
    blob, version = found
    return _resolved_series(cache, study, series, blob, version, base)


def study_body(catalog: Catalog, cache: MetadataCache, study: str, *, visibility: Visibility,
               base: str) -> Body:
    """The resolved metadata of every series of a study, as one array (404 if none)."""
    rows = catalog.find("SERIES", {"StudyInstanceUID": study}, visibility=visibility)
    blobs = []
    for row in rows:
        found = catalog.series_metadata(study, row["SeriesInstanceUID"], visibility=visibility)
        if found is not None:  # deleted since the query
            blobs.append((row["SeriesInstanceUID"], *found))
    if not blobs:
        raise ApiError(404, "no such study")
    key = ("study", study, tuple((uid, version) for uid, _, version in blobs), base)
    body = cache.get(key)
    if body is None:
        arrays = [gzip.decompress(blob).strip()[1:-1].strip() for _, blob, _ in blobs]
        document = b"[" + b",".join(a for a in arrays if a) + b"]"
        body = make_body(resolve_base(document, base))
        cache.put(key, body)
    return body


def instance_body(catalog: Catalog, study: str, series: str, sop: str, *, visibility: Visibility,
                  base: str) -> Body:
    """The resolved metadata of one instance, as a one-element array (404 if none)."""
    rows = catalog.find("IMAGE", {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": sop},
                        limit=1, visibility=visibility)
    if not rows:
        raise ApiError(404, "no such instance")
    stored = catalog.instance_metadata([rows[0]["_pk"]])
    document = json.dumps([stored[rows[0]["_pk"]]], ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return make_body(resolve_base(document, base))


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    weak = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == weak for tag in header.split(","))


def respond(body: Body) -> Response:
    """Send ``body`` gzip-encoded when the client accepts it, else decompressed; 304 if fresh."""
    headers = {"ETag": body.etag, "Cache-Control": "private, no-cache", "Vary": "Accept-Encoding"}
    if _etag_matches(request.headers.get("If-None-Match"), body.etag):
        return Response(status=304, headers=headers, mimetype=DICOM_JSON)
    if accepts_gzip(request.headers.get("Accept-Encoding")):
        response = Response(body.gz, mimetype=DICOM_JSON, headers=headers)
        response.headers["Content-Encoding"] = "gzip"
    else:
        response = Response(gzip.decompress(body.gz), mimetype=DICOM_JSON, headers=headers)
    return response
