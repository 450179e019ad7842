"""The index schema: patients, studies, series, instances, retained revisions and jobs.

Columns hold what C-FIND and QIDO-RS match on and return, so that a query is answered
from the index alone. Counts per study and series are maintained at ingest, never
computed per query.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .states import CompressionState, Integrity, JobState


def utcnow() -> dt.datetime:
    """Naive UTC: stored alike by SQLite and PostgreSQL, compared in SQL."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: not unique: patients without an ID are never merged with one another
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_name_folded: Mapped[str] = mapped_column(String(324), default="", index=True)
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    num_studies: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    modalities_in_study: Mapped[str] = mapped_column(String(128), default="")  # "\CT\SR\" for LIKE matching
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow, index=True)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    series_date: Mapped[str] = mapped_column(String(8), default="")
    series_time: Mapped[str] = mapped_column(String(16), default="")
    body_part_examined: Mapped[str] = mapped_column(String(16), default="")
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    #: bumped on every change to the series; the ETag of its metadata
    metadata_version: Mapped[int] = mapped_column(Integer, default=0)
    #: gzip of the series metadata JSON array, rebuilt lazily after a change (NULL = stale)
    metadata_gz: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int] = mapped_column(Integer, default=1)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: transfer syntax of the stored object (changes when compression replaces it)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(255), unique=True)
    object_size: Mapped[int] = mapped_column(BigInteger)
    object_sha256: Mapped[str] = mapped_column(String(64))
    #: what arrived: its transfer syntax and the SHA-256 of its dataset bytes (duplicate detection)
    received_transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    received_sha256: Mapped[str] = mapped_column(String(64))
    received_size: Mapped[int] = mapped_column(BigInteger)
    #: a :class:`CompressionState` ("kept": stored as received, see compression_note)
    compression_state: Mapped[str] = mapped_column(String(16), default=CompressionState.NONE, index=True)
    compression_note: Mapped[str] = mapped_column(String(255), default="")
    #: an :class:`Integrity` ("corrupt" is set by verify --repair when the object fails its checksum)
    integrity: Mapped[str] = mapped_column(String(16), default=Integrity.OK)
    #: instance DICOM JSON (zlib), bulk data as BulkDataURI relative to a placeholder base
    metadata_z: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class InstanceRevision(Base):
    """An older object of an instance, kept when a different one arrived with the same UID."""

    __tablename__ = "instance_revisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    object_key: Mapped[str] = mapped_column(String(255), unique=True)
    object_size: Mapped[int] = mapped_column(BigInteger)
    object_sha256: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    received_sha256: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(64), default="superseded")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow)


class Job(Base):
    """Durable background work (compression, storage commitment reports, sweeps).

    Any node may claim a job; on PostgreSQL claims use ``FOR UPDATE SKIP LOCKED``.
    A claim expires (``lease_until``), so a job whose worker died is taken again.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claimable", "state", "run_after"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text, default="{}")
    #: a :class:`JobState`
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(), nullable=True)
    claimed_by: Mapped[str] = mapped_column(String(128), default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow)


class ApiToken(Base):
    """A partner's bearer token: only the SHA-256 of its secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: the public look-up part of the token (``pl_<prefix>_<secret>``)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    partner: Mapped[str] = mapped_column(String(64), index=True)
    #: "read", "write" or "admin"
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(), nullable=True)


class StudyShare(Base):
    """A study a partner may see: shared by an operator, or uploaded by the partner (STOW-RS)."""

    __tablename__ = "study_shares"
    __table_args__ = (Index("ux_study_shares", "study_instance_uid", "partner", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: by UID, not a foreign key: a share survives deleting and re-sending the study
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    partner: Mapped[str] = mapped_column(String(64), index=True)
    #: "shared" (pacs-lite share) or "uploaded" (STOW-RS with the partner's token)
    origin: Mapped[str] = mapped_column(String(16), default="shared")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow)


class AuditEvent(Base):
    """One audited request: who, from where, what, on which study, with which outcome."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(DateTime(), default=utcnow, index=True)
    #: "local", "token:<id>:<partner>", or "-" when the caller was not identified
    who: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(32))
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    outcome: Mapped[str] = mapped_column(String(32))
    #: the HTTP status, and non-identifying details (counts, reasons)
    status: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(String(255), default="")
