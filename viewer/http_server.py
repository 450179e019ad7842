"""Run the web application under gunicorn (``gthread`` workers), configured from ``[http]``.

Entry point (what ``pacs-lite serve`` starts as a subprocess)::

    python -m viewer.http_server --config /path/to/pacs-lite.toml

Without ``--config`` the file named by ``$PACSLITE_CONFIG_FILE`` is used, else the
built-in defaults; ``PACS_LITE_<SECTION>_<KEY>`` variables override keys as usual.
The master process validates the configuration and migrates the index once; each
worker then builds its own :class:`~pacs_lite.archive.Archive` after the fork (no
database connection or file handle is shared across processes). The access log never
contains query strings (they may carry patient names).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from pacs_lite.config import Config, ConfigError, load_config
from pacs_lite.logsetup import configure_logging

#: Environment variable naming the configuration file (as in :mod:`viewer.wsgi`).
CONFIG_ENV = "PACSLITE_CONFIG_FILE"

log = logging.getLogger(__name__)

ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'


def bind_address(host: str, port: int) -> str:
    """``host:port`` as gunicorn wants it (IPv6 literals in brackets)."""
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def gunicorn_options(config: Config) -> dict[str, Any]:
    """gunicorn settings derived from the ``[http]`` and ``[log]`` sections."""
    http = config["http"]
    return {
        "bind": [bind_address(http["host"], http["port"])],
        "worker_class": "gthread",
        "workers": http["workers"],
        "threads": http["threads"],
        "timeout": http["timeout"],
        "graceful_timeout": 30,
        "keepalive": 5,
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        "accesslog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "loglevel": config.get("log", "level").lower(),
        "proc_name": "pacs-lite-http",
        "preload_app": False,
        # gunicorn >= 25.1 opens a management socket at ~/.gunicorn/gunicorn.ctl by default:
        # shared by every instance of the user, and not something this server offers
        "control_socket_disable": True,
    }

#: Settings that older gunicorn versions (setup.cfg allows >= 22) do not know.
OPTIONAL_SETTINGS = frozenset({"control_socket_disable"})


class PacsLiteHTTPServer(BaseApplication):
    """gunicorn running :func:`viewer.app.create_app` for one configuration."""

    def __init__(self, config: Config) -> None:
        self.pacs_config = config
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.pacs_config).items():
            if key in OPTIONAL_SETTINGS and key not in self.cfg.settings:
                continue
            self.cfg.set(key, value)

    def load(self) -> Flask:
        """Called in each worker after the fork."""
        from pacs_lite.archive import Archive

        from .app import create_app

        return create_app(self.pacs_config, Archive(self.pacs_config, migrate=False))


def serve(config: Config) -> None:
    """Migrate the index once, then run gunicorn until it is stopped (SIGTERM/SIGINT)."""
    host = config.get("http", "host")
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        allowed = ", ".join(config.get("http", "allow_from")) or "none"
        log.warning("HTTP bound to %s: without authentication only loopback clients and the networks of "
                    "http.allow_from (%s) are admitted", host, allowed)
    from pacs_lite.archive import Archive

    Archive(config).close()
    PacsLiteHTTPServer(config).run()


def run(config_path: str | None) -> int:
    """Serve HTTP with the configuration at ``config_path`` (default: ``$PACSLITE_CONFIG_FILE``) until stopped."""
    try:
        config = load_config(config_path or os.environ.get(CONFIG_ENV) or None)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.get("log", "level"))
    serve(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m viewer.http_server [--config FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m viewer.http_server", description=__doc__.split("\n")[0])
    parser.add_argument("--config", metavar="FILE", help=f"TOML configuration (default: ${CONFIG_ENV})")
    args = parser.parse_args(argv)
    return run(args.config)


if __name__ == "__main__":
    sys.exit(main())
