"""Which DICOM attributes the index holds, at which level, in which column, matched how."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import InstrumentedAttribute

from .models import Instance, Patient, Series, Study

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


@dataclass(frozen=True)
class Attribute:
    keyword: str
    tag: int
    vr: str
    level: str
    column: InstrumentedAttribute
    kind: str  # see matching.condition


_A = Attribute
ATTRIBUTES: dict[str, Attribute] = {a.keyword: a for a in (
    _A("PatientID", 0x00100020, "LO", "PATIENT", Patient.patient_id, "exact"),
    _A("PatientName", 0x00100010, "PN", "PATIENT", Patient.patient_name, "pn"),
    _A("PatientBirthDate", 0x00100030, "DA", "PATIENT", Patient.birth_date, "date"),
    _A("PatientSex", 0x00100040, "CS", "PATIENT", Patient.sex, "text"),
    _A("NumberOfPatientRelatedStudies", 0x00201200, "IS", "PATIENT", Patient.num_studies, "int"),
    _A("StudyInstanceUID", 0x0020000D, "UI", "STUDY", Study.study_instance_uid, "uid"),
    _A("StudyDate", 0x00080020, "DA", "STUDY", Study.study_date, "date"),
    _A("StudyTime", 0x00080030, "TM", "STUDY", Study.study_time, "time"),
    _A("AccessionNumber", 0x00080050, "SH", "STUDY", Study.accession_number, "text"),
    _A("StudyID", 0x00200010, "SH", "STUDY", Study.study_id, "text"),
    _A("StudyDescription", 0x00081030, "LO", "STUDY", Study.study_description, "text"),
    _A("ReferringPhysicianName", 0x00080090, "PN", "STUDY", Study.referring_physician_name, "text"),
    _A("ModalitiesInStudy", 0x00080061, "CS", "STUDY", Study.modalities_in_study, "multi"),
    _A("NumberOfStudyRelatedSeries", 0x00201206, "IS", "STUDY", Study.num_series, "int"),
    _A("NumberOfStudyRelatedInstances", 0x00201208, "IS", "STUDY", Study.num_instances, "int"),
    _A("SeriesInstanceUID", 0x0020000E, "UI", "SERIES", Series.series_instance_uid, "uid"),
    _A("Modality", 0x00080060, "CS", "SERIES", Series.modality, "text"),
    _A("SeriesNumber", 0x00200011, "IS", "SERIES", Series.series_number, "int"),
    _A("SeriesDescription", 0x0008103E, "LO", "SERIES", Series.series_description, "text"),
    _A("SeriesDate", 0x00080021, "DA", "SERIES", Series.series_date, "date"),
    _A("SeriesTime", 0x00080031, "TM", "SERIES", Series.series_time, "time"),
    _A("BodyPartExamined", 0x00180015, "CS", "SERIES", Series.body_part_examined, "text"),
    _A("NumberOfSeriesRelatedInstances", 0x00201209, "IS", "SERIES", Series.num_instances, "int"),
    _A("SOPInstanceUID", 0x00080018, "UI", "IMAGE", Instance.sop_instance_uid, "uid"),
    _A("SOPClassUID", 0x00080016, "UI", "IMAGE", Instance.sop_class_uid, "uid"),
    _A("InstanceNumber", 0x00200013, "IS", "IMAGE", Instance.instance_number, "int"),
    _A("NumberOfFrames", 0x00280008, "IS", "IMAGE", Instance.number_of_frames, "int"),
    _A("Rows", 0x00280010, "US", "IMAGE", Instance.rows, "int"),
    _A("Columns", 0x00280011, "US", "IMAGE", Instance.columns, "int"),
)}

BY_TAG: dict[int, Attribute] = {a.tag: a for a in ATTRIBUTES.values()}


def level_rank(level: str) -> int:
    return LEVELS.index(level)


def attributes_up_to(level: str) -> list[Attribute]:
    """Attributes held at ``level`` and the levels above it."""
    rank = level_rank(level)
    return [a for a in ATTRIBUTES.values() if level_rank(a.level) <= rank]
