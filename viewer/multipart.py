"""``multipart/related`` (RFC 2046/2387) for DICOMweb: one streaming parser, one streaming writer.

STOW-RS requests are read with :class:`MultipartReader`, which pulls the body from a
stream in fixed-size chunks and yields one :class:`Part` at a time, so the memory a
request can use is bounded by the largest part it is allowed to hold, not by the size
of the request. The boundary search resumes where the previous search stopped, so
hostile bodies (thousands of tiny parts, megabytes of CRLFs) cost linear time.

WADO-RS responses are produced by :func:`write_parts`, a generator that emits each
part as soon as its body is available (CRLF line breaks, ``--boundary--`` at the end).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

CRLF = b"\r\n"
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,./:=?-]([0-9A-Za-z'()+_,./:=? -]{0,68}[0-9A-Za-z'()+_,./:=?-])?$")
_HEADER_NAME_RE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class MultipartError(ValueError):
    """The body is not a well-formed multipart message; the message says why."""

    status = 400


class LimitExceeded(MultipartError):
    """The body is larger, or has more parts, than the server accepts."""

    status = 413


@dataclass
class Part:
    """One body part: its headers (lower-case names) and its content.

    ``too_large`` is set, and ``body`` empty, when the content exceeded the reader's
    ``max_part_bytes``: the bytes were read and discarded, so the request can still be
    answered part by part.
    """

    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    size: int = 0
    too_large: bool = False

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


def check_boundary(boundary: str | None) -> str:
    """The boundary if it is valid per RFC 2046 (1-70 characters of the allowed set)."""
    if not boundary or not _BOUNDARY_RE.match(boundary):
        raise MultipartError("missing or invalid multipart boundary")
    return boundary


class MultipartReader:
    """Iterate over the parts of a multipart body read from ``stream``.

    Parameters
    ----------
    stream
        The body (anything with ``read(n)``); a chunked request body is fine.
    boundary
        The boundary from the ``Content-Type`` header.
    max_parts
        More parts than this raise :class:`LimitExceeded`.
    max_part_bytes
        Larger parts are discarded while reading and reported with ``too_large``.
    max_total_bytes
        A longer body raises :class:`LimitExceeded`.
    chunk_size
        Bytes read from ``stream`` at a time.
    """

    max_header_bytes = 16 * 1024
    max_preamble_bytes = 64 * 1024
    max_headers = 32

    def __init__(self, stream: BinaryIO, boundary: str, *, max_parts: int = 10_000,
                 max_part_bytes: int = 4 * 1024**3, max_total_bytes: int = 8 * 1024**3,
                 chunk_size: int = 256 * 1024) -> None:
        self._stream = stream
        self._delimiter = CRLF + b"--" + check_boundary(boundary).encode("ascii")
        self.max_parts = max_parts
        self.max_part_bytes = max_part_bytes
        self.max_total_bytes = max_total_bytes
        self.chunk_size = chunk_size
        # a virtual CRLF lets the first delimiter be found like all the others
        self._buf = bytearray(CRLF)
        self._eof = False
        self.bytes_read = 0
        self.parts_read = 0

    # -- low level ----------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Append one chunk to the buffer; ``False`` at the end of the stream."""
        if self._eof:
            return False
        chunk = self._stream.read(self.chunk_size)
        if not chunk:
            self._eof = True
            return False
        self.bytes_read += len(chunk)
        if self.bytes_read > self.max_total_bytes:
            raise LimitExceeded(f"request body larger than {self.max_total_bytes} bytes")
        self._buf += chunk
        return True

    def _scan_to_delimiter(self, sink: bytearray | None, limit: int | None, *,
                           max_skip: int | None = None) -> tuple[bool, int]:
        """Move bytes before the next delimiter into ``sink`` and consume the delimiter.

        Returns ``(overflowed, size)``: whether more than ``limit`` bytes preceded the
        delimiter (those beyond the limit are dropped) and how many there were. More
        than ``max_skip`` bytes raise :class:`MultipartError` at once.
        """
        keep = len(self._delimiter) - 1
        size = 0
        overflow = False
        start = 0
        while True:
            index = self._buf.find(self._delimiter, start)
            if index >= 0:
                size += index
                if sink is not None and not overflow:
                    if limit is not None and len(sink) + index > limit:
                        overflow = True
                        sink.clear()
                    else:
                        sink += self._buf[:index]
                del self._buf[:index + len(self._delimiter)]
                return overflow, size
            movable = max(0, len(self._buf) - keep)
            if movable:
                size += movable
                if sink is not None and not overflow:
                    if limit is not None and len(sink) + movable > limit:
                        overflow = True
                        sink.clear()
                    else:
                        sink += self._buf[:movable]
                del self._buf[:movable]
            if max_skip is not None and size > max_skip:
                raise MultipartError("no multipart boundary where one was expected (preamble too long)")
            start = 0
            if not self._fill():
                raise MultipartError("truncated multipart body: closing boundary not found")

    def _need(self, count: int) -> None:
        while len(self._buf) < count:
            if not self._fill():
                raise MultipartError("truncated multipart body")

    def _after_delimiter(self) -> bool:
        """Consume what follows a delimiter; ``True`` if it was the closing one (``--``)."""
        self._need(2)
        if self._buf[:2] == b"--":
            del self._buf[:2]
            return True
        # transport padding (spaces and tabs) before the CRLF that ends the boundary line
        while True:
            index = self._buf.find(CRLF)
            if index >= 0:
                if self._buf[:index].strip(b" \t"):
                    raise MultipartError("unexpected characters after a multipart boundary")
                del self._buf[:index + 2]
                return False
            if len(self._buf) > 1024:
                raise MultipartError("unexpected characters after a multipart boundary")
            if not self._fill():
                raise MultipartError("truncated multipart body")

    def _read_headers(self) -> dict[str, str]:
        self._need(2)
        if self._buf[:2] == CRLF:  # a part without headers
            del self._buf[:2]
            return {}
        start = 0
        while True:
            index = self._buf.find(CRLF + CRLF, start)
            if index > self.max_header_bytes or (index < 0 and len(self._buf) > self.max_header_bytes):
                raise MultipartError(f"part headers longer than {self.max_header_bytes} bytes")
            if index >= 0:
                block = bytes(self._buf[:index])
                del self._buf[:index + 4]
                return self._parse_headers(block)
            start = max(0, len(self._buf) - 3)
            if not self._fill():
                raise MultipartError("truncated multipart body in part headers")

    def _parse_headers(self, block: bytes) -> dict[str, str]:
        headers: dict[str, str] = {}
        lines = block.split(CRLF)
        if len(lines) > self.max_headers:
            raise MultipartError(f"more than {self.max_headers} headers in a part")
        for line in lines:
            name, sep, value = line.partition(b":")
            name = name.strip()
            if not sep or not _HEADER_NAME_RE.match(name):
                raise MultipartError("malformed header line in a multipart part")
            headers[name.decode("ascii").lower()] = value.strip().decode("latin-1")
        return headers

    # -- iteration ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Part]:
        _, size = self._scan_to_delimiter(None, None, max_skip=self.max_preamble_bytes)  # skip the preamble
        if size > self.max_preamble_bytes:
            raise MultipartError("no multipart boundary where one was expected (preamble too long)")
        if self._after_delimiter():
            return
        while True:
            if self.parts_read >= self.max_parts:
                raise LimitExceeded(f"more than {self.max_parts} parts in one request")
            headers = self._read_headers()
            body = bytearray()
            overflow, size = self._scan_to_delimiter(body, self.max_part_bytes)
            self.parts_read += 1
            closing = self._after_delimiter()
            yield Part(headers, b"" if overflow else bytes(body), size, overflow)
            del body
            if closing:
                return

    def drain(self, limit: int) -> bool:
        """Read and discard up to ``limit`` more bytes; ``True`` if the body ended."""
        self._buf.clear()
        remaining = limit
        while remaining > 0:
            chunk = self._stream.read(min(self.chunk_size, remaining))
            if not chunk:
                return True
            remaining -= len(chunk)
        return False


# -- writing ------------------------------------------------------------------------------------


def new_boundary() -> str:
    """A fresh random boundary (cannot collide with DICOM content in practice)."""
    return "pacslite-" + secrets.token_hex(16)


def content_type(part_type: str, boundary: str, **params: str) -> str:
    """The ``Content-Type`` of a multipart/related response whose parts are ``part_type``."""
    extra = "".join(f"; {name.replace('_', '-')}={value}" for name, value in params.items())
    return f'multipart/related; type="{part_type}"; boundary={boundary}{extra}'


def part_head(boundary: str, headers: Mapping[str, str]) -> bytes:
    """The boundary line and headers that open a part."""
    lines = [f"--{boundary}"] + [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def write_parts(boundary: str, parts: Iterable[tuple[Mapping[str, str], bytes]]) -> Iterator[bytes]:
    """Stream a multipart body: each part is produced only when the consumer asks for it.

    Parameters
    ----------
    boundary
        From :func:`new_boundary`.
    parts
        ``(headers, body)`` pairs, typically a generator reading one object at a time.
    """
    for headers, body in parts:
        yield part_head(boundary, headers)
        yield body
        del body  # released before the next part is produced
        yield CRLF
    yield f"--{boundary}--\r\n".encode("ascii")
