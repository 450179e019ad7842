"""Media types, ``Accept`` and ``Accept-Encoding`` parsing for DICOMweb (PS3.18 8.7).

A DICOMweb ``Accept`` header lists alternatives such as
``multipart/related; type="application/octet-stream"; transfer-syntax=*`` (quoted or
not, as OHIF sends it). :func:`alternatives` turns the header into
:class:`Alternative` objects in order of preference, wildcards resolved to the
resource's default media type (PS3.18 8.7.3). Which transfer syntax then goes out is
the core's decision (:mod:`pacs_lite.retrieval.plan`), not this module's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pacs_lite.uids import is_uid

from .errors import ApiError

MULTIPART = "multipart/related"
OCTET_STREAM = "application/octet-stream"
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE_RE = re.compile(rf"^\s*({_TOKEN})/({_TOKEN})\s*")
_PARAM_RE = re.compile(rf'\s*;\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')
MAX_HEADER_LENGTH = 8192


@dataclass(frozen=True)
class MediaType:
    """A parsed media type: ``type/subtype`` in lower case plus its parameters.

    Parameter names are lower case; values are unquoted (``transfer-syntax`` and
    ``type`` values keep their case).
    """

    mime: str
    params: dict[str, str]
    q: float = 1.0

    def matches(self, mime: str) -> bool:
        """Whether this (possibly wildcard) range includes the concrete ``mime``."""
        if self.mime in ("*/*", mime):
            return True
        major = self.mime.split("/", 1)[0]
        return self.mime.endswith("/*") and mime.split("/", 1)[0] == major


def parse_media_type(text: str) -> MediaType:
    """Parse ``type/subtype; name=value; name="quoted value"``.

    Raises
    ------
    ApiError
        400 when the text is not a media type.
    """
    match = _MEDIA_TYPE_RE.match(text)
    if match is None:
        raise ApiError(400, f"malformed media type {text[:80]!r}")
    mime = f"{match.group(1)}/{match.group(2)}".lower()
    params: dict[str, str] = {}
    pos = match.end()
    q = 1.0
    while pos < len(text):
        param = _PARAM_RE.match(text, pos)
        if param is None:
            raise ApiError(400, f"malformed media type parameters in {text[:80]!r}")
        name, value = param.group(1).lower(), param.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if name == "q":
            q = _quality(value)
        else:
            params[name] = value
        pos = param.end()
    return MediaType(mime, params, q)


def _quality(value: str) -> float:
    try:
        q = float(value)
    except ValueError:
        raise ApiError(400, f"invalid q value {value[:20]!r} in Accept") from None
    if not 0.0 <= q <= 1.0:
        raise ApiError(400, f"q value {value[:20]!r} out of range in Accept")
    return q


def split_list(header: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quoted strings."""
    items, current, quoted, escaped = [], [], False, False
    for char in header:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def parse_accept(header: str | None) -> list[MediaType]:
    """The media ranges of an ``Accept`` header, most preferred first, without ``q=0``.

    An absent or empty header yields ``[]`` (the caller applies its default); a header
    that excludes everything is 406.
    """
    if not header or not header.strip():
        return []
    if len(header) > MAX_HEADER_LENGTH:
        raise ApiError(400, "Accept header too long")
    ranges = [r for r in (parse_media_type(item) for item in split_list(header)) if r.q > 0]
    if not ranges:
        raise ApiError(406, "the Accept header refuses every media type (q=0)")
    return sorted(ranges, key=lambda r: -r.q)  # sorted() is stable: header order breaks ties


@dataclass(frozen=True)
class Alternative:
    """One acceptable representation of a DICOMweb resource.

    Attributes
    ----------
    multipart
        ``multipart/related`` with parts of ``media_type``; otherwise a single-part body.
    media_type
        The (part) media type, e.g. ``application/dicom`` or ``image/jls``.
    transfer_syntaxes
        ``None`` when the request named none (the media type's default applies),
        ``("*",)`` for any, otherwise the UIDs asked for.
    """

    multipart: bool
    media_type: str
    transfer_syntaxes: tuple[str, ...] | None = None

    @property
    def any_syntax(self) -> bool:
        return self.transfer_syntaxes is not None and "*" in self.transfer_syntaxes


def _transfer_syntax_param(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    value = value.strip()
    if value == "*":
        return ("*",)
    if not is_uid(value):
        raise ApiError(400, f"invalid transfer-syntax {value[:70]!r} in Accept")
    return (value,)


def alternatives(header: str | None, default_type: str) -> list[Alternative]:
    """What the client accepts, most preferred first; wildcards become ``default_type``.

    ``*/*``, ``multipart/*``, ``multipart/related`` without ``type`` or with
    ``type="*/*"`` (as ``dicomweb-client`` sends by default) and an absent header all
    mean multipart parts of ``default_type`` in its default syntax.
    """
    ranges = parse_accept(header)
    if not ranges:
        return [Alternative(True, default_type)]
    out = []
    for r in ranges:
        syntaxes = _transfer_syntax_param(r.params.get("transfer-syntax"))
        if r.mime in ("*/*", "multipart/*"):
            out.append(Alternative(True, default_type, syntaxes))
        elif r.mime == MULTIPART:
            part_type = parse_media_type(r.params["type"]).mime if "type" in r.params else default_type
            out.append(Alternative(True, default_type if part_type == "*/*" else part_type, syntaxes))
        else:
            out.append(Alternative(False, r.mime, syntaxes))
    return out


def accepts_gzip(header: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (``gzip`` or ``*`` with q > 0)."""
    if not header:
        return False
    for item in split_list(header):
        name, _, rest = item.partition(";")
        name = name.strip().lower()
        q = 1.0
        rest = rest.strip()
        if rest.lower().startswith("q="):
            try:
                q = float(rest[2:])
            except ValueError:
                q = 0.0
        if name in ("gzip", "x-gzip", "*") and q > 0:
            return True
    return False


def require_json(accept: str | None) -> None:
    """406 unless ``Accept`` allows DICOM JSON (``application/json`` and wildcards are fine)."""
    ranges = parse_accept(accept)
    if ranges and not any(r.matches(DICOM_JSON) or r.matches("application/json") for r in ranges):
        raise ApiError(406, "this resource is available as application/dicom+json only")
