"""Indexing a received instance: the catalog's one write path, with one set of rules.

:func:`record` runs inside the transaction of :meth:`Catalog.record_instance`, in Core
statements built once. Whatever is already indexed, it

1. decides duplicate / revision / conflict (:func:`decide`), before creating anything;
2. finds the series (with its study and patient, and their stored attributes) or creates
   what is missing (series; study; patient);
3. writes the received attributes of the patient, study and series the same way for a
   new row and a known one (:func:`attribute_changes`: a non-empty received value
   overwrites the stored one; the identifying attribute of a level is never rewritten),
   issuing an UPDATE only for a level where something differs;
4. inserts the instance (or makes the new object current and keeps the older one as a
   revision), counts it, and queues the jobs.

A new instance of a known series, the common case, is five statements: the instance
and series look-ups, the instance insert, the series and study counts.

Lock order on PostgreSQL: the instance row (a resend waits for the first), then the
study row (``FOR UPDATE``; a patient's advisory lock and row come first only when the
study is new), then the patient row when its attributes change. The caller retries on
``IntegrityError`` (a concurrent writer created the same row first) and deadlocks.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, text, update

from .attributes import EXTRACTED, Attribute
from .jobs import Jobs, insert_jobs
from .matching import fold_name
from .models import Instance, InstanceRevision, Patient, Series, Study, utcnow
from .states import CompressionState, Integrity


class RecordStatus(StrEnum):
    """How :meth:`Catalog.record_instance` went."""

    #: a new instance
    STORED = "stored"
    #: the same content (received SHA-256) is indexed already: nothing written
    DUPLICATE = "duplicate"
    #: different content for an indexed UID: the new object is current, the older one a revision
    REVISED = "revised"
    #: different content for an indexed UID, and revisions are not kept: nothing written
    CONFLICT = "conflict"


@dataclass
class InstanceRecord:
    """What ingest knows about one received instance, ready to be indexed.

    ``patient``, ``study``, ``series`` and ``instance`` hold the received value of each
    attribute of :data:`attributes.EXTRACTED` of that level, keyed by column name
    (``attribute.name``): ``""`` or ``None`` when absent.
    """

    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]
    transfer_syntax_uid: str
    metadata_json: bytes
    object_key: str = ""
    object_size: int = 0
    object_sha256: str = ""
    received_sha256: str = ""
    compression_state: CompressionState = CompressionState.NONE
    compression_note: str = ""

    @property
    def sop_instance_uid(self) -> str:
        return self.instance["sop_instance_uid"]

    def values(self, level: str) -> dict[str, Any]:
        """The received values of ``level`` ("PATIENT", "STUDY", "SERIES" or "IMAGE")."""
        return {"PATIENT": self.patient, "STUDY": self.study, "SERIES": self.series, "IMAGE": self.instance}[level]


@dataclass(frozen=True)
class RecordOutcome:
    """How :meth:`Catalog.record_instance` went.

    ``existing_key`` and ``existing_integrity`` describe the object indexed under the
    UID before this call, if any: for a duplicate, the stored copy (the caller checks
    that it is still there); for a revision, the older object, now retained.
    """

    status: RecordStatus
    existing_key: str | None = None
    existing_integrity: Integrity | None = None


def decide(existing_received_sha256: str | None, received_sha256: str, *, keep_revisions: bool) -> RecordStatus:
    """The one rule for a UID: new, identical (duplicate), or different (revision or conflict)."""
    if existing_received_sha256 is None:
        return RecordStatus.STORED
    if existing_received_sha256 == received_sha256:
        return RecordStatus.DUPLICATE
    return RecordStatus.REVISED if keep_revisions else RecordStatus.CONFLICT


#: Per level, the attributes written from what was received, after the row exists (not its key).
_UPDATABLE: dict[str, tuple[Attribute, ...]] = {
    level: tuple(a for a in attrs if not a.key) for level, attrs in EXTRACTED.items()
}
_NAMES: dict[str, tuple[str, ...]] = {level: tuple(a.name for a in attrs) for level, attrs in _UPDATABLE.items()}
_INSTANCE_NAMES = tuple(a.name for a in EXTRACTED["IMAGE"])
_TABLES = {"PATIENT": Patient, "STUDY": Study, "SERIES": Series}


def attribute_changes(level: str, stored: dict[str, Any], received: dict[str, Any]) -> dict[str, Any]:
    """Columns of a patient, study or series row to write: each non-empty received value that differs.

    ``stored`` is ``{}`` for a row about to be created. The patient name's folded copy
    (for matching) follows the name.
    """
    changes = {}
    for name in _NAMES[level]:
        value = received.get(name)
        if value is not None and value != "" and value != stored.get(name):
            changes[name] = value
    if "patient_name" in changes:
        changes["patient_name_folded"] = fold_name(changes["patient_name"])
    return changes


def _columns(*levels: str) -> list[Any]:
    return [a.column for level in levels for a in _UPDATABLE[level]]


def _stored(row: Any, start: int, levels: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The stored attributes of ``levels`` from a row selected with ``_columns(*levels)`` at ``start``."""
    out = {}
    for level in levels:
        names = _NAMES[level]
        out[level] = dict(zip(names, row[start:start + len(names)], strict=True))
        start += len(names)
    return out


# Statements built once, so that SQLAlchemy compiles them once.
def _lookup(stmt: Any, **lock: Any) -> tuple[Any, Any]:
    """A look-up for SQLite and its row-locking form for PostgreSQL (indexed by ``postgres``)."""
    return stmt, stmt.with_for_update(**lock)


_EXISTING_INSTANCE = _lookup(select(
    Instance.id, Instance.series_pk, Instance.object_key, Instance.object_size, Instance.object_sha256,
    Instance.transfer_syntax_uid, Instance.received_sha256, Instance.integrity,
).where(Instance.sop_instance_uid == bindparam("sop")))
#: a series (by its UID alone: it names its study) with its study and patient
_KNOWN_SERIES = _lookup(
    select(Series.id, Series.study_pk, Study.patient_pk, Study.modalities_in_study,
           *_columns("SERIES", "STUDY", "PATIENT"))
    .join(Study, Series.study_pk == Study.id).join(Patient, Study.patient_pk == Patient.id)
    .where(Series.series_instance_uid == bindparam("series")), of=Study)
_KNOWN_STUDY = _lookup(
    select(Study.id, Study.patient_pk, Study.modalities_in_study, *_columns("STUDY", "PATIENT"))
    .join(Patient, Study.patient_pk == Patient.id).where(Study.study_instance_uid == bindparam("study")), of=Study)
#: patients are not unique by ID (see models.Patient): the first one
_KNOWN_PATIENT = _lookup(select(Patient.id, *_columns("PATIENT")).where(Patient.patient_id == bindparam("patient_id"))
                         .order_by(Patient.id).limit(1))
_PATIENT_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:p))")
_INSERT_PATIENT = insert(Patient)
_INSERT_STUDY = insert(Study)
_INSERT_SERIES = insert(Series)
_INSERT_INSTANCE = insert(Instance)
_INSERT_REVISION = insert(InstanceRevision)
_UPDATE_INSTANCE = update(Instance).where(Instance.id == bindparam("instance_pk"))
_COUNT_PATIENT = update(Patient).where(Patient.id == bindparam("pk")).values(num_studies=Patient.num_studies + 1)
_COUNT_SERIES = update(Series).where(Series.id == bindparam("pk")).values(
    num_instances=Series.num_instances + bindparam("added"), metadata_version=Series.metadata_version + 1,
    metadata_gz=None)
_COUNT_STUDY = update(Study).where(Study.id == bindparam("pk")).values(
    num_instances=Study.num_instances + bindparam("added"), num_series=Study.num_series + bindparam("series_added"),
    size_bytes=Study.size_bytes + bindparam("size_delta"), updated_at=bindparam("now"),
    modalities_in_study=bindparam("modalities"))
#: a revision moved the instance to another series: the study of the series it left
_UNCOUNT_STUDY_OF_SERIES = update(Study).where(
    Study.id == select(Series.study_pk).where(Series.id == bindparam("series_pk")).scalar_subquery()
).values(num_instances=Study.num_instances - 1, size_bytes=Study.size_bytes - bindparam("size"))


@dataclass
class _Place:
    """Where the instance goes, and what its patient, study and series rows hold now."""

    patient_pk: int
    study_pk: int
    series_pk: int
    modalities: str
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_series: bool = False


def record(conn: Connection, rec: InstanceRecord, jobs: Jobs, *, keep_revisions: bool,
           postgres: bool) -> RecordOutcome:
    """Index ``rec`` inside the caller's transaction; see the module docstring."""

    def run(lookup: tuple[Any, Any], params: dict[str, Any]) -> Any:
        return conn.execute(lookup[postgres], params).first()

    now = utcnow()
    existing = run(_EXISTING_INSTANCE, {"sop": rec.sop_instance_uid})
    status = decide(existing.received_sha256 if existing is not None else None, rec.received_sha256,
                    keep_revisions=keep_revisions)
    if status in (RecordStatus.DUPLICATE, RecordStatus.CONFLICT):
        return RecordOutcome(status, existing.object_key, Integrity(existing.integrity))

    row = run(_KNOWN_SERIES, {"series": rec.series["series_instance_uid"]})
    if row is not None:
        place = _Place(row[2], row[1], row[0], row[3] or "", _stored(row, 4, ("SERIES", "STUDY", "PATIENT")))
    else:
        place = _new_series(conn, rec, now, run, postgres)
    for level, pk in (("PATIENT", place.patient_pk), ("STUDY", place.study_pk), ("SERIES", place.series_pk)):
        changes = attribute_changes(level, place.stored[level], rec.values(level))
        if changes:
            table = _TABLES[level]
            conn.execute(update(table).where(table.id == pk).values(changes))

    values = {name: rec.instance[name] for name in _INSTANCE_NAMES}
    values.update(
        series_pk=place.series_pk, transfer_syntax_uid=rec.transfer_syntax_uid, object_key=rec.object_key,
        object_size=rec.object_size, object_sha256=rec.object_sha256,
        received_transfer_syntax_uid=rec.transfer_syntax_uid, received_sha256=rec.received_sha256,
        received_size=rec.object_size, compression_state=rec.compression_state,
        compression_note=rec.compression_note, integrity=Integrity.OK,
        metadata_z=zlib.compress(rec.metadata_json, 1), updated_at=now,
    )
    if existing is None:
        instance_id = conn.execute(_INSERT_INSTANCE, {**values, "created_at": now}).inserted_primary_key[0]
        added, size_delta = 1, rec.object_size
    else:
        instance_id = existing.id
        conn.execute(_INSERT_REVISION, {
            "sop_instance_uid": rec.sop_instance_uid, "object_key": existing.object_key,
            "object_size": existing.object_size, "object_sha256": existing.object_sha256,
            "transfer_syntax_uid": existing.transfer_syntax_uid, "received_sha256": existing.received_sha256,
            "reason": "superseded", "created_at": now})
        del values["sop_instance_uid"]
        conn.execute(_UPDATE_INSTANCE, {**values, "instance_pk": existing.id})
        if existing.series_pk != place.series_pk:
            conn.execute(_COUNT_SERIES, {"pk": existing.series_pk, "added": -1})
            conn.execute(_UNCOUNT_STUDY_OF_SERIES, {"series_pk": existing.series_pk, "size": existing.object_size})
            added, size_delta = 1, rec.object_size
        else:
            added, size_delta = 0, rec.object_size - existing.object_size
    conn.execute(_COUNT_SERIES, {"pk": place.series_pk, "added": added})
    conn.execute(_COUNT_STUDY, {
        "pk": place.study_pk, "added": added, "series_added": int(place.new_series), "size_delta": size_delta,
        "now": now, "modalities": _with_modality(place.modalities, rec.series.get("modality") or "")})
    insert_jobs(conn, jobs, now, instance_id=instance_id)
    if existing is None:
        return RecordOutcome(status)
    return RecordOutcome(status, existing.object_key, Integrity(existing.integrity))


def _new_series(conn: Connection, rec: InstanceRecord, now: dt.datetime, run: Any, postgres: bool) -> _Place:
    """Create the series, and its study and patient when they are not indexed either."""
    row = run(_KNOWN_STUDY, {"study": rec.study["study_instance_uid"]})
    if row is not None:  # a known study keeps its patient
        place = _Place(row[1], row[0], 0, row[2] or "", _stored(row, 3, ("STUDY", "PATIENT")))
    else:
        place = _new_study(conn, rec, now, run, postgres)
    created = attribute_changes("SERIES", {}, rec.series)
    place.series_pk = conn.execute(_INSERT_SERIES, {
        **created, "series_instance_uid": rec.series["series_instance_uid"], "study_pk": place.study_pk,
        "num_instances": 0, "metadata_version": 0, "created_at": now,
    }).inserted_primary_key[0]
    place.stored["SERIES"] = created
    place.new_series = True
    return place


def _new_study(conn: Connection, rec: InstanceRecord, now: dt.datetime, run: Any, postgres: bool) -> _Place:
    """Create the study, and its patient unless one with the same Patient ID is indexed.

    Without a Patient ID nothing says two studies are the same person: a new patient.
    """
    patient_id = rec.patient.get("patient_id") or ""
    row = None
    if patient_id:
        if postgres:  # serialise the first study of a patient across nodes
            conn.execute(_PATIENT_LOCK, {"p": "patient:" + patient_id})
        row = run(_KNOWN_PATIENT, {"patient_id": patient_id})
    if row is not None:
        patient_pk, stored_patient = row[0], _stored(row, 1, ("PATIENT",))["PATIENT"]
        conn.execute(_COUNT_PATIENT, {"pk": patient_pk})
    else:
        stored_patient = attribute_changes("PATIENT", {}, rec.patient)
        patient_pk = conn.execute(_INSERT_PATIENT, {
            **stored_patient, "patient_id": patient_id, "num_studies": 1, "created_at": now,
        }).inserted_primary_key[0]
    created = attribute_changes("STUDY", {}, rec.study)
    study_pk = conn.execute(_INSERT_STUDY, {
        **created, "study_instance_uid": rec.study["study_instance_uid"], "patient_pk": patient_pk,
        "num_series": 0, "num_instances": 0, "size_bytes": 0, "modalities_in_study": "", "created_at": now,
        "updated_at": now,
    }).inserted_primary_key[0]
    return _Place(patient_pk, study_pk, 0, "", {"PATIENT": stored_patient, "STUDY": created})


def _with_modality(modalities: str, modality: str) -> str:
    """``modalities_in_study`` ("\\CT\\SR\\", for LIKE matching) with ``modality`` added."""
    if not modality or f"\\{modality}\\" in modalities:
        return modalities
    current = [m for m in modalities.split("\\") if m]
    return "\\" + "\\".join(sorted({*current, modality})) + "\\"
