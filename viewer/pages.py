"""Pages: ``/`` (to the study list at ``/ui/``), liveness at ``/healthz``, readiness at ``/readyz``, ``/metrics``.

The pages radiologists use are :mod:`viewer.ui`; this blueprint also serves their static
files (``/static``: style sheet and the viewer's script).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, redirect, request, url_for

from .access import authorize
from .context import state
from .errors import error_response, json_bytes

log = logging.getLogger(__name__)

bp = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")


@bp.get("/")
def study_list() -> Response:
    """The study list lives at ``/ui/``; the query string goes along."""
    target = url_for("ui.study_list")
    if request.query_string:
        target += "?" + request.query_string.decode("ascii", "replace")
    return redirect(target, code=302)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers requests."""
    return Response(json_bytes({"status": "ok"}), mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the index and the object store answer now (503 otherwise)."""
    problems = state().archive.readiness()
    if problems:
        return error_response(503, "; ".join(problems), {"Retry-After": "5"})
    return Response(json_bytes({"status": "ready"}), mimetype="application/json")


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of every process of this node, plus archive gauges read from the index."""
    authorize("metrics")  # the local operator's (archive-wide counts are no partner's business)
    from prometheus_client import CONTENT_TYPE_LATEST

    from pacs_lite.metrics import render

    return Response(render(state().archive.catalog), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE_LATEST})
