"""Start and reliably stop the external processes the tests and the benchmark need (servers, CLIs).

Every process runs in its own process group with its output in a log file, and
:meth:`ManagedProcess.stop` always ends and reaps it: SIGTERM to the group, then
SIGKILL after a grace period. An ``atexit`` hook stops anything a crashed test left
running, so no test run leaves servers behind. The ``/proc`` helpers below find a
process tree and its memory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

_RUNNING: set[ManagedProcess] = set()


class ManagedProcess:
    """A subprocess owned by a test or the benchmark, usable as a context manager.

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
        return self._end(signal.SIGTERM, timeout)

    def terminate_leader(self, timeout: float = 90.0) -> int:
        """SIGTERM the leader only (a server that stops its own children) and return its exit status.

        Whatever is still running after it exited, or after ``timeout`` s, is stopped with the group.
        """
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.stop()

    def kill(self) -> int | None:
        """SIGKILL the process group at once (a crash, for reliability tests) and reap it."""
        return self._end(signal.SIGKILL, None)

    def _end(self, sig: signal.Signals, timeout: float | None) -> int | None:
        """Send ``sig`` to the group if the process runs, SIGKILL after ``timeout`` s; reap it."""
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                self._signal_group(sig)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
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


# -- /proc ------------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of process ``pid`` (by default this one), from ``/proc``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _proc_stats() -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, fields)`` of every process, ``fields`` being ``/proc/PID/stat`` after the command name
    (``fields[0]`` the state, ``[1]`` the parent's pid, ``[2]`` the process group)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        yield int(entry), stat[stat.rfind(b")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, fields in _proc_stats():
        children.setdefault(int(fields[1]), []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def kill_group_members(pgid: int) -> None:
    """SIGKILL the processes still in process group ``pgid`` (one we created), one by one by id."""
    for pid, fields in _proc_stats():
        if int(fields[2]) == pgid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def memory_kib(pids: Iterable[int]) -> tuple[int, int]:
    """Sum of VmRSS and of VmHWM (peak RSS) over ``pids``, in KiB."""
    rss = hwm = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            continue
    return rss, hwm


@atexit.register
def _stop_leftovers() -> None:
    """Stop whatever is still running when the interpreter exits."""
    for process in list(_RUNNING):
        process.stop(timeout=5.0)
