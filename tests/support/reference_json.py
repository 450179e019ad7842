"""pydicom's own DICOM JSON of a dataset: the reference the raw-bytes reader (pacs_lite.dicomheader) is checked against."""

from __future__ import annotations

import json

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr

from pacs_lite.dicomheader import BINARY_VRS, bulk_base, tag_hex


def _binary_paths(ds: Dataset, prefix: str, out: dict[int, str]) -> None:
    for elem in ds:
        path = f"{prefix}{tag_hex(elem.tag)}"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or []):
                _binary_paths(item, f"{path}/{i}/", out)
        elif elem.VR in BINARY_VRS:
            out[id(elem)] = path


def pydicom_instance_metadata(ds: Dataset, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
    """DICOM JSON by pydicom's ``to_json_dict``, every binary value a BulkDataURI (what ingest stored before)."""
    try:
        correct_ambiguous_vr(ds, True)
    except Exception:  # noqa: BLE001 - an ambiguous VR pydicom cannot resolve stays as read
        pass
    paths: dict[int, str] = {}
    _binary_paths(ds, "", paths)
    base = bulk_base(study_uid, series_uid, sop_uid)

    def bulk_uri(elem: DataElement) -> str:
        return base + paths.get(id(elem), tag_hex(elem.tag))

    doc = ds.to_json_dict(bulk_data_threshold=0, bulk_data_element_handler=bulk_uri, suppress_invalid_tags=True)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
