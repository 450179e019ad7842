"""``python -m dicom_scp [--config FILE]``: the DICOM SCP as its own process (``pacs-lite serve`` starts it).

Runs until SIGTERM or SIGINT, then stops accepting associations and lets open ones finish.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pacs_lite.archive import Archive
from pacs_lite.config import ConfigError, load_config
from pacs_lite.logsetup import configure_logging
from pacs_lite.stopsignal import StopSignal

from .server import DicomServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dicom_scp")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"dicom_scp: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.get("log", "level"))
    stop = StopSignal()
    archive = Archive(config)
    server = DicomServer(archive, config)
    server.start()
    logging.getLogger("dicom_scp").info(
        "DICOM SCP %s listening on %s:%s", config.get("dicom", "ae_title"), config.get("dicom", "host"), server.port
    )
    stop.wait()
    server.shutdown()
    archive.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
