"""The ``pacs-lite`` command: serve, import, config, verify, worker."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from .config import Config, ConfigError, load_config
from .logsetup import configure_logging
from .stopsignal import StopSignal

log = logging.getLogger("pacs_lite")


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


# -- serve ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the DICOM SCP, the HTTP server and the compression workers until SIGTERM/SIGINT.

    Each runs in its own process (``python -m dicom_scp``, ``python -m viewer.http_server``,
    the worker pool), supervised here: a component that dies takes the server down with
    a clear message rather than leaving half a PACS running. On SIGTERM each finishes
    what it is doing (open associations, in-flight requests, the current compression job).
    """
    config = _load(args)
    configure_logging(config.get("log", "level"))
    # counters of every process (SCP, web workers, compression workers) add up in /metrics
    metrics_dir = tempfile.mkdtemp(prefix="pacs-lite-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from .activity import ReceivingSignal
    from .archive import Archive
    from .compression import CompressionWorkers, release_dead_workers_jobs
    from .maintenance import sweep_orphans

    archive = Archive(config)  # migrates the schema before anything serves
    released = release_dead_workers_jobs(archive)
    if released:
        log.info("requeued %d compression jobs of workers that died before this start", released)
    stop = StopSignal()

    workers = CompressionWorkers(config)
    workers.start()
    children = {
        "DICOM SCP": _start_component("dicom_scp", config, args.config),
        "HTTP server": _start_component("viewer.http_server", config, args.config),
    }
    log.info("PACS-lite starting: DICOM %s on %s:%s, HTTP on %s:%s, storage %s", config.get("dicom", "ae_title"),
             config.get("dicom", "host"), config.get("dicom", "port"), config.get("http", "host"),
             config.get("http", "port"), config.get("storage", "backend"))

    def sweeper() -> None:
        interval = max(60, config.get("storage", "orphan_grace_seconds"))
        delay = 5.0
        while not stop.wait(delay):
            delay = interval
            try:
                sweep_orphans(archive)
                archive.catalog.purge_done_jobs()
                if hasattr(archive.store, "sweep_temp"):
                    archive.store.sweep_temp(config.get("storage", "orphan_grace_seconds"))
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("maintenance failed: %s", type(exc).__name__)

    threading.Thread(target=sweeper, name="sweeper", daemon=True).start()

    exit_code = 0
    while not stop.wait(0.5):
        dead = [name for name, proc in children.items() if proc.poll() is not None]
        if dead:
            for name in dead:
                log.error("%s exited with code %s; stopping", name, children[name].returncode)
            exit_code = 1
            break
    if stop.received is not None:
        log.info("signal %s received: shutting down", stop.received.name)
    log.info("stopping: open associations and requests finish, workers complete their job")
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in children.values():
        try:
            proc.wait(config.get("http", "timeout") + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    workers.stop()
    ReceivingSignal.for_config(config).remove()
    archive.close()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("stopped")
    return exit_code


def _start_component(module: str, config: Config, config_path: str | None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", module]
    if config_path:
        cmd += ["--config", str(Path(config_path).resolve())]
    return subprocess.Popen(cmd, cwd=str(config.base_dir))


# -- import -----------------------------------------------------------------------------------


def _walk(paths: Sequence[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path


def cmd_import(args: argparse.Namespace) -> int:
    """Import files and folders through the ingest path, with a progress bar and a summary."""
    config = _load(args)
    configure_logging("WARNING")
    from tqdm import tqdm

    from .archive import Archive

    files = list(_walk(args.paths))
    archive = Archive(config)
    counts: Counter[str] = Counter()
    rejected: list[tuple[Path, str]] = []
    try:
        for path in tqdm(files, unit="file", disable=args.quiet or not sys.stderr.isatty(), file=sys.stderr):
            try:
                data = path.read_bytes()
            except OSError as exc:
                counts["rejected"] += 1
                rejected.append((path, f"cannot read: {exc.strerror}"))
                continue
            result = archive.ingest.ingest_part10(data, source="IMPORT")
            status = {"revised": "stored"}.get(result.status, result.status)
            counts[status] += 1
            if not result.ok:
                rejected.append((path, f"{result.status} (0x{result.dicom_status:04X}): {result.reason}"))
    finally:
        archive.close()
    for path, reason in rejected:
        print(f"rejected {path}: {reason}", file=sys.stderr)
    print(f"{len(files)} files: {counts['stored']} stored, {counts['duplicate']} duplicates, "
          f"{counts['rejected']} rejected, {counts['failed']} failed")
    return 1 if rejected else 0


# -- config, verify, worker ----------------------------------------------------------------------


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective configuration with secrets masked."""
    config = _load(args)
    print(json.dumps(config.masked(), indent=2))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every object against its checksum, report missing, corrupt and orphaned ones."""
    config = _load(args)
    configure_logging("WARNING")
    from .archive import Archive
    from .maintenance import verify

    archive = Archive(config)
    try:
        report = verify(archive, repair=args.repair, grace_seconds=args.grace)
    finally:
        archive.close()
    for uid in report.missing:
        print(f"missing object: instance {uid}")
    for uid in report.corrupt:
        print(f"corrupt object (checksum mismatch): instance {uid}")
    for line in report.unreadable:
        print(f"unreadable: {line}")
    for key in report.orphans:
        print(f"orphan object: {key}")
    print(f"checked {report.checked} objects: {len(report.missing)} missing, {len(report.corrupt)} corrupt, "
          f"{len(report.orphans)} orphans" + (f", {report.repaired} orphans removed" if args.repair else ""))
    return 0 if report.clean else 1


def cmd_worker(args: argparse.Namespace) -> int:
    """Run compression workers only (a node that compresses for the others)."""
    config = _load(args)
    configure_logging(config.get("log", "level"))
    from .compression import CompressionWorkers, worker_main

    if args.once:
        worker_main(config, once=True)
        return 0
    workers = CompressionWorkers(config, args.processes)
    stop = StopSignal()
    workers.start()
    stop.wait()
    workers.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacs-lite", description="A small, fast, trustworthy picture archive.")
    parser.add_argument("--config", "-c", metavar="FILE", default=None,
                        help="TOML configuration file (default: embedded defaults)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the DICOM and HTTP servers")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("import", help="import DICOM files and folders")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("verify", help="check stored objects against the index")
    p.add_argument("--repair", action="store_true", help="remove orphans and mark corrupt instances")
    p.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                   help="age below which an unreferenced object is not yet an orphan (default: storage.orphan_grace_seconds)")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("worker", help="run compression workers")
    p.add_argument("--processes", type=int, default=None)
    p.add_argument("--once", action="store_true", help="drain the queue once and exit")
    p.set_defaults(func=cmd_worker)
    for name in ("serve", "import", "config", "verify", "worker"):
        sub.choices[name].add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"pacs-lite: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
