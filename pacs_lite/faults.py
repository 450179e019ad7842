"""Named crash points for the reliability tests.

``PACSLITE_TEST_CRASH_AT=name`` (read once, at import) makes the process kill itself
with SIGKILL when it reaches the point of that name, the ``PACSLITE_TEST_CRASH_AFTER``-th
time (default: the first). The variables deliberately do not start with ``PACS_LITE_``,
so they can never be mistaken for configuration.
"""

from __future__ import annotations

import os
import signal
import threading

_CRASH_AT = os.environ.get("PACSLITE_TEST_CRASH_AT", "")
_CRASH_AFTER = int(os.environ.get("PACSLITE_TEST_CRASH_AFTER", "1") or 1)
_reached = 0
_lock = threading.Lock()

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
    global _reached
    if not _CRASH_AT or _CRASH_AT != name:
        return
    with _lock:
        _reached += 1
        if _reached >= _CRASH_AFTER:
            os.kill(os.getpid(), signal.SIGKILL)
