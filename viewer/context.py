"""What one web application instance holds: configuration, archive, caches, access policy.

There is no module-level state: :func:`viewer.app.create_app` stores the
:class:`~pacs_lite.archive.Archive` in ``app.extensions["pacs_lite"]`` and one
:class:`AppState` (archive, configuration, caches, access policy) in
``app.extensions["pacs_lite.web"]``; views reach the latter through :func:`state`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app, g, request

from pacs_lite.archive import Archive
from pacs_lite.catalog import Visibility
from pacs_lite.config import Config

from .errors import ApiError

if TYPE_CHECKING:
    from .access import AccessPolicy
    from .metadata import MetadataCache

ARCHIVE_KEY = "pacs_lite"
STATE_KEY = "pacs_lite.web"
_SAFE_URL = re.compile(r"^https?://[A-Za-z0-9._~%:\[\]-]+(/[A-Za-z0-9._~%/-]*)?$")


@dataclass
class AppState:
    """Everything the views of one application share."""

    config: Config
    archive: Archive
    access: AccessPolicy
    metadata_cache: MetadataCache


def state() -> AppState:
    """The state of the application handling the current request."""
    return current_app.extensions[STATE_KEY]


def visibility() -> Visibility:
    """What the current caller may see, as decided by the access check of this request.

    Fails closed: a request that did not pass through the access check has no visibility.
    """
    vis = g.get("visibility")
    if not isinstance(vis, Visibility):
        raise RuntimeError("request did not pass the access check")
    return vis


def dicomweb_base() -> str:
    """The public DICOMweb base URL for the current request (``http://host:port/dicomweb``).

    It is built from the ``Host`` header and spliced into JSON documents (BulkDataURIs,
    RetrieveURLs), so anything but a plain URL is refused (400).
    """
    base = request.url_root.rstrip("/") + "/dicomweb"
    if len(base) > 512 or not _SAFE_URL.match(base):
        raise ApiError(400, "invalid Host header")
    return base
