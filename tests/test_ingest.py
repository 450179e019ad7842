"""The one ingest path: the real-image corpus, duplicates, failures and hostile input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from pacs_lite import dicomfile
from pacs_lite.archive import Archive
from pacs_lite.catalog import Catalog
from pacs_lite.config import Config
from storage import FilesystemStore, StoreUnavailable
from tests.support.dicom import make_instance, part10
from tests.support.pacs import corpus_files


def _objects(archive: Archive) -> list[str]:
    return [o.key for o in archive.store.iter_objects()]


def test_corpus_every_file_stored_or_rejected_with_a_reason(archive: Archive) -> None:
    files = corpus_files()
    assert len(files) > 150, "pydicom-data and pydicom's test files must be installed"
    stored = rejected = 0
    for path in files:
        data = path.read_bytes()
        result = archive.ingest.ingest_part10(data, source="TEST")
        if result.ok:
            stored += 1
            inst = archive.catalog.lookup_instance(result.sop_instance_uid)
            assert inst is not None, path.name
            if result.status != "duplicate":
                kept = archive.retrieval.read(inst)
                ts, body = dicomfile.split_part10(kept)
                assert ts == result.transfer_syntax_uid
                assert hashlib.sha256(body).hexdigest() == inst.received_sha256
                assert kept[:128] == b"\0" * 128
        else:
            rejected += 1
            assert result.status == "rejected", (path.name, result)
            assert len(result.reason) > 8, (path.name, result.reason)
            assert result.dicom_status in (0xC000, 0xA900, 0xA700), path.name
    assert stored > 150
    counts = archive.catalog.counts()
    referenced = {k for k, *_ in archive.catalog.iter_objects()}
    assert set(_objects(archive)) == referenced, "every object is indexed and every row has its object"
    assert counts["instances"] > 100


def test_identical_duplicate_stores_nothing_new(archive: Archive) -> None:
    data = part10(make_instance())
    first = archive.ingest.ingest_part10(data)
    again = archive.ingest.ingest_part10(data)
    assert (first.status, again.status) == ("stored", "duplicate")
    assert again.ok and again.dicom_status == 0
    assert len(_objects(archive)) == 1


def test_different_content_same_uid_is_a_revision(archive: Archive) -> None:
    ds = make_instance()
    archive.ingest.ingest_part10(part10(ds))
    ds.PatientName = "Changed^Name"
    result = archive.ingest.ingest_part10(part10(ds))
    assert result.status == "revised" and result.ok
    assert len(_objects(archive)) == 2
    [row] = archive.catalog.find("STUDY", {"StudyInstanceUID": ds.StudyInstanceUID})
    assert row["PatientName"] == "Changed^Name"


def test_duplicates_reject_policy(config: Config) -> None:
    arch = Archive(config.with_overrides(ingest={"duplicates": "reject"}, compression={"transfer_syntax": "none"}))
    try:
        ds = make_instance()
        assert arch.ingest.ingest_part10(part10(ds)).status == "stored"
        assert arch.ingest.ingest_part10(part10(ds)).status == "duplicate"
        ds.PatientName = "Other^Name"
        result = arch.ingest.ingest_part10(part10(ds))
        assert result.status == "rejected" and "different content" in result.reason
        assert len([o for o in arch.store.iter_objects()]) == 1
    finally:
        arch.close()


class FailingStore(FilesystemStore):
    """A filesystem store whose writes fail as a full or unreachable store would."""

    def put(self, key: str, data: bytes) -> None:
        raise StoreUnavailable("disk full (injected)")


class FailingCatalog(Catalog):
    """A catalog whose index commit fails after the object was written."""

    def record_instance(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("database went away (injected)")


def test_store_failure_leaves_no_index_row(archive: Archive) -> None:
    archive.ingest.store = FailingStore(archive.config.path("storage", "path"))
    result = archive.ingest.ingest_part10(part10(make_instance()))
    assert result.status == "failed" and result.dicom_status == 0xA700
    assert "storage unavailable" in result.reason
    assert archive.catalog.counts()["instances"] == 0
    assert _objects(archive) == []


def test_index_failure_leaves_only_an_orphan_for_the_sweeper(archive: Archive) -> None:
    from pacs_lite.maintenance import sweep_orphans, verify

    failing = FailingCatalog(archive.config.index_url)
    archive.ingest.catalog = failing
    result = archive.ingest.ingest_part10(part10(make_instance()))
    failing.close()
    assert result.status == "failed" and result.dicom_status == 0xA700
    assert archive.catalog.counts()["instances"] == 0
    # a commit reported as failed may have happened, so the object is not deleted on the spot:
    # it is unreferenced, and the sweeper removes it once the grace period is over
    assert len(_objects(archive)) == 1
    assert sweep_orphans(archive, grace_seconds=3600) == 0
    assert sweep_orphans(archive, grace_seconds=0) == 1
    assert _objects(archive) == [] and verify(archive, grace_seconds=0).clean


def test_resend_repairs_an_instance_whose_object_was_lost(archive: Archive) -> None:
    data = part10(make_instance())
    first = archive.ingest.ingest_part10(data)
    inst = archive.catalog.lookup_instance(first.sop_instance_uid)
    archive.store.delete(inst.object_key)  # lost behind our back
    again = archive.ingest.ingest_part10(data)
    assert again.ok
    repaired = archive.catalog.lookup_instance(first.sop_instance_uid)
    assert repaired.object_key != inst.object_key
    assert archive.retrieval.read(repaired)[132:] == archive.retrieval.read(repaired)[132:]
    from pacs_lite.maintenance import verify

    assert verify(archive, grace_seconds=0).clean


def test_malformed_transfer_syntax_is_rejected_not_raised(archive: Archive) -> None:
    data = bytearray(part10(make_instance()))
    i = data.find(b"1.2.840.10008.1.2.1")
    data[i:i + 4] = "1.é.".encode()[:4]
    result = archive.ingest.ingest_part10(bytes(data))
    assert result.status == "rejected" and "Transfer Syntax" in result.reason
    assert _objects(archive) == []


def _hostile(kind: str) -> bytes:
    ds = make_instance()
    if kind == "traversal":
        ds.SOPInstanceUID = "../../../tmp/x"
    elif kind == "empty":
        ds.SOPInstanceUID = ""
    elif kind == "long":
        ds.SOPInstanceUID = "1." + "2" * 63
    elif kind == "letters":
        ds.StudyInstanceUID = "1.2.abc"
    elif kind == "missing-series":
        del ds.SeriesInstanceUID
    elif kind == "truncated":
        return part10(ds)[:-100]
    elif kind == "not-dicom":
        return b"MZ\x90\x00" + b"this is not a DICOM file" * 20
    elif kind == "empty-file":
        return b""
    elif kind == "no-transfer-syntax":
        data = bytearray(part10(ds))
        i = data.find(b"1.2.840.10008.1.2.1")
        data[i:i + 19] = b"\0" * 19
        return bytes(data)
    return part10(ds)


@pytest.mark.parametrize("kind", ["traversal", "empty", "long", "letters", "missing-series", "truncated",
                                  "not-dicom", "empty-file"])
def test_hostile_input_is_rejected_and_leaves_no_trace(archive: Archive, kind: str) -> None:
    result = archive.ingest.ingest_part10(_hostile(kind))
    assert result.status == "rejected", result
    assert result.reason
    assert result.dicom_status in (0xC000, 0xA900)
    assert _objects(archive) == []
    assert archive.catalog.counts()["instances"] == 0
    assert not Path("/tmp/x").exists()


def test_hostile_reasons_are_specific(archive: Archive) -> None:
    assert "SOP Instance UID" in archive.ingest.ingest_part10(_hostile("traversal")).reason
    assert "empty" in archive.ingest.ingest_part10(_hostile("empty")).reason
    assert "64" in archive.ingest.ingest_part10(_hostile("long")).reason
    assert "claims" in archive.ingest.ingest_part10(_hostile("truncated")).reason
    assert "DICM" in archive.ingest.ingest_part10(_hostile("not-dicom")).reason


def test_executable_preamble_is_zeroed(archive: Archive) -> None:
    data = bytearray(part10(make_instance()))
    data[:4] = b"MZ\x90\x00"
    data[4:128] = b"\xcc" * 124
    result = archive.ingest.ingest_part10(bytes(data))
    assert result.status == "stored"
    stored = archive.retrieval.read(archive.catalog.lookup_instance(result.sop_instance_uid))
    assert stored[:128] == b"\0" * 128
    assert stored[128:132] == b"DICM"


def test_dimse_dataset_must_match_the_command(archive: Archive) -> None:
    ds = make_instance()
    _, body = dicomfile.split_part10(part10(ds))
    result = archive.ingest.ingest_dataset(body, "1.2.840.10008.1.2.1", sop_class_uid=ds.SOPClassUID,
                                           sop_instance_uid=generate_uid())
    assert result.status == "rejected" and result.dicom_status == 0xA900
    ok = archive.ingest.ingest_dataset(body, "1.2.840.10008.1.2.1", sop_class_uid=ds.SOPClassUID,
                                       sop_instance_uid=ds.SOPInstanceUID, source="CT1")
    assert ok.status == "stored"
    assert _objects(archive) and all(k.startswith("instances/") for k in _objects(archive))
    assert ds.SOPInstanceUID not in "".join(_objects(archive)), "keys never contain peer data"


def test_deeply_nested_sequences_are_rejected(archive: Archive) -> None:
    import struct

    sq_open = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    sq_close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    nested = sq_open * 300 + sq_close * 300  # (0040,A730) ContentSequence, 300 levels deep
    data = part10(make_instance())
    ts, body = dicomfile.split_part10(data)
    # the sequence sorts before (7FE0,0010) PixelData: insert it there to keep tag order
    pixel = bytes(body).index(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW")
    crafted = data[: len(data) - len(body)] + bytes(body)[:pixel] + nested + bytes(body)[pixel:]
    result = archive.ingest.ingest_part10(crafted)
    assert result.status == "rejected" and "nested" in result.reason
    assert _objects(archive) == []
