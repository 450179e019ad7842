"""SIGTERM and SIGINT as a stop flag that is safe to set from a signal handler.

A handler that calls ``threading.Event.set()`` takes the event's lock; if the signal
arrives while the main thread holds that lock (inside ``Event.wait``), the process
deadlocks: seen as ``pacs-lite serve`` or ``python -m dicom_scp`` ignoring Ctrl-C.
Here the handler only records the signal, and waiting polls the record.
"""

from __future__ import annotations

import signal
import time


class StopSignal:
    """Installs handlers for SIGTERM and SIGINT that record the first signal received."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    def is_set(self) -> bool:
        return self.received is not None

    def wait(self, timeout: float | None = None, *, poll: float = 0.1) -> bool:
        """Wait until a signal was received or ``timeout`` seconds passed; whether one was."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.received is None:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                time.sleep(min(poll, remaining))
            else:
                time.sleep(poll)
        return True
