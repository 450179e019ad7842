"""Tags the archive reads by number, named once (values from pydicom's dictionary)."""

from __future__ import annotations

from pydicom.tag import BaseTag, Tag


def _tag(keyword: str) -> BaseTag:
    return Tag(keyword)


SOP_CLASS_UID = _tag("SOPClassUID")
SOP_INSTANCE_UID = _tag("SOPInstanceUID")
STUDY_INSTANCE_UID = _tag("StudyInstanceUID")
SERIES_INSTANCE_UID = _tag("SeriesInstanceUID")
NUMBER_OF_FRAMES = _tag("NumberOfFrames")
PIXEL_DATA = _tag("PixelData")
FLOAT_PIXEL_DATA = _tag("FloatPixelData")
DOUBLE_FLOAT_PIXEL_DATA = _tag("DoubleFloatPixelData")
#: Every element that can hold an image's pixels.
PIXEL_TAGS = (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA)
ENCAPSULATED_DOCUMENT = _tag("EncapsulatedDocument")
