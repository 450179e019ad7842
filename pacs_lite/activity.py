"""Whether this node is receiving images right now, shared by its processes.

A modality waits for each C-STORE acknowledgement, so every millisecond the receiving
path loses to compression running beside it on the same cores and the same disk is
lost for the sender too. The ingest path marks a small file each time an instance
arrives (its modification time is the signal; on ``/dev/shm`` this costs a system call
and no disk write); compression workers on the same node look at it before they start
a job and hold off during the first seconds of a burst of arrivals (a study being sent),
then run beside a burst that goes on, so that a long stream never builds an ever-growing
backlog of uncompressed objects.

The file is per installation (derived from the index and the storage location), so two
installations on one machine, or the servers a test suite starts, do not hold each
other up. If the file cannot be written, nothing waits: the signal only ever helps.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from pathlib import Path

from .config import Config

#: An instance within this many seconds means "receiving": the gaps inside a burst from one
#: sender are milliseconds, while a trickle of one instance a second leaves room to compress.
RECEIVING_WINDOW = 0.3


def receiving_signal_path(config: Config) -> Path:
    """The signal file of the installation ``config`` describes (the same in all its processes)."""
    storage = config["storage"]
    where = (str(config.path("storage", "path")) if storage["backend"] == "filesystem"
             else f"{storage['endpoint']}/{storage['bucket']}")
    digest = hashlib.sha256(f"{config.index_url}\n{where}".encode()).hexdigest()[:20]
    shm = Path("/dev/shm")
    folder = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return folder / f"pacs-lite-{os.getuid()}-{digest}.receiving"


class ReceivingSignal:
    """The "an instance just arrived" mark of one installation on this node.

    Parameters
    ----------
    path
        The signal file (see :func:`receiving_signal_path`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_config(cls, config: Config) -> ReceivingSignal:
        return cls(receiving_signal_path(config))

    def mark(self) -> None:
        """Record that an instance arrived now (errors are ignored: the signal is advisory)."""
        try:
            os.utime(self.path, follow_symlinks=False)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                os.close(fd)
        except OSError:
            pass

    def seconds_since_last(self) -> float:
        """Seconds since the last :meth:`mark` (infinite if there never was one)."""
        try:
            return max(0.0, time.time() - os.stat(self.path, follow_symlinks=False).st_mtime)
        except OSError:
            return float("inf")

    def receiving(self) -> bool:
        """Whether an instance arrived within :data:`RECEIVING_WINDOW`."""
        return self.seconds_since_last() < RECEIVING_WINDOW

    def remove(self) -> None:
        """Delete the file (at shutdown)."""
        with contextlib.suppress(OSError):
            self.path.unlink()


class YieldToReceiving:
    """A compression worker's rule: hold off new jobs during the first ``max_wait`` s of a burst.

    A burst is a run of arrivals with no gap longer than :data:`RECEIVING_WINDOW`. Once it has
    lasted ``max_wait`` seconds the worker runs beside it until it ends, so that compression
    never lags a stream by more than about ``max_wait`` seconds plus its own backlog.

    Parameters
    ----------
    signal
        This installation's :class:`ReceivingSignal`.
    max_wait
        Seconds of a burst during which the worker holds off (``0``: never).
    """

    def __init__(self, signal: ReceivingSignal, max_wait: float) -> None:
        self.signal = signal
        self.max_wait = max_wait
        self._burst_seen_at: float | None = None

    def should_wait(self) -> bool:
        """Whether to hold off now; call before each claim."""
        if self.max_wait <= 0 or not self.signal.receiving():
            self._burst_seen_at = None
            return False
        now = time.monotonic()
        if self._burst_seen_at is None:
            self._burst_seen_at = now
        return now - self._burst_seen_at < self.max_wait
