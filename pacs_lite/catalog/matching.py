"""DICOM query matching (PS3.4 C.2.2.2) turned into SQL conditions.

C-FIND and QIDO-RS share these rules: single value, wildcard (``*``, ``?``), ranges for
dates and times, lists of UIDs separated by ``\\``, universal matching (empty or ``*``).
Person names match case-insensitively, and ignore diacritics when the query has none,
through a folded copy of the name kept in the index.
"""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import ColumnElement, and_, func, literal, or_
from sqlalchemy.sql.elements import ColumnClause

from ..uids import is_uid

DATE_RE = re.compile(r"^\d{8}$")
TIME_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
LIKE_ESCAPE = "!"

# Letters that NFKD does not split into a base letter and a combining mark.
_FOLD_EXTRA = str.maketrans({"đ": "d", "Đ": "D", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ß": "ss", "æ": "ae", "Æ": "AE"})


class QueryError(ValueError):
    """A query value that is not valid for its attribute; the message says which and why."""


def fold_name(value: str) -> str:
    """Upper-case ``value`` without diacritics: ``Nguyễn^Văn`` -> ``NGUYEN^VAN``."""
    decomposed = unicodedata.normalize("NFKD", value.translate(_FOLD_EXTRA))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _like_pattern(value: str) -> str:
    escaped = value.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%").replace("_", LIKE_ESCAPE + "_")
    return escaped.replace("*", "%").replace("?", "_")


def _text_condition(column: ColumnClause, value: str, *, case_insensitive: bool) -> ColumnElement[bool]:
    if _has_wildcard(value):
        pattern = _like_pattern(value)
        if case_insensitive:
            return func.lower(column).like(pattern.lower(), escape=LIKE_ESCAPE)
        return column.like(pattern, escape=LIKE_ESCAPE)
    if case_insensitive:
        return func.lower(column) == value.lower()
    return column == value


def _range_condition(column: ColumnClause, value: str, pattern: re.Pattern[str], what: str) -> ColumnElement[bool]:
    if "-" in value:
        low, _, high = value.partition("-")
        for part in (low, high):
            if part and not pattern.match(part):
                raise QueryError(f"invalid {what} range {value!r}")
        if not low and not high:
            raise QueryError(f"invalid {what} range {value!r}")
        conds = []
        if low:
            conds.append(column >= low)
        if high:
            # a time bound of "1200" includes 12:00:59.999
            conds.append(column <= (high if what == "date" else high + "\uffff"))
        conds.append(column != "")
        return and_(*conds)
    if not pattern.match(value):
        raise QueryError(f"invalid {what} {value!r}")
    if what == "time":
        return column.like(value + "%")
    return column == value


def condition(kind: str, column: ColumnClause, value: str, *, folded: ColumnClause | None = None,
              fuzzy: bool = False, name: str = "") -> ColumnElement[bool] | None:
    """The SQL condition for matching ``column`` against the DICOM query ``value``.

    Parameters
    ----------
    kind
        How the attribute matches: ``"uid"``, ``"text"`` (case-insensitive), ``"exact"``
        (case-sensitive), ``"pn"``, ``"date"``, ``"time"``, ``"int"`` or ``"multi"`` (a
        ``\\``-delimited set such as ModalitiesInStudy, stored as ``\\A\\B\\``).
    folded
        For ``"pn"``: the column holding :func:`fold_name` of the name.
    fuzzy
        QIDO-RS ``fuzzymatching=true``: each query word must start a name component.

    Returns
    -------
    The condition, or ``None`` for universal matching.
    """
    label = name or getattr(column, "key", "value")
    if value is None:
        return None
    value = value.strip() if kind != "exact" else value
    if value == "" or value == "*":
        return None
    if len(value) > 1024:
        raise QueryError(f"{label}: value too long")
    if kind == "uid":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        for uid in uids:
            if not is_uid(uid):
                raise QueryError(f"{label}: invalid UID {uid[:70]!r}")
        if not uids:
            return None
        return column == uids[0] if len(uids) == 1 else column.in_(uids)
    if kind == "date":
        alts = [v for v in value.split("\\") if v]
        return or_(*[_range_condition(column, v, DATE_RE, "date") for v in alts])
    if kind == "time":
        alts = [v for v in value.split("\\") if v]
        return or_(*[_range_condition(column, v.replace(":", ""), TIME_RE, "time") for v in alts])
    if kind == "int":
        try:
            return column == int(value)
        except ValueError:
            raise QueryError(f"{label}: expected an integer, got {value[:40]!r}") from None
    if kind == "multi":
        alts = [v.strip() for v in value.split("\\") if v.strip()]
        conds = []
        for alt in alts:
            pattern = "%\\" + _like_pattern(alt).replace("%", "%") + "\\%"
            conds.append(column.like(pattern, escape=LIKE_ESCAPE))
        return or_(*conds) if conds else None
    if kind == "pn":
        return _name_condition(column, folded, value, fuzzy)
    alts = value.split("\\") if "\\" in value else [value]
    conds = [_text_condition(column, alt, case_insensitive=(kind == "text")) for alt in alts if alt]
    return or_(*conds) if conds else None


def _name_condition(column: ColumnClause, folded: ColumnClause | None, value: str, fuzzy: bool) -> ColumnElement[bool]:
    plain = fold_name(value) == value.upper()  # the query itself carries no diacritics
    if fuzzy and folded is not None:
        words = [w for w in re.split(r"[\s^=,]+", fold_name(value).replace("*", "").replace("?", "")) if w]
        if not words:
            return literal(True)
        spaced = literal(" ") + func.replace(func.replace(folded, "^", " "), "=", " ")
        return and_(*[spaced.like("% " + _like_pattern(w) + "%", escape=LIKE_ESCAPE) for w in words])
    if plain and folded is not None:
        return _text_condition(folded, fold_name(value), case_insensitive=False)
    return _text_condition(column, value, case_insensitive=True)
