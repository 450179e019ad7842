"""Nothing acknowledged is ever lost: crashes, outages, a full disk, bit rot and load.

Every test runs ``pacs-lite serve`` as a real process, sends with dcmtk's ``storescu``
(or STOW-RS), keeps a ledger of what was acknowledged, injects one fault, and then
checks through WADO-RS that every acknowledged instance is there with identical pixels.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from harness import dcmtk
from harness.postgres import PostgresServer
from harness.seaweedfs import SeaweedFS
from tests.support.dicom import make_instance, part10
from tests.support.http import stow
from tests.support.ledger import Ledger, write_series
from tests.support.pacs import pacs_lite
from tests.support.server import PacsServer

pytestmark = pytest.mark.peers  # PACS-lite servers, dcmtk, PostgreSQL and SeaweedFS

#: storescu gives up on a silent peer after a minute, whatever the step.
STORESCU_TIMEOUTS = ["-to", "60", "-ta", "60", "-td", "60"]


def send(server: PacsServer, files: list[Path], timeout: float = 600) -> dict[str, dcmtk.StoreOutcome]:
    """storescu ``files`` to ``server`` in one association, stopping at the first failure as a modality does."""
    acks, _ = dcmtk.storescu(server.dicom_port, files, aec=server.ae_title, extra=STORESCU_TIMEOUTS,
                             env={"TCP_NODELAY": "1"}, timeout=timeout, halt=True)
    return acks


def outcomes(acks: dict[str, dcmtk.StoreOutcome]) -> list[str]:
    """The outcome of every file, in the order they were given."""
    return [o.outcome for o in acks.values()]


def cli(server: PacsServer, *args: str) -> subprocess.CompletedProcess[str]:
    return pacs_lite(*args, cwd=server.workdir, env=server.environment(), timeout=300)


def wait_compressed(server: PacsServer, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = requests.get(f"{server.base_url}/metrics", timeout=10).text
        backlog = [ln for ln in text.splitlines() if ln.startswith("pacs_lite_compression_backlog ")]
        if backlog and float(backlog[0].split()[1]) == 0:
            return
        time.sleep(0.5)
    raise AssertionError("compression backlog did not drain")


def verify_clean_after_repair(server: PacsServer) -> None:
    repaired = cli(server, "verify", "--repair", "--grace", "0")
    assert "0 missing, 0 corrupt" in repaired.stdout, repaired.stdout + repaired.stderr
    clean = cli(server, "verify", "--grace", "0")
    assert clean.returncode == 0, clean.stdout + clean.stderr


@pytest.mark.parametrize("point", ["ingest.after_parse", "ingest.after_object_write", "ingest.after_index_commit"])
def test_sigkill_during_ingest_loses_no_acknowledged_instance(tmp_path: Path, point: str) -> None:
    files = write_series(tmp_path / "in", 12)
    server = PacsServer(tmp_path / "node")
    ledger = Ledger()
    try:
        server.start(env={"PACSLITE_TEST_CRASH_AT": point, "PACSLITE_TEST_CRASH_AFTER": "5"})
        acks = send(server, files)
        assert 3 <= ledger.record_acks(acks) <= 5, acks  # the fifth may have been acknowledged first
        assert set(outcomes(acks)) != {"stored"}, "the crash point was not reached"
        assert server.wait_exit(60) is not None, "the server must stop when its SCP dies"
        server.kill()
        server.start()
        assert ledger.missing(server.dicomweb) == []
        again = send(server, files)  # the modality retries
        assert outcomes(again) == ["stored"] * len(files), again
        ledger.record_acks(again)
        wait_compressed(server)
        assert ledger.missing(server.dicomweb) == []
        verify_clean_after_repair(server)
    finally:
        server.kill()


@pytest.mark.parametrize("point", ["compress.after_object_write", "compress.after_index_switch",
                                   "compress.before_original_delete"])
def test_sigkill_during_compression_loses_nothing(tmp_path: Path, point: str) -> None:
    files = write_series(tmp_path / "in", 6, size=128)
    server = PacsServer(tmp_path / "node", settings={"COMPRESSION_WORKERS": "1"})
    ledger = Ledger()
    try:
        server.start(env={"PACSLITE_TEST_CRASH_AT": point})
        ledger.record_acks(send(server, files))
        assert len(ledger.entries) == len(files)
        deadline = time.monotonic() + 60
        while "compression worker exited" not in server.log_tail(200):
            assert time.monotonic() < deadline, "the worker never reached the crash point"
            time.sleep(0.2)
        server.kill()  # and then the whole server, mid-flight
        server.start(env={"PACS_LITE_COMPRESSION_TIMEOUT_SECONDS": "2"})  # leases of dead jobs expire fast
        assert ledger.missing(server.dicomweb) == []
        wait_compressed(server)
        assert ledger.missing(server.dicomweb) == []
        verify_clean_after_repair(server)
    finally:
        server.kill()


def test_s3_outage_fails_clearly_and_recovers_without_restart(tmp_path: Path, postgres: PostgresServer) -> None:
    weed = SeaweedFS(tmp_path / "weed")
    weed.start()
    server = PacsServer(tmp_path / "node", settings={
        "INDEX_URL": postgres.create_database(), "STORAGE_BACKEND": "s3", "STORAGE_ENDPOINT": weed.endpoint,
        "STORAGE_ACCESS_KEY": weed.access_key, "STORAGE_SECRET_KEY": weed.secret_key, "STORAGE_BUCKET": "outage",
    })
    ledger = Ledger()
    try:
        server.start()
        before = write_series(tmp_path / "a", 5, seed=1)
        ledger.record_acks(send(server, before))
        assert len(ledger.entries) == 5
        weed.stop()
        during = write_series(tmp_path / "b", 3, seed=2)
        started = time.monotonic()
        acks = send(server, during)
        assert "failed" in outcomes(acks) and "stored" not in outcomes(acks), \
            f"nothing can be acknowledged while the store is down: {acks}"
        assert time.monotonic() - started < 3 * 60, "failures come back within the DIMSE timeout, no hang"
        stowed = stow(server.dicomweb, [part10(make_instance())])
        assert stowed.status_code in (503, 409, 202), stowed.text
        qido = requests.get(f"{server.dicomweb}/studies", timeout=30)
        assert qido.status_code == 200 and len(qido.json()) >= 1, "queries keep working without the store"
        weed.start()
        acks = send(server, during)
        assert outcomes(acks) == ["stored"] * 3, f"service resumes by itself once the store is back: {acks}"
        ledger.record_acks(acks)
        wait_compressed(server)
        assert ledger.missing(server.dicomweb) == []
        verify_clean_after_repair(server)
    finally:
        server.kill()
        weed.close()


def test_postgres_outage_fails_clearly_and_recovers_without_restart(tmp_path: Path) -> None:
    pg = PostgresServer(tmp_path / "pg").start(private=True)
    server = PacsServer(tmp_path / "node", settings={"INDEX_URL": pg.create_database()})
    ledger = Ledger()
    try:
        server.start()
        ledger.record_acks(send(server, write_series(tmp_path / "a", 5, seed=3)))
        assert len(ledger.entries) == 5
        pg.pause()
        during = write_series(tmp_path / "b", 3, seed=4)
        started = time.monotonic()
        acks = send(server, during)
        assert "failed" in outcomes(acks) and "stored" not in outcomes(acks), acks
        assert time.monotonic() - started < 3 * 60
        ready = requests.get(f"{server.base_url}/readyz", timeout=30)
        assert ready.status_code == 503
        pg.resume()
        deadline = time.monotonic() + 60
        while requests.get(f"{server.base_url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        acks = send(server, during)
        assert outcomes(acks) == ["stored"] * 3, acks
        ledger.record_acks(acks)
        wait_compressed(server)
        assert ledger.missing(server.dicomweb) == []
        verify_clean_after_repair(server)
    finally:
        server.kill()
        pg.stop()


def test_disk_full_answers_out_of_resources_and_writes_nothing_partial(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"this machine cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    server = PacsServer(tmp_path / "node", settings={"STORAGE_PATH": str(mount / "objects"),
                                                     "COMPRESSION_TRANSFER_SYNTAX": "none"})
    ledger = Ledger()
    try:
        server.start()
        files = write_series(tmp_path / "in", 40, size=256)  # 40 x 128 KiB > 2 MiB
        acks = send(server, files)
        stored = ledger.record_acks(acks)
        assert 0 < stored < len(files), "the disk fills part-way"
        objects = [p for p in (mount / "objects").rglob("*.dcm") if ".tmp" not in p.parts]
        assert len(objects) == stored, "exactly the acknowledged objects are on disk"
        assert not list((mount / "objects").rglob(".tmp/*")), "no temporary file is left behind"
        stowed = stow(server.dicomweb, [part10(make_instance(rows=512, columns=512))])
        assert stowed.status_code in (507, 503, 409, 202), stowed.text
        assert ledger.missing(server.dicomweb) == []
        assert cli(server, "verify", "--grace", "0").returncode == 0
    finally:
        server.kill()
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_flipped_byte_is_detected_by_wado_and_verify(tmp_path: Path) -> None:
    server = PacsServer(tmp_path / "node", settings={"COMPRESSION_TRANSFER_SYNTAX": "none"})
    ledger = Ledger()
    try:
        server.start()
        ledger.record_acks(send(server, write_series(tmp_path / "in", 2)))
        [victim] = sorted((server.workdir / "pacs-data" / "objects" / "instances").rglob("*.dcm"))[:1]
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
        problems = ledger.missing(server.dicomweb)
        assert len(problems) == 1 and "HTTP 5" in problems[0], problems
        out = cli(server, "verify", "--grace", "0")
        assert out.returncode == 1 and "1 corrupt" in out.stdout
    finally:
        server.kill()


SOAK_SECONDS = float(os.environ.get("PACSLITE_SOAK_SECONDS", "300"))


@pytest.mark.timeout(SOAK_SECONDS + 900)
def test_soak_four_senders_and_readers(tmp_path: Path) -> None:
    """Four storescu senders for five minutes while QIDO and WADO readers run."""
    server = PacsServer(tmp_path / "node")
    ledger = Ledger()
    failures: list[str] = []
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    try:
        server.start()
        started = time.monotonic()

        def sender(n: int) -> None:
            batch = 0
            while not stop.is_set():
                files = write_series(tmp_path / f"s{n}" / f"{batch}", 20, seed=n * 1000 + batch)
                acks = send(server, files, timeout=300)
                stored = outcomes(acks).count("stored")
                if stored != len(files):
                    failures.append(f"sender {n} batch {batch}: {stored}/{len(files)} acknowledged")
                ledger.record_acks(acks)
                for f in files:
                    f.unlink()
                batch += 1

        def reader() -> None:
            session = requests.Session()
            while not stop.is_set():
                r = session.get(f"{server.dicomweb}/studies?limit=20", timeout=30)
                if r.status_code != 200:
                    failures.append(f"QIDO {r.status_code}")
                    continue
                for study in r.json()[:2]:
                    uid = study["0020000D"]["Value"][0]
                    m = session.get(f"{server.dicomweb}/studies/{uid}/metadata", timeout=30)
                    if m.status_code != 200:
                        failures.append(f"metadata {m.status_code}")
                time.sleep(0.2)

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
        threads.append(threading.Thread(target=reader))
        for t in threads:
            t.start()
        while time.monotonic() - started < SOAK_SECONDS:
            time.sleep(5)
            samples.append((time.monotonic() - started, server.rss_kb(), server.open_fds()))
        stop.set()
        for t in threads:
            t.join(600)
        assert failures == []
        assert len(ledger.entries) >= 200
        wait_compressed(server, timeout=600)
        assert ledger.missing(server.dicomweb) == []
        settled = [s for s in samples if s[0] >= min(60, SOAK_SECONDS / 3)]
        if len(settled) >= 2:
            rss = [s[1] for s in settled]
            fds = [s[2] for s in settled]
            assert max(rss) < min(rss) * 1.5 + 50_000, f"RSS grows: {rss}"
            assert max(fds) <= min(fds) + 20, f"file descriptors grow: {fds}"
    finally:
        stop.set()
        server.kill()
