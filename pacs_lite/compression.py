"""Lossless compression at rest, off the receiving path.

Ingest acknowledges once the received bytes are durable and queues a ``compress`` job
in the index. Worker processes (any node; several per node to use every core) claim
jobs, compress with :func:`storage.pixels.compress` (which decodes the result and
compares it with the original pixels), write the compressed object under a new key,
switch the index row to it with a compare-and-swap, and only then delete the original.
A crash at any point leaves the index pointing at either the original or the verified
compressed object; the other one is an orphan that the sweeper removes.

Compression runs only here, in workers with a memory limit (the server processes decode
only to transcode or render what a client asks for); a job that crashes or hangs its
worker is retried twice, then the instance is kept as received with the reason recorded.
"""

from __future__ import annotations

import ctypes
import io
import logging
import multiprocessing
import os
import resource
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from storage import StoreError

from . import dicomfile, dicomheader
from .activity import ReceivingSignal, YieldToReceiving
from .archive import Archive
from .catalog import CatalogUnavailable, CompressionState, StoredInstance
from .config import Config
from .faults import crash_point
from .metrics import COMPRESSION, count_error
from .retrieval import Failure, RetrievalError, encode_part10
from .tags import PIXEL_DATA

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


class JobTimeout(Exception):
    pass


@dataclass(frozen=True)
class CompressionOutcome:
    state: str  # "compressed", "kept", "skipped", "retry"
    note: str = ""
    stored_bytes: int = 0
    original_bytes: int = 0
    job_finished: bool = False  # the job was marked done with the index switch


def compress_instance(archive: Archive, sop_instance_uid: str, target: str, *,
                      job_id: int | None = None) -> CompressionOutcome:
    """Compress one pending instance to ``target``; see the module docstring for the order of work.

    ``job_id`` (the compression job being run) is marked done in the index switch's transaction.
    """
    from storage import pixels

    inst = archive.catalog.lookup_instance(sop_instance_uid)
    if inst is None or inst.compression_state != CompressionState.PENDING:
        return CompressionOutcome("skipped", "not pending")
    try:
        data = archive.retrieval.read(inst)
    except RetrievalError as exc:
        if exc.kind is Failure.UNAVAILABLE:
            return CompressionOutcome("retry", str(exc))
        archive.catalog.set_compression_state(inst.sop_instance_uid, inst.object_key, CompressionState.KEPT, str(exc))
        return CompressionOutcome("kept", str(exc))
    try:
        encoded = compress_spliced(data, target)
        if encoded is None:
            encoded = encode_part10(pixels.compress(dicomfile.read_part10(data), target, verify=True), target)
    except pixels.VerificationFailed as exc:
        count_error("verification_failed")
        log.error("compression verification failed; original kept (key %s): %s", inst.object_key, exc)
        return _keep(archive, inst, f"verification failed: {exc}")
    except pixels.CodecUnsupported as exc:
        return _keep(archive, inst, getattr(exc, "reason", "") or str(exc))
    except pixels.CodecError as exc:
        return _keep(archive, inst, f"codec error: {exc}")
    if len(encoded) >= len(data):
        return _keep(archive, inst, "compressed object would not be smaller")
    import hashlib

    key = dicomfile.new_object_key()
    try:
        archive.store.put(key, encoded)
    except StoreError as exc:
        return CompressionOutcome("retry", f"storage unavailable: {exc}")
    crash_point("compress.after_object_write")
    switched = archive.catalog.replace_object(
        inst.sop_instance_uid, inst.object_key, object_key=key, object_size=len(encoded),
        object_sha256=hashlib.sha256(encoded).hexdigest(), transfer_syntax_uid=target,
        compression_state=CompressionState.COMPRESSED, compression_note=f"{len(data)} -> {len(encoded)} bytes",
        finish_job=job_id,
    )
    crash_point("compress.after_index_switch")
    if not switched:  # the instance changed meanwhile (new revision, deletion)
        _delete_quietly(archive, key)
        return CompressionOutcome("skipped", "instance changed during compression")
    crash_point("compress.before_original_delete")
    _delete_quietly(archive, inst.object_key)
    return CompressionOutcome("compressed", "", len(encoded), len(data), job_finished=job_id is not None)


#: What the codec reads of a dataset: the Image Pixel attributes and the pixel data elements.
_PIXEL_MODULE = ["Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit",
                 "PixelRepresentation", "PlanarConfiguration", "PhotometricInterpretation", "PixelData"]
_PIXEL_DATA_HEADER = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)  # encapsulated: undefined length
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
#: A group length that would go stale, an extended offset table, float pixel data: the general path.
_NO_SPLICE = (0x7FE00000, 0x7FE00001, 0x7FE00002, 0x7FE00008, 0x7FE00009)


def compress_spliced(data: bytes, target: str) -> bytes | None:
    """Compress a stored object by replacing its *Pixel Data* element and nothing else.

    For the common case (explicit VR little endian, one sample per pixel, *Pixel Data*
    the last element) every other element stays byte for byte as received, and neither
    the whole dataset is copied nor written again by pydicom: that was 9 of ~34 ms per
    CT slice. The codec (with its decode-and-compare verification) runs on a dataset
    holding the Image Pixel attributes only. ``None`` when the general path is needed
    (other syntaxes must be re-encoded element by element, colour may be relabelled).

    Raises what :func:`storage.pixels.compress` raises.
    """
    from storage import pixels

    transfer_syntax, body = dicomfile.split_part10(data)
    if transfer_syntax != ExplicitVRLittleEndian:
        return None
    header = dicomheader.read_header(body, transfer_syntax)
    span = header.value_span(PIXEL_DATA)
    if span is None or any(header.has(tag) for tag in _NO_SPLICE) or (header.int(0x00280002) or 1) != 1:
        return None
    start, length = span
    if length == 0xFFFFFFFF or start < 12 or start + length != len(body) or bytes(body[start - 12:start - 8]) != b"\xe0\x7f\x10\x00":
        return None  # already encapsulated, or elements after Pixel Data: the general path keeps them right
    pixel_module = pydicom.dcmread(io.BytesIO(data), specific_tags=_PIXEL_MODULE)
    out = pixels.compress(pixel_module, target, verify=True)
    if out.get("PhotometricInterpretation") != pixel_module.get("PhotometricInterpretation"):
        return None  # relabelled: the general path writes the new value
    encapsulated = b"".join((_PIXEL_DATA_HEADER, out.PixelData, _SEQUENCE_DELIMITER))
    new_body = b"".join((body[:start - 12], encapsulated))
    dicomheader.read_header(new_body, target)  # the spliced dataset is well formed (cheap: no values decoded)
    return dicomfile.with_dataset(data, target, new_body)


def _keep(archive: Archive, inst: StoredInstance, note: str) -> CompressionOutcome:
    archive.catalog.set_compression_state(inst.sop_instance_uid, inst.object_key, CompressionState.KEPT, note)
    return CompressionOutcome("kept", note)


def _delete_quietly(archive: Archive, key: str) -> None:
    try:
        archive.store.delete(key)
    except StoreError as exc:
        log.warning("could not delete object %s (left for the sweeper): %s", key, exc)


def run_one_job(archive: Archive, worker_name: str, timeout: int) -> bool:
    """Claim and run one compression job; return whether there was one."""
    claimed = archive.catalog.jobs.claim(["compress"], worker_name, lease_seconds=timeout * 2 + 5)
    if claimed is None:
        return False
    job_id, _kind, payload, attempts = claimed
    uid = payload.get("sop_instance_uid", "")
    target = archive.config.get("compression", "transfer_syntax")
    if attempts > MAX_ATTEMPTS:
        inst = archive.catalog.lookup_instance(uid)
        if inst is not None and inst.compression_state == CompressionState.PENDING:
            _keep(archive, inst, f"compression failed {MAX_ATTEMPTS} times (worker crash or timeout)")
        _finish(archive, job_id, error="too many attempts")
        return True
    if target == "none":
        _finish(archive, job_id)
        return True
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(timeout)
    try:
        outcome = compress_instance(archive, uid, target, job_id=job_id)
    except JobTimeout:
        inst = archive.catalog.lookup_instance(uid)
        if inst is not None and inst.compression_state == CompressionState.PENDING:  # not if it timed out after the switch
            _keep(archive, inst, f"compression timed out after {timeout} s")
        _finish(archive, job_id, error="timed out")
        return True
    except MemoryError:
        inst = archive.catalog.lookup_instance(uid)
        if inst is not None and inst.compression_state == CompressionState.PENDING:
            _keep(archive, inst, "compression exceeded the worker memory limit")
        _finish(archive, job_id, error="memory limit")
        return True
    except CatalogUnavailable as exc:
        _finish(archive, job_id, error=str(exc), retry_in=30)
        return True
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure keeps the original, never kills the worker
        log.exception("compression failed unexpectedly (%s); original kept", type(exc).__name__)
        inst = archive.catalog.lookup_instance(uid)
        if inst is not None and inst.compression_state == CompressionState.PENDING:
            _keep(archive, inst, f"compression failed: {type(exc).__name__}")
        _finish(archive, job_id, error=type(exc).__name__)
        return True
    finally:
        signal.alarm(0)
    COMPRESSION.labels(outcome.state).inc()
    if outcome.state == "retry":
        _finish(archive, job_id, error=outcome.note, retry_in=min(300, 5 * 2**attempts))
    elif not outcome.job_finished:
        _finish(archive, job_id)
    return True


def _finish(archive: Archive, job_id: int, **outcome: object) -> None:
    """Record a job's outcome, waiting out an index outage rather than leaving the job claimed
    (a claimed job would otherwise wait for its lease to expire before anyone retried it)."""
    delay = 0.5
    while True:
        try:
            archive.catalog.jobs.finish(job_id, **outcome)  # type: ignore[arg-type]
            return
        except CatalogUnavailable:
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _on_alarm(signum: int, frame: object) -> None:
    raise JobTimeout()


def worker_name(pid: int) -> str:
    """How a worker signs the jobs it claims: this host and its process id."""
    return f"{socket.gethostname()}:{pid}"


def release_dead_workers_jobs(archive: Archive) -> int:
    """Requeue jobs claimed by worker processes of this host that no longer exist.

    Run at start-up, so that a restart after a crash does not wait for leases to expire.
    """
    prefix = worker_name(0)[:-1]
    dead = []
    for name in archive.catalog.jobs.running_claimed_on(prefix):
        pid = name[len(prefix):]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            dead.append(name)
    return archive.catalog.jobs.release(dead)


def worker_main(config: Config, stop: Any = None, *, once: bool = False) -> None:
    """Body of one compression worker process: claim jobs until told to stop."""
    limit = config.get("compression", "max_memory_mb") * 1024 * 1024
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        log.warning("could not set the worker memory limit")
    # the parent decides when we stop (SIGTERM to the process group must not cut a job short)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    # receiving comes first: a modality waits for each acknowledgement, compression can wait
    try:
        os.nice(10)
    except OSError:
        pass
    archive = Archive(config, migrate=False)
    name = worker_name(os.getpid())
    timeout = config.get("compression", "timeout_seconds")
    gate = YieldToReceiving(ReceivingSignal.for_config(config), config.get("compression", "yield_to_receiving_seconds"))
    idle = 0.05
    try:
        while (stop is None or not stop.value) and (once or os.getppid() == parent):
            if not once and gate.should_wait():
                time.sleep(0.05)
                continue
            try:
                worked = run_one_job(archive, name, timeout)
            except CatalogUnavailable:
                worked = False
                idle = 2.0
            if worked:
                idle = 0.05
                continue
            if once:
                return
            time.sleep(idle)
            idle = min(idle * 2, 1.0)
    finally:
        archive.close()


class CompressionWorkers:
    """A pool of worker processes that drain the compression queue, restarted if they die."""

    def __init__(self, config: Config, count: int | None = None) -> None:
        self.config = config
        self.count = count or config.get("compression", "workers") or max(1, os.cpu_count() or 1)
        self._ctx = multiprocessing.get_context("spawn")
        # a lock-free shared flag: a worker killed at any moment can never leave it locked
        # (a multiprocessing.Event can, and then set() blocks the shutdown forever)
        self._stop = self._ctx.RawValue(ctypes.c_bool, False)
        self._stopping = threading.Event()
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        if self.config.get("compression", "transfer_syntax") == "none":
            return
        self._procs = [self._spawn() for _ in range(self.count)]
        self._monitor = threading.Thread(target=self._watch, name="compression-monitor", daemon=True)
        self._monitor.start()

    def _spawn(self) -> multiprocessing.process.BaseProcess:
        proc = self._ctx.Process(target=worker_main, args=(self.config, self._stop), name="pacs-lite-compress",
                                 daemon=True)
        proc.start()
        return proc

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            for i, proc in enumerate(self._procs):
                if not proc.is_alive() and not self._stopping.is_set():
                    log.warning("compression worker exited (code %s); starting another", proc.exitcode)
                    self._requeue(proc.pid)
                    self._procs[i] = self._spawn()

    def _requeue(self, pid: int | None) -> None:
        if pid is None:
            return
        try:
            from .catalog import Catalog

            catalog = Catalog(self.config.index_url)
            try:
                catalog.jobs.release([worker_name(pid)])
            finally:
                catalog.close()
        except Exception as exc:  # noqa: BLE001 - the lease expires anyway
            log.warning("could not requeue the jobs of a dead worker: %s", exc)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._stop.value = True
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self._procs = []
