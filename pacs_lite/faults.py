"""Named crash points for the reliability tests.

``PACSLITE_TEST_CRASH_AT=name`` (read once, at import) makes the process kill itself
with SIGKILL when it reaches the point of that name. The variable deliberately does
not start with ``PACS_LITE_``, so it can never be mistaken for configuration.
"""

from __future__ import annotations

import os
import signal

_CRASH_AT = os.environ.get("PACSLITE_TEST_CRASH_AT", "")

POINTS = (
    "ingest.after_parse",
    "ingest.after_object_write",
    "ingest.after_index_commit",
    "compress.after_object_write",
    "compress.after_index_switch",
    "compress.before_original_delete",
)


def crash_point(name: str) -> None:
    """Die here, as if killed, when the tests asked for it."""
    if _CRASH_AT and _CRASH_AT == name:
        os.kill(os.getpid(), signal.SIGKILL)
