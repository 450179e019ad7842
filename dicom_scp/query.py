"""C-FIND identifiers to catalog queries and back; C-GET/C-MOVE identifiers to instances.

Matching itself (PS3.4 C.2.2.2: single value, wildcards, ranges, UID lists, person
names with diacritics folded) is :mod:`pacs_lite.catalog.matching`; this module only
decides which identifier keys become filters and builds the response identifiers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from pacs_lite.catalog import Catalog, StoredInstance
from pacs_lite.catalog.attributes import ATTRIBUTES, LEVELS, level_rank
from pacs_lite.status import Status
from pacs_lite.uids import is_uid

PATIENT_ROOT = ("PATIENT", "STUDY", "SERIES", "IMAGE")
STUDY_ROOT = ("STUDY", "SERIES", "IMAGE")

#: Query/Retrieve information models: SOP Class UID -> the levels it allows.
MODELS: dict[str, tuple[str, ...]] = {
    PatientRootQueryRetrieveInformationModelFind: PATIENT_ROOT,
    PatientRootQueryRetrieveInformationModelMove: PATIENT_ROOT,
    PatientRootQueryRetrieveInformationModelGet: PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelFind: STUDY_ROOT,
    StudyRootQueryRetrieveInformationModelMove: STUDY_ROOT,
    StudyRootQueryRetrieveInformationModelGet: STUDY_ROOT,
}

#: The unique key of each level.
UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}

_NOT_KEYS = {0x00080005, 0x00080052}  # Specific Character Set, Query/Retrieve Level
_PAGE = 500


class IdentifierError(Exception):
    """A request identifier we refuse; ``status`` and ``comment`` go into the response."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


@dataclass(frozen=True)
class RequestedKey:
    """One key of a C-FIND identifier: returned in every response, a filter when it has a value."""

    tag: int
    keyword: str
    vr: str


@dataclass
class Query:
    """A parsed C-FIND identifier."""

    level: str
    filters: dict[str, str] = field(default_factory=dict)
    keys: list[RequestedKey] = field(default_factory=list)

    @property
    def needs_metadata(self) -> bool:
        """Whether a requested key can only come from the stored instance metadata."""
        return self.level == "IMAGE" and any(
            k.keyword not in ATTRIBUTES and k.keyword not in _SYNTHETIC for k in self.keys
        )


def value_text(value: Any) -> str:
    """A decoded identifier value as DICOM query text (``\\`` between multiple values)."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("ascii", "replace")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(value_text(v) for v in value)
    return str(value)


def query_level(identifier: Dataset, sop_class_uid: str) -> str:
    """The identifier's Query/Retrieve Level, checked against the information model."""
    levels = MODELS.get(str(sop_class_uid))
    if levels is None:
        raise IdentifierError(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "unsupported query/retrieve information model")
    level = value_text(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if not level:
        raise IdentifierError(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "Query/Retrieve Level (0008,0052) is missing")
    if level not in levels:
        raise IdentifierError(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, f"level {level[:16]!r} is not valid in this model")
    return level


def parse_query(identifier: Dataset, sop_class_uid: str) -> Query:
    """Turn a C-FIND identifier into catalog filters and the keys to return.

    Keys the index holds at or above the query level filter when they have a value;
    every other key is a return key only (empty when we do not know it). The unique
    keys of the query level and the levels above it are returned even when not asked
    for (the requestor may omit them: we do not require them).
    """
    level = query_level(identifier, sop_class_uid)
    rank = level_rank(level)
    query = Query(level)
    for elem in identifier:
        tag = int(elem.tag)
        if tag in _NOT_KEYS or elem.tag.group == 0x0002:
            continue
        vr = _plain_vr(elem.VR)
        keyword = elem.keyword or ""
        query.keys.append(RequestedKey(tag, keyword, vr))
        attr = ATTRIBUTES.get(keyword)
        if attr is None or level_rank(attr.level) > rank or vr == "SQ":
            continue
        text = value_text(elem.value).strip()
        if text:
            query.filters[keyword] = text
    # the unique keys of this level and the levels above it are always returned (PS3.4 C.4.1.2.3)
    levels = MODELS[str(sop_class_uid)]
    for unique in (UNIQUE_KEYS[lv] for lv in levels[: levels.index(level) + 1]):
        if not any(k.keyword == unique for k in query.keys):
            tag = int(Tag(unique))
            query.keys.append(RequestedKey(tag, unique, dictionary_VR(tag)))
    return query


def _plain_vr(vr: str) -> str:
    vr = str(vr or "UN")
    return vr.split(" or ")[0] if " or " in vr else vr


def iter_matches(
    catalog: Catalog, query: Query, page: int = _PAGE
) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Every match of ``query`` (with its stored metadata when needed), a page at a time.

    Raises :class:`~pacs_lite.catalog.QueryError` for a bad value and
    :class:`~pacs_lite.catalog.CatalogUnavailable` when the index is down.
    """
    offset = 0
    while True:
        rows = catalog.find(query.level, query.filters, limit=page, offset=offset)
        metadata: dict[int, dict[str, Any]] = {}
        if query.needs_metadata and rows:
            metadata = catalog.instance_metadata(row["_pk"] for row in rows)
        for row in rows:
            yield row, metadata.get(row["_pk"])
        if len(rows) < page:
            return
        offset += page


_SYNTHETIC = {"RetrieveAETitle", "InstanceAvailability"}


def build_response(query: Query, row: dict[str, Any], metadata: dict[str, Any] | None, ae_title: str) -> Dataset:
    """The pending-response identifier for one match: every requested key, in UTF-8 when needed."""
    ds = Dataset()
    ds.QueryRetrieveLevel = query.level
    for key in query.keys:
        value = _value_for(key, row, metadata, ae_title)
        if isinstance(value, Dataset):  # an element decoded from the stored metadata
            ds.add(value[key.tag])
        else:
            ds.add_new(key.tag, key.vr, value)
    if not all(_is_ascii(elem.value) for elem in ds):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _value_for(key: RequestedKey, row: dict[str, Any], metadata: dict[str, Any] | None, ae_title: str) -> Any:
    if key.keyword in row:
        return _column_value(row[key.keyword], key.vr)
    if key.keyword == "RetrieveAETitle":
        return ae_title
    if key.keyword == "InstanceAvailability":
        return "ONLINE"
    if metadata is not None and key.vr != "UN":
        return _metadata_value(key, metadata)
    return None


def _column_value(value: Any, vr: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return [str(v) for v in value] or None
    if isinstance(value, int) and vr in ("IS", "DS", "LO", "SH", "CS"):
        return str(value)
    return value


def _metadata_value(key: RequestedKey, metadata: dict[str, Any]) -> Any:
    entry = metadata.get(f"{key.tag:08X}")
    if not entry or "Value" not in entry:
        return None  # absent, empty, or bulk data (never returned in a query)
    try:
        return Dataset.from_json({f"{key.tag:08X}": entry})
    except Exception:  # noqa: BLE001 - stored metadata we cannot turn back into an element
        return None


def _is_ascii(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.isascii()
    if isinstance(value, bytes | bytearray | int | float):
        return True
    if isinstance(value, MultiValue | list | tuple):
        return all(_is_ascii(v) for v in value)
    if isinstance(value, Dataset):
        return all(_is_ascii(e.value) for e in value)
    return str(value).isascii()


def _uid_list(identifier: Dataset, keyword: str, *, required: bool) -> list[str]:
    uids = [u.strip() for u in value_text(identifier.get(keyword)).split("\\") if u.strip()]
    if required and not uids:
        raise IdentifierError(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} is required at this level")
    for uid in uids:
        if not is_uid(uid):
            raise IdentifierError(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} is not a valid UID")
    return uids


def retrieve_instances(catalog: Catalog, identifier: Dataset, sop_class_uid: str) -> list[StoredInstance]:
    """The instances a C-GET or C-MOVE identifier names (by unique keys, no wildcards).

    Higher-level unique keys narrow the match when present (hierarchical retrieve)
    but are not required.
    """
    level = query_level(identifier, sop_class_uid)
    found: list[StoredInstance] = []
    if level == "PATIENT":
        ids = [p for p in value_text(identifier.get("PatientID")).split("\\") if p.strip()]
        if not ids:
            raise IdentifierError(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "PatientID is required at the PATIENT level")
        if any("*" in p or "?" in p for p in ids):
            raise IdentifierError(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "wildcards are not allowed in a retrieve")
        for pid in ids:
            for row in catalog.find("STUDY", {"PatientID": pid}):
                found.extend(catalog.instances(study_uid=row["StudyInstanceUID"]))
    elif level == "STUDY":
        for uid in _uid_list(identifier, "StudyInstanceUID", required=True):
            found.extend(catalog.instances(study_uid=uid))
    elif level == "SERIES":
        studies = _uid_list(identifier, "StudyInstanceUID", required=False)
        for uid in _uid_list(identifier, "SeriesInstanceUID", required=True):
            found.extend(i for i in catalog.instances(series_uid=uid) if not studies or i.study_instance_uid in studies)
    else:
        series = _uid_list(identifier, "SeriesInstanceUID", required=False)
        for uid in _uid_list(identifier, "SOPInstanceUID", required=True):
            found.extend(i for i in catalog.instances(sop_uid=uid) if not series or i.series_instance_uid in series)
    seen: set[str] = set()
    unique = []
    for inst in found:
        if inst.sop_instance_uid not in seen:
            seen.add(inst.sop_instance_uid)
            unique.append(inst)
    return unique


__all__ = [
    "LEVELS",
    "MODELS",
    "IdentifierError",
    "Query",
    "RequestedKey",
    "build_response",
    "iter_matches",
    "parse_query",
    "query_level",
    "retrieve_instances",
    "value_text",
]
