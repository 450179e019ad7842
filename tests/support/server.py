"""``pacs-lite serve`` as a real process, the way a hospital runs it.

The server runs in a working directory of its own with its ports chosen free and its
settings passed as ``PACS_LITE_*`` environment variables. It can be stopped politely,
killed with SIGKILL (the whole process tree) and started again on the same data.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import requests

from harness.net import LOOPBACK, free_port, http_url, wait_for_port
from harness.processes import ManagedProcess, memory_kib, process_tree


class PacsServer:
    """One PACS-lite node.

    Parameters
    ----------
    workdir
        Working directory (embedded data lives in ``workdir/pacs-data``).
    settings
        Extra configuration as ``{"SECTION_KEY": value}``, e.g. ``{"INDEX_URL": url}``.
    env
        Extra environment variables that are not configuration (e.g. crash points).
    """

    def __init__(
        self, workdir: Path, settings: dict[str, str] | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.settings = dict(settings or {})
        self.extra_env = dict(env or {})
        self.process: ManagedProcess | None = None
        self.starts = 0

    @property
    def ae_title(self) -> str:
        return self.settings.get("DICOM_AE_TITLE", "PACSLITE")

    @property
    def base_url(self) -> str:
        return http_url(self.http_port)

    @property
    def dicomweb(self) -> str:
        return f"{self.base_url}/dicomweb"

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PACS_LITE_", "PACSLITE_"))}
        env["PACS_LITE_DICOM_PORT"] = str(self.dicom_port)
        env["PACS_LITE_HTTP_PORT"] = str(self.http_port)
        env.update({f"PACS_LITE_{k}": str(v) for k, v in self.settings.items()})
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    def start(self, *, env: dict[str, str] | None = None, timeout: float = 90) -> PacsServer:
        """Start and wait until DICOM answers and ``/readyz`` says ready."""
        self.start_nowait(env=env, timeout=timeout)
        wait_for_port(LOOPBACK, self.http_port, timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.base_url}/readyz", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"PACS-lite not ready; log:\n{self.log_tail()}")
            time.sleep(0.2)

    def start_nowait(self, *, env: dict[str, str] | None = None, timeout: float = 90) -> PacsServer:
        """Start and return once the DICOM port listens (for crash tests that kill it early)."""
        self.starts += 1
        self.process = ManagedProcess(
            [sys.executable, "-m", "pacs_lite", "serve"],
            self.workdir / f"serve-{self.starts}.log",
            env=self.environment(env),
            cwd=self.workdir,
            name="pacs-lite serve",
        ).start()
        wait_for_port(LOOPBACK, self.dicom_port, timeout=timeout)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.proc.pid if self.process and self.process.proc else None

    def alive(self) -> bool:
        return bool(self.process and self.process.proc and self.process.proc.poll() is None)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not finish in time."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a power cut or the OOM killer would."""
        if self.process is not None and self.process.proc is not None:
            try:
                os.killpg(self.process.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.stop()
            self.process = None

    def wait_exit(self, timeout: float = 60) -> int | None:
        if self.process is None or self.process.proc is None:
            return None
        try:
            return self.process.proc.wait(timeout)
        except Exception:  # noqa: BLE001
            return None

    def log_tail(self, lines: int = 60) -> str:
        logs = sorted(self.workdir.glob("serve-*.log"))
        if not logs:
            return ""
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:])

    def pids(self) -> list[int]:
        """The server's process and all its descendants."""
        return [] if self.pid is None else process_tree(self.pid)

    def rss_kb(self) -> int:
        return memory_kib(self.pids())[0]

    def open_fds(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                total += len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                pass
        return total
