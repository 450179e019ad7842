"""Benchmark data: generated once, cached under ``<out>/cache``, reused by every system.

Four sets, all Part-10 files on disk:

``ct``
    A 512x512 16-bit CT series built from the real CT slice ``693_UNCR.dcm`` of
    ``pydicom-data``: slice *k* is that image shifted and slightly zoomed by an amount
    that varies smoothly along the series (real anatomy, not noise), with its own
    position, instance number and UIDs. ~525 KB per slice.
``small``
    Small instances (< 64 KB): 128x128 reductions of the same CT content, 50 per series,
    one series per study, each study its own patient.
``real``
    Every image of ``pydicom-data`` that has Part-10 meta information, bytes untouched;
    the few files that repeat another file's SOP Instance UID (the same image in another
    transfer syntax) get a new one so that every system stores every file once.
``qido``
    One small instance per study of the QIDO population (see :func:`qido_population`),
    used to give Orthanc the same studies that are inserted into PACS-lite's index.

Every generated UID starts with :data:`UID_ROOT` followed by the 4-digit variant
:data:`BASE_VARIANT`. :func:`make_variant` copies a set with another variant number by a
same-length byte replacement, so an ingest run can send the very same data again as new
instances (no duplicate short-cuts in any system) at the cost of a file copy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import random
import shutil
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

#: Bump when the generated content changes, so that old caches are not reused.
GENERATOR_VERSION = 4
#: Root of every UID the benchmark generates (pydicom's UID root plus a benchmark arc).
UID_ROOT = "1.2.826.0.1.3680043.8.498.7142"
#: Variant number of the cached files; ingest runs use 1001, 1002, ...
BASE_VARIANT = 1000
CT_SOURCE = "693_UNCR.dcm"


def pydicom_data_dir() -> Path:
    """The image folder of the ``pydicom-data`` package."""
    import data_store  # the module name of the pydicom-data distribution

    return Path(data_store.__file__).parent / "data"


def uid(kind: int, *parts: int, variant: int = BASE_VARIANT) -> str:
    """A benchmark UID: ``UID_ROOT.variant.kind.parts...`` (at most 64 characters)."""
    value = ".".join([UID_ROOT, str(variant), str(kind), *map(str, parts)])
    assert len(value) <= 64, value
    return value


# -- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """How much data to generate (the full benchmark or the ``--quick`` smoke run)."""

    ct_slices: int = 300
    small_instances: int = 1000
    small_per_series: int = 50
    real_limit: int | None = None  # None: every pydicom-data image
    qido_studies: int = 10_000
    qido_series_per_study: int = 4
    qido_instances_per_study: int = 100
    qido_orthanc_studies: int = 10_000

    def key(self) -> str:
        """A short hash naming the cache folder of this spec."""
        text = json.dumps({"v": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


FULL = DataSpec()
QUICK = DataSpec(ct_slices=12, small_instances=40, small_per_series=10, real_limit=8,
                 qido_studies=200, qido_series_per_study=2, qido_instances_per_study=10, qido_orthanc_studies=200)


@dataclass
class DataSet:
    """One set of files with what the report needs to know about it."""

    name: str
    files: list[Path]
    study_uids: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


@dataclass
class BenchData:
    """Everything the measurements send and query."""

    root: Path
    spec: DataSpec
    ct: DataSet
    small: DataSet
    real: DataSet
    qido: DataSet
    ct_series_uid: str
    ct_sop_uids: list[str]
    population: list[StudyRecord]


# -- the CT series ------------------------------------------------------------------------------


def _shifted(img: np.ndarray, k: int, background: int) -> np.ndarray:
    """Slice ``k`` of the synthetic series: ``img`` shifted and zoomed smoothly with ``k``."""
    rows, cols = img.shape
    dy = 12.0 * math.sin(k / 23.0)
    dx = 9.0 * math.cos(k / 31.0)
    zoom = 1.0 + 0.08 * math.sin(k / 57.0)
    yy = ((np.arange(rows) - rows / 2 - dy) / zoom + rows / 2).round().astype(np.int64)
    xx = ((np.arange(cols) - cols / 2 - dx) / zoom + cols / 2).round().astype(np.int64)
    valid_y = (yy >= 0) & (yy < rows)
    valid_x = (xx >= 0) & (xx < cols)
    out = np.full_like(img, background)
    out[np.ix_(valid_y, valid_x)] = img[np.ix_(yy[valid_y], xx[valid_x])]
    return out


def _write(ds: Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)


def _make_ct(dest: Path, slices: int) -> tuple[list[Path], str, str, list[str]]:
    src = pydicom.dcmread(pydicom_data_dir() / CT_SOURCE)
    img = src.pixel_array
    background = int(src.get("PixelPaddingValue", img.min()))
    study, series = uid(1, 1), uid(1, 2)
    dest.mkdir(parents=True)
    files, sops = [], []
    z0 = float(src.ImagePositionPatient[2])
    for k in range(slices):
        ds = src.copy()
        ds.file_meta = FileMetaDataset(src.file_meta)
        sop = uid(1, 3, k + 1)
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID = "BENCH^CT^SERIES", "BENCH-CT-1"
        ds.AccessionNumber, ds.StudyID = "BENCHCT1", "1"
        ds.StudyDescription = "CT head (benchmark)"
        ds.SeriesDescription = f"Axial {slices} slices"
        ds.InstanceNumber = k + 1
        ds.SliceThickness = 1.0
        ds.SpacingBetweenSlices = 1.0
        ds.ImagePositionPatient = [src.ImagePositionPatient[0], src.ImagePositionPatient[1], round(z0 - k, 3)]
        ds.SliceLocation = round(z0 - k, 3)
        ds.PixelData = _shifted(img, k, background).astype(img.dtype).tobytes()
        path = dest / f"ct{k + 1:04d}.dcm"
        _write(ds, path)
        files.append(path)
        sops.append(sop)
    return files, study, series, sops


def _make_small(dest: Path, count: int, per_series: int) -> tuple[list[Path], list[str]]:
    src = pydicom.dcmread(pydicom_data_dir() / CT_SOURCE)
    img = src.pixel_array
    background = int(src.get("PixelPaddingValue", img.min()))
    dest.mkdir(parents=True)
    files, studies = [], []
    for n in range(count):
        s, k = divmod(n, per_series)
        if k == 0:
            studies.append(uid(2, s + 1))
        ds = src.copy()
        ds.file_meta = FileMetaDataset(src.file_meta)
        sop = uid(2, s + 1, 2, k + 1)
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID = studies[-1], uid(2, s + 1, 1)
        ds.PatientName, ds.PatientID = f"BENCH^SMALL^{s + 1:03d}", f"BENCH-SMALL-{s + 1}"
        ds.AccessionNumber = f"BSM{s + 1:05d}"
        ds.SeriesDescription = "Scout 128x128"
        ds.InstanceNumber = k + 1
        ds.Rows = ds.Columns = 128
        ds.PixelSpacing = [1.914, 1.914]
        ds.PixelData = _shifted(img, n, background)[::4, ::4].astype(img.dtype).tobytes()
        path = dest / f"small{n + 1:05d}.dcm"
        _write(ds, path)
        files.append(path)
    return files, studies


def _make_real(dest: Path, limit: int | None) -> tuple[list[Path], list[str]]:
    dest.mkdir(parents=True)
    files, studies, seen = [], [], set()
    candidates = sorted(p for p in pydicom_data_dir().rglob("*") if p.is_file())
    for n, path in enumerate(candidates):
        if limit is not None and len(files) >= limit:
            break
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=False)
            sop = str(ds.file_meta.MediaStorageSOPInstanceUID)
            _ = ds.file_meta.TransferSyntaxUID, ds.SOPClassUID, ds.StudyInstanceUID
        except Exception:  # noqa: BLE001 - not a Part-10 file (no meta): not sendable by storescu
            continue
        out = dest / path.name
        if sop in seen:
            new = uid(3, n + 1)
            ds.SOPInstanceUID = new
            ds.file_meta.MediaStorageSOPInstanceUID = new
            ds.save_as(out, enforce_file_format=True)
        else:
            shutil.copyfile(path, out)
        seen.add(str(ds.SOPInstanceUID))
        files.append(out)
        if str(ds.StudyInstanceUID) not in studies:
            studies.append(str(ds.StudyInstanceUID))
    return files, studies


# -- the QIDO population ------------------------------------------------------------------------

LAST_NAMES = (
    "SMITH JOHNSON WILLIAMS BROWN JONES GARCIA MILLER DAVIS RODRIGUEZ MARTINEZ HERNANDEZ LOPEZ GONZALEZ "
    "WILSON ANDERSON THOMAS TAYLOR MOORE JACKSON MARTIN LEE PEREZ THOMPSON WHITE HARRIS SANCHEZ CLARK "
    "RAMIREZ LEWIS ROBINSON WALKER YOUNG ALLEN KING WRIGHT SCOTT TORRES NGUYEN HILL FLORES GREEN ADAMS "
    "NELSON BAKER HALL RIVERA CAMPBELL MITCHELL CARTER ROBERTS MULLER SCHMIDT SCHNEIDER FISCHER WEBER "
    "MEYER WAGNER BECKER SCHULZ HOFFMANN DUBOIS DURAND LEROY MOREAU SIMON LAURENT LEFEBVRE MICHEL ROSSI "
    "RUSSO FERRARI ESPOSITO BIANCHI ROMANO COLOMBO RICCI MARINO GRECO JANSSEN DEVRIES VANDIJK BAKKER"
).split()
FIRST_NAMES = (
    "JAMES MARY ROBERT PATRICIA JOHN JENNIFER MICHAEL LINDA DAVID ELIZABETH WILLIAM BARBARA RICHARD SUSAN "
    "JOSEPH JESSICA THOMAS SARAH CHARLES KAREN CHRISTOPHER LISA DANIEL NANCY MATTHEW BETTY ANTHONY MARGARET "
    "MARK SANDRA DONALD ASHLEY STEVEN KIMBERLY PAUL EMILY ANDREW DONNA JOSHUA MICHELLE LUKAS ANNA LEON "
    "EMMA FELIX MIA JONAS HANNAH ELIAS SOFIA LOUIS CHLOE HUGO CAMILLE MARCO GIULIA LUCA CHIARA"
).split()
MODALITIES = (("CT", 0.35, "1.2.840.10008.5.1.4.1.1.2", "CT CHEST W CONTRAST"),
              ("MR", 0.25, "1.2.840.10008.5.1.4.1.1.4", "MR BRAIN WO CONTRAST"),
              ("CR", 0.20, "1.2.840.10008.5.1.4.1.1.1", "XR CHEST 2 VIEWS"),
              ("US", 0.12, "1.2.840.10008.5.1.4.1.1.6.1", "US ABDOMEN COMPLETE"),
              ("MG", 0.08, "1.2.840.10008.5.1.4.1.1.1.2", "MAMMO SCREENING BILATERAL"))
BODY_PARTS = {"CT": "CHEST", "MR": "HEAD", "CR": "CHEST", "US": "ABDOMEN", "MG": "BREAST"}


@dataclass
class StudyRecord:
    """One study of the QIDO population, with the patient it belongs to."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    description: str
    referring: str
    modality: str
    sop_class: str


def qido_population(studies: int, seed: int = 20240601) -> list[StudyRecord]:
    """A deterministic, realistic-looking population: ~2.5 studies per patient over ten years.

    Names are drawn from common surname and given-name lists, studies spread over
    2015-2024 with a working-hours time, modalities with realistic frequencies.
    """
    rng = random.Random(seed)
    patients = max(1, int(studies / 2.5))
    people = []
    for p in range(patients):
        birth = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(0, 33000))
        people.append((f"P{p + 1:07d}", f"{rng.choice(LAST_NAMES)}^{rng.choice(FIRST_NAMES)}",
                       birth.strftime("%Y%m%d"), rng.choice("MF")))
    start = dt.date(2015, 1, 1)
    weights = [m[1] for m in MODALITIES]
    out = []
    for s in range(studies):
        pid, name, birth, sex = people[s % patients] if s < patients else rng.choice(people)
        modality, _, sop_class, description = rng.choices(MODALITIES, weights)[0]
        day = start + dt.timedelta(days=rng.randrange(0, 3650))
        out.append(StudyRecord(
            patient_id=pid, patient_name=name, birth_date=birth, sex=sex,
            study_uid=uid(4, s + 1), study_date=day.strftime("%Y%m%d"),
            study_time=f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
            accession=f"ACC{s + 1:08d}", description=description,
            referring=f"{rng.choice(LAST_NAMES)}^{rng.choice(FIRST_NAMES)}^^DR",
            modality=modality, sop_class=sop_class,
        ))
    return out


def _make_qido_files(dest: Path, population: Sequence[StudyRecord]) -> list[Path]:
    """One 64x64 secondary-capture-sized instance per study carrying the study's attributes."""
    dest.mkdir(parents=True)
    rng = np.random.default_rng(7)
    pixels = (rng.normal(400, 60, size=(64, 64)).clip(0, 4095)).astype(np.uint16).tobytes()
    files = []
    for n, rec in enumerate(population):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = rec.sop_class if rec.modality != "US" else SecondaryCaptureImageStorage
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = uid(4, n + 1, 1, 1)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = rec.study_uid, uid(4, n + 1, 1)
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = (
            rec.patient_id, rec.patient_name, rec.birth_date, rec.sex)
        ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.SeriesTime = rec.study_date, rec.study_time, rec.study_date, rec.study_time
        ds.AccessionNumber, ds.StudyID, ds.StudyDescription = rec.accession, "1", rec.description
        ds.ReferringPhysicianName = rec.referring
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = rec.modality, 1, 1
        ds.BodyPartExamined = BODY_PARTS[rec.modality]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 64
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels
        path = dest / f"q{n + 1:06d}.dcm"
        _write(ds, path)
        files.append(path)
    return files


# -- cache ----------------------------------------------------------------------------------------


def prepare(cache_dir: Path, spec: DataSpec, log: Callable[[str], None] = print) -> BenchData:
    """Generate the data into ``cache_dir`` (or reuse what an earlier run generated there)."""
    root = cache_dir / f"data-{spec.key()}"
    manifest = root / "manifest.json"
    population = qido_population(spec.qido_studies)
    if not manifest.exists():
        tmp = cache_dir / f".data-{spec.key()}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"generating benchmark data into {root} (cached for later runs)")
        with warnings.catch_warnings():  # pydicom warns about the odd real images it reads; they are copied as is
            warnings.simplefilter("ignore")
            real, real_studies = _make_real(tmp / "real", spec.real_limit)
        ct, study, series, sops = _make_ct(tmp / "ct", spec.ct_slices)
        small, small_studies = _make_small(tmp / "small", spec.small_instances, spec.small_per_series)
        _make_qido_files(tmp / "qido", population[: spec.qido_orthanc_studies])
        (tmp / "manifest.json").write_text(json.dumps({
            "spec": asdict(spec), "ct_study": study, "ct_series": series, "ct_sops": sops,
            "small_studies": small_studies, "real_studies": real_studies,
            "files": {name: [p.name for p in files] for name, files in
                      (("ct", ct), ("small", small), ("real", real))},
        }, indent=1))
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    meta = json.loads(manifest.read_text())
    files = {name: [root / name / f for f in meta["files"][name]] for name in ("ct", "small", "real")}
    return BenchData(
        root=root, spec=spec,
        ct=DataSet("ct", files["ct"], [meta["ct_study"]]),
        small=DataSet("small", files["small"], meta["small_studies"]),
        real=DataSet("real", files["real"], meta["real_studies"]),
        qido=DataSet("qido", sorted((root / "qido").glob("*.dcm")), [r.study_uid for r in population[: spec.qido_orthanc_studies]]),
        ct_series_uid=meta["ct_series"], ct_sop_uids=meta["ct_sops"], population=population,
    )


def make_variant(files: Sequence[Path], variant: int, dest: Path) -> list[Path]:
    """Copy ``files`` into ``dest`` with every benchmark UID moved to ``variant``.

    A same-length byte replacement of ``UID_ROOT.<BASE_VARIANT>.`` keeps every element
    length valid; the result is the same data as new studies, series and instances.
    """
    assert BASE_VARIANT <= variant <= 9999
    old = f"{UID_ROOT}.{BASE_VARIANT}.".encode()
    new = f"{UID_ROOT}.{variant}.".encode()
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for path in files:
        target = dest / path.name
        target.write_bytes(path.read_bytes().replace(old, new))
        out.append(target)
    return out


def iter_chunks(items: Sequence[Path], parts: int) -> Iterator[list[Path]]:
    """``items`` split into ``parts`` contiguous, nearly equal chunks (none empty)."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    start = 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        yield list(items[start:end])
        start = end


# -- direct index population (QIDO at scale) --------------------------------------------------------

#: Typical stored (JPEG-LS) and received sizes per modality, bytes (for realistic size columns).
OBJECT_SIZES = {"CT": (110_000, 526_000), "MR": (45_000, 132_000), "CR": (2_300_000, 7_200_000),
                "US": (260_000, 922_000), "MG": (4_800_000, 18_000_000)}
SERIES_DESCRIPTIONS = {"CT": ("Topogram", "Axial 5mm", "Axial 1mm", "Coronal MPR"),
                       "MR": ("Localizer", "T1 SAG", "T2 AX", "FLAIR AX"),
                       "CR": ("PA", "LAT", "PA", "LAT"), "US": ("Liver", "Kidneys", "Spleen", "Aorta"),
                       "MG": ("R CC", "L CC", "R MLO", "L MLO")}
JPEG_LS = "1.2.840.10008.1.2.4.80"
_MIGRATE_LOCK = threading.Lock()
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def populate_index(url: str, population: Sequence[StudyRecord], series_per_study: int, instances_per_study: int,
                   log: Callable[[str], None] = print) -> dict[str, float]:
    """Insert the QIDO population straight into a PACS-lite index (schema migrated first).

    SQLAlchemy core bulk inserts into the PACS-lite tables (:mod:`pacs_lite.catalog.models`):
    ``patients``, ``studies`` and ``series`` as ``executemany`` of rows built here,
    ``instances`` as ``INSERT ... SELECT`` that expands every series into its instances in
    the database (a recursive counter CTE), so that a million rows cost seconds, not
    minutes of Python. Values are realistic: per-instance UIDs, random object keys in
    PACS-lite's key layout, random SHA-256 values, sizes by modality, JPEG-LS stored /
    Explicit VR Little Endian received; the counts ingest maintains are set
    (``num_studies``, ``num_series``, ``num_instances``, ``size_bytes``,
    ``modalities_in_study``). ``metadata_z`` (stored instance JSON, never read by a study
    search) is one ~0.6 KB blob shared by all rows. On PostgreSQL the instance table's
    constraints and indexes are dropped for the load and re-created afterwards with their
    original definitions, then the database is ``ANALYZE``d (what autovacuum would do
    after such growth); SQLite is loaded with its indexes in place and not analysed,
    as PACS-lite leaves it.
    """
    import time
    import zlib

    from sqlalchemy import (
        BigInteger,
        Integer,
        LargeBinary,
        String,
        and_,
        case,
        cast,
        create_engine,
        event,
        func,
        insert,
        literal,
        select,
        text,
    )

    from pacs_lite.catalog import Catalog, fold_name
    from pacs_lite.catalog.models import Instance, Patient, Series, Study

    started = time.monotonic()
    with _MIGRATE_LOCK:  # Alembic keeps global state: one migration at a time per process
        catalog = Catalog(url)
        catalog.migrate()
        catalog.close()
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(url if is_sqlite else "postgresql+psycopg://" + url.split("://", 1)[1])
    if is_sqlite:
        @event.listens_for(engine, "connect")
        def _loading(dbapi_conn: Any, _record: Any) -> None:  # loading only; PACS-lite runs synchronous=FULL
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=OFF")
            cur.execute("PRAGMA cache_size=-1000000")
            cur.close()

    rng = random.Random(99)
    per_series = max(1, instances_per_study // series_per_study)
    patient_ids: dict[str, int] = {}
    patients: list[dict[str, Any]] = []
    for rec in population:
        if rec.patient_id not in patient_ids:
            patient_ids[rec.patient_id] = len(patients) + 1
            patients.append({"id": len(patients) + 1, "patient_id": rec.patient_id, "patient_name": rec.patient_name,
                             "patient_name_folded": fold_name(rec.patient_name), "birth_date": rec.birth_date,
                             "sex": rec.sex, "num_studies": 0, "created_at": dt.datetime(2015, 1, 1)})
        patients[patient_ids[rec.patient_id] - 1]["num_studies"] += 1
    studies: list[dict[str, Any]] = []
    series_rows: list[dict[str, Any]] = []
    for s_index, rec in enumerate(population):
        when = dt.datetime.strptime(rec.study_date + rec.study_time, "%Y%m%d%H%M%S")
        for se in range(series_per_study):
            count = per_series if se < series_per_study - 1 else instances_per_study - per_series * (series_per_study - 1)
            series_rows.append({
                "id": len(series_rows) + 1, "study_pk": s_index + 1, "series_instance_uid": f"{rec.study_uid}.{se + 1}",
                "modality": rec.modality, "series_number": se + 1,
                "series_description": SERIES_DESCRIPTIONS[rec.modality][se % 4], "series_date": rec.study_date,
                "series_time": rec.study_time, "body_part_examined": BODY_PARTS[rec.modality],
                "num_instances": count, "metadata_version": count, "metadata_gz": None, "created_at": when,
            })
        stored = OBJECT_SIZES[rec.modality][0]
        studies.append({
            "id": s_index + 1, "patient_pk": patient_ids[rec.patient_id], "study_instance_uid": rec.study_uid,
            "study_date": rec.study_date, "study_time": rec.study_time, "accession_number": rec.accession,
            "study_id": "1", "study_description": rec.description, "referring_physician_name": rec.referring,
            "modalities_in_study": f"\\{rec.modality}\\", "num_series": series_per_study,
            "num_instances": instances_per_study, "size_bytes": int(stored * instances_per_study * rng.uniform(0.9, 1.1)),
            "created_at": when, "updated_at": when,
        })
    with engine.begin() as conn:
        conn.execute(insert(Patient.__table__), patients)
        for i in range(0, len(studies), 5000):
            conn.execute(insert(Study.__table__), studies[i:i + 5000])
        for i in range(0, len(series_rows), 5000):
            conn.execute(insert(Series.__table__), series_rows[i:i + 5000])

    saved: tuple[list[Any], list[Any]] = ([], [])
    if not is_sqlite:  # PostgreSQL's documented bulk-load recipe: constraints and indexes after the data
        with engine.begin() as conn:
            cons = conn.execute(text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'instances'::regclass AND contype IN ('u', 'f')")).all()
            idx = conn.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'instances' AND indexname NOT IN "
                "(SELECT conname FROM pg_constraint WHERE conrelid = 'instances'::regclass)")).all()
            for name, _ in cons:
                conn.execute(text(f'ALTER TABLE instances DROP CONSTRAINT "{name}"'))
            for name, _ in idx:
                conn.execute(text(f'DROP INDEX "{name}"'))
            saved = (list(cons), list(idx))

    se = Series.__table__
    counter = select(literal(1, Integer).label("n")).cte("n", recursive=True)
    counter = counter.union_all(select(counter.c.n + 1).where(counter.c.n < max(r["num_instances"] for r in series_rows)))
    if is_sqlite:
        def hexrandom(nbytes: int, _salt: str) -> Any:
            return func.lower(func.hex(func.randomblob(nbytes)), type_=String)
        unit = (func.abs(func.random()) % 1_000_000) / 1_000_000.0
    else:
        def hexrandom(nbytes: int, salt: str) -> Any:
            parts = [func.md5(cast(func.random(), String) + salt + str(k), type_=String) for k in range(nbytes // 16)]
            out = parts[0]
            for part in parts[1:]:
                out = out + part
            return out
        unit = func.random()
    stored_size = case(*((se.c.modality == m, sizes[0]) for m, sizes in OBJECT_SIZES.items()), else_=100_000)
    received_size = case(*((se.c.modality == m, sizes[1]) for m, sizes in OBJECT_SIZES.items()), else_=500_000)
    sop_class = case(*((se.c.modality == m[0], m[2]) for m in MODALITIES), else_=MODALITIES[0][2])
    inner = (select(
        se.c.id.label("series_pk"), se.c.series_instance_uid.label("series_uid"), counter.c.n.label("n"),
        hexrandom(16, "k").label("h"), stored_size.label("stored"), received_size.label("received"),
        sop_class.label("sop_class"), unit.label("u"),
    ).select_from(se.join(counter, counter.c.n <= se.c.num_instances)))
    meta = zlib.compress(json.dumps({
        "00080060": {"vr": "CS", "Value": ["CT"]}, "00080016": {"vr": "UI", "Value": [MODALITIES[0][2]]},
        "00280010": {"vr": "US", "Value": [512]}, "00280011": {"vr": "US", "Value": [512]},
        "00280100": {"vr": "US", "Value": [16]}, "00200037": {"vr": "DS", "Value": [1, 0, 0, 0, 1, 0]},
        "00180050": {"vr": "DS", "Value": [1.0]}, "00281050": {"vr": "DS", "Value": [40]},
        "00281051": {"vr": "DS", "Value": [400]}, "7FE00010": {"vr": "OW", "BulkDataURI": "@@PACS_LITE_BASE@@/x"},
        "00081030": {"vr": "LO", "Value": ["CT CHEST W CONTRAST"]}, "0008103E": {"vr": "LO", "Value": ["Axial 1mm"]},
    }).encode() * 4)
    columns = ["series_pk", "sop_instance_uid", "sop_class_uid", "instance_number", "number_of_frames", "rows",
               "columns", "transfer_syntax_uid", "object_key", "object_size", "object_sha256",
               "received_transfer_syntax_uid", "received_sha256", "received_size", "compression_state",
               "compression_note", "integrity", "metadata_z", "created_at", "updated_at"]
    load_time = dt.datetime(2025, 1, 1)
    batch = 4000
    for lo in range(0, len(series_rows), batch):
        sub = inner.where(and_(se.c.id > lo, se.c.id <= lo + batch)).subquery()
        rows = select(
            sub.c.series_pk, sub.c.series_uid + "." + cast(sub.c.n, String), sub.c.sop_class, sub.c.n, literal(1),
            literal(512), literal(512), literal(JPEG_LS),
            "instances/" + func.substr(sub.c.h, 1, 2, type_=String) + "/" + func.substr(sub.c.h, 3, 2, type_=String) + "/" + sub.c.h + ".dcm",
            cast(sub.c.stored * (0.8 + 0.4 * sub.c.u), BigInteger), hexrandom(32, "a"), literal(EXPLICIT_LE),
            hexrandom(32, "b"), sub.c.received, literal("compressed"), literal(""), literal("ok"),
            literal(meta, LargeBinary), literal(load_time), literal(load_time),
        )
        with engine.begin() as conn:
            if not is_sqlite:
                conn.execute(text("SET LOCAL synchronous_commit = off"))
            conn.execute(insert(Instance.__table__).from_select(columns, rows))
    if not is_sqlite:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
            for name, definition in saved[0]:
                conn.execute(text(f'ALTER TABLE instances ADD CONSTRAINT "{name}" {definition}'))
            for _name, definition in saved[1]:
                conn.execute(text(definition))
            for table in ("patients", "studies", "series", "instances"):  # sequences continue after explicit ids
                sql = f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"  # noqa: S608
                conn.execute(text(sql))
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    with engine.connect() as conn:
        instances = int(conn.execute(select(func.count()).select_from(Instance.__table__)).scalar_one())
    engine.dispose()
    elapsed = time.monotonic() - started
    log(f"  index populated directly: {len(population)} studies / {instances} instances "
        f"({url.split(':')[0]}) in {elapsed:.0f} s")
    return {"studies": len(population), "instances": instances, "seconds": round(elapsed, 1)}
