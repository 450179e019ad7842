"""One pass over a received dataset: prove its structure, read its header, write its DICOM JSON.

Split the way pydicom splits ``filereader`` / ``values`` / ``jsonrep``:

* :mod:`.reader`: the walk over the encoded bytes (:func:`scan`): structure proof and element index;
* :mod:`.values`: VRs and values as pydicom gives them (character sets, ambiguous VRs);
* :mod:`.jsonrep`: DICOM JSON, of an indexed dataset and of index values (QIDO);
* :mod:`.header`: :func:`read_header` and the :class:`DicomHeader` accessors ingest reads.

Ingest used to walk every dataset twice (a structure check, then ``pydicom.dcmread``)
and then build a pydicom :class:`~pydicom.dataset.Dataset` only to turn it into DICOM
JSON; :func:`read_header` does all of it in one walk over the raw bytes, values are
decoded lazily and pixel data is never copied.
"""

from .header import DicomHeader, read_header
from .jsonrep import BINARY_VRS, bulk_base, element_json, keyword_tag, resolve_base, tag_hex
from .reader import Buffer, Element, Elements, scan

__all__ = [
    "BINARY_VRS",
    "Buffer",
    "DicomHeader",
    "Element",
    "Elements",
    "bulk_base",
    "element_json",
    "keyword_tag",
    "read_header",
    "resolve_base",
    "scan",
    "tag_hex",
]
