"""The DICOM SCP as a process of its own: what ``pacs-lite serve`` starts, and ``python -m dicom_scp``.

Runs until SIGTERM or SIGINT, then stops accepting associations and lets open ones finish.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pacs_lite.archive import Archive
from pacs_lite.config import ConfigError, load_config
from pacs_lite.logsetup import configure_logging
from pacs_lite.stopsignal import StopSignal

from .server import DicomServer


def run(config_path: str | None) -> int:
    """Serve DIMSE with the configuration at ``config_path`` (``None``: built-in defaults) until stopped."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"dicom_scp: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.get("log", "level"))
    stop = StopSignal()
    archive = Archive(config)
    server = DicomServer(archive, config)
    try:
        server.start()  # logs "listening" once
    except OSError as exc:  # `pacs-lite serve` checked the port; another program took it since
        print(f"dicom_scp: cannot listen on {config.get('dicom', 'host')}:{config.get('dicom', 'port')}: "
              f"{exc.strerror or exc}; change dicom.port", file=sys.stderr)
        archive.close()
        return 3
    stop.wait()
    server.shutdown()
    archive.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m dicom_scp [--config FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m dicom_scp")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    return run(args.config)
