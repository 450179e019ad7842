"""The durable job queue in the index (compression, storage commitment reports).

Any node may claim a job; on PostgreSQL claims use ``FOR UPDATE SKIP LOCKED``. A claim
expires (``lease_until``), so a job whose worker died is taken again. Reached as
``catalog.jobs`` (:class:`JobQueue`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.orm import Session

from .models import Job, utcnow
from .states import JobState

if TYPE_CHECKING:
    from .catalog import Catalog

__all__ = ["JobQueue", "JobState", "insert_jobs", "mark_done"]

#: ``(kind, payload)`` pairs to queue with an index write
Jobs = Sequence[tuple[str, dict[str, Any]]]

_INSERT_JOBS = insert(Job)


def insert_jobs(conn: Connection, jobs: Jobs, now: dt.datetime, **extra: Any) -> None:
    """Queue ``jobs`` inside the caller's transaction, ``extra`` added to every payload."""
    if jobs:
        conn.execute(_INSERT_JOBS, [
            {"kind": kind, "payload": json.dumps({**payload, **extra}), "state": JobState.QUEUED, "attempts": 0,
             "run_after": now, "claimed_by": "", "last_error": "", "created_at": now, "updated_at": now}
            for kind, payload in jobs])


def mark_done(conn: Connection, job_id: int) -> None:
    """Mark a job done inside the caller's transaction (with the work it did)."""
    conn.execute(update(Job).where(Job.id == job_id).values(state=JobState.DONE, lease_until=None, updated_at=utcnow()))


class JobQueue:
    """The ``jobs`` table of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @staticmethod
    def enqueue(s: Session, kind: str, payload: dict[str, Any], *, delay: float = 0.0) -> None:
        """Add a job inside the caller's transaction."""
        s.add(Job(kind=kind, payload=json.dumps(payload), state=JobState.QUEUED,
                  run_after=utcnow() + dt.timedelta(seconds=delay)))

    def add(self, kind: str, payload: dict[str, Any], *, delay: float = 0.0) -> None:
        """Add a job in a transaction of its own."""
        with self._catalog.writer() as s:
            self.enqueue(s, kind, payload, delay=delay)

    def claim(self, kinds: Sequence[str], worker: str, *,
              lease_seconds: float = 600) -> tuple[int, str, dict[str, Any], int] | None:
        """Take the oldest runnable job of ``kinds``: (id, kind, payload, attempts) or ``None``.

        A running job whose lease expired (its worker died) is runnable again.
        """
        now = utcnow()
        with self._catalog.writer() as s:
            stmt = (select(Job).where(Job.kind.in_(list(kinds)), Job.run_after <= now,
                                      ((Job.state == JobState.QUEUED)
                                       | ((Job.state == JobState.RUNNING) & (Job.lease_until < now))))
                    .order_by(Job.run_after, Job.id).limit(1))
            if not self._catalog.is_sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            job = s.execute(stmt).scalar_one_or_none()
            if job is None:
                return None
            job.state = JobState.RUNNING
            job.attempts += 1
            job.claimed_by = worker[:128]
            job.lease_until = now + dt.timedelta(seconds=lease_seconds)
            job.updated_at = now
            return job.id, job.kind, json.loads(job.payload), job.attempts

    def finish(self, job_id: int, *, error: str | None = None, retry_in: float | None = None) -> None:
        """Mark a running job done, failed, or queued again after ``retry_in`` seconds.

        A job no longer running (already marked done with the work it did) is left as it is.
        """
        with self._catalog.writer() as s:
            job = s.get(Job, job_id)
            if job is None or job.state != JobState.RUNNING:
                return
            job.updated_at = utcnow()
            job.lease_until = None
            if error is None:
                job.state = JobState.DONE
            elif retry_in is not None:
                job.state, job.last_error = JobState.QUEUED, error[:2000]
                job.run_after = utcnow() + dt.timedelta(seconds=retry_in)
            else:
                job.state, job.last_error = JobState.FAILED, error[:2000]

    def release(self, claimed_by: Sequence[str]) -> int:
        """Put running jobs of workers known to be dead back in the queue (their attempt counts)."""
        if not claimed_by:
            return 0
        with self._catalog.writer() as s:
            return s.execute(
                update(Job).where(Job.state == JobState.RUNNING, Job.claimed_by.in_(list(claimed_by)))
                .values(state=JobState.QUEUED, lease_until=None, run_after=utcnow(), updated_at=utcnow())
            ).rowcount or 0

    def running_claimed_on(self, host_prefix: str) -> list[str]:
        """Distinct ``claimed_by`` names of running jobs whose worker ran on this host."""
        with self._catalog.reader() as s:
            return list(s.scalars(select(Job.claimed_by).where(
                Job.state == JobState.RUNNING, Job.claimed_by.like(host_prefix + "%")).distinct()))

    def counts(self) -> dict[str, int]:
        """Number of jobs per state (states without jobs are left out)."""
        with self._catalog.reader() as s:
            return dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())

    def purge_done(self, older_than_seconds: float = 86400) -> int:
        """Delete jobs done more than ``older_than_seconds`` ago; return how many."""
        cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
        with self._catalog.writer() as s:
            return s.execute(delete(Job).where(Job.state == JobState.DONE, Job.updated_at < cutoff)).rowcount or 0
