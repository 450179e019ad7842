"""Start and reliably stop the external processes tests need (servers, CLIs).

Every process runs in its own process group with its output in a log file, and
:meth:`ManagedProcess.stop` always ends and reaps it: SIGTERM to the group, then
SIGKILL after a grace period. An ``atexit`` hook stops anything a crashed test left
running, so no test run leaves servers behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

_RUNNING: set[ManagedProcess] = set()


class ManagedProcess:
    """A subprocess owned by a test, usable as a context manager.

    Parameters
    ----------
    args
        Command line (no shell).
    log_path
        File receiving stdout and stderr, appended to across restarts.
    env
        Full environment for the process; ``None`` inherits the test's.
    cwd
        Working directory.
    name
        Label used in error messages.
    """

    def __init__(
        self,
        args: Sequence[str | os.PathLike[str]],
        log_path: str | Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        name: str | None = None,
    ) -> None:
        self.args = [os.fspath(a) for a in args]
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.name = name or Path(self.args[0]).name
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Launch the process in a new session (hence its own process group)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        _RUNNING.add(self)
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s; reap; return the exit code."""
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    proc.wait()
            return proc.returncode
        finally:
            _RUNNING.discard(self)

    def kill(self) -> int | None:
        """SIGKILL the process group at once (a crash, for reliability tests) and reap it."""
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                self._signal_group(signal.SIGKILL)
            proc.wait()
            return proc.returncode
        finally:
            _RUNNING.discard(self)

    def _signal_group(self, sig: signal.Signals) -> None:
        # The leader is unreaped (we checked poll()), so its pgid cannot have been reused.
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state -------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Process id of the current (or last) run."""
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        """Whether the process has been started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout: float = 20.0, what: str = "ready") -> float:
        """Poll ``ready()`` until true; return the seconds waited.

        Raises
        ------
        RuntimeError
            If the process exits first or ``timeout`` passes; the message carries the
            log tail so the failure explains itself.
        """
        started = time.monotonic()
        while True:
            if not self.running:
                code = self.proc.returncode if self.proc else None
                raise RuntimeError(f"{self.name} exited (code {code}) before {what}:\n{self.log_tail()}")
            if ready():
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{self.name} not {what} after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of process ``pid`` (by default this one), from ``/proc``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@atexit.register
def _stop_leftovers() -> None:
    """Stop whatever is still running when the interpreter exits."""
    for process in list(_RUNNING):
        process.stop(timeout=5.0)
