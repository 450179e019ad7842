"""Pages: a minimal HTML study list at ``/``, liveness at ``/healthz``, readiness at ``/readyz``.

Templates are rendered by Jinja with autoescaping on (``.html``), so patient names and
descriptions, which come from whoever sent the images, are never interpreted as HTML.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, render_template

from pacs_lite.catalog import CatalogUnavailable
from storage import StoreError

from .context import state, visibility
from .errors import error_response, json_bytes

log = logging.getLogger(__name__)

bp = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")

STUDY_LIST_LIMIT = 200


@bp.get("/")
def study_list() -> str:
    """The most recent studies (no paging yet; the OHIF viewer pages come later)."""
    studies = state().archive.catalog.find("STUDY", {}, limit=STUDY_LIST_LIMIT, visibility=visibility())
    return render_template("studies.html", studies=studies, limit=STUDY_LIST_LIMIT)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers requests."""
    return Response(json_bytes({"status": "ok"}), mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the index and the object store answer now (503 otherwise)."""
    archive = state().archive
    problems = []
    try:
        archive.catalog.check()
    except CatalogUnavailable as exc:
        log.warning("readiness: %s", exc)
        problems.append("index database unavailable")
    try:
        archive.store.check()
    except StoreError as exc:
        log.warning("readiness: %s", exc)
        problems.append("object store unavailable")
    if problems:
        return error_response(503, "; ".join(problems), {"Retry-After": "5"})
    return Response(json_bytes({"status": "ready"}), mimetype="application/json")


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of every process of this node, plus archive gauges read from the index."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from pacs_lite.metrics import render

    return Response(render(state().archive.catalog), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE_LATEST})
