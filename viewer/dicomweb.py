"""The DICOMweb blueprint (``/dicomweb``): QIDO-RS, WADO-RS, STOW-RS and DELETE.

Views are thin: they validate the path, take the caller's visibility from the access
check (:func:`viewer.context.visibility`) and hand over to :mod:`viewer.qido`,
:mod:`viewer.wado`, :mod:`viewer.metadata` and :mod:`viewer.stow`.

Routes (all below ``/dicomweb``)::

    GET    /studies  /series  /instances                       QIDO-RS
    GET    /studies/{st}/series  /studies/{st}/instances
    GET    /studies/{st}/series/{se}/instances
    GET    /studies/{st}[/series/{se}[/instances/{sop}]]         WADO-RS instances
    GET    .../metadata                                         WADO-RS metadata
    GET    /studies/{st}/series/{se}/instances/{sop}/frames/{n,m}
    GET    /studies/{st}/series/{se}/instances/{sop}/bulk/{path}
    GET    .../rendered  .../thumbnail  .../frames/{n}/rendered|thumbnail
    POST   /studies  /studies/{st}                              STOW-RS
    DELETE /studies/{st}[/series/{se}[/instances/{sop}]]         (unless [http] allow_delete = false)
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, g, request

from pacs_lite.catalog import partners
from pacs_lite.dicomheader import resolve_base
from pacs_lite.uids import is_uid

from . import metadata, qido, stow, wado
from .access import audit, authorize
from .context import dicomweb_base, state, visibility
from .errors import ApiError, json_bytes
from .mediatypes import DICOM_JSON, require_json

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")

UID_PARAMS = ("study", "series", "instance")
LIMIT_WARNING = ('299 {host}: "The number of results exceeded the maximum supported by the server. '
                 'Additional results can be requested."')

STUDY = "/studies/<study>"
SERIES = STUDY + "/series/<series>"
INSTANCE = SERIES + "/instances/<instance>"
FRAMES = INSTANCE + "/frames/<frames>"


@bp.before_request
def _check_path_uids() -> None:
    """Path UIDs are digits and dots, at most 64 characters (400 otherwise)."""
    for name in UID_PARAMS:
        value = (request.view_args or {}).get(name)
        if value is not None and not is_uid(value):
            raise ApiError(400, f"invalid {name} UID in the path")


def _accept() -> str | None:
    """The ``Accept`` header, or the ``accept`` query parameter that replaces it (PS3.18 8.3.3.1)."""
    values = request.args.getlist("accept")
    if len(values) > 1:
        raise ApiError(400, "the accept parameter is given more than once")
    return values[0] if values else request.headers.get("Accept")


# -- QIDO-RS ------------------------------------------------------------------------------------


def _search(level: str, **scope: str) -> Response:
    require_json(_accept())
    search = qido.parse_search(level, request.args, scope)
    app = state()
    base = dicomweb_base()
    result = qido.run_search(app.archive.catalog, search, max_limit=app.config.get("http", "qido_max_limit"),
                             visibility=visibility(), base=base)
    body = resolve_base(json_bytes(result.objects), base)  # BulkDataURIs from stored metadata
    response = Response(body, mimetype=DICOM_JSON)
    if result.truncated:
        response.headers["Warning"] = LIMIT_WARNING.format(host=request.host)
    return response


@bp.get("/studies")
def search_studies() -> Response:
    return _search("STUDY")


@bp.get(STUDY + "/series")
def search_study_series(study: str) -> Response:
    return _search("SERIES", StudyInstanceUID=study)


@bp.get("/series")
def search_series() -> Response:
    return _search("SERIES")


@bp.get(SERIES + "/instances")
def search_series_instances(study: str, series: str) -> Response:
    return _search("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series)


@bp.get(STUDY + "/instances")
def search_study_instances(study: str) -> Response:
    return _search("IMAGE", StudyInstanceUID=study)


@bp.get("/instances")
def search_instances() -> Response:
    return _search("IMAGE")


# -- WADO-RS: instances and metadata ---------------------------------------------------------------


def _retrieve(study: str, series: str | None = None, instance: str | None = None) -> Response:
    app = state()
    return wado.retrieve_instances(app.archive.catalog, app.archive.retrieval, _accept(),
                                   study, series, instance, visibility())


@bp.get(STUDY)
def retrieve_study(study: str) -> Response:
    return _retrieve(study)


@bp.get(SERIES)
def retrieve_series(study: str, series: str) -> Response:
    return _retrieve(study, series)


@bp.get(INSTANCE)
def retrieve_instance(study: str, series: str, instance: str) -> Response:
    return _retrieve(study, series, instance)


@bp.get(STUDY + "/metadata")
def study_metadata(study: str) -> Response:
    require_json(_accept())
    app = state()
    body = metadata.study_body(app.archive.catalog, app.metadata_cache, study, visibility=visibility(),
                               base=dicomweb_base())
    return metadata.respond(body)


@bp.get(SERIES + "/metadata")
def series_metadata(study: str, series: str) -> Response:
    require_json(_accept())
    app = state()
    body = metadata.series_body(app.archive.catalog, app.metadata_cache, study, series, visibility=visibility(),
                                base=dicomweb_base())
    return metadata.respond(body)


@bp.get(INSTANCE + "/metadata")
def instance_metadata(study: str, series: str, instance: str) -> Response:
    require_json(_accept())
    body = metadata.instance_body(state().archive.catalog, study, series, instance, visibility=visibility(),
                                  base=dicomweb_base())
    return metadata.respond(body)


# -- WADO-RS: frames, bulk data, rendered ---------------------------------------------------------


@bp.get(FRAMES)
def retrieve_frames(study: str, series: str, instance: str, frames: str) -> Response:
    app = state()
    return wado.retrieve_frames(app.archive.catalog, app.archive.retrieval, _accept(),
                                study, series, instance, frames, visibility())


@bp.get(INSTANCE + "/bulk/<path:path>")
def retrieve_bulk(study: str, series: str, instance: str, path: str) -> Response:
    app = state()
    return wado.retrieve_bulk(app.archive.catalog, app.archive.retrieval, _accept(),
                              study, series, instance, path, visibility())


def _rendered(study: str, series: str | None = None, instance: str | None = None, frames: str | None = None,
              *, thumbnail: bool = False) -> Response:
    app = state()
    args = {key: request.args[key] for key in request.args}
    if any(len(request.args.getlist(key)) > 1 for key in request.args):
        raise ApiError(400, "a rendering parameter is given more than once")
    return wado.retrieve_rendered(app.archive.catalog, app.archive.retrieval, _accept(), args,
                                  list(request.args), study, series, instance, frames, visibility(),
                                  thumbnail=thumbnail)


@bp.get(STUDY + "/rendered")
def study_rendered(study: str) -> Response:
    return _rendered(study)


@bp.get(SERIES + "/rendered")
def series_rendered(study: str, series: str) -> Response:
    return _rendered(study, series)


@bp.get(INSTANCE + "/rendered")
def instance_rendered(study: str, series: str, instance: str) -> Response:
    return _rendered(study, series, instance)


@bp.get(FRAMES + "/rendered")
def frames_rendered(study: str, series: str, instance: str, frames: str) -> Response:
    return _rendered(study, series, instance, frames)


@bp.get(STUDY + "/thumbnail")
def study_thumbnail(study: str) -> Response:
    return _rendered(study, thumbnail=True)


@bp.get(SERIES + "/thumbnail")
def series_thumbnail(study: str, series: str) -> Response:
    return _rendered(study, series, thumbnail=True)


@bp.get(INSTANCE + "/thumbnail")
def instance_thumbnail(study: str, series: str, instance: str) -> Response:
    return _rendered(study, series, instance, thumbnail=True)


@bp.get(FRAMES + "/thumbnail")
def frames_thumbnail(study: str, series: str, instance: str, frames: str) -> Response:
    return _rendered(study, series, instance, frames, thumbnail=True)


# -- STOW-RS ----------------------------------------------------------------------------------------


def _store(study: str | None = None) -> Response:
    authorize("store")
    app = state()
    boundary = stow.request_boundary(request.headers.get("Content-Type"), request.headers.get("Content-Encoding"))
    max_bytes = app.config.get("http", "max_request_bytes")
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, f"request body larger than {max_bytes} bytes")
    partner = g.principal.partner
    catalog = app.archive.catalog

    def study_allowed(uid: str) -> bool:
        """A partner adds to new studies and to its own, never to studies it cannot see."""
        return not partners.owner_conflicts(catalog, [uid], partner)

    outcomes = stow.ingest_parts(app.archive, request.stream, boundary, study,
                                 max_parts=app.config.get("http", "max_parts"), max_bytes=max_bytes,
                                 study_allowed=study_allowed if partner is not None else None)
    stored = sum(1 for o in outcomes if o.result.ok)
    studies = sorted({o.result.study_instance_uid for o in outcomes if o.result.ok})
    if partner is not None and studies:
        partners.record_uploads(catalog, studies, partner)  # what a partner stored, it sees
    audit("store", "success" if stored == len(outcomes) else "partial" if stored else "failure",
          study=study or (studies[0] if len(studies) == 1 else ""), parts=str(len(outcomes)), stored=str(stored),
          studies=str(len(studies)))
    return stow.store_response(outcomes, dicomweb_base(), study, request.host)


@bp.post("/studies")
def store_instances() -> Response:
    return _store()


@bp.post(STUDY)
def store_study_instances(study: str) -> Response:
    return _store(study)


# -- DELETE -----------------------------------------------------------------------------------------


def _delete(study: str, series: str | None = None, instance: str | None = None) -> Response:
    """Remove a study, series or instance (index rows, then objects): 204, or 404 when nothing matched.

    Not part of the DICOMweb standard (dcm4chee and Orthanc offer the same); needs the ``delete``
    right and ``[http] allow_delete = true`` (the default). Turned off, it answers 405 with the reason.
    """
    if not state().config.get("http", "allow_delete"):
        audit("delete", "refused", reason="http.allow_delete is false")
        raise ApiError(405, "deleting is turned off on this server (http.allow_delete = false)",
                       headers={"Allow": "GET, POST" if series is None else "GET"})
    authorize("delete")
    removed = state().archive.delete(study, series, instance, visibility=visibility())
    target = {"study": study, **({"series": series} if series else {}), **({"instance": instance} if instance else {})}
    if removed is None:
        audit("delete", "not-found", **target)
        raise ApiError(404, "no such " + ("instance" if instance else "series" if series else "study"))
    audit("delete", "success", objects=str(removed), **target)
    return Response(status=204)


@bp.delete(STUDY)
def delete_study(study: str) -> Response:
    return _delete(study)


@bp.delete(SERIES)
def delete_series(study: str, series: str) -> Response:
    return _delete(study, series)


@bp.delete(INSTANCE)
def delete_instance(study: str, series: str, instance: str) -> Response:
    return _delete(study, series, instance)
