"""Tags the archive reads by number, named once (values from pydicom's dictionary).

Plain ``int`` values: the header walk compares and hashes them on its hot path, where
pydicom's ``BaseTag`` (an ``int`` subclass with Python-level comparisons) costs more.
"""

from __future__ import annotations

from pydicom.tag import Tag


def _tag(keyword: str) -> int:
    return int(Tag(keyword))


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
SPECIFIC_CHARACTER_SET = _tag("SpecificCharacterSet")
BITS_ALLOCATED = _tag("BitsAllocated")
PIXEL_REPRESENTATION = _tag("PixelRepresentation")
LUT_DESCRIPTOR = _tag("LUTDescriptor")
LUT_DATA = _tag("LUTData")
#: LUT Descriptors: the first value counts entries, unsigned even when the VR is SS.
LUT_DESCRIPTORS = (_tag("RedPaletteColorLookupTableDescriptor"), _tag("GreenPaletteColorLookupTableDescriptor"),
                   _tag("BluePaletteColorLookupTableDescriptor"), LUT_DESCRIPTOR)
WAVEFORM_BITS_ALLOCATED = _tag("WaveformBitsAllocated")
#: Waveform elements whose VR is "OB or OW", decided by Waveform Bits Allocated.
WAVEFORM_OB_OW = (_tag("ChannelMinimumValue"), _tag("ChannelMaximumValue"), _tag("WaveformPaddingValue"),
                  _tag("WaveformData"))
# file meta information (group 0002)
MEDIA_STORAGE_SOP_CLASS_UID = _tag("MediaStorageSOPClassUID")
MEDIA_STORAGE_SOP_INSTANCE_UID = _tag("MediaStorageSOPInstanceUID")
TRANSFER_SYNTAX_UID = _tag("TransferSyntaxUID")
IMPLEMENTATION_CLASS_UID = _tag("ImplementationClassUID")
IMPLEMENTATION_VERSION_NAME = _tag("ImplementationVersionName")
SOURCE_APPLICATION_ENTITY_TITLE = _tag("SourceApplicationEntityTitle")
