"""WSGI entry points for gunicorn or any other WSGI server.

::

    gunicorn 'viewer.wsgi:create("/etc/pacs-lite/pacs-lite.toml")'
    PACSLITE_CONFIG_FILE=/etc/pacs-lite/pacs-lite.toml gunicorn viewer.wsgi:app

The variable is deliberately not called ``PACS_LITE_...``: that prefix is reserved for
configuration keys (``PACS_LITE_HTTP_PORT``...), and an unknown one is an error.
Importing this module builds nothing; ``app`` is created on first access.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from pacs_lite.config import load_config

from .app import create_app
from .http_server import CONFIG_ENV


def create(config_path: str | None = None) -> Flask:
    """The application for ``config_path`` (default: ``$PACSLITE_CONFIG_FILE``, else built-in defaults)."""
    path = config_path or os.environ.get(CONFIG_ENV) or None
    return create_app(load_config(path))


def __getattr__(name: str) -> Any:
    if name == "app":
        application = create()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
