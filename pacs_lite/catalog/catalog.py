"""The catalog: every read and write of the index goes through :class:`Catalog`.

SQLite (WAL) is the embedded default and PostgreSQL the shared index of several nodes;
the code is the same. Write transactions on SQLite begin with ``BEGIN IMMEDIATE`` so
that concurrent writers queue on the busy timeout instead of failing on a lock upgrade.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import logging
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from . import matching
from .attributes import ATTRIBUTES, Attribute, attributes_up_to, level_rank
from .models import Instance, InstanceRevision, Job, Patient, Series, Study, utcnow

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


@dataclass
class InstanceRecord:
    """What ingest knows about one received instance, ready to be indexed."""

    patient: dict[str, str]
    study: dict[str, str]
    series: dict[str, Any]
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    number_of_frames: int
    rows: int | None
    columns: int | None
    transfer_syntax_uid: str
    object_key: str
    object_size: int
    object_sha256: str
    received_sha256: str
    metadata_json: bytes
    compression_state: str = "none"
    compression_note: str = ""


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
    compression_state: str
    integrity: str


@dataclass
class RecordOutcome:
    """How :meth:`Catalog.record_instance` went."""

    status: str  # "stored", "duplicate", "revised"
    superseded_key: str | None = None
    orphaned_keys: list[str] = field(default_factory=list)


def _instance_view(inst: Instance, series_uid: str, study_uid: str) -> StoredInstance:
    return StoredInstance(
        study_uid, series_uid, inst.sop_instance_uid, inst.sop_class_uid, inst.transfer_syntax_uid,
        inst.object_key, inst.object_size, inst.object_sha256, inst.received_sha256,
        inst.received_transfer_syntax_uid, inst.number_of_frames, inst.compression_state, inst.integrity,
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


# Statements of the ingest fast path, built once so that SQLAlchemy compiles them once.
_INSERT_INSTANCE = insert(Instance)
_COUNT_SERIES = update(Series).where(Series.id == bindparam("pk")).values(
    num_instances=Series.num_instances + 1, metadata_version=Series.metadata_version + 1, metadata_gz=None)
_COUNT_STUDY = update(Study).where(Study.id == bindparam("pk")).values(
    num_instances=Study.num_instances + 1, size_bytes=Study.size_bytes + bindparam("size"),
    updated_at=bindparam("now"), modalities_in_study=bindparam("modalities"))
_INSERT_JOBS = insert(Job)
_EXISTING_INSTANCE = (select(Instance.received_sha256, Instance.object_key, Instance.integrity)
                      .where(Instance.sop_instance_uid == bindparam("sop")))
_KNOWN_SERIES = (select(Series.id, Series.study_pk, Study.modalities_in_study)
                 .join(Study, Series.study_pk == Study.id)
                 .where(Series.series_instance_uid == bindparam("series"),
                        Study.study_instance_uid == bindparam("study")))
#: PostgreSQL: lock the instance row, and the study row first as the general path does (no lock-order deadlock)
_EXISTING_INSTANCE_LOCKED = _EXISTING_INSTANCE.with_for_update()
_KNOWN_SERIES_LOCKED = _KNOWN_SERIES.with_for_update(of=Study)


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
        #: set by the archive: whether the store holds a key (lets a resend repair a lost object)
        self.object_exists: Any = None

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

    def record_instance(self, rec: InstanceRecord, *, enqueue: Sequence[tuple[str, dict[str, Any]]] = (),
                        keep_revisions: bool = True) -> RecordOutcome:
        """Index a stored object in one transaction (patient, study, series, instance, counts, jobs).

        A different object already indexed under the same SOP Instance UID is kept as a
        revision and the instance row points at the new one (with ``keep_revisions``;
        otherwise the outcome is ``"conflict"``); an identical one (same received SHA-256)
        makes this a duplicate. In both refusals ``rec.object_key`` is returned as an
        orphan for the caller to delete.
        """
        attempts = 5
        for attempt in range(attempts):
            try:
                with self.writer() as s:
                    fast = self._record_fast(s, rec, enqueue, keep_revisions)
                    return fast if fast is not None else self._record(s, rec, enqueue)
            except (IntegrityError, TransientConflict):
                # a concurrent writer created the same patient/study/series/instance first,
                # or the database chose this transaction to break a deadlock: run it again
                if attempt == attempts - 1:
                    raise
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def _record_fast(self, s: Session, rec: InstanceRecord, enqueue: Sequence[tuple[str, dict[str, Any]]],
                     keep_revisions: bool) -> RecordOutcome | None:
        """The common case in a few Core statements: a new instance of a series already indexed.

        Returns ``None`` when the general (ORM) path must run: a new series, study or
        patient, or a revision of an existing instance.
        """
        conn = s.connection()
        existing = conn.execute(_EXISTING_INSTANCE if self.is_sqlite else _EXISTING_INSTANCE_LOCKED,
                                {"sop": rec.sop_instance_uid}).first()
        if existing is not None:
            if existing.received_sha256 == rec.received_sha256:
                if existing.integrity == "ok" and (self.object_exists is None or self.object_exists(existing.object_key)):
                    return RecordOutcome("duplicate", orphaned_keys=[rec.object_key])
                # the stored copy is gone or corrupt: the resent one takes its place
                conn.execute(update(Instance).where(Instance.sop_instance_uid == rec.sop_instance_uid).values(
                    object_key=rec.object_key, object_size=rec.object_size, object_sha256=rec.object_sha256,
                    transfer_syntax_uid=rec.transfer_syntax_uid, compression_state=rec.compression_state,
                    compression_note=rec.compression_note, integrity="ok", updated_at=utcnow()))
                return RecordOutcome("revised", superseded_key=existing.object_key)
            if not keep_revisions:
                return RecordOutcome("conflict", orphaned_keys=[rec.object_key])
            return None
        row = conn.execute(_KNOWN_SERIES if self.is_sqlite else _KNOWN_SERIES_LOCKED,
                           {"series": rec.series["series_instance_uid"], "study": rec.study["study_instance_uid"]}).first()
        if row is None:
            return None
        now = utcnow()
        instance_id = conn.execute(_INSERT_INSTANCE, {
            "series_pk": row.id, "sop_instance_uid": rec.sop_instance_uid, "sop_class_uid": rec.sop_class_uid,
            "instance_number": rec.instance_number, "number_of_frames": rec.number_of_frames, "rows": rec.rows,
            "columns": rec.columns, "transfer_syntax_uid": rec.transfer_syntax_uid, "object_key": rec.object_key,
            "object_size": rec.object_size, "object_sha256": rec.object_sha256,
            "received_transfer_syntax_uid": rec.transfer_syntax_uid, "received_sha256": rec.received_sha256,
            "received_size": rec.object_size, "compression_state": rec.compression_state,
            "compression_note": rec.compression_note, "integrity": "ok",
            "metadata_z": zlib.compress(rec.metadata_json, 1), "created_at": now, "updated_at": now,
        }).inserted_primary_key[0]
        conn.execute(_COUNT_SERIES, {"pk": row.id})
        modality = rec.series.get("modality", "")
        modalities = row.modalities_in_study or ""
        if modality and f"\\{modality}\\" not in modalities:
            current = [m for m in modalities.split("\\") if m]
            modalities = "\\" + "\\".join(sorted({*current, modality})) + "\\"
        conn.execute(_COUNT_STUDY, {"pk": row.study_pk, "size": rec.object_size, "now": now, "modalities": modalities})
        if enqueue:
            conn.execute(_INSERT_JOBS, [
                {"kind": kind, "payload": json.dumps({**payload, "instance_id": instance_id}), "state": "queued",
                 "attempts": 0, "run_after": now, "claimed_by": "", "last_error": "", "created_at": now,
                 "updated_at": now}
                for kind, payload in enqueue])
        return RecordOutcome("stored")

    def _record(self, s: Session, rec: InstanceRecord, enqueue: Sequence[tuple[str, dict[str, Any]]]) -> RecordOutcome:
        now = utcnow()
        existing = s.execute(
            self._for_update(select(Instance).where(Instance.sop_instance_uid == rec.sop_instance_uid))
        ).scalar_one_or_none()
        if existing is not None and existing.received_sha256 == rec.received_sha256:
            return RecordOutcome("duplicate", orphaned_keys=[rec.object_key])

        patient = self._upsert_patient(s, rec.patient, rec.study["study_instance_uid"])
        study, new_study = self._upsert_study(s, patient, rec.study)
        series, new_series = self._upsert_series(s, study, rec.series)
        outcome = RecordOutcome("stored")
        if existing is not None:
            outcome = RecordOutcome("revised", superseded_key=existing.object_key)
            s.add(InstanceRevision(
                sop_instance_uid=existing.sop_instance_uid, object_key=existing.object_key,
                object_size=existing.object_size, object_sha256=existing.object_sha256,
                transfer_syntax_uid=existing.transfer_syntax_uid, received_sha256=existing.received_sha256,
            ))
            old_series = s.get(Series, existing.series_pk)
            if old_series is not None and old_series.id != series.id:
                self._count_removed(s, old_series, existing.object_size)
                existing.series_pk = series.id
                self._count_added(s, series, study, new_series, rec.series.get("modality", ""), rec.object_size)
            else:
                study.size_bytes += rec.object_size - existing.object_size
            inst = existing
        else:
            inst = Instance(sop_instance_uid=rec.sop_instance_uid, series_pk=series.id)
            s.add(inst)
            self._count_added(s, series, study, new_series, rec.series.get("modality", ""), rec.object_size)
        inst.sop_class_uid = rec.sop_class_uid
        inst.instance_number = rec.instance_number
        inst.number_of_frames = rec.number_of_frames
        inst.rows, inst.columns = rec.rows, rec.columns
        inst.transfer_syntax_uid = rec.transfer_syntax_uid
        inst.received_transfer_syntax_uid = rec.transfer_syntax_uid
        inst.object_key, inst.object_size, inst.object_sha256 = rec.object_key, rec.object_size, rec.object_sha256
        inst.received_sha256, inst.received_size = rec.received_sha256, rec.object_size
        inst.compression_state, inst.compression_note = rec.compression_state, rec.compression_note
        inst.integrity = "ok"
        inst.metadata_z = zlib.compress(rec.metadata_json, 1)
        inst.updated_at = now
        series.metadata_version += 1
        series.metadata_gz = None
        study.updated_at = now
        s.flush()
        for kind, payload in enqueue:
            self.enqueue(s, kind, {**payload, "instance_id": inst.id})
        return outcome

    def _for_update(self, stmt: Any) -> Any:
        return stmt if self.is_sqlite else stmt.with_for_update()

    def _upsert_patient(self, s: Session, attrs: dict[str, str], study_uid: str) -> Patient:
        if not attrs["patient_id"]:
            # no Patient ID: nothing says two such studies are the same person; the study's own
            # patient (if the study is known) is the only one to reuse
            known = s.execute(select(Patient).join(Study, Study.patient_pk == Patient.id)
                              .where(Study.study_instance_uid == study_uid)).scalar_one_or_none()
            patient = known if known is not None else Patient(patient_id="", num_studies=0)
            s.add(patient)
            return self._update_patient(s, patient, attrs)
        if not self.is_sqlite:  # serialise the first study of a patient across nodes
            s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:p))"), {"p": "patient:" + attrs["patient_id"]})
        patient = s.execute(
            self._for_update(select(Patient).where(Patient.patient_id == attrs["patient_id"]).order_by(Patient.id)
                             .limit(1))
        ).scalar_one_or_none()
        if patient is None:
            patient = Patient(patient_id=attrs["patient_id"], num_studies=0)
            s.add(patient)
        return self._update_patient(s, patient, attrs)

    @staticmethod
    def _update_patient(s: Session, patient: Patient, attrs: dict[str, str]) -> Patient:
        for key in ("patient_name", "birth_date", "sex"):
            if attrs.get(key):
                setattr(patient, key, attrs[key])
        patient.patient_name_folded = matching.fold_name(patient.patient_name or "")
        s.flush()
        return patient

    def _upsert_study(self, s: Session, patient: Patient, attrs: dict[str, str]) -> tuple[Study, bool]:
        study = s.execute(
            self._for_update(select(Study).where(Study.study_instance_uid == attrs["study_instance_uid"]))
        ).scalar_one_or_none()
        created = study is None
        if study is None:
            study = Study(study_instance_uid=attrs["study_instance_uid"], patient_pk=patient.id,
                          num_series=0, num_instances=0, size_bytes=0, modalities_in_study="")
            s.add(study)
            patient.num_studies = (patient.num_studies or 0) + 1
        for key, value in attrs.items():
            if key != "study_instance_uid" and value:
                setattr(study, key, value)
        s.flush()
        return study, created

    def _upsert_series(self, s: Session, study: Study, attrs: dict[str, Any]) -> tuple[Series, bool]:
        series = s.execute(
            self._for_update(select(Series).where(Series.series_instance_uid == attrs["series_instance_uid"]))
        ).scalar_one_or_none()
        created = series is None
        if series is None:
            series = Series(series_instance_uid=attrs["series_instance_uid"], study_pk=study.id,
                            num_instances=0, metadata_version=0)
            s.add(series)
        for key, value in attrs.items():
            if key != "series_instance_uid" and value not in (None, ""):
                setattr(series, key, value)
        s.flush()
        return series, created

    @staticmethod
    def _count_added(s: Session, series: Series, study: Study, new_series: bool, modality: str, size: int) -> None:
        series.num_instances += 1
        study.num_instances += 1
        study.size_bytes += size
        if new_series:
            study.num_series += 1
        if modality and f"\\{modality}\\" not in (study.modalities_in_study or ""):
            current = [m for m in (study.modalities_in_study or "").split("\\") if m]
            study.modalities_in_study = "\\" + "\\".join(sorted({*current, modality})) + "\\"

    @staticmethod
    def _count_removed(s: Session, series: Series, size: int) -> None:
        series.num_instances -= 1
        series.metadata_version += 1
        series.metadata_gz = None
        study = s.get(Study, series.study_pk)
        if study is not None:
            study.num_instances -= 1
            study.size_bytes -= size

    def replace_object(self, sop_instance_uid: str, expected_key: str, *, object_key: str, object_size: int,
                       object_sha256: str, transfer_syntax_uid: str, compression_state: str,
                       compression_note: str = "", finish_job: int | None = None) -> bool:
        """Point an instance at a new object if it still points at ``expected_key`` (compare and swap).

        With ``finish_job``, that job is marked done in the same transaction (one commit, and
        one fsync, fewer per compressed instance).
        """
        with self.writer() as s:
            result = s.execute(
                update(Instance)
                .where(Instance.sop_instance_uid == sop_instance_uid, Instance.object_key == expected_key)
                .values(object_key=object_key, object_size=object_size, object_sha256=object_sha256,
                        transfer_syntax_uid=transfer_syntax_uid, compression_state=compression_state,
                        compression_note=compression_note[:255], updated_at=utcnow())
            )
            if result.rowcount != 1:
                return False
            series_pk = s.execute(select(Instance.series_pk).where(Instance.sop_instance_uid == sop_instance_uid)).scalar_one()
            s.execute(update(Series).where(Series.id == series_pk).values(
                metadata_version=Series.metadata_version + 1, metadata_gz=None))
            if finish_job is not None:
                s.execute(update(Job).where(Job.id == finish_job).values(
                    state="done", lease_until=None, updated_at=utcnow()))
            return True

    def set_compression_state(self, sop_instance_uid: str, expected_key: str, state: str, note: str = "") -> None:
        """Record why an instance stays as received (or is pending again)."""
        with self.writer() as s:
            s.execute(update(Instance).where(
                Instance.sop_instance_uid == sop_instance_uid, Instance.object_key == expected_key,
            ).values(compression_state=state, compression_note=note[:255]))

    def mark_integrity(self, sop_instance_uid: str, state: str) -> None:
        with self.writer() as s:
            s.execute(update(Instance).where(Instance.sop_instance_uid == sop_instance_uid).values(integrity=state))

    # -- queries ---------------------------------------------------------------------------

    def find(self, level: str, filters: dict[str, str], *, fuzzy: bool = False, limit: int | None = None,
             offset: int = 0, visibility: Visibility = EVERYTHING, order: bool = True) -> list[dict[str, Any]]:
        """Match ``filters`` (keyword -> DICOM query value) at ``level``.

        Returns one dict per match with every indexed attribute of that level and the levels
        above it (keyword -> value; ModalitiesInStudy as a list), plus ``"_pk"``.
        Raises :class:`matching.QueryError` for an invalid value or an unknown keyword.
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
        stmt = (select(Instance, Series.series_instance_uid, Study.study_instance_uid)
                .join(Series, Instance.series_pk == Series.id).join(Study, Series.study_pk == Study.id))
        if study_uid is not None:
            stmt = stmt.where(Study.study_instance_uid == study_uid)
        if series_uid is not None:
            stmt = stmt.where(Series.series_instance_uid == series_uid)
        if sop_uid is not None:
            stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
        vis = visibility.study_condition()
        if vis is not None:
            stmt = stmt.where(vis)
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
                                                .where(Instance.compression_state == "pending")) or 0,
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
            stmt = (select(Instance, Series, Study).join(Series, Instance.series_pk == Series.id)
                    .join(Study, Series.study_pk == Study.id).where(Study.study_instance_uid == study_uid))
            stmt = self._for_update(stmt)
            if series_uid is not None:
                stmt = stmt.where(Series.series_instance_uid == series_uid)
            if sop_uid is not None:
                stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
            vis = visibility.study_condition()
            if vis is not None:
                stmt = stmt.where(vis)
            rows = s.execute(stmt).all()
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

    # -- jobs --------------------------------------------------------------------------------

    @staticmethod
    def enqueue(s: Session, kind: str, payload: dict[str, Any], *, delay: float = 0.0) -> None:
        """Add a job inside the caller's transaction."""
        s.add(Job(kind=kind, payload=json.dumps(payload), state="queued",
                  run_after=utcnow() + dt.timedelta(seconds=delay)))

    def add_job(self, kind: str, payload: dict[str, Any], *, delay: float = 0.0) -> None:
        with self.writer() as s:
            self.enqueue(s, kind, payload, delay=delay)

    def claim_job(self, kinds: Sequence[str], worker: str, *, lease_seconds: float = 600) -> tuple[int, str, dict[str, Any], int] | None:
        """Take the oldest runnable job of ``kinds``: (id, kind, payload, attempts) or ``None``.

        A running job whose lease expired (its worker died) is runnable again.
        """
        now = utcnow()
        with self.writer() as s:
            stmt = (select(Job).where(Job.kind.in_(list(kinds)), Job.run_after <= now,
                                      ((Job.state == "queued") | ((Job.state == "running") & (Job.lease_until < now))))
                    .order_by(Job.run_after, Job.id).limit(1))
            if not self.is_sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            job = s.execute(stmt).scalar_one_or_none()
            if job is None:
                return None
            job.state = "running"
            job.attempts += 1
            job.claimed_by = worker[:128]
            job.lease_until = now + dt.timedelta(seconds=lease_seconds)
            job.updated_at = now
            return job.id, job.kind, json.loads(job.payload), job.attempts

    def finish_job(self, job_id: int, *, error: str | None = None, retry_in: float | None = None) -> None:
        """Mark a running job done, failed, or queued again after ``retry_in`` seconds.

        A job no longer running (already marked done with the work it did) is left as it is.
        """
        with self.writer() as s:
            job = s.get(Job, job_id)
            if job is None or job.state != "running":
                return
            job.updated_at = utcnow()
            job.lease_until = None
            if error is None:
                job.state = "done"
            elif retry_in is not None:
                job.state, job.last_error = "queued", error[:2000]
                job.run_after = utcnow() + dt.timedelta(seconds=retry_in)
            else:
                job.state, job.last_error = "failed", error[:2000]

    def release_jobs(self, claimed_by: Sequence[str]) -> int:
        """Put running jobs of workers known to be dead back in the queue (their attempt counts)."""
        if not claimed_by:
            return 0
        with self.writer() as s:
            return s.execute(
                update(Job).where(Job.state == "running", Job.claimed_by.in_(list(claimed_by)))
                .values(state="queued", lease_until=None, run_after=utcnow(), updated_at=utcnow())
            ).rowcount or 0

    def running_jobs_claimed_on(self, host_prefix: str) -> list[str]:
        """Distinct ``claimed_by`` names of running jobs whose worker ran on this host."""
        with self.reader() as s:
            return list(s.scalars(select(Job.claimed_by).where(
                Job.state == "running", Job.claimed_by.like(host_prefix + "%")).distinct()))

    def job_counts(self) -> dict[str, int]:
        with self.reader() as s:
            return dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())

    def purge_done_jobs(self, older_than_seconds: float = 86400) -> int:
        cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
        with self.writer() as s:
            return s.execute(delete(Job).where(Job.state == "done", Job.updated_at < cutoff)).rowcount or 0
