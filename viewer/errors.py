"""Errors as JSON: every 4xx/5xx the web application sends is ``{"error": ..., "reason": ...}``.

Views raise :class:`ApiError` (or let a core exception propagate); the handlers
registered by :func:`register_error_handlers` turn it into a JSON response. Nothing
ever answers with an HTML page or a stack trace, and nothing a client sent is
reflected unescaped: ``<``, ``>`` and ``&`` are written as JSON ``\\u`` escapes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from pacs_lite.catalog import CatalogUnavailable, QueryError
from pacs_lite.retrieval import Failure, RetrievalError

log = logging.getLogger(__name__)

#: Seconds a client should wait before retrying when the index or the store is down.
RETRY_AFTER_SECONDS = 5

#: HTTP status for each :class:`RetrievalError` kind.
RETRIEVAL_STATUS = {
    Failure.NOT_FOUND: 404,
    Failure.UNSUPPORTED: 406,
    Failure.INVALID: 400,
    Failure.UNAVAILABLE: 503,
    Failure.MISSING: 500,
    Failure.CORRUPT: 500,
}


class ApiError(Exception):
    """A request that ends in an HTTP error with a reason the client can act on.

    Parameters
    ----------
    status
        The HTTP status code (4xx or 5xx).
    reason
        What went wrong, in one sentence.
    headers
        Extra response headers (``Retry-After``, ``Allow``...).
    """

    def __init__(self, status: int, reason: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})


def json_bytes(document: Any) -> bytes:
    """Compact UTF-8 JSON that is safe even if a browser sniffs it as HTML."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode("utf-8")


def error_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    """The JSON error response for ``status``."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    response = Response(json_bytes({"error": phrase, "reason": reason}), status=status,
                        mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.reason, exc.headers)


def _http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    headers = {}
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    reason = exc.description or HTTPStatus(status).phrase
    if status == 404 and "requested URL was not found" in reason:
        reason = "no such resource"
    return error_response(status, reason, headers)


def _query_error(exc: QueryError) -> Response:
    return error_response(400, str(exc))


def _catalog_unavailable(exc: CatalogUnavailable) -> Response:
    log.warning("index unavailable: %s", exc)
    return error_response(503, "the index database is unavailable; retry later",
                          {"Retry-After": str(RETRY_AFTER_SECONDS)})


def _retrieval_error(exc: RetrievalError) -> Response:
    status = RETRIEVAL_STATUS.get(exc.kind, 500)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    if status >= 500:
        log.error("retrieval failed (%s): %s", exc.kind, exc)
    return error_response(status, str(exc), headers)


def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _http_exception(exc)
    log.exception("unhandled error in request")
    return error_response(500, "internal server error")


def register_error_handlers(app: Flask) -> None:
    """Answer every error of ``app`` with JSON."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(QueryError, _query_error)
    app.register_error_handler(CatalogUnavailable, _catalog_unavailable)
    app.register_error_handler(RetrievalError, _retrieval_error)
    app.register_error_handler(Exception, _unexpected)
