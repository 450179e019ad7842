"""The catalog: every read and write of the index goes through :class:`Catalog`.

SQLite (WAL) is the embedded default and PostgreSQL the shared index of several nodes;
the code is the same. Write transactions on SQLite begin with ``BEGIN IMMEDIATE`` so
that concurrent writers queue on the busy timeout instead of failing on a lock upgrade.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from . import matching, recording
from .attributes import ATTRIBUTES, Attribute, attributes_up_to, level_rank
from .jobs import JobQueue, Jobs, insert_jobs, mark_done
from .models import Instance, InstanceRevision, Patient, Series, Study, utcnow
from .recording import InstanceRecord, RecordOutcome
from .states import CompressionState, Integrity

log = logging.getLogger(__name__)

#: Placeholder for the public base URL inside stored metadata JSON (BulkDataURIs).
BASE_PLACEHOLDER = "@@PACS_LITE_BASE@@"


class CatalogUnavailable(Exception):
    """The index database cannot be reached or refused the operation for lack of resources."""


class TransientConflict(CatalogUnavailable):
    """The database aborted the transaction to resolve a conflict (deadlock, serialization): retry it."""


class Visibility:
    """Which studies a caller may see. The default sees everything.

    Security (partner scoping) subclasses this; every catalog query takes one, so a
    query cannot forget to filter.
    """

    def study_condition(self) -> ColumnElement[bool] | None:
        return None


EVERYTHING = Visibility()


@dataclass(frozen=True)
class StoredInstance:
    """Where an indexed instance's current object is, and what it is."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    object_key: str
    object_size: int
    object_sha256: str
    received_sha256: str
    received_transfer_syntax_uid: str
    number_of_frames: int
    compression_state: CompressionState
    integrity: Integrity


def _instance_view(inst: Instance, series_uid: str, study_uid: str) -> StoredInstance:
    return StoredInstance(
        study_uid, series_uid, inst.sop_instance_uid, inst.sop_class_uid, inst.transfer_syntax_uid,
        inst.object_key, inst.object_size, inst.object_sha256, inst.received_sha256,
        inst.received_transfer_syntax_uid, inst.number_of_frames, CompressionState(inst.compression_state),
        Integrity(inst.integrity),
    )


def _configure_sqlite(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # an acknowledged row survives power loss
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _scoped(stmt: Any, study_uid: str | None, series_uid: str | None, sop_uid: str | None,
            visibility: Visibility) -> Any:
    """``stmt`` (joining instances, series and studies) narrowed to a study, series or instance the caller may see."""
    if study_uid is not None:
        stmt = stmt.where(Study.study_instance_uid == study_uid)
    if series_uid is not None:
        stmt = stmt.where(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
    condition = visibility.study_condition()
    return stmt if condition is None else stmt.where(condition)


class Catalog:
    """The index of patients, studies, series, instances and jobs.

    Parameters
    ----------
    url
        ``sqlite:///path/index.db`` or ``postgresql://user@host/db``.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        if self.is_sqlite:
            args = {"connect_args": {"timeout": 30, "check_same_thread": False}}
            self.engine = create_engine(url, **args)
            self.write_engine = create_engine(url, **args)
            _configure_sqlite(self.engine, immediate=False)
            _configure_sqlite(self.write_engine, immediate=True)
        else:
            self.engine = create_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_timeout=10,
                connect_args={"connect_timeout": 5},
            )
            self.write_engine = self.engine
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._migrated = False
        self._lock = threading.Lock()
        #: the job queue (compression, storage commitment reports)
        self.jobs = JobQueue(self)

    # -- lifecycle --------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest revision (Alembic); safe to call from several nodes."""
        from .migrate import upgrade

        with self._lock:
            if not self._migrated:
                upgrade(self.write_engine, self.is_sqlite)
                self._migrated = True

    def check(self) -> None:
        """Raise :class:`CatalogUnavailable` unless the database answers now."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise CatalogUnavailable(f"index database unreachable: {type(exc.orig).__name__}") from None

    def close(self) -> None:
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()

    @contextlib.contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only session."""
        try:
            with self._read() as session:
                yield session
        except OperationalError as exc:
            raise CatalogUnavailable(f"index database error: {type(exc.orig).__name__}") from None

    @contextlib.contextmanager
    def writer(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        try:
            with self._write() as session, session.begin():
                yield session
        except OperationalError as exc:
            if type(exc.orig).__name__ in ("DeadlockDetected", "SerializationFailure", "LockNotAvailable"):
                raise TransientConflict(f"index database conflict: {type(exc.orig).__name__}") from None
            raise CatalogUnavailable(f"index database error: {type(exc.orig).__name__}") from None

    # -- ingest ----------------------------------------------------------------------------

    def lookup_instance(self, sop_instance_uid: str) -> StoredInstance | None:
        """The indexed instance with this UID, or ``None``."""
        with self.reader() as s:
            row = s.execute(
                select(Instance, Series.series_instance_uid, Study.study_instance_uid)
                .join(Series, Instance.series_pk == Series.id).join(Study, Series.study_pk == Study.id)
                .where(Instance.sop_instance_uid == sop_instance_uid)
            ).first()
            return _instance_view(*row) if row else None

    def record_instance(self, rec: InstanceRecord, *, enqueue: Jobs = (),
                        keep_revisions: bool = True) -> RecordOutcome:
        """Index a stored object in one transaction (patient, study, series, instance, counts, jobs).

        The rules are :mod:`.recording`'s: an identical object (same received SHA-256)
        already indexed under the SOP Instance UID is a duplicate and nothing is written;
        a different one is kept as a revision and the instance row points at the new
        object (with ``keep_revisions``; otherwise the outcome is a conflict). The outcome
        names the object indexed before (``existing_key``); deleting ``rec.object_key``
        after a refusal, and checking that a duplicate's stored copy is still there, are
        the caller's.
        """
        attempts = 5
        for attempt in range(attempts):
            try:
                with self.writer() as s:
                    return recording.record(s.connection(), rec, enqueue, keep_revisions=keep_revisions,
                                            postgres=not self.is_sqlite)
            except (IntegrityError, TransientConflict):
                # a concurrent writer created the same patient/study/series/instance first,
                # or the database chose this transaction to break a deadlock: run it again
                if attempt == attempts - 1:
                    raise
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def _for_update(self, stmt: Any) -> Any:
        return stmt if self.is_sqlite else stmt.with_for_update()

    def replace_object(self, sop_instance_uid: str, expected_key: str, *, object_key: str, object_size: int,
                       object_sha256: str, transfer_syntax_uid: str, compression_state: CompressionState,
                       compression_note: str = "", integrity: Integrity | None = None,
                       finish_job: int | None = None, enqueue: Jobs = ()) -> bool:
        """Point an instance at a new object if it still points at ``expected_key`` (compare and swap).

        ``integrity`` (unless ``None``) is recorded with it. With ``finish_job``, that job is
        marked done in the same transaction (one commit, and one fsync, fewer per compressed
        instance); ``enqueue`` adds jobs in it (the instance's id added to each payload).
        """
        now = utcnow()
        values: dict[str, Any] = dict(
            object_key=object_key, object_size=object_size, object_sha256=object_sha256,
            transfer_syntax_uid=transfer_syntax_uid, compression_state=compression_state,
            compression_note=compression_note[:255], updated_at=now)
        if integrity is not None:
            values["integrity"] = integrity
        with self.writer() as s:
            conn = s.connection()
            row = conn.execute(
                update(Instance)
                .where(Instance.sop_instance_uid == sop_instance_uid, Instance.object_key == expected_key)
                .values(values).returning(Instance.id, Instance.series_pk)
            ).first()
            if row is None:
                return False
            conn.execute(update(Series).where(Series.id == row.series_pk).values(
                metadata_version=Series.metadata_version + 1, metadata_gz=None))
            if finish_job is not None:
                mark_done(conn, finish_job)
            insert_jobs(conn, enqueue, now, instance_id=row.id)
            return True

    def set_compression_state(self, sop_instance_uid: str, expected_key: str, state: CompressionState,
                              note: str = "") -> None:
        """Record why an instance stays as received (or is pending again)."""
        with self.writer() as s:
            s.execute(update(Instance).where(
                Instance.sop_instance_uid == sop_instance_uid, Instance.object_key == expected_key,
            ).values(compression_state=state, compression_note=note[:255]))

    def mark_integrity(self, sop_instance_uid: str, state: Integrity) -> None:
        with self.writer() as s:
            s.execute(update(Instance).where(Instance.sop_instance_uid == sop_instance_uid).values(integrity=state))

    def marked(self, state: Integrity) -> set[str]:
        """SOP Instance UIDs whose integrity is ``state`` (e.g. marked corrupt by ``verify --repair``)."""
        with self.reader() as s:
            return set(s.scalars(select(Instance.sop_instance_uid).where(Instance.integrity == state)))

    def drop_revision(self, object_key: str) -> bool:
        """Forget the older revision stored as ``object_key`` (its object is lost or corrupt); whether there was one."""
        with self.writer() as s:
            return s.execute(delete(InstanceRevision).where(InstanceRevision.object_key == object_key)).rowcount > 0

    # -- queries ---------------------------------------------------------------------------

    def find(self, level: str, filters: dict[str, str], *, fuzzy: bool = False, limit: int | None = None,
             offset: int = 0, visibility: Visibility = EVERYTHING, order: bool = True,
             oldest_first: bool = False) -> list[dict[str, Any]]:
        """Match ``filters`` (keyword -> DICOM query value) at ``level``.

        Returns one dict per match with every indexed attribute of that level and the levels
        above it (keyword -> value; ModalitiesInStudy as a list), plus ``"_pk"``.
        Raises :class:`matching.QueryError` for an invalid value or an unknown keyword.
        Studies come newest first, or oldest first with ``oldest_first``.
        """
        rank = level_rank(level)
        attrs = attributes_up_to(level)
        tables = [Patient, Study, Series, Instance][: rank + 1]
        main = tables[-1]
        stmt = select(main.id, *[a.column for a in attrs]).select_from(Patient)
        if rank >= 1:
            stmt = stmt.join(Study, Study.patient_pk == Patient.id)
        if rank >= 2:
            stmt = stmt.join(Series, Series.study_pk == Study.id)
        if rank >= 3:
            stmt = stmt.join(Instance, Instance.series_pk == Series.id)
        for keyword, value in filters.items():
            attr = ATTRIBUTES.get(keyword)
            if attr is None:
                raise matching.QueryError(f"{keyword}: not a matching key at the {level} level")
            if level_rank(attr.level) > rank:
                raise matching.QueryError(f"{keyword}: not a matching key at the {level} level")
            folded = Patient.patient_name_folded if keyword == "PatientName" else None
            cond = matching.condition(attr.kind, attr.column, value, folded=folded, fuzzy=fuzzy, name=keyword)
            if cond is not None:
                stmt = stmt.where(cond)
        if rank >= 1:
            vis = visibility.study_condition()
            if vis is not None:
                stmt = stmt.where(vis)
        if order:
            if level == "PATIENT":
                stmt = stmt.order_by(Patient.id)
            elif level == "STUDY":
                if oldest_first:
                    stmt = stmt.order_by(Study.study_date, Study.study_time, Study.id)
                else:
                    stmt = stmt.order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
            elif level == "SERIES":
                stmt = stmt.order_by(Series.series_number, Series.id)
            else:
                stmt = stmt.order_by(Instance.instance_number, Instance.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        with self.reader() as s:
            rows = s.execute(stmt).all()
        return [self._row_dict(row, attrs) for row in rows]

    @staticmethod
    def _row_dict(row: Any, attrs: list[Attribute]) -> dict[str, Any]:
        out: dict[str, Any] = {"_pk": row[0]}
        for attr, value in zip(attrs, row[1:], strict=True):
            if attr.keyword == "ModalitiesInStudy":
                value = [m for m in (value or "").split("\\") if m]
            out[attr.keyword] = value
        return out

    def instance_metadata(self, pks: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Stored DICOM JSON of instances by primary key (for attributes the columns lack)."""
        pks = list(pks)
        if not pks:
            return {}
        with self.reader() as s:
            rows = s.execute(select(Instance.id, Instance.metadata_z).where(Instance.id.in_(pks))).all()
        return {pk: json.loads(zlib.decompress(blob)) for pk, blob in rows}

    def instances(self, study_uid: str | None = None, series_uid: str | None = None, sop_uid: str | None = None,
                  *, visibility: Visibility = EVERYTHING) -> list[StoredInstance]:
        """Locations of the instances of a study, series or one instance, in series/instance order."""
        stmt = _scoped(select(Instance, Series.series_instance_uid, Study.study_instance_uid)
                       .join(Series, Instance.series_pk == Series.id).join(Study, Series.study_pk == Study.id),
                       study_uid, series_uid, sop_uid, visibility)
        stmt = stmt.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
        with self.reader() as s:
            return [_instance_view(*row) for row in s.execute(stmt).all()]

    def series_metadata(self, study_uid: str, series_uid: str, *,
                        visibility: Visibility = EVERYTHING) -> tuple[bytes, int] | None:
        """Gzip of the series' metadata JSON array and its version; built once per change."""
        with self.reader() as s:
            stmt = (select(Series.id, Series.metadata_version, Series.metadata_gz)
                    .join(Study, Series.study_pk == Study.id)
                    .where(Series.series_instance_uid == series_uid, Study.study_instance_uid == study_uid))
            vis = visibility.study_condition()
            if vis is not None:
                stmt = stmt.where(vis)
            row = s.execute(stmt).first()
            if row is None:
                return None
            pk, version, blob = row
            if blob is not None:
                return blob, version
            parts = s.execute(select(Instance.metadata_z).where(Instance.series_pk == pk)
                              .order_by(Instance.instance_number, Instance.id)).scalars().all()
        body = b"[" + b",".join(zlib.decompress(p) for p in parts) + b"]"
        blob = gzip.compress(body, compresslevel=6, mtime=0)
        with contextlib.suppress(CatalogUnavailable, DBAPIError), self.writer() as s:
            s.execute(update(Series).where(Series.id == pk, Series.metadata_version == version)
                      .values(metadata_gz=blob))
        return blob, version

    def counts(self) -> dict[str, int]:
        with self.reader() as s:
            return {
                "patients": s.scalar(select(func.count()).select_from(Patient)) or 0,
                "studies": s.scalar(select(func.count()).select_from(Study)) or 0,
                "series": s.scalar(select(func.count()).select_from(Series)) or 0,
                "instances": s.scalar(select(func.count()).select_from(Instance)) or 0,
                "pending_compression": s.scalar(select(func.count()).select_from(Instance)
                                                .where(Instance.compression_state == CompressionState.PENDING)) or 0,
            }

    def iter_objects(self) -> Iterator[tuple[str, str, str, str]]:
        """Every object the index refers to: (key, sha256, sop_instance_uid, "current"/"revision")."""
        with self.reader() as s:
            for key, sha, uid in s.execute(select(Instance.object_key, Instance.object_sha256, Instance.sop_instance_uid)):
                yield key, sha, uid, "current"
            for key, sha, uid in s.execute(select(InstanceRevision.object_key, InstanceRevision.object_sha256,
                                                  InstanceRevision.sop_instance_uid)):
                yield key, sha, uid, "revision"

    def referenced_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` the index refers to (as a current object or a revision)."""
        keys = list(keys)
        found: set[str] = set()
        with self.reader() as s:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                found.update(s.scalars(select(Instance.object_key).where(Instance.object_key.in_(chunk))))
                found.update(s.scalars(select(InstanceRevision.object_key).where(InstanceRevision.object_key.in_(chunk))))
        return found

    # -- deletion --------------------------------------------------------------------------

    def delete(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None,
               *, visibility: Visibility = EVERYTHING) -> list[str] | None:
        """Remove a study, series or instance from the index; return the object keys to delete.

        ``None`` when nothing matched. Objects are deleted by the caller after this commits,
        so a failure in between leaves orphans, never rows pointing at nothing.
        """
        with self.writer() as s:
            stmt = _scoped(select(Instance, Series, Study).join(Series, Instance.series_pk == Series.id)
                           .join(Study, Series.study_pk == Study.id), study_uid, series_uid, sop_uid, visibility)
            rows = s.execute(self._for_update(stmt)).all()
            if not rows:
                return None
            keys: list[str] = []
            touched_series: dict[int, Series] = {}
            study = rows[0][2]
            for inst, series, _ in rows:
                keys.append(inst.object_key)
                uid = inst.sop_instance_uid
                keys.extend(s.scalars(select(InstanceRevision.object_key).where(InstanceRevision.sop_instance_uid == uid)))
                s.execute(delete(InstanceRevision).where(InstanceRevision.sop_instance_uid == uid))
                series.num_instances -= 1
                study.num_instances -= 1
                study.size_bytes -= inst.object_size
                touched_series[series.id] = series
                s.delete(inst)
            s.flush()
            for series in touched_series.values():
                series.metadata_version += 1
                series.metadata_gz = None
                if series.num_instances <= 0:
                    s.delete(series)
                    study.num_series -= 1
            s.flush()
            remaining = s.scalars(select(Series.modality).where(Series.study_pk == study.id)).all()
            study.modalities_in_study = ("\\" + "\\".join(sorted({m for m in remaining if m})) + "\\") if remaining else ""
            if study.num_series <= 0:
                patient = s.get(Patient, study.patient_pk)
                s.delete(study)
                if patient is not None:
                    patient.num_studies -= 1
                    s.flush()
                    if patient.num_studies <= 0:
                        s.delete(patient)
            return keys
