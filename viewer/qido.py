"""QIDO-RS (PS3.18 10.6): searches answered from the index alone.

Query parameters are attribute filters (keyword or ``GGGGEEEE``), ``includefield``,
``fuzzymatching``, ``limit`` and ``offset``. Matching itself is the catalog's
(:meth:`~pacs_lite.catalog.Catalog.find`, shared with C-FIND); this module validates
the request, caps the result size, and turns index rows into DICOM JSON. Instance
level ``includefield`` attributes that have no index column come from the metadata
stored for each instance at ingest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import MultiDict

from pacs_lite.catalog import Catalog, Visibility
from pacs_lite.catalog.attributes import ATTRIBUTES, BY_TAG, Attribute, level_rank
from pacs_lite.dicomheader import element_json, keyword_tag, tag_hex

from .errors import ApiError

CONTROL_PARAMS = frozenset({"limit", "offset", "fuzzymatching", "includefield", "accept"})
MAX_OFFSET = 2**31 - 1
MAX_INCLUDEFIELDS = 256
MAX_VALUE_LENGTH = 1024

#: Attributes every result of a level carries (PS3.18 Tables 10.6.3-3 to -5).
STUDY_RESULT = ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "PatientName", "PatientID",
                "PatientBirthDate", "PatientSex", "StudyID", "NumberOfStudyRelatedSeries",
                "NumberOfStudyRelatedInstances", "StudyDescription", "ModalitiesInStudy",
                "ReferringPhysicianName")
SERIES_RESULT = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
                 "SeriesDate", "SeriesTime", "NumberOfSeriesRelatedInstances")
INSTANCE_RESULT = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "InstanceNumber",
                   "Rows", "Columns", "NumberOfFrames")

#: Study-level synonyms: a client filtering studies by Modality means ModalitiesInStudy.
LEVEL_SYNONYMS = {("STUDY", "Modality"): "ModalitiesInStudy"}

SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_URL = 0x00081190
KIND_DATE = "date"


@dataclass
class Search:
    """A validated QIDO-RS request.

    Attributes
    ----------
    level
        ``STUDY``, ``SERIES`` or ``IMAGE``.
    scope
        UIDs given by the path (``StudyInstanceUID``, ``SeriesInstanceUID``).
    filters
        Keyword -> DICOM query value, ready for :meth:`Catalog.find`.
    include_all
        ``includefield=all``.
    include_tags
        Extra attribute tags to return.
    limit, offset
        Client paging (``limit`` ``None`` when not given).
    """

    level: str
    scope: dict[str, str]
    filters: dict[str, str] = field(default_factory=dict)
    fuzzy: bool = False
    include_all: bool = False
    include_tags: set[int] = field(default_factory=set)
    limit: int | None = None
    offset: int = 0


@dataclass
class Result:
    """Matches as DICOM JSON objects, and whether the server limit cut them."""

    objects: list[dict[str, Any]]
    truncated: bool


def _int_param(name: str, text: str, maximum: int) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 12:
        raise ApiError(400, f"{name} must be a non-negative integer")
    value = int(text)
    if value > maximum:
        raise ApiError(400, f"{name} must not exceed {maximum}")
    return value


def _single(args: MultiDict[str, str], name: str) -> str | None:
    values = args.getlist(name)
    if len(values) > 1:
        raise ApiError(400, f"query parameter {name!r} given more than once")
    return values[0] if values else None


def _check_value(name: str, value: str) -> str:
    if len(value) > MAX_VALUE_LENGTH:
        raise ApiError(400, f"{name}: value longer than {MAX_VALUE_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\ufffd" for c in value):
        raise ApiError(400, f"{name}: control characters or invalid UTF-8 in the value")
    return value


def _check_date_query(name: str, value: str) -> None:
    """Reject dates that are not calendar dates and ranges that run backwards."""
    for alternative in value.split("\\"):
        low, dash, high = alternative.strip().partition("-")
        bounds = []
        for bound in (low, high):
            if bound and bound.isdigit() and len(bound) == 8:
                try:
                    bounds.append(dt.date(int(bound[:4]), int(bound[4:6]), int(bound[6:])))
                except ValueError:
                    raise ApiError(400, f"{name}: {bound!r} is not a valid date") from None
        if dash and len(bounds) == 2 and low and high and bounds[0] > bounds[1]:
            raise ApiError(400, f"{name}: the range {alternative!r} ends before it starts")


def resolve_attribute(name: str, level: str) -> Attribute:
    """The indexed attribute a query parameter names (keyword or tag), or 400."""
    tag = keyword_tag(name)
    if tag is None:
        raise ApiError(400, f"unknown query parameter {name[:64]!r}")
    attr = BY_TAG.get(tag)
    if attr is not None:
        synonym = LEVEL_SYNONYMS.get((level, attr.keyword))
        attr = ATTRIBUTES[synonym] if synonym else attr
    if attr is None or level_rank(attr.level) > level_rank(level):
        raise ApiError(400, f"{name[:64]}: not supported for matching at the {level.lower()} level")
    return attr


def parse_includefields(values: Iterable[str]) -> tuple[bool, set[int]]:
    """``includefield`` values (repeated and/or comma-separated): ``(all?, tags)``."""
    include_all = False
    tags: set[int] = set()
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if item.lower() == "all":
                include_all = True
                continue
            if "." in item:
                raise ApiError(400, f"includefield {item[:64]!r}: nested attributes are not supported")
            tag = keyword_tag(item)
            if tag is None:
                raise ApiError(400, f"includefield {item[:64]!r} is neither a DICOM keyword nor a tag")
            tags.add(tag)
            if len(tags) > MAX_INCLUDEFIELDS:
                raise ApiError(400, f"more than {MAX_INCLUDEFIELDS} includefield attributes")
    return include_all, tags


def parse_search(level: str, args: MultiDict[str, str], scope: Mapping[str, str]) -> Search:
    """Validate the query parameters of a search at ``level`` (400 on anything wrong)."""
    search = Search(level, dict(scope))
    limit = _single(args, "limit")
    if limit is not None:
        search.limit = _int_param("limit", limit, MAX_OFFSET) or None  # limit=0: no client limit
    offset = _single(args, "offset")
    if offset is not None:
        search.offset = _int_param("offset", offset, MAX_OFFSET)
    fuzzy = _single(args, "fuzzymatching")
    if fuzzy is not None:
        if fuzzy.strip().lower() not in ("true", "false"):
            raise ApiError(400, "fuzzymatching must be true or false")
        search.fuzzy = fuzzy.strip().lower() == "true"
    search.include_all, search.include_tags = parse_includefields(args.getlist("includefield"))
    for name in args:
        if name in CONTROL_PARAMS or name.startswith("_"):  # "_": cache busters some clients add
            continue
        value = _check_value(name, _single(args, name) or "")
        attr = resolve_attribute(name, level)
        if attr.keyword in search.filters:
            raise ApiError(400, f"{attr.keyword} given more than once")
        if attr.keyword in search.scope:
            raise ApiError(400, f"{attr.keyword} is given by the path")
        if attr.kind == KIND_DATE:
            _check_date_query(attr.keyword, value)
        search.filters[attr.keyword] = value
    return search


# -- results ------------------------------------------------------------------------------------


def _returned_keywords(search: Search) -> list[str]:
    """Index attributes each result carries: required ones, matching keys, includefields."""
    base: tuple[str, ...]
    if search.level == "STUDY":
        base = STUDY_RESULT
    elif search.level == "SERIES":
        base = SERIES_RESULT + (() if "StudyInstanceUID" in search.scope else STUDY_RESULT)
    else:
        base = INSTANCE_RESULT
        if "SeriesInstanceUID" not in search.scope:
            base += SERIES_RESULT
        if "StudyInstanceUID" not in search.scope:
            base += STUDY_RESULT
    rank = level_rank(search.level)
    wanted = list(dict.fromkeys(base + tuple(search.filters)))
    for attr in ATTRIBUTES.values():
        if level_rank(attr.level) <= rank and (search.include_all or attr.tag in search.include_tags):
            wanted.append(attr.keyword)
    return list(dict.fromkeys(wanted))


def _needs_stored_metadata(search: Search, returned: Sequence[str]) -> bool:
    if search.level != "IMAGE":
        return False
    if search.include_all:
        return True
    column_tags = {ATTRIBUTES[k].tag for k in returned}
    return bool(search.include_tags - column_tags)


def _retrieve_url(base: str, row: Mapping[str, Any], level: str) -> str:
    url = f"{base}/studies/{row['StudyInstanceUID']}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{row['SeriesInstanceUID']}"
    if level == "IMAGE":
        url += f"/instances/{row['SOPInstanceUID']}"
    return url


def _has_non_ascii(element: Mapping[str, Any]) -> bool:
    for value in element.get("Value", ()):
        if isinstance(value, str) and not value.isascii():
            return True
        if isinstance(value, dict) and any(isinstance(v, str) and not v.isascii() for v in value.values()):
            return True
    return False


def result_object(search: Search, row: Mapping[str, Any], returned: Sequence[str], base: str,
                  stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """One match as a DICOM JSON object (keys in tag order)."""
    elements: dict[int, dict[str, Any]] = {}
    if stored:
        wanted = None if search.include_all else {tag_hex(t) for t in search.include_tags}
        for key, element in stored.items():
            if wanted is None or key in wanted:
                elements[int(key, 16)] = element
    for keyword in returned:
        attr = ATTRIBUTES[keyword]
        elements[attr.tag] = element_json(attr.vr, row.get(keyword))
    elements[RETRIEVE_URL] = {"vr": "UR", "Value": [_retrieve_url(base, row, search.level)]}
    if any(_has_non_ascii(e) for e in elements.values()):
        elements[SPECIFIC_CHARACTER_SET] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    return {tag_hex(tag): elements[tag] for tag in sorted(elements)}


def run_search(catalog: Catalog, search: Search, *, max_limit: int, visibility: Visibility,
               base: str) -> Result:
    """Match ``search`` in the index and build the results, at most ``max_limit`` of them."""
    limit = min(search.limit or max_limit, max_limit)
    filters = {**search.filters, **search.scope}
    rows = catalog.find(search.level, filters, fuzzy=search.fuzzy, limit=limit + 1, offset=search.offset,
                        visibility=visibility)
    truncated = len(rows) > limit and (search.limit is None or search.limit > max_limit)
    rows = rows[:limit]
    returned = _returned_keywords(search)
    stored: dict[int, dict[str, Any]] = {}
    if rows and _needs_stored_metadata(search, returned):
        stored = catalog.instance_metadata(row["_pk"] for row in rows)
    objects = [result_object(search, row, returned, base, stored.get(row["_pk"])) for row in rows]
    return Result(objects, truncated)
