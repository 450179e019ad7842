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
from .catalog import Integrity
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
    missing: list[str] = field(default_factory=list)  # SOP Instance UIDs ("UID (revision)" for older revisions)
    corrupt: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # object keys
    #: objects whose key PACS-lite never writes (outside ``instances/``): put there by hand or by another program
    stray: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    #: instances marked corrupt by an earlier ``--repair`` whose object is still missing or damaged: known,
    #: answered with an error on retrieval, not a new fault (resend the instance, or delete it)
    marked: list[str] = field(default_factory=list)
    repaired: int = 0  # orphans and stray objects removed
    marked_now: int = 0  # instances marked corrupt by this run
    revisions_dropped: int = 0  # missing or corrupt older revisions forgotten by this run
    restored: int = 0  # instances marked corrupt whose object is intact again (e.g. put back from a backup)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.corrupt or self.orphans or self.stray or self.unreadable)


def verify(archive: Archive, *, repair: bool = False, grace_seconds: float | None = None,
           progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check every indexed object's checksum and look for orphans and stray objects.

    With ``repair`` every fault found is cleared, so that the next run is clean:

    * an instance whose current object is missing or corrupt is marked ``integrity = "corrupt"``
      (WADO and C-GET then answer with an error instead of data); later runs list it as known, not as
      a fault, and clear the mark once the object is intact again (put back from a backup);
    * an older revision whose object is missing or corrupt is forgotten (its row and what is left of
      its object): it was superseded, and nothing can be read from it;
    * orphans older than the grace period are deleted;
    * stray objects (keys outside ``instances/``, which PACS-lite never writes: the objects folder or
      bucket is PACS-lite's alone) are deleted.
    """
    report = VerifyReport()
    already_marked = archive.catalog.marked(Integrity.CORRUPT)
    for key, sha, uid, role in archive.catalog.iter_objects():
        report.checked += 1
        if progress is not None:
            progress(1)
        try:
            archive.store.get(key, expected_sha256=sha)
        except ChecksumMismatch:
            fault = report.corrupt
        except ObjectNotFound:
            fault = report.missing
        except StoreError as exc:
            report.unreadable.append(f"{uid}: {exc}")
            continue
        else:
            if role == "current" and uid in already_marked and repair:
                archive.catalog.mark_integrity(uid, Integrity.OK)
                report.restored += 1
            continue
        if role == "current":
            if uid in already_marked:
                report.marked.append(uid)
                continue
            fault.append(uid)
            if repair:
                archive.catalog.mark_integrity(uid, Integrity.CORRUPT)
                report.marked_now += 1
        else:
            fault.append(f"{uid} (revision)")
            if repair and archive.catalog.drop_revision(key):
                report.revisions_dropped += 1
                if fault is report.corrupt:
                    _delete(archive, key)
    grace = archive.config.get("storage", "orphan_grace_seconds") if grace_seconds is None else grace_seconds
    report.orphans = _orphans(archive, grace)
    report.stray = sorted(info.key for info in archive.store.iter_objects() if not info.key.startswith(PREFIX))
    if repair:
        report.repaired = sum(_delete(archive, key) for key in report.orphans + report.stray)
    return report


def _delete(archive: Archive, key: str) -> bool:
    try:
        archive.store.delete(key)
        return True
    except StoreError as exc:
        log.warning("could not remove %s: %s", key, exc)
        return False
