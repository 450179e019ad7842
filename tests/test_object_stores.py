"""Contract tests for the blob stores, run against both backends.

The filesystem store runs in ``tmp_path``; the S3 store runs against a real
SeaweedFS (``weed mini``) with one fresh bucket per test. Failure paths (full disk,
unreachable server, hostile keys) get as much attention as the happy path, because a
PACS must never report an object stored that is not.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.net import LOOPBACK, free_port, listening_tcp_addresses
from harness.seaweedfs import SeaweedFS
from storage import (
    ChecksumMismatch,
    FilesystemStore,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StoreError,
    StoreUnavailable,
    open_store,
    sha256_hex,
)

HOSTILE_KEYS = [
    "../../x",
    "/abs",
    "a/../b",
    "A B",
    "",
    "a//b",
    ".tmp/x",
    "a/",
    "x\x00y",
    "a\\b",
]


def unique_bucket() -> str:
    """A bucket name no other test uses."""
    return f"t-{uuid.uuid4().hex[:16]}"


def s3_store(server: SeaweedFS, bucket: str | None = None, **kwargs: object) -> S3Store:
    """An :class:`S3Store` on the test server, failing fast when it is down."""
    options: dict = {"timeout": 5.0, "retries": 2, **kwargs}
    return S3Store(
        server.endpoint,
        bucket or unique_bucket(),
        server.access_key,
        server.secret_key,
        **options,
    )


def drop_bucket(server: SeaweedFS, bucket: str) -> None:
    """Delete a test bucket and its objects (frees the SeaweedFS volume it used)."""
    if not server.running:
        return
    client = server.client()
    if not client.bucket_exists(bucket):
        return
    for obj in client.list_objects(bucket, recursive=True):
        client.remove_object(bucket, obj.object_name)
    client.remove_bucket(bucket)


@pytest.fixture(params=["filesystem", pytest.param("s3", marks=pytest.mark.peers)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """Each backend in turn, empty."""
    if request.param == "filesystem":
        yield FilesystemStore(tmp_path / "objects")
        return
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    s3 = s3_store(server)
    try:
        yield s3
    finally:
        s3.close()
        drop_bucket(server, s3.bucket)


def keys_of(store: ObjectStore, prefix: str = "") -> set[str]:
    return {info.key for info in store.iter_objects(prefix)}


# -- the contract, on both backends ----------------------------------------------


def test_put_get_round_trip(store: ObjectStore) -> None:
    blobs = {
        "a.dcm": b"DICM" * 10,
        "studies/s1/series/x1/i1.dcm": bytes(range(256))
        * 4096,  # 1 MiB, every byte value
        "empty": b"",
    }
    for key, data in blobs.items():
        store.put(key, data)
    for key, data in blobs.items():
        assert store.exists(key)
        assert store.get(key) == data
        assert store.get(key, expected_sha256=sha256_hex(data)) == data
        with store.open(key) as stream:
            assert stream.read() == data


def test_overwrite_replaces_whole_object(store: ObjectStore) -> None:
    store.put("k/obj.dcm", b"a much longer first version")
    store.put("k/obj.dcm", b"short")
    assert store.get("k/obj.dcm") == b"short"
    [info] = list(store.iter_objects())
    assert (info.key, info.size) == ("k/obj.dcm", 5)


def test_wrong_checksum_is_detected(store: ObjectStore) -> None:
    store.put("obj", b"payload")
    with pytest.raises(ChecksumMismatch):
        store.get("obj", expected_sha256=sha256_hex(b"other payload"))


def test_missing_object(store: ObjectStore) -> None:
    store.put("present", b"x")  # the bucket/root exists; only the key is missing
    with pytest.raises(ObjectNotFound):
        store.get("absent/obj.dcm")
    with pytest.raises(ObjectNotFound):
        store.open("absent")
    assert not store.exists("absent")


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put("d/obj", b"x")
    store.delete("d/obj")
    store.delete("d/obj")
    store.delete("never/existed")
    assert not store.exists("d/obj")
    with pytest.raises(ObjectNotFound):
        store.get("d/obj")
    assert keys_of(store) == set()


def test_iter_objects_lists_exactly_what_was_put(store: ObjectStore) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    sizes = {"s1/a.dcm": 3, "s1/b.dcm": 1, "s2/deep/c.dcm": 10, "top": 0}
    for key, size in sizes.items():
        store.put(key, b"z" * size)
    infos = list(store.iter_objects())
    assert {i.key: i.size for i in infos} == sizes
    assert len(infos) == len(sizes)
    for info in infos:
        assert info.modified.tzinfo is not None
        assert before < info.modified < before + dt.timedelta(minutes=10)
    assert keys_of(store, "s1/") == {"s1/a.dcm", "s1/b.dcm"}
    assert keys_of(store, "s2/de") == {"s2/deep/c.dcm"}
    assert keys_of(store, "t") == {"top"}
    assert keys_of(store, "nothing") == set()


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_are_refused_and_nothing_is_written(
    store: ObjectStore, key: str, tmp_path: Path
) -> None:
    for call in (
        lambda: store.put(key, b"evil"),
        lambda: store.get(key),
        lambda: store.open(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidKey):
            call()
    assert keys_of(store) == set()
    # Nothing at all landed on disk, inside or outside the store's root.
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []


@pytest.mark.parametrize("prefix", ["../", "/etc", "a/../../b", "X"])
def test_hostile_prefixes_are_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        list(store.iter_objects(prefix))


def test_check_passes_on_a_healthy_store(store: ObjectStore) -> None:
    store.check()


# -- filesystem-specific -----------------------------------------------------------


def _fail_file_fsync(code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make fsync of regular files fail with ``code`` (directory fsyncs still work)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_filesystem_disk_full_leaves_no_object_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = FilesystemStore(tmp_path)
    fs.put("s/old.dcm", b"old bytes")
    _fail_file_fsync(errno.ENOSPC, monkeypatch)
    with pytest.raises(StoreUnavailable, match="disk full"):
        fs.put("s/old.dcm", b"new bytes")
    with pytest.raises(StoreUnavailable, match="disk full"):
        fs.put("s/new.dcm", b"new bytes")
    monkeypatch.undo()
    assert fs.get("s/old.dcm") == b"old bytes"  # the previous version is intact
    assert not fs.exists("s/new.dcm")
    assert keys_of(fs) == {"s/old.dcm"}
    assert list(fs.temp_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "message"),
    [(errno.EROFS, "read-only"), (errno.EDQUOT, "quota"), (errno.EIO, "I/O error")],
)
def test_filesystem_rename_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, message: str
) -> None:
    fs = FilesystemStore(tmp_path)

    def replace(src: str, dst: str) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(StoreUnavailable, match=message):
        fs.put("x/y.dcm", b"data")
    monkeypatch.undo()
    assert keys_of(fs) == set()
    assert list(fs.temp_dir.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_filesystem_read_only_directory(tmp_path: Path) -> None:
    fs = FilesystemStore(tmp_path / "root")
    fs.put("a/b", b"1")
    (tmp_path / "root" / "a").chmod(0o500)
    try:
        with pytest.raises(StoreUnavailable, match="permission denied"):
            fs.put("a/c", b"2")
    finally:
        (tmp_path / "root" / "a").chmod(0o700)
    assert keys_of(fs) == {"a/b"}
    assert list(fs.temp_dir.iterdir()) == []


def test_filesystem_check_fails_when_root_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    with pytest.raises(StoreUnavailable):
        FilesystemStore(blocker).check()
    with pytest.raises(StoreUnavailable):
        FilesystemStore(blocker).put("k", b"v")


def test_filesystem_refuses_symlink_out_of_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "evil").symlink_to(outside)
    fs = FilesystemStore(root)
    with pytest.raises(StoreError):
        fs.put("evil/x.dcm", b"escape")
    with pytest.raises(StoreError):
        fs.get("evil/x.dcm")
    assert list(outside.iterdir()) == []


def test_filesystem_stale_temp_sweep(tmp_path: Path) -> None:
    fs = FilesystemStore(tmp_path)
    fs.put("kept", b"k")
    stale = fs.temp_dir / "crashed.part"
    fresh = fs.temp_dir / "in-flight.part"
    foreign = fs.temp_dir / "note.txt"
    two_hours_ago = time.time() - 7200
    for path in (stale, fresh, foreign):
        path.write_bytes(b"partial")
    for path in (stale, foreign):
        os.utime(path, (two_hours_ago, two_hours_ago))

    assert keys_of(fs) == {"kept"}  # temp files are never listed as objects
    hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert list(fs.iter_temp_files(hour_ago)) == [stale]
    assert fs.sweep_temp(older_than_seconds=3600) == 1
    assert not stale.exists()
    assert fresh.exists() and foreign.exists()
    assert fs.sweep_temp(older_than_seconds=3600) == 0


def test_filesystem_listing_skips_stray_files(tmp_path: Path) -> None:
    fs = FilesystemStore(tmp_path)
    fs.put("good/key.dcm", b"x")
    (tmp_path / "good" / "Stray File.txt").write_bytes(b"hand-made")
    assert keys_of(fs) == {"good/key.dcm"}


# -- S3-specific -------------------------------------------------------------------


def test_s3_closed_port_fails_fast() -> None:
    port = free_port()  # nothing listens here
    s3 = S3Store(
        f"{LOOPBACK}:{port}", "some-bucket", "ak", "secretkey", timeout=2.0, retries=3
    )
    for call in (
        s3.check,
        lambda: s3.put("k", b"v"),
        lambda: s3.get("k"),
        lambda: s3.exists("k"),
    ):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        elapsed = time.monotonic() - started
        assert elapsed < 15, f"took {elapsed:.1f} s"
        assert elapsed >= 0.6  # the backoff 0.1 + 0.2 + 0.4 s really happened


def test_s3_silent_server_times_out() -> None:
    """A server that accepts connections but never answers must not hang the client."""
    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever replies
        port = silent.getsockname()[1]
        s3 = S3Store(
            f"{LOOPBACK}:{port}",
            "some-bucket",
            "ak",
            "secretkey",
            timeout=1.0,
            retries=1,
        )
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            s3.put("k", b"v")
        assert time.monotonic() - started < 10


class _AlwaysBusy(BaseHTTPRequestHandler):
    """Answers every request with 503 SlowDown and counts them."""

    requests = 0

    def _busy(self) -> None:
        type(self).requests += 1
        body = b"<Error><Code>SlowDown</Code><Message>slow down</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _busy

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_s3_retries_transient_errors_then_gives_up() -> None:
    server = ThreadingHTTPServer((LOOPBACK, 0), _AlwaysBusy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"{LOOPBACK}:{server.server_address[1]}"
        s3 = S3Store(
            endpoint, "b-busy", "ak", "secretkey", region="us-east-1", retries=3
        )
        _AlwaysBusy.requests = 0
        with pytest.raises(StoreUnavailable, match="after 4 attempts"):
            s3.get("k")
        assert _AlwaysBusy.requests == 4
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_s3_missing_bucket_without_create(seaweedfs: SeaweedFS) -> None:
    s3 = s3_store(seaweedfs, create_bucket=False)
    with pytest.raises(StoreUnavailable, match="does not exist"):
        s3.check()
    with pytest.raises(StoreUnavailable):
        s3.put("k", b"v")
    assert not seaweedfs.client().bucket_exists(s3.bucket)


def test_s3_object_carries_its_sha256(seaweedfs: SeaweedFS) -> None:
    s3 = s3_store(seaweedfs)
    try:
        s3.put("meta/obj", b"hello")
        stat_result = seaweedfs.client().stat_object(s3.bucket, "meta/obj")
        assert stat_result.metadata["x-amz-meta-sha256"] == sha256_hex(b"hello")
    finally:
        drop_bucket(seaweedfs, s3.bucket)


# -- the SeaweedFS test server itself ----------------------------------------------


def test_seaweedfs_listens_only_on_loopback_and_chosen_ports(
    seaweedfs: SeaweedFS,
) -> None:
    assert seaweedfs.pid is not None
    expected = {(LOOPBACK, port) for port in seaweedfs.ports.values()}
    assert listening_tcp_addresses(seaweedfs.pid) == expected


def test_seaweedfs_restart_keeps_objects(seaweedfs: SeaweedFS) -> None:
    s3 = s3_store(seaweedfs, retries=1, timeout=2.0)
    try:
        s3.put("durable/obj.dcm", b"survives a restart")
        seaweedfs.stop()
        try:
            with pytest.raises(StoreUnavailable):
                s3.put("durable/other.dcm", b"refused while down")
        finally:
            seconds = seaweedfs.start()
        assert seconds < 30
        assert (
            s3.get("durable/obj.dcm", sha256_hex(b"survives a restart"))
            == b"survives a restart"
        )
        assert keys_of(s3) == {"durable/obj.dcm"}
    finally:
        drop_bucket(seaweedfs, s3.bucket)


def test_seaweedfs_crash_and_restart_keeps_acknowledged_objects(
    seaweedfs: SeaweedFS,
) -> None:
    s3 = s3_store(seaweedfs, retries=1, timeout=2.0)
    try:
        s3.put("crash/obj.dcm", b"acknowledged")
        seaweedfs.kill()  # SIGKILL: no graceful shutdown
        try:
            with pytest.raises(StoreUnavailable):
                s3.get("crash/obj.dcm")
        finally:
            seaweedfs.start()
        assert s3.get("crash/obj.dcm") == b"acknowledged"
    finally:
        drop_bucket(seaweedfs, s3.bucket)


# -- the factory and the package boundary ------------------------------------------


def test_open_store_builds_each_backend(tmp_path: Path) -> None:
    fs = open_store("filesystem", path=tmp_path)
    assert isinstance(fs, FilesystemStore) and fs.backend == "filesystem"
    s3 = open_store(
        "s3", endpoint="127.0.0.1:9", bucket="b-x", access_key="a", secret_key="s"
    )
    assert isinstance(s3, S3Store) and s3.backend == "s3"


@pytest.mark.parametrize(
    ("backend", "settings", "named"),
    [
        ("filesystem", {}, "path"),
        (
            "s3",
            {"endpoint": "127.0.0.1:9", "access_key": "a", "secret_key": "s"},
            "bucket",
        ),
        ("s3", {"bucket": "b-x", "access_key": "a", "secret_key": "s"}, "endpoint"),
        (
            "s3",
            {
                "endpoint": "http://h:9",
                "bucket": "b-x",
                "access_key": "a",
                "secret_key": "s",
            },
            "endpoint",
        ),
        (
            "s3",
            {
                "endpoint": "h:9",
                "bucket": "Bad_Bucket",
                "access_key": "a",
                "secret_key": "s",
            },
            "bucket",
        ),
        ("ftp", {}, "backend"),
    ],
)
def test_open_store_names_the_bad_setting(
    backend: str, settings: dict, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        open_store(backend, **settings)


def test_storage_package_is_self_contained() -> None:
    code = (
        "import sys, storage; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pacs_lite', 'dicom_scp', 'viewer'}); print(bad); sys.exit(bool(bad))"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
