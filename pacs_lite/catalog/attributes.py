"""Which DICOM attributes the index holds, at which level, in which column, matched how.

The one table of indexed attributes: C-FIND and QIDO-RS match and return them, ingest
reads the ``extracted`` ones from the received header (:data:`EXTRACTED`: tag, value
kind and maximum length all come from here and the column), and the catalog writes
their columns by iterating the same table. Counted and derived attributes (NumberOf*,
ModalitiesInStudy; ``patients.patient_name_folded``, not a matching key) are kept by
the catalog and never extracted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy import Integer
from sqlalchemy.orm import InstrumentedAttribute

from .models import Instance, Patient, Series, Study

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

#: How ingest reads an extracted attribute: ``DicomHeader.text`` (cut to ``limit``) or ``DicomHeader.int``.
TEXT, INT = "text", "int"


@dataclass(frozen=True)
class Attribute:
    keyword: str
    level: str
    column: InstrumentedAttribute
    kind: str  # see matching.condition
    #: read from the received header by ingest (False: counted or derived by the catalog)
    extracted: bool = True
    #: identifies the row of its level: written when the row is created, never overwritten
    key: bool = False
    tag: int = field(init=False)
    vr: str = field(init=False)
    #: the column's name: the key of this attribute in an InstanceRecord level dict
    name: str = field(init=False)
    value_kind: str = field(init=False)  # TEXT or INT
    #: the column's length (text values are cut to it); 0 for integers
    limit: int = field(init=False)

    def __post_init__(self) -> None:
        tag = tag_for_keyword(self.keyword)
        if tag is None:
            raise ValueError(f"{self.keyword} is not a DICOM keyword")
        column_type = self.column.property.columns[0].type
        is_int = isinstance(column_type, Integer)
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "vr", dictionary_VR(tag))
        object.__setattr__(self, "name", self.column.key)
        object.__setattr__(self, "value_kind", INT if is_int else TEXT)
        object.__setattr__(self, "limit", 0 if is_int else column_type.length)


_A = Attribute
ATTRIBUTES: dict[str, Attribute] = {a.keyword: a for a in (
    _A("PatientID", "PATIENT", Patient.patient_id, "exact", key=True),
    _A("PatientName", "PATIENT", Patient.patient_name, "pn"),
    _A("PatientBirthDate", "PATIENT", Patient.birth_date, "date"),
    _A("PatientSex", "PATIENT", Patient.sex, "text"),
    _A("NumberOfPatientRelatedStudies", "PATIENT", Patient.num_studies, "int", extracted=False),
    _A("StudyInstanceUID", "STUDY", Study.study_instance_uid, "uid", key=True),
    _A("StudyDate", "STUDY", Study.study_date, "date"),
    _A("StudyTime", "STUDY", Study.study_time, "time"),
    _A("AccessionNumber", "STUDY", Study.accession_number, "text"),
    _A("StudyID", "STUDY", Study.study_id, "text"),
    _A("StudyDescription", "STUDY", Study.study_description, "text"),
    _A("ReferringPhysicianName", "STUDY", Study.referring_physician_name, "text"),
    _A("ModalitiesInStudy", "STUDY", Study.modalities_in_study, "multi", extracted=False),
    _A("NumberOfStudyRelatedSeries", "STUDY", Study.num_series, "int", extracted=False),
    _A("NumberOfStudyRelatedInstances", "STUDY", Study.num_instances, "int", extracted=False),
    _A("SeriesInstanceUID", "SERIES", Series.series_instance_uid, "uid", key=True),
    _A("Modality", "SERIES", Series.modality, "text"),
    _A("SeriesNumber", "SERIES", Series.series_number, "int"),
    _A("SeriesDescription", "SERIES", Series.series_description, "text"),
    _A("SeriesDate", "SERIES", Series.series_date, "date"),
    _A("SeriesTime", "SERIES", Series.series_time, "time"),
    _A("BodyPartExamined", "SERIES", Series.body_part_examined, "text"),
    _A("NumberOfSeriesRelatedInstances", "SERIES", Series.num_instances, "int", extracted=False),
    _A("SOPInstanceUID", "IMAGE", Instance.sop_instance_uid, "uid", key=True),
    _A("SOPClassUID", "IMAGE", Instance.sop_class_uid, "uid"),
    _A("InstanceNumber", "IMAGE", Instance.instance_number, "int"),
    _A("NumberOfFrames", "IMAGE", Instance.number_of_frames, "int"),
    _A("Rows", "IMAGE", Instance.rows, "int"),
    _A("Columns", "IMAGE", Instance.columns, "int"),
)}

BY_TAG: dict[int, Attribute] = {a.tag: a for a in ATTRIBUTES.values()}

#: Per level, the attributes ingest reads from the header and the catalog writes, in table order.
EXTRACTED: dict[str, tuple[Attribute, ...]] = {
    level: tuple(a for a in ATTRIBUTES.values() if a.level == level and a.extracted) for level in LEVELS
}


def level_rank(level: str) -> int:
    return LEVELS.index(level)


def attributes_up_to(level: str) -> list[Attribute]:
    """Attributes held at ``level`` and the levels above it."""
    rank = level_rank(level)
    return [a for a in ATTRIBUTES.values() if level_rank(a.level) <= rank]
