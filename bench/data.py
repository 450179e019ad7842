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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

#: Bump when the generated content changes, so that old caches are not reused.
GENERATOR_VERSION = 3
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
        ct, study, series, sops = _make_ct(tmp / "ct", spec.ct_slices)
        small, small_studies = _make_small(tmp / "small", spec.small_instances, spec.small_per_series)
        real, real_studies = _make_real(tmp / "real", spec.real_limit)
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
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def populate_index(url: str, population: Sequence[StudyRecord], series_per_study: int, instances_per_study: int,
                   log: Callable[[str], None] = print) -> dict[str, float]:
    """Insert the QIDO population straight into a PACS-lite index (schema migrated first).

    SQLAlchemy core bulk inserts (``executemany``) into ``patients``, ``studies``,
    ``series`` and ``instances`` (:mod:`pacs_lite.catalog.models`) with realistic values
    and the per-patient, per-study and per-series counts maintained as ingest would:
    ``num_studies``, ``num_series``, ``num_instances``, ``size_bytes``,
    ``modalities_in_study``. Every instance gets its own UIDs, object key, sizes and
    checksums; its ``metadata_z`` (the stored DICOM JSON) is shared per series. Indexes
    are those of the migrated schema; PostgreSQL is ``ANALYZE``d afterwards (what
    autovacuum would do after such growth), SQLite is left as PACS-lite leaves it.
    """
    import time
    import zlib

    from sqlalchemy import create_engine, insert, text

    from pacs_lite.catalog import Catalog, fold_name
    from pacs_lite.catalog.models import Instance, Patient, Series, Study

    started = time.monotonic()
    catalog = Catalog(url)
    catalog.migrate()
    catalog.close()
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(url if is_sqlite else "postgresql+psycopg://" + url.split("://", 1)[1])
    if is_sqlite:
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _fast(dbapi_conn: object, _record: object) -> None:  # loading only; not how PACS-lite runs
            cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=OFF")
            cur.close()

    rng = random.Random(99)
    now = dt.datetime(2025, 1, 1)
    per_series = max(1, instances_per_study // series_per_study)
    patient_ids: dict[str, int] = {}
    patients, studies, series_rows = [], [], []
    for rec in population:
        if rec.patient_id not in patient_ids:
            patient_ids[rec.patient_id] = len(patient_ids) + 1
            patients.append({"id": len(patients) + 1, "patient_id": rec.patient_id, "patient_name": rec.patient_name,
                             "patient_name_folded": fold_name(rec.patient_name), "birth_date": rec.birth_date,
                             "sex": rec.sex, "num_studies": 0, "created_at": now})
        patients[patient_ids[rec.patient_id] - 1]["num_studies"] += 1
    instance_pk = 0
    with engine.begin() as conn:
        conn.execute(insert(Patient.__table__), patients)
    chunk: list[dict[str, object]] = []

    def flush() -> None:
        if chunk:
            with engine.begin() as conn:
                conn.execute(insert(Instance.__table__), chunk)
            chunk.clear()

    for s_index, rec in enumerate(population):
        study_pk = s_index + 1
        stored, received = OBJECT_SIZES[rec.modality]
        when = dt.datetime.strptime(rec.study_date + rec.study_time, "%Y%m%d%H%M%S")
        study_bytes = 0
        for se in range(series_per_study):
            series_pk = s_index * series_per_study + se + 1
            series_uid = f"{rec.study_uid}.{se + 1}"
            meta = zlib.compress(json.dumps({
                "0020000D": {"vr": "UI", "Value": [rec.study_uid]}, "0020000E": {"vr": "UI", "Value": [series_uid]},
                "00080060": {"vr": "CS", "Value": [rec.modality]}, "00100020": {"vr": "LO", "Value": [rec.patient_id]},
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": rec.patient_name}]},
                "00080016": {"vr": "UI", "Value": [rec.sop_class]}, "7FE00010": {"vr": "OW", "BulkDataURI": "@@bulk"},
            }).encode())
            count = per_series if se < series_per_study - 1 else instances_per_study - per_series * (series_per_study - 1)
            series_rows.append({
                "id": series_pk, "study_pk": study_pk, "series_instance_uid": series_uid, "modality": rec.modality,
                "series_number": se + 1, "series_description": SERIES_DESCRIPTIONS[rec.modality][se % 4],
                "series_date": rec.study_date, "series_time": rec.study_time,
                "body_part_examined": BODY_PARTS[rec.modality], "num_instances": count, "metadata_version": count,
                "metadata_gz": None, "created_at": when,
            })
            for i in range(count):
                instance_pk += 1
                size = int(stored * rng.uniform(0.8, 1.2))
                study_bytes += size
                chunk.append({
                    "id": instance_pk, "series_pk": series_pk, "sop_instance_uid": f"{series_uid}.{i + 1}",
                    "sop_class_uid": rec.sop_class, "instance_number": i + 1, "number_of_frames": 1,
                    "rows": 512, "columns": 512, "transfer_syntax_uid": JPEG_LS,
                    "object_key": f"{rng.getrandbits(128):032x}", "object_size": size,
                    "object_sha256": f"{rng.getrandbits(256):064x}", "received_transfer_syntax_uid": EXPLICIT_LE,
                    "received_sha256": f"{rng.getrandbits(256):064x}", "received_size": received,
                    "compression_state": "compressed", "compression_note": "", "integrity": "ok",
                    "metadata_z": meta, "created_at": when, "updated_at": when,
                })
        studies.append({
            "id": study_pk, "patient_pk": patient_ids[rec.patient_id], "study_instance_uid": rec.study_uid,
            "study_date": rec.study_date, "study_time": rec.study_time, "accession_number": rec.accession,
            "study_id": "1", "study_description": rec.description, "referring_physician_name": rec.referring,
            "modalities_in_study": f"\\{rec.modality}\\", "num_series": series_per_study,
            "num_instances": instances_per_study, "size_bytes": study_bytes, "created_at": when, "updated_at": when,
        })
        if len(studies) >= 2000 or s_index == len(population) - 1:
            with engine.begin() as conn:
                conn.execute(insert(Study.__table__), studies)
                conn.execute(insert(Series.__table__), series_rows)
            studies.clear()
            series_rows.clear()
        if len(chunk) >= 20_000:
            flush()
    flush()
    if not is_sqlite:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
            # identity sequences must continue after the explicit ids
            for table in ("patients", "studies", "series", "instances"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608 - fixed names
                                  f"(SELECT MAX(id) FROM {table}))"))
            conn.commit()
    engine.dispose()
    elapsed = time.monotonic() - started
    log(f"  inserted {len(population)} studies / {instance_pk} instances into {url.split('://')[0]} in {elapsed:.1f} s")
    return {"studies": len(population), "instances": instance_pk, "seconds": round(elapsed, 2)}
