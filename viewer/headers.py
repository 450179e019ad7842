"""Response headers every route gets: CORS (``[http] cors_origins``) and safety headers.

OHIF runs on another origin and sends ``Authorization`` and ``Accept``, so browsers
preflight its requests; the preflight answer allows GET, POST and DELETE with those
headers. Every response carries ``X-Content-Type-Options: nosniff`` and
``Cross-Origin-Resource-Policy: cross-origin`` (OHIF runs with COEP ``require-corp``); pages
also carry a strict Content-Security-Policy (:data:`PAGE_CSP`).
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import Flask, Response, request

ALLOWED_METHODS = "GET, HEAD, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Accept, Content-Type, If-None-Match"
EXPOSED_HEADERS = "Content-Type, Content-Length, Content-Encoding, ETag, Warning, Retry-After, Location"
PREFLIGHT_MAX_AGE = "600"

#: Pages (``text/html``): scripts, styles, images and requests from this origin only, no inline script or
#: style (not even ``style=`` attributes), images also from ``blob:``/``data:`` (the viewer's canvases),
#: no plugins, frames, base URL changes or form posts elsewhere.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class Cors:
    """Cross-origin rules for one application.

    Parameters
    ----------
    origins
        Allowed origins (``https://viewer.example``), or ``"*"`` for any.
    """

    def __init__(self, origins: Sequence[str]) -> None:
        self.any_origin = "*" in origins
        self.origins = {o.rstrip("/") for o in origins if o != "*"}

    def allowed(self, origin: str) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or ``None``."""
        if self.any_origin:
            return "*"
        return origin if origin.rstrip("/") in self.origins else None

    def apply(self, response: Response) -> Response:
        """Add the CORS headers the current request earns."""
        origin = request.headers.get("Origin")
        if not origin:
            return response
        response.vary.add("Origin")
        allow = self.allowed(origin)
        if allow is None:
            return response
        response.headers["Access-Control-Allow-Origin"] = allow
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        return response


def security_headers(response: Response) -> Response:
    """Headers that keep browsers from misreading what we send."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cross-Origin-Resource-Policy", "cross-origin")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def init_headers(app: Flask, origins: Sequence[str]) -> None:
    """Add CORS and safety headers to every response of ``app``, errors included."""
    cors = Cors(origins)
    app.after_request(cors.apply)
    app.after_request(security_headers)
