"""C-ECHO, C-STORE of the whole corpus, then C-GET and C-MOVE of what was stored (dcmtk peers).

One server and one stored corpus for the module: storing takes a few seconds and every
retrieve test reads from it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, build_role
from pynetdicom.sop_class import _STORAGE_CLASSES, StudyRootQueryRetrieveInformationModelGet

from dicom_scp import DicomServer
from harness import dcmtk
from harness.net import free_port
from pacs_lite.archive import Archive
from tests.support.dicom import make_instance, part10
from tests.support.dimse import SCP_AET, pixel_difference, running_scp
from tests.support.pacs import corpus_files

# the corpus has files whose meta information says explicit VR and whose dataset is implicit
pytestmark = [pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning"), pytest.mark.peers]

STORAGE_UIDS = set(_STORAGE_CLASSES.values())
#: dcmtk tools with Nagle's algorithm off: these tests check content, not speed.
FAST = {"TCP_NODELAY": "1"}


@dataclass
class StoredCorpus:
    server: DicomServer
    archive: Archive
    run: dcmtk.CorpusRun
    storescp: dcmtk.Storescp
    sent: dict[str, Path]  # SOP Instance UID -> the file whose content is current
    workdir: Path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoredCorpus]:
    workdir = tmp_path_factory.mktemp("dimse-corpus")
    storescp = dcmtk.Storescp(workdir / "storescp", "STORESCP").start()
    try:
        peers = [{"ae_title": "STORESCP", "host": "127.0.0.1", "port": storescp.port}]
        with running_scp(workdir / "pacs", peers=peers) as (server, archive):
            run = dcmtk.store_in_own_syntax(server.port, corpus_files(), workdir / "storescu", aec=SCP_AET, env=FAST)
            sent: dict[str, Path] = {}
            for path in run.order:  # the last stored content of a UID is the current one
                if run.outcomes[path].outcome == "stored":
                    sent[str(pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)] = Path(path)
            yield StoredCorpus(server, archive, run, storescp, sent, workdir)
    finally:
        storescp.stop()


def test_echo(corpus: StoredCorpus) -> None:
    proc = dcmtk.echoscu(corpus.server.port, aec=SCP_AET)
    assert proc.returncode == 0, proc.stderr


def test_unknown_sop_class_context_is_rejected(corpus: StoredCorpus) -> None:
    ae = AE("SCU")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
    ae.add_requested_context("1.2.3.4.5.6.7.8.9")  # a private SOP class
    assoc = ae.associate("127.0.0.1", corpus.server.port, ae_title=SCP_AET)
    try:
        assert assoc.is_established
        assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == ["1.2.3.4.5.6.7.8.9"]
    finally:
        assoc.release()


def test_corpus_every_file_stored_or_clear_failure(corpus: StoredCorpus) -> None:
    outcomes = list(corpus.run.outcomes.values())
    counts = collections.Counter(o.outcome for o in outcomes)
    print(f"\ncorpus: {len(outcomes)} files: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for o in outcomes:
        if o.outcome != "stored":
            print(
                f"  {o.outcome:10s} {Path(o.path).name}: "
                + (f"0x{o.status:04X} {o.comment}" if o.status is not None else o.detail)
            )
    # a SOP class pynetdicom does not know is a rejected presentation context: a clear outcome
    unknown_class = [o for o in outcomes if o.outcome == "no-context" and o.detail.split()[-1] not in STORAGE_UIDS]
    unclear = [
        o
        for o in outcomes
        if o.outcome not in ("stored", "failed", "skipped")
        and o not in unknown_class
        or (o.outcome == "failed" and not o.comment)
    ]
    assert not unclear, [(Path(o.path).name, o.outcome, o.detail) for o in unclear]
    assert counts["stored"] >= 200
    failed = corpus.run.by_outcome("failed")
    assert all(0xA700 <= (o.status or 0) <= 0xCFFF or o.status == 0x0111 for o in failed)


def test_index_and_store_agree(corpus: StoredCorpus) -> None:
    catalog, store = corpus.archive.catalog, corpus.archive.store
    assert catalog.counts()["instances"] == len(corpus.sent)
    referenced = {key for key, *_ in catalog.iter_objects()}
    stored = {info.key for info in store.iter_objects()}
    assert referenced == stored  # no orphans, nothing missing
    assert all(key.startswith("instances/") for key in stored)


def _current_by_syntax(archive: Archive) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for inst in archive.catalog.instances():
        groups[inst.transfer_syntax_uid].append(inst.sop_instance_uid)
    return groups


def test_cget_returns_identical_pixels(corpus: StoredCorpus) -> None:
    """getscu per stored transfer syntax (preferring it), IMAGE level by SOP Instance UID list."""
    received: dict[str, Path] = {}
    failed_total = 0
    for ts, uids in sorted(_current_by_syntax(corpus.archive).items()):
        option = dcmtk.PREFER_OPTION.get(ts)
        assert option, f"no getscu option for {ts}"
        outdir = corpus.workdir / "getscu" / ts
        files, proc = dcmtk.getscu(
            corpus.server.port,
            "IMAGE",
            {"SOPInstanceUID": "\\".join(uids)},
            outdir,
            aec=SCP_AET,
            extra=[option, "-pdu", "131072"],
            env=FAST,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        counts = dcmtk.final_suboperations(proc.stdout + proc.stderr)
        assert "completed" in counts, proc.stdout[-2000:]
        failed_total += counts.get("failed", 0)
        for path in files:
            received[str(pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)] = path
    differences = {}
    for uid, path in received.items():
        diff = pixel_difference(pydicom.dcmread(corpus.sent[uid], force=True), pydicom.dcmread(path, force=True))
        if diff:
            differences[corpus.sent[uid].name] = diff
    assert not differences
    # getscu offers storage contexts for the common SOP classes only; the rest are counted failed
    assert len(received) + failed_total == len(corpus.sent)
    assert len(received) >= 0.9 * len(corpus.sent)


def test_cmove_to_storescp_returns_identical_pixels(corpus: StoredCorpus) -> None:
    studies = sorted({i.study_instance_uid for i in corpus.archive.catalog.instances()})
    before = set(corpus.storescp.files())
    proc = dcmtk.movescu(
        corpus.server.port,
        "STUDY",
        {"StudyInstanceUID": "\\".join(studies)},
        destination="STORESCP",
        aec=SCP_AET,
        env=FAST,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = dcmtk.final_suboperations(proc.stdout + proc.stderr)
    new = [p for p in corpus.storescp.files() if p not in before]
    received = {str(pydicom.dcmread(p, stop_before_pixels=True, force=True).SOPInstanceUID): p for p in new}
    assert counts.get("failed") == 0 and counts.get("completed") == len(corpus.sent), counts
    assert set(received) == set(corpus.sent)
    differences = {}
    for uid, path in received.items():
        diff = pixel_difference(pydicom.dcmread(corpus.sent[uid], force=True), pydicom.dcmread(path, force=True))
        if diff:
            differences[corpus.sent[uid].name] = diff
    assert not differences


def test_cget_patient_level_patient_root(corpus: StoredCorpus) -> None:
    inst = next(i for i in corpus.archive.catalog.instances() if corpus.sent[i.sop_instance_uid].name == "CT_small.dcm")
    pid = str(pydicom.dcmread(corpus.sent[inst.sop_instance_uid], stop_before_pixels=True).PatientID)
    expected = {
        i.sop_instance_uid
        for row in corpus.archive.catalog.find("STUDY", {"PatientID": pid})
        for i in corpus.archive.catalog.instances(study_uid=row["StudyInstanceUID"])
    }
    files, proc = dcmtk.getscu(
        corpus.server.port,
        "PATIENT",
        {"PatientID": pid},
        corpus.workdir / "get-patient",
        aec=SCP_AET,
        model="-P",
        env=FAST,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {str(pydicom.dcmread(p, stop_before_pixels=True, force=True).SOPInstanceUID) for p in files}
    assert inst.sop_instance_uid in got and got <= expected


def test_cmove_series_level(corpus: StoredCorpus) -> None:
    inst = next(iter(corpus.archive.catalog.instances()))
    series = corpus.archive.catalog.instances(series_uid=inst.series_instance_uid)
    before = set(corpus.storescp.files())
    proc = dcmtk.movescu(
        corpus.server.port,
        "SERIES",
        {"StudyInstanceUID": inst.study_instance_uid, "SeriesInstanceUID": inst.series_instance_uid},
        destination="STORESCP",
        aec=SCP_AET,
        env=FAST,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = dcmtk.final_suboperations(proc.stdout + proc.stderr)
    assert counts.get("completed") == len(series) and counts.get("failed", 0) == 0
    assert len(set(corpus.storescp.files()) - before) <= len(series)  # storescp overwrites same-UID files


def test_cmove_unknown_destination(corpus: StoredCorpus) -> None:
    proc = dcmtk.movescu(corpus.server.port, "STUDY", {"StudyInstanceUID": "1.2.3"}, destination="NOWHERE", aec=SCP_AET)
    assert "0xa801" in (proc.stdout + proc.stderr).lower()


def _cget_only(port: int, study_uid: str, sop_class: str, syntaxes: list[str]) -> tuple[Dataset, list[Dataset]]:
    """C-GET a study with pynetdicom accepting only ``sop_class`` in ``syntaxes``."""
    got: list[Dataset] = []

    def on_store(event: object) -> int:
        got.append(event.dataset)  # type: ignore[attr-defined]
        return 0x0000

    from pynetdicom import evt

    ae = AE("GETONLY")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title=SCP_AET,
        ext_neg=[build_role(sop_class, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    statuses: list[Dataset] = []
    try:
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            statuses.append(status)
    finally:
        assoc.release()
    pending = [s for s in statuses if s.Status == 0xFF00]
    total = len(pending)
    for n, s in enumerate(pending, 1):  # every pending response carries the sub-operation counts
        done = s.NumberOfCompletedSuboperations + s.NumberOfFailedSuboperations + s.NumberOfWarningSuboperations
        assert done == n and s.NumberOfRemainingSuboperations == total - n
    return statuses[-1], got


def test_cget_counts_instances_without_accepted_context_as_failed(corpus: StoredCorpus) -> None:
    by_study: dict[str, list] = collections.defaultdict(list)
    for inst in corpus.archive.catalog.instances():
        by_study[inst.study_instance_uid].append(inst)
    # a study with instances of more than one SOP class, or at least one instance
    study, insts = max(by_study.items(), key=lambda kv: len({i.sop_class_uid for i in kv[1]}))
    accepted_class = insts[0].sop_class_uid
    final, got = _cget_only(
        corpus.server.port,
        study,
        accepted_class,
        sorted({i.transfer_syntax_uid for i in insts if i.sop_class_uid == accepted_class}),
    )
    expected_ok = [i for i in insts if i.sop_class_uid == accepted_class]
    assert len(got) == len(expected_ok)
    assert final.NumberOfCompletedSuboperations == len(expected_ok)
    assert final.NumberOfFailedSuboperations == len(insts) - len(expected_ok)
    if len(insts) > len(expected_ok):
        assert final.Status == 0xB000
        failed = set(final.FailedSOPInstanceUIDList) if "FailedSOPInstanceUIDList" in final else set()
        assert failed == {i.sop_instance_uid for i in insts if i.sop_class_uid != accepted_class}
    else:
        assert final.Status == 0x0000


def test_lossy_never_sent_as_lossless(corpus: StoredCorpus) -> None:
    lossy = [i for i in corpus.archive.catalog.instances() if i.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"]
    assert lossy
    inst = lossy[0]
    final, got = _cget_only(
        corpus.server.port,
        inst.study_instance_uid,
        inst.sop_class_uid,
        ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"],
    )  # lossless-only syntaxes
    assert got == []
    assert final.NumberOfFailedSuboperations >= 1


def test_cget_bad_identifier_is_a_clear_failure(corpus: StoredCorpus) -> None:
    ae = AE("GETBAD")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    assoc = ae.associate("127.0.0.1", corpus.server.port, ae_title=SCP_AET)
    assert assoc.is_established
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        statuses = [s for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    assert statuses[-1].Status == 0xA900
    assert "StudyInstanceUID" in statuses[-1].ErrorComment


def test_storage_classes_cover_the_corpus(corpus: StoredCorpus) -> None:
    classes = {i.sop_class_uid for i in corpus.archive.catalog.instances()}
    assert classes <= STORAGE_UIDS


def test_long_cmove_is_not_aborted_by_the_idle_timer(tmp_path: Path) -> None:
    """A C-MOVE outlasting network_timeout: the requestor's association sees no traffic meanwhile."""
    from pynetdicom import evt

    received: list[str] = []

    def slow_store(event: evt.Event) -> int:
        time.sleep(0.15)
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    dest = AE("SLOWDEST")
    dest.add_supported_context(SecondaryCaptureImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    port = free_port()
    dest_server = dest.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, slow_store)])
    try:
        peers = [{"ae_title": "SLOWDEST", "host": "127.0.0.1", "port": port}]
        with running_scp(tmp_path, peers=peers, dicom={"network_timeout": 1}) as (server, archive):
            study, series = generate_uid(), generate_uid()
            for n in range(1, 13):  # 12 x 0.15 s: about twice the network timeout
                ds = make_instance(study=study, series=series, sop_class=SecondaryCaptureImageStorage,
                                   instance_number=n)
                assert archive.ingest.ingest_part10(part10(ds)).ok
            proc = dcmtk.movescu(server.port, "STUDY", {"StudyInstanceUID": study}, destination="SLOWDEST", aec=SCP_AET)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "Peer aborted" not in output, output[-1500:]
        assert dcmtk.final_suboperations(output).get("completed") == 12
        assert len(received) == 12
    finally:
        dest_server.shutdown()
