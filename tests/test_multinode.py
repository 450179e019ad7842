"""Several stateless nodes sharing one PostgreSQL index and one S3 store."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from harness.postgres import PostgresServer
from harness.seaweedfs import SeaweedFS
from pacs_lite.archive import Archive
from tests.support.dicom import make_instance, part10
from tests.support.pacs import make_config


def _s3_config(tmp: Path, url: str, weed: SeaweedFS, bucket: str):  # noqa: ANN202
    return make_config(tmp, index_url=url, compression={"transfer_syntax": "none"}, storage={
        "backend": "s3", "endpoint": weed.endpoint, "bucket": bucket,
        "access_key": weed.access_key, "secret_key": weed.secret_key,
    })


def test_node_b_finds_and_reads_what_node_a_stored(tmp_path: Path, postgres: PostgresServer,
                                                   seaweedfs: SeaweedFS) -> None:
    url = postgres.create_database()
    bucket = "multinode-" + uuid.uuid4().hex[:8]
    node_a = Archive(_s3_config(tmp_path / "a", url, seaweedfs, bucket))
    ds = make_instance(patient_name="Shared^Patient")
    sent = part10(ds)
    try:
        assert node_a.ingest.ingest_part10(sent).status == "stored"
    finally:
        node_a.close()

    # node B is another process: nothing is shared with node A but PostgreSQL and S3
    code = (
        "import sys; from pacs_lite.archive import Archive; from tests.support.pacs import make_config\n"
        "from pacs_lite import dicomfile\n"
        "cfg = make_config(__import__('pathlib').Path(sys.argv[1]), index_url=sys.argv[2], storage={'backend': 's3',"
        " 'endpoint': sys.argv[3], 'bucket': sys.argv[4], 'access_key': sys.argv[5], 'secret_key': sys.argv[6]})\n"
        "b = Archive(cfg)\n"
        "[row] = b.catalog.find('STUDY', {'PatientName': 'SHARED*'})\n"
        "[inst] = b.catalog.instances(row['StudyInstanceUID'])\n"
        "sys.stdout.buffer.write(dicomfile.split_part10(b.retrieval.read(inst))[1].tobytes())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "b"), url, seaweedfs.endpoint, bucket,
         seaweedfs.access_key, seaweedfs.secret_key],
        capture_output=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    from pacs_lite import dicomfile

    assert out.stdout == dicomfile.split_part10(sent)[1].tobytes()


def test_two_nodes_ingest_the_same_study_concurrently(tmp_path: Path, postgres: PostgresServer,
                                                      seaweedfs: SeaweedFS) -> None:
    import threading

    from pydicom.uid import generate_uid

    url = postgres.create_database()
    bucket = "multinode-" + uuid.uuid4().hex[:8]
    nodes = [Archive(_s3_config(tmp_path / n, url, seaweedfs, bucket)) for n in ("a", "b")]
    study, series = generate_uid(), generate_uid()
    items = [make_instance(study=study, series=series, patient_id="MN") for _ in range(20)]
    errors: list[str] = []

    def send(node: Archive, chunk: list) -> None:
        for ds in chunk:
            r = node.ingest.ingest_part10(part10(ds))
            if not r.ok:
                errors.append(r.reason)
        # and each node sends the other's first instance again: a duplicate, not an error
        r = node.ingest.ingest_part10(part10(items[0]))
        if not r.ok:
            errors.append(r.reason)

    try:
        threads = [threading.Thread(target=send, args=(n, items[i::2])) for i, n in enumerate(nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        [row] = nodes[1].catalog.find("STUDY", {"StudyInstanceUID": study})
        assert row["NumberOfStudyRelatedInstances"] == 20
        keys = {o.key for o in nodes[0].store.iter_objects()}
        assert keys == {k for k, *_ in nodes[0].catalog.iter_objects()}
    finally:
        for n in nodes:
            n.close()
