"""The web application factory: DICOMweb and pages on one Flask app, no global state.

::

    app = create_app(config)            # builds its own Archive
    app = create_app(config, archive)   # shares one (tests, embedding)

The archive is ``app.extensions["pacs_lite"]``; everything the views share lives in
``app.extensions["pacs_lite.web"]`` (:class:`viewer.context.AppState`). Every request passes the access check
(:mod:`viewer.access`) before any view runs; every error is JSON (:mod:`viewer.errors`);
every response carries CORS and safety headers (:mod:`viewer.headers`).
"""

from __future__ import annotations

from flask import Flask

from pacs_lite.archive import Archive
from pacs_lite.config import Config

from . import dicomweb, ohif, pages, ui
from .access import AccessPolicy, init_access
from .context import ARCHIVE_KEY, STATE_KEY, AppState
from .errors import register_error_handlers
from .headers import init_headers
from .metadata import MetadataCache


def create_app(config: Config, archive: Archive | None = None, *, access: AccessPolicy | None = None,
               metadata_cache_bytes: int = 64 * 1024**2) -> Flask:
    """Build the PACS-lite web application.

    Parameters
    ----------
    config
        The effective configuration (``[http]`` keys are used here).
    archive
        The archive to serve; built from ``config`` when not given.
    access
        The access policy; the default admits loopback clients only.
    metadata_cache_bytes
        Size of the in-app cache of resolved metadata documents.

    Returns
    -------
    Flask
        The WSGI application.
    """
    app = Flask(__name__, static_folder=None)
    app.config.update(
        JSON_AS_ASCII=False,
        MAX_CONTENT_LENGTH=None,  # STOW-RS enforces [http] max_request_bytes while streaming
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.url_map.strict_slashes = False
    archive = archive if archive is not None else Archive(config)
    app.extensions[ARCHIVE_KEY] = archive
    app.extensions[STATE_KEY] = AppState(
        config=config,
        archive=archive,
        access=access if access is not None else AccessPolicy(
            allow_from=config.get("http", "allow_from"), loopback_trusted=config.get("security", "loopback_trusted")),
        metadata_cache=MetadataCache(max_bytes=metadata_cache_bytes),
    )
    register_error_handlers(app)
    init_access(app)
    init_headers(app, config.get("http", "cors_origins"))
    app.register_blueprint(dicomweb.bp)
    app.register_blueprint(pages.bp)
    ui.init_ui(app)
    ohif.init_ohif(app)
    return app
