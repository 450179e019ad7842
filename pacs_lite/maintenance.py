"""Keeping the index and the store in agreement: the orphan sweeper and ``pacs-lite verify``.

An orphan is an object the index does not refer to: left by a crash between the
object write and the index commit, by a failed delete, or by compression replacing
an original. Orphans younger than the grace period may belong to an ingest still in
flight, so they are left alone.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from storage import ChecksumMismatch, ObjectNotFound, StoreError

from .archive import Archive
from .catalog.models import utcnow

log = logging.getLogger(__name__)

PREFIX = "instances/"


def _orphans(archive: Archive, grace_seconds: float) -> list[str]:
    cutoff = utcnow() - dt.timedelta(seconds=grace_seconds)
    candidates = []
    for info in archive.store.iter_objects(PREFIX):
        modified = info.modified.astimezone(dt.UTC).replace(tzinfo=None) if info.modified.tzinfo else info.modified
        if modified <= cutoff:
            candidates.append(info.key)
    referenced = archive.catalog.referenced_keys(candidates)
    return [k for k in candidates if k not in referenced]


def sweep_orphans(archive: Archive, grace_seconds: float | None = None) -> int:
    """Delete unreferenced objects older than the grace period; return how many."""
    grace = archive.config.get("storage", "orphan_grace_seconds") if grace_seconds is None else grace_seconds
    removed = 0
    for key in _orphans(archive, grace):
        try:
            archive.store.delete(key)
            removed += 1
        except StoreError as exc:
            log.warning("could not remove orphan %s: %s", key, exc)
    if removed:
        log.info("orphan sweep removed %d objects", removed)
    return removed


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # SOP Instance UIDs
    corrupt: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # object keys
    unreadable: list[str] = field(default_factory=list)
    repaired: int = 0

    @property
    def clean(self) -> bool:
        return not (self.missing or self.corrupt or self.orphans or self.unreadable)


def verify(archive: Archive, *, repair: bool = False, grace_seconds: float | None = None,
           progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check every indexed object's checksum and look for orphans.

    With ``repair``: orphans (older than the grace period) are deleted and instances whose
    object is missing or corrupt are marked ``integrity = "corrupt"`` (WADO and C-GET then
    answer with an error instead of data).
    """
    report = VerifyReport()
    for key, sha, uid, role in archive.catalog.iter_objects():
        report.checked += 1
        if progress is not None:
            progress(1)
        try:
            archive.store.get(key, expected_sha256=sha)
        except ChecksumMismatch:
            report.corrupt.append(uid if role == "current" else f"{uid} (revision)")
        except ObjectNotFound:
            report.missing.append(uid if role == "current" else f"{uid} (revision)")
        except StoreError as exc:
            report.unreadable.append(f"{uid}: {exc}")
            continue
        else:
            continue
        if repair and role == "current":
            archive.catalog.mark_integrity(uid, "corrupt")
    grace = archive.config.get("storage", "orphan_grace_seconds") if grace_seconds is None else grace_seconds
    report.orphans = _orphans(archive, grace)
    if repair:
        for key in report.orphans:
            try:
                archive.store.delete(key)
                report.repaired += 1
            except StoreError as exc:
                log.warning("could not remove orphan %s: %s", key, exc)
    return report
