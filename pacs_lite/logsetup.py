"""Logging: one line per event, to stderr, never a patient name or a token."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom logs whole datasets (patient names included) at DEBUG and INFO
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom's messages quote element values (patient data) at every level: never emit them
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 10)
    # Alembic lists every plugin it loads at INFO, in each process that opens the index; its migrations stay INFO
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
