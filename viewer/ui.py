"""The built-in pages for radiologists (``/ui``): study list, study page, series viewer, ZIP download.

Routes::

    GET /ui/                                          study list: search, filters, sort, pages (limit/offset)
    GET /ui/studies/{study}                           patient and study header, series with thumbnails
    GET /ui/studies/{study}/download                  the study as a ZIP of DICOM files, streamed
    GET /ui/studies/{study}/series/{series}           the image viewer (viewer/static/viewer.js)
    GET /ui/studies/{study}/series/{series}/download  one series as a ZIP

Pages are rendered on the server (Jinja, autoescaped: everything in them that came from
a DICOM file is text, never markup) and read only through the catalog with the caller's
:class:`~pacs_lite.catalog.Visibility`; the viewer's script reads pixels and metadata
from the DICOMweb endpoints, which apply the same visibility. Every page is in English
and Vietnamese (Flask-Babel; ``?lang=vi``, else the browser's ``Accept-Language``).

The ZIP is written while the instances are read, one at a time, through the retrieval
path (checksums verified): neither the study nor the archive is ever held in memory or
written to disk. Names inside it are made from series and instance numbers only.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, render_template, request, stream_with_context, url_for
from flask_babel import Babel, format_date, format_decimal, get_locale
from flask_babel import gettext as _
from pydicom.uid import ExplicitVRLittleEndian

from pacs_lite.catalog import QueryError, StoredInstance
from pacs_lite.retrieval import AS_STORED, Option
from pacs_lite.uids import is_uid

from .access import audit
from .context import state, visibility

log = logging.getLogger(__name__)

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates")

LANGUAGES = ("en", "vi")
PAGE_SIZES = (10, 25, 50, 100)
DEFAULT_PAGE_SIZE = 25
MAX_OFFSET = 10_000_000
MAX_FILTER_LENGTH = 64
MODALITIES = ("CT", "MR", "CR", "DX", "US", "MG", "NM", "PT", "XA", "RF", "OT", "SR")
ZIP_CHUNK = 1024 * 1024

#: Window presets (width, centre) for CT, in Hounsfield units.
CT_PRESETS = (
    ("lung", 1500, -600),
    ("mediastinum", 350, 50),
    ("bone", 2000, 500),
    ("brain", 80, 40),
    ("abdomen", 400, 50),
)

_MODALITY_RE = re.compile(r"^[A-Z0-9]{1,16}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\ufffd\\]")


# -- language -----------------------------------------------------------------------------------


def select_locale() -> str:
    """``?lang=`` when it names a language we have, else the best match of ``Accept-Language``."""
    lang = request.args.get("lang", "")
    if lang in LANGUAGES:
        return lang
    return request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]


def ui_url(endpoint: str, **values: Any) -> str:
    """``url_for`` that keeps an explicit ``?lang=`` of the current request on the links of a page."""
    lang = request.args.get("lang", "")
    if lang in LANGUAGES and "lang" not in values:
        values["lang"] = lang
    return url_for(endpoint, **values)


def lang_url(lang: str) -> str:
    """The current page in ``lang`` (same path and filters)."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"] + [("lang", lang)]
    return request.path + "?" + urlencode(args)


# -- formatting for people ------------------------------------------------------------------------


def person_name(value: Any) -> str:
    """A DICOM PN for people: ``Nguyễn^Văn^An`` -> ``Nguyễn Văn An`` (family, given, middle; suffix after a comma).

    Of the alphabetic, ideographic and phonetic groups (``=``), the first one given is used.
    """
    text = str(value or "")
    group = next((g for g in text.split("=") if g.strip(" ^")), "")
    parts = [p.strip() for p in group.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    name = " ".join(p for p in (prefix, family, given, middle) if p)
    return f"{name}, {suffix}" if suffix and name else name or suffix


def parse_da(value: Any) -> dt.date | None:
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def dicom_date(value: Any) -> str:
    """``20200913`` -> ``13 Sep 2020`` (``13 thg 9 2020`` in Vietnamese); anything else as it is."""
    day = parse_da(value)
    if day is None:
        return str(value or "")
    return format_date(day, "d MMM y")


def dicom_time(value: Any) -> str:
    """``101500.123`` -> ``10:15``."""
    text = str(value or "").strip().replace(":", "")
    if len(text) >= 4 and text[:4].isdigit():
        return f"{text[:2]}:{text[2:4]}"
    return text


def byte_size(value: int) -> str:
    """``1536000`` -> ``1.5 MB`` (decimal units, locale-aware decimal mark)."""
    size = float(value or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{format_decimal(size, '#,##0' if unit == 'B' else '#,##0.0')} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def sex_label(value: Any) -> str:
    code = str(value or "").strip().upper()
    return {"M": _("Male"), "F": _("Female"), "O": _("Other")}.get(code, code)


# -- the study list -------------------------------------------------------------------------------


@dataclass
class StudySearch:
    """The study list's filters, sort and page, as they are in the URL."""

    name: str = ""
    patient_id: str = ""
    accession: str = ""
    modality: str = ""
    date_from: str = ""  # YYYY-MM-DD, as <input type=date> sends it
    date_to: str = ""
    oldest_first: bool = False
    limit: int = DEFAULT_PAGE_SIZE
    offset: int = 0
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> StudySearch:
        s = cls()
        s.name = s._text(args.get("name", ""))
        s.patient_id = s._text(args.get("PatientID", ""))
        s.accession = s._text(args.get("AccessionNumber", ""))
        modality = args.get("Modality", "").strip().upper()
        if modality and not _MODALITY_RE.match(modality):
            s.errors.append(_("Unknown modality."))
            modality = ""
        s.modality = modality
        s.date_from = s._date(args.get("from", ""))
        s.date_to = s._date(args.get("to", ""))
        if s.date_from and s.date_to and s.date_from > s.date_to:
            s.errors.append(_("The date range ends before it starts."))
            s.date_from = s.date_to = ""
        s.oldest_first = args.get("sort", "") == "date"
        limit = args.get("limit", "")
        s.limit = int(limit) if limit.isdigit() and int(limit) in PAGE_SIZES else DEFAULT_PAGE_SIZE
        offset = args.get("offset", "")
        s.offset = min(int(offset), MAX_OFFSET) if offset.isdigit() and len(offset) < 12 else 0
        return s

    def _text(self, value: str) -> str:
        value = value.strip()
        if len(value) > MAX_FILTER_LENGTH or _CONTROL_RE.search(value):
            self.errors.append(_("A search value is too long or contains characters that cannot be searched."))
            return ""
        return value

    def _date(self, value: str) -> str:
        value = value.strip()
        if not value:
            return ""
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            self.errors.append(_("Dates must be given as YYYY-MM-DD."))
            return ""

    def filters(self) -> dict[str, str]:
        """Catalog matching keys (the name matches word by word, without diacritics or case)."""
        out: dict[str, str] = {}
        if self.name:
            out["PatientName"] = self.name
        if self.patient_id:
            out["PatientID"] = self.patient_id
        if self.accession:
            out["AccessionNumber"] = self.accession
        if self.modality:
            out["ModalitiesInStudy"] = self.modality
        if self.date_from or self.date_to:
            out["StudyDate"] = f"{self.date_from.replace('-', '')}-{self.date_to.replace('-', '')}"
        return out

    def args(self, **changes: Any) -> dict[str, Any]:
        """URL arguments for this search with ``changes`` (defaults left out)."""
        values: dict[str, Any] = {
            "name": self.name, "PatientID": self.patient_id, "AccessionNumber": self.accession,
            "Modality": self.modality, "from": self.date_from, "to": self.date_to,
            "sort": "date" if self.oldest_first else "",
            "limit": self.limit if self.limit != DEFAULT_PAGE_SIZE else "", "offset": self.offset or "",
        }
        values.update(changes)
        return {k: v for k, v in values.items() if v not in ("", None, 0)}


def _study_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "uid": row["StudyInstanceUID"],
        "name": person_name(row.get("PatientName")),
        "patient_id": row.get("PatientID") or "",
        "birth_date": dicom_date(row.get("PatientBirthDate")),
        "sex": sex_label(row.get("PatientSex")),
        "date": dicom_date(row.get("StudyDate")),
        "time": dicom_time(row.get("StudyTime")),
        "description": row.get("StudyDescription") or "",
        "modalities": ", ".join(row.get("ModalitiesInStudy") or ()),
        "accession": row.get("AccessionNumber") or "",
        "series": row.get("NumberOfStudyRelatedSeries") or 0,
        "instances": row.get("NumberOfStudyRelatedInstances") or 0,
        "referring": person_name(row.get("ReferringPhysicianName")),
    }


@bp.get("/")
def study_list() -> tuple[str, int]:
    """Studies matching the filters in the URL, a page at a time, newest first unless ``sort=date``."""
    search = StudySearch.from_args(request.args)
    rows: list[dict[str, Any]] = []
    status = 200
    if search.errors:
        status = 400
    else:
        try:
            rows = state().archive.catalog.find(
                "STUDY", search.filters(), fuzzy=bool(search.name), limit=search.limit + 1, offset=search.offset,
                visibility=visibility(), oldest_first=search.oldest_first)
        except QueryError:
            search.errors.append(_("The search could not be understood."))
            status = 400
    has_next = len(rows) > search.limit
    studies = [_study_row(r) for r in rows[: search.limit]]
    return render_template(
        "ui/studies.html", search=search, studies=studies, has_next=has_next, modalities=MODALITIES,
        page_sizes=PAGE_SIZES, first=search.offset + 1, last=search.offset + len(studies),
    ), status


# -- one study ------------------------------------------------------------------------------------


def _not_found(what: str) -> tuple[str, int]:
    return render_template("ui/not_found.html", what=what), 404


def _study(study: str) -> dict[str, Any] | None:
    if not is_uid(study):
        return None
    rows = state().archive.catalog.find("STUDY", {"StudyInstanceUID": study}, limit=1, visibility=visibility())
    return rows[0] if rows else None


@bp.get("/studies/<study>")
def study_page(study: str) -> tuple[str, int]:
    """Patient and study header, and each series with a thumbnail, counts and size."""
    row = _study(study)
    if row is None:
        return _not_found(_("study"))
    catalog = state().archive.catalog
    vis = visibility()
    series_rows = catalog.find("SERIES", {"StudyInstanceUID": study}, visibility=vis)
    images = catalog.find("IMAGE", {"StudyInstanceUID": study}, visibility=vis)
    sizes: dict[str, int] = {}
    for inst in catalog.instances(study, visibility=vis):
        sizes[inst.series_instance_uid] = sizes.get(inst.series_instance_uid, 0) + inst.object_size
    frames: dict[str, int] = {}
    for img in images:
        if img.get("Rows"):
            uid = img["SeriesInstanceUID"]
            frames[uid] = frames.get(uid, 0) + (img.get("NumberOfFrames") or 1)
    series = [{
        "uid": s["SeriesInstanceUID"],
        "number": s.get("SeriesNumber"),
        "modality": s.get("Modality") or "",
        "description": s.get("SeriesDescription") or "",
        "body_part": s.get("BodyPartExamined") or "",
        "date": dicom_date(s.get("SeriesDate")),
        "instances": s.get("NumberOfSeriesRelatedInstances") or 0,
        "frames": frames.get(s["SeriesInstanceUID"], 0),
        "size": byte_size(sizes.get(s["SeriesInstanceUID"], 0)),
    } for s in series_rows]
    total = byte_size(sum(sizes.values()))
    return render_template("ui/study.html", study=_study_row(row), series=series, total_size=total), 200


# -- the viewer -----------------------------------------------------------------------------------


@bp.get("/studies/<study>/series/<series>")
def series_viewer(study: str, series: str) -> tuple[str, int]:
    """The image viewer for one series; the images come from DICOMweb (viewer/static/viewer.js)."""
    row = _study(study)
    if row is None or not is_uid(series):
        return _not_found(_("series"))
    found = state().archive.catalog.find(
        "SERIES", {"StudyInstanceUID": study, "SeriesInstanceUID": series}, limit=1, visibility=visibility())
    if not found:
        return _not_found(_("series"))
    s = found[0]
    modality = str(s.get("Modality") or "")
    presets = [(key, width, centre) for key, width, centre in CT_PRESETS] if modality == "CT" else []
    return render_template(
        "ui/viewer.html", study=_study_row(row), presets=presets, modality=modality,
        series={"uid": series, "number": s.get("SeriesNumber"), "description": s.get("SeriesDescription") or "",
                "instances": s.get("NumberOfSeriesRelatedInstances") or 0},
    ), 200


# -- ZIP download ---------------------------------------------------------------------------------


class _Chunks(io.RawIOBase):
    """A write-only, non-seekable stream that collects what :class:`zipfile.ZipFile` writes."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def zip_names(entries: list[tuple[str, int | None, int | None]]) -> list[str]:
    """Names inside the ZIP for ``(series UID, series number, instance number)``: ``S0001/I00001.dcm``.

    A series without a number is named by its position (``S_002``), an instance without
    one by its position in the archive; repeated names get ``-2``, ``-3``... The UID only
    tells series apart: nothing from a UID or from patient data ever goes into a name.
    """
    used: set[str] = set()
    names = []
    positions: dict[str, int] = {}
    for i, (series_uid, series_no, instance_no) in enumerate(entries):
        position = positions.setdefault(series_uid, len(positions) + 1)
        folder = f"S{series_no:04d}" if isinstance(series_no, int) else f"S_{position:03d}"
        n = instance_no if isinstance(instance_no, int) else i + 1
        base = f"{folder}/I{n:05d}"
        name, k = f"{base}.dcm", 1
        while name in used:
            k += 1
            name = f"{base}-{k}.dcm"
        used.add(name)
        names.append(name)
    return names


def _zip_stream(items: list[tuple[str, StoredInstance]], first: bytes, options: tuple[Option, ...]) -> Iterator[bytes]:
    retrieval = state().archive.retrieval
    sink = _Chunks()
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for i, (name, inst) in enumerate(items):
            data = first if i == 0 else retrieval.instance(inst, options).data
            first = b""  # held only until written
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = len(data)
            with zf.open(info, "w", force_zip64=len(data) >= 2**31) as entry:
                view = memoryview(data)
                for start in range(0, len(view), ZIP_CHUNK):
                    entry.write(view[start:start + ZIP_CHUNK])
                    if chunk := sink.take():
                        yield chunk
            if chunk := sink.take():
                yield chunk
    if chunk := sink.take():
        yield chunk


@bp.get("/studies/<study>/download")
@bp.get("/studies/<study>/series/<series>/download")
def download(study: str, series: str | None = None) -> Response | tuple[str, int]:
    """The study (or series) as a ZIP of DICOM files, as stored (``?uncompressed=1``: explicit VR little endian).

    The first instance is read before the response starts, so that a missing or corrupt
    object still gives an error status; a failure later aborts the stream (the client
    gets a truncated ZIP that does not open, never one silently missing a file).
    """
    row = _study(study)
    if row is None or (series is not None and not is_uid(series)):
        return _not_found(_("study"))
    catalog = state().archive.catalog
    vis = visibility()
    scope = {"StudyInstanceUID": study} | ({"SeriesInstanceUID": series} if series else {})
    numbers = {r["SOPInstanceUID"]: (r.get("SeriesNumber"), r.get("InstanceNumber"))
               for r in catalog.find("IMAGE", scope, visibility=vis)}
    instances = catalog.instances(study, series, visibility=vis)
    if not instances:
        return _not_found(_("series") if series else _("study"))
    names = zip_names([(i.series_instance_uid, *numbers.get(i.sop_instance_uid, (None, None))) for i in instances])
    uncompressed = request.args.get("uncompressed") == "1"
    options = (Option.exactly(ExplicitVRLittleEndian, or_as_stored=True),) if uncompressed else (AS_STORED,)
    first = state().archive.retrieval.instance(instances[0], options).data
    audit("download", "started", study=study, series=series or "-", instances=str(len(instances)))
    day = parse_da(row.get("StudyDate"))
    filename = f"study-{day:%Y%m%d}" if day else "study"
    if series:
        filename += "-series"
    response = Response(stream_with_context(_zip_stream(list(zip(names, instances, strict=True)), first, options)),
                        mimetype="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}.zip"'
    response.headers["Cache-Control"] = "no-store"
    return response


# -- wiring ---------------------------------------------------------------------------------------


def init_ui(app: Flask) -> None:
    """Register the pages and their translations (Flask-Babel, catalogs in ``viewer/translations``)."""
    Babel(app, locale_selector=select_locale)
    app.jinja_env.globals.update(ui_url=ui_url, lang_url=lang_url, get_locale=get_locale, languages=LANGUAGES)
    app.jinja_env.filters.update(person_name=person_name, dicom_date=dicom_date)
    app.register_blueprint(bp)

