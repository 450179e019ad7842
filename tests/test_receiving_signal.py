"""Compression workers hold off while their node is receiving, and never starve.

The signal is a real file; the workers are real worker processes draining the real
index's queue.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pacs_lite.activity import RECEIVING_WINDOW, ReceivingSignal, YieldToReceiving, receiving_signal_path
from pacs_lite.archive import Archive
from pacs_lite.compression import CompressionWorkers
from tests.support.dicom import make_instance, part10
from tests.support.pacs import make_config


def _wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@contextmanager
def _stream_arriving(signal: ReceivingSignal) -> Iterator[None]:
    """Mark the signal every 50 ms, as a sender streaming instances would."""
    done = threading.Event()
    signal.mark()

    def mark() -> None:
        while not done.is_set():
            signal.mark()
            done.wait(0.05)

    thread = threading.Thread(target=mark, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_each_installation_has_its_own_signal(tmp_path: Path) -> None:
    one, two = make_config(tmp_path / "a"), make_config(tmp_path / "b")
    assert receiving_signal_path(one) == receiving_signal_path(make_config(tmp_path / "a"))
    assert receiving_signal_path(one) != receiving_signal_path(two)
    assert str(tmp_path) not in str(receiving_signal_path(one))  # a digest, not the location itself


def test_the_signal_says_receiving_only_right_after_a_mark(tmp_path: Path) -> None:
    signal = ReceivingSignal(tmp_path / "x.receiving")
    assert signal.seconds_since_last() == float("inf") and not signal.receiving()
    signal.mark()
    assert signal.receiving()
    old = time.time() - 2 * RECEIVING_WINDOW
    os.utime(signal.path, (old, old))
    assert not signal.receiving()
    signal.mark()
    assert signal.receiving()
    signal.remove()
    assert not signal.path.exists() and not signal.receiving()


def test_an_unwritable_signal_never_holds_anything_up(tmp_path: Path) -> None:
    signal = ReceivingSignal(tmp_path / "missing-folder" / "x.receiving")
    signal.mark()  # no error
    assert not YieldToReceiving(signal, 60).should_wait()


def test_the_rule_holds_off_for_the_first_max_wait_seconds_of_each_burst(tmp_path: Path) -> None:
    signal = ReceivingSignal(tmp_path / "x.receiving")
    gate = YieldToReceiving(signal, 0.4)
    assert not gate.should_wait()  # nothing arriving
    with _stream_arriving(signal):
        assert gate.should_wait()
        time.sleep(0.45)
        assert not gate.should_wait()  # the burst goes on: compress beside it
        assert not gate.should_wait()
        assert not YieldToReceiving(signal, 0).should_wait()  # 0 turns it off
    old = time.time() - 2 * RECEIVING_WINDOW
    os.utime(signal.path, (old, old))
    assert not gate.should_wait()  # the burst ended
    with _stream_arriving(signal):
        assert gate.should_wait()  # a new burst: hold off again


def test_workers_hold_off_while_receiving_and_catch_up_after(tmp_path: Path) -> None:
    config = make_config(tmp_path, compression={"workers": 1, "yield_to_receiving_seconds": 60})
    archive = Archive(config)
    signal = ReceivingSignal.for_config(config)
    workers = CompressionWorkers(config)

    def state(uid: str) -> str:
        return archive.catalog.lookup_instance(uid).compression_state

    try:
        workers.start()
        first, second = (make_instance(rows=64, columns=64, seed=i) for i in range(2))
        assert archive.ingest.ingest_part10(part10(first)).status == "stored"
        # the worker is up once it has done the first job (ingest's own mark has long expired)
        assert _wait_for(lambda: state(first.SOPInstanceUID) == "compressed", 90)
        with _stream_arriving(signal):
            assert archive.ingest.ingest_part10(part10(second)).status == "stored"
            time.sleep(2.0)
            assert state(second.SOPInstanceUID) == "pending"
        assert _wait_for(lambda: state(second.SOPInstanceUID) == "compressed", 30)
    finally:
        workers.stop()
        archive.close()
        signal.remove()


def test_a_stream_that_never_pauses_does_not_starve_compression(tmp_path: Path) -> None:
    config = make_config(tmp_path, compression={"workers": 1, "yield_to_receiving_seconds": 1})
    archive = Archive(config)
    signal = ReceivingSignal.for_config(config)
    workers = CompressionWorkers(config)
    try:
        with _stream_arriving(signal):
            workers.start()
            items = [make_instance(rows=64, columns=64, seed=i) for i in range(3)]
            for ds in items:
                assert archive.ingest.ingest_part10(part10(ds)).status == "stored"
            assert _wait_for(lambda: all(archive.catalog.lookup_instance(ds.SOPInstanceUID).compression_state
                                         == "compressed" for ds in items), 90)
            assert signal.receiving()  # still streaming all along
    finally:
        workers.stop()
        archive.close()
        signal.remove()
