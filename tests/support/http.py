"""Real-HTTP helpers for the DICOMweb tests: a live server, multipart bodies, DICOM JSON.

:class:`LiveServer` serves a :func:`viewer.app.create_app` application with werkzeug's
threaded server on 127.0.0.1 and a free port, in this process (so tests can inspect
and fault the archive directly). The multipart helpers here are deliberately written
independently of :mod:`viewer.multipart`, so the tests do not check the server's
parser with itself.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests
from dicomweb_client.api import DICOMwebClient
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from harness.net import LOOPBACK, free_port, http_url
from pacs_lite.archive import Archive
from pacs_lite.config import Config
from tests.support.pacs import make_config

CRLF = b"\r\n"
DICOM_JSON = "application/dicom+json"


class LiveServer:
    """A WSGI application served over real HTTP on loopback from a background thread.

    Parameters
    ----------
    app
        The WSGI application (usually from :func:`viewer.app.create_app`).
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.port = free_port()
        self._server: BaseWSGIServer = make_server(LOOPBACK, self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-server", daemon=True)

    @property
    def url(self) -> str:
        return http_url(self.port)

    @property
    def base(self) -> str:
        """The DICOMweb root."""
        return http_url(self.port, "/dicomweb")

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def client(self, chunk_size: int | None = None) -> DICOMwebClient:
        """A dicomweb-client for this server (``chunk_size`` forces chunked uploads above it)."""
        client = DICOMwebClient(self.base)
        if chunk_size is not None:
            client.set_chunk_size(chunk_size)
        return client

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def serve_archive(tmp_path: Path, **sections: Mapping[str, Any]) -> Iterator[tuple[LiveServer, Archive, Config]]:
    """A live server on a fresh archive under ``tmp_path`` (no compression unless asked).

    ``sections`` override configuration keys, e.g. ``http={"qido_max_limit": 25}``.
    """
    from viewer.app import create_app

    overrides = {"compression": {"transfer_syntax": "none"}}
    overrides.update({k: dict(v) for k, v in sections.items()})
    config = make_config(tmp_path, **overrides)
    archive = Archive(config)
    try:
        with LiveServer(create_app(config, archive)) as server:
            yield server, archive, config
    finally:
        archive.close()


# -- multipart ----------------------------------------------------------------------------------


def encode_multipart(parts: Iterable[tuple[Mapping[str, str], bytes]], boundary: str) -> bytes:
    """A multipart body: ``--b CRLF headers CRLF CRLF body CRLF ... --b--``."""
    out = io.BytesIO()
    for headers, body in parts:
        out.write(b"--" + boundary.encode() + CRLF)
        for name, value in headers.items():
            out.write(f"{name}: {value}".encode() + CRLF)
        out.write(CRLF + body + CRLF)
    out.write(b"--" + boundary.encode() + b"--" + CRLF)
    return out.getvalue()


def dicom_parts(blobs: Iterable[bytes]) -> list[tuple[dict[str, str], bytes]]:
    return [({"Content-Type": "application/dicom"}, blob) for blob in blobs]


def stow_content_type(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(
    base: str,
    blobs: Sequence[bytes],
    *,
    study: str | None = None,
    chunked: bool = False,
    boundary: str = "test-boundary-7d1f",
) -> requests.Response:
    """POST Part-10 blobs to STOW-RS (optionally with chunked transfer encoding)."""
    body = encode_multipart(dicom_parts(blobs), boundary)
    url = f"{base}/studies" + (f"/{study}" if study else "")
    data: bytes | Iterator[bytes] = body
    if chunked:
        data = (body[i : i + 65536] for i in range(0, len(body), 65536))
    return requests.post(url, data=data, headers={"Content-Type": stow_content_type(boundary)}, timeout=120)


def parse_media_params(value: str) -> tuple[str, dict[str, str]]:
    """``type/sub; a=b; c="d"`` -> (``type/sub``, params)."""
    mime, *rest = [p.strip() for p in value.split(";")]
    params = {}
    for item in rest:
        name, _, val = item.partition("=")
        params[name.strip().lower()] = val.strip().strip('"')
    return mime.lower(), params


def split_multipart(response: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart response, checking CRLF framing strictly."""
    mime, params = parse_media_params(response.headers["Content-Type"])
    assert mime == "multipart/related", response.headers["Content-Type"]
    boundary = params["boundary"].encode()
    body = response.content
    assert body.startswith(b"--" + boundary + CRLF), body[:100]
    closing = CRLF + b"--" + boundary + b"--"
    end = body.rindex(closing)
    assert body[end + len(closing) :] in (b"", CRLF), "bytes after the closing boundary"
    chunks = body[len(boundary) + 4 : end].split(CRLF + b"--" + boundary + CRLF)
    parts = []
    for chunk in chunks:
        head, sep, content = chunk.partition(CRLF + CRLF)
        assert sep, "part without a header/body separator"
        headers = {}
        for line in head.split(CRLF):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


# -- DICOMweb JSON ------------------------------------------------------------------------------


def get_json(url: str, **kwargs: Any) -> Any:
    """GET a DICOM JSON resource, asserting 200 and the media type."""
    response = requests.get(url, timeout=60, **kwargs)
    assert response.status_code == 200, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith(DICOM_JSON), response.headers["Content-Type"]
    return response.json()


def value(obj: Mapping[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON object (``None`` if empty or absent)."""
    values = obj.get(tag, {}).get("Value")
    return values[0] if values else None


def instance_count(server: LiveServer, **filters: str) -> int:
    """How many instances QIDO-RS finds on ``server`` (up to 1000), with optional matching keys."""
    return len(get_json(f"{server.base}/instances", params={"limit": "1000", **filters}))


def assert_json_error(response: requests.Response, status: int | Sequence[int]) -> dict[str, Any]:
    """The response is a JSON error with one of the given statuses, never HTML."""
    statuses = (status,) if isinstance(status, int) else tuple(status)
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json"), response.headers["Content-Type"]
    doc = response.json()
    assert set(doc) == {"error", "reason"} and doc["reason"], doc
    assert b"<" not in response.content
    return doc
