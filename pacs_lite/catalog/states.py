"""The values of the index's state columns.

``StrEnum``: a member is its string, so the database holds, and JSON and logs show, the
same text as before, and code comparing with the plain string keeps working.
"""

from __future__ import annotations

from enum import StrEnum


class CompressionState(StrEnum):
    """``instances.compression_state``: what became of the received object at rest."""

    #: compression is off (``[compression] transfer_syntax = "none"``)
    NONE = "none"
    #: a ``compress`` job will replace the object
    PENDING = "pending"
    #: replaced by its verified lossless compression
    COMPRESSED = "compressed"
    #: stored as received; ``compression_note`` says why
    KEPT = "kept"


class Integrity(StrEnum):
    """``instances.integrity``."""

    OK = "ok"
    #: the object is missing or fails its checksum (set by ``verify --repair``)
    CORRUPT = "corrupt"


class JobState(StrEnum):
    """``jobs.state``."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
