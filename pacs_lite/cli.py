"""The ``pacs-lite`` command: serve, import, config, verify, worker, token, share, unshare, audit."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config, ConfigError, load_config
from .logsetup import configure_logging
from .stopsignal import StopSignal

if TYPE_CHECKING:
    from .archive import Archive
    from .catalog import Catalog

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
    from .startup import preflight

    preflight(config)  # ports, data folders, TLS files: one line naming the key to change
    stop = StopSignal()
    # counters of every process (SCP, web workers, compression workers) add up in /metrics; set before
    # prometheus_client is first imported (it reads the variable then)
    metrics_dir = tempfile.mkdtemp(prefix="pacs-lite-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        archive = _open_when_ready(config, stop)
    except BaseException:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        raise
    if archive is None:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("signal %s received while waiting: stopped", stop.received.name if stop.received else "?")
        return 0
    try:
        _check_exposure(config, archive)
    except BaseException:
        archive.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        raise
    from .activity import ReceivingSignal
    from .compression import CompressionWorkers, release_dead_workers_jobs
    from .maintenance import sweep_orphans

    released = release_dead_workers_jobs(archive)
    if released:
        log.info("requeued %d compression jobs of workers that died before this start", released)

    # the composition root (the import contract allows these two imports here and nowhere else in the core)
    from dicom_scp import process as dicom_process
    from viewer import http_server

    workers = CompressionWorkers(config)
    workers.start()
    children = {
        "DICOM SCP": _start_component(dicom_process.run, config, args.config),
        "HTTP server": _start_component(http_server.run, config, args.config),
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
                archive.catalog.jobs.purge_done()
                archive.store.sweep_temp(config.get("storage", "orphan_grace_seconds"))
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("maintenance failed: %s", type(exc).__name__)

    threading.Thread(target=sweeper, name="sweeper", daemon=True).start()

    exit_code = 0
    while not stop.wait(0.5):
        dead = [name for name, proc in children.items() if not proc.is_alive()]
        if dead:
            for name in dead:
                log.error("%s exited with code %s; stopping", name, children[name].exitcode)
            exit_code = 1
            break
    if stop.received is not None:
        log.info("signal %s received: shutting down", stop.received.name)
    log.info("stopping: open associations and requests finish, workers complete their job")
    for proc in children.values():
        if proc.is_alive():
            proc.terminate()  # SIGTERM: each finishes what it is doing
    for proc in children.values():
        proc.join(config.get("http", "timeout") + 10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    workers.stop()
    ReceivingSignal.for_config(config).remove()
    archive.close()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("stopped")
    return exit_code


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_exposure(config: Config, archive: Archive) -> None:
    """Refuse to serve HTTP beyond loopback with nobody able to authenticate and no trusted network."""
    from .catalog.partners import any_token
    from .startup import StartupError

    host = config.get("http", "host")
    if _is_loopback_host(host) or config.get("http", "allow_from") or any_token(archive.catalog):
        return
    raise StartupError(f"http.host = {host!r} is not a loopback address, but no API token exists and "
                       "http.allow_from is empty: create a token (pacs-lite token create --partner NAME "
                       "--scope read), set http.allow_from, or set http.host = \"127.0.0.1\"")


def _open_archive(config: Config) -> Archive:
    """The archive (schema migrated), or a :class:`~pacs_lite.startup.StartupError` naming the index."""
    from .archive import Archive
    from .startup import StartupError

    try:
        return Archive(config)
    except Exception as exc:  # noqa: BLE001 - reported in one line; the service manager restarts us
        log.debug("opening the archive failed", exc_info=True)
        first_line = (str(exc).splitlines() or [""])[0][:200]
        raise StartupError(f"cannot open the archive (index {config.masked_index_url}): "
                           f"{type(exc).__name__}: {first_line}") from None


def _open_when_ready(config: Config, stop: StopSignal) -> Archive | None:
    """Wait for the index and the store (``[startup] wait_seconds``), then open the archive (migrating).

    ``None`` when a stop signal arrived meanwhile.
    """
    from .startup import wait_for_dependencies

    if not wait_for_dependencies(config, stopped=stop.is_set):  # PostgreSQL and S3 may still be starting
        return None
    return _open_archive(config)  # migrates the schema before anything serves


def _start_component(run: Callable[[str | None], int], config: Config,
                     config_path: str | None) -> multiprocessing.process.BaseProcess:
    """Start ``run(config_path)`` in a fresh interpreter (spawn) working in the configuration's folder."""
    path = str(Path(config_path).resolve()) if config_path else None
    process = multiprocessing.get_context("spawn").Process(
        target=_component_main, args=(run, str(config.base_dir), path), name=run.__module__)
    process.start()
    return process


def _component_main(run: Callable[[str | None], int], folder: str, config_path: str | None) -> None:
    os.chdir(folder)
    sys.exit(run(config_path))


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
    """Import files and folders through the ingest path, with a progress bar and a summary.

    Files that are not DICOM (a DICOMDIR, README files, thumbnails) are skipped, not rejected; the
    summary names the installation written to, so that an import run in the wrong folder is noticed.
    """
    config = _load(args)
    configure_logging("WARNING")
    from tqdm import tqdm

    from .importer import SKIPPED, import_file
    from .startup import describe_index, describe_store

    files = list(_walk(args.paths))
    index_url = config.index_url
    new_index = index_url.startswith("sqlite:///") and not Path(index_url[len("sqlite:///"):]).exists()
    archive = _open_archive(config)
    counts: Counter[str] = Counter()
    problems: list[tuple[str, Path, str]] = []
    skipped: list[tuple[Path, str]] = []
    try:
        for path in tqdm(files, unit="file", disable=args.quiet or not sys.stderr.isatty(), file=sys.stderr):
            outcome = import_file(archive.ingest, path)
            counts[outcome.status] += 1
            if outcome.status == SKIPPED:
                skipped.append((path, outcome.reason))
            elif outcome.status in ("rejected", "failed"):
                status = f" (DICOM status 0x{outcome.dicom_status:04X})" if outcome.dicom_status else ""
                problems.append((outcome.status, path, f"{outcome.reason}{status}"))
    finally:
        archive.close()
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for status, path, reason in problems:
        print(f"{status} {path}: {reason}" + ("; try again later" if status == "failed" else ""), file=sys.stderr)
    print(f"archive: index {describe_index(config)}, objects {describe_store(config)}")
    print(f"{len(files)} files: {counts['stored']} stored, {counts['duplicate']} duplicates, "
          f"{counts['rejected']} rejected, {counts['failed']} failed, {counts[SKIPPED]} skipped (not DICOM images)")
    if new_index:
        print(f"note: no index existed at {index_url[len('sqlite:///'):]}, so a new archive was created; if the "
              f"server runs elsewhere, run the import in its folder or give its configuration (--config)",
              file=sys.stderr)
    return 1 if problems else 0


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
    from .maintenance import verify

    archive = _open_archive(config)
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
    for key in report.stray:
        print(f"stray object (not a key PACS-lite writes): {key}")
    for uid in report.marked:
        print(f"known corrupt instance (marked by an earlier --repair; resend or delete it): {uid}")
    summary = (f"checked {report.checked} objects: {len(report.missing)} missing, {len(report.corrupt)} corrupt, "
               f"{len(report.orphans)} orphans, {len(report.stray)} stray")
    if args.repair:
        summary += (f"; repaired: {report.repaired} orphans removed (stray objects included), "
                    f"{report.marked_now} instances marked corrupt, {report.revisions_dropped} damaged revisions "
                    f"dropped, {report.restored} instances intact again")
    elif not report.clean:
        summary += "; `pacs-lite verify --repair` clears these"
    print(summary)
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


# -- partners: tokens, shares, audit -------------------------------------------------------------


def _catalog(args: argparse.Namespace) -> Catalog:
    """The index (schema migrated), without the object store."""
    from .catalog import Catalog

    config = _load(args)
    configure_logging("WARNING")
    url = config.index_url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(url)
    catalog.migrate()
    return catalog


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def _partner_command(args: argparse.Namespace, run: Callable[[Catalog], int]) -> int:
    """Run ``run`` on the index; a bad partner, scope, duration, token or study is one line and exit 1."""
    from .catalog import partners

    catalog = _catalog(args)
    try:
        return run(catalog)
    except partners.PartnerError as exc:
        print(f"pacs-lite: {exc}", file=sys.stderr)
        return 1
    finally:
        catalog.close()


def cmd_token(args: argparse.Namespace) -> int:
    """Create, list or revoke partner API tokens."""
    from .catalog import partners

    def run(catalog: Catalog) -> int:
        if args.action == "create":
            expires = partners.parse_duration(args.expires) if args.expires else None
            token_id, token = partners.create_token(catalog, args.partner, args.scope, expires)
            print(f"token {token_id} for partner {args.partner} (scope {args.scope}, expires "
                  f"{args.expires or 'never'}); it is shown only now:")
            print(token)
        elif args.action == "list":
            print(f"{'id':>4}  {'partner':<20} {'scope':<6} {'created':<20} {'expires':<20} revoked")
            for t in partners.list_tokens(catalog):
                print(f"{t.id:>4}  {t.partner:<20} {t.scope:<6} {_when(t.created):<20} {_when(t.expires):<20} "
                      f"{_when(t.revoked)}")
        else:
            partners.revoke_token(catalog, args.id)
            print(f"token {args.id} revoked")
        return 0

    return _partner_command(args, run)


def cmd_share(args: argparse.Namespace) -> int:
    """Let a partner see a study (share), or stop (unshare)."""
    from .catalog import partners

    def run(catalog: Catalog) -> int:
        if args.command == "share":
            partners.share(catalog, args.study, args.partner)
            print(f"study {args.study} shared with {args.partner}")
        elif partners.unshare(catalog, args.study, args.partner):
            print(f"study {args.study} no longer shared with {args.partner}")
        else:
            print(f"pacs-lite: study {args.study} was not shared with {args.partner}", file=sys.stderr)
            return 1
        return 0

    return _partner_command(args, run)


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the audit trail (oldest first)."""
    from .catalog import partners

    since = None
    if args.since:
        try:
            since = dt.datetime.fromisoformat(args.since)
        except ValueError:
            print(f"pacs-lite: --since: a date or time such as 2026-12-01 or 2026-12-01T08:00, got {args.since!r}",
                  file=sys.stderr)
            return 2
        if since.tzinfo is not None:
            since = since.astimezone(dt.UTC).replace(tzinfo=None)
    catalog = _catalog(args)
    try:
        events = partners.audit_events(catalog, since=since, study=args.study)
    finally:
        catalog.close()
    for e in events:
        if args.json:
            print(json.dumps(e.as_json()))
        else:
            print(f"{_when(e.time)} {e.who} {e.address or '-'} {e.action} {e.study or '-'} {e.outcome} {e.status}"
                  + (f" {e.detail}" if e.detail else ""))
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
    p.add_argument("--repair", action="store_true", help="clear every fault found: remove orphans and stray objects, mark instances whose object is lost, drop damaged revisions")
    p.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                   help="age below which an unreferenced object is not yet an orphan (default: storage.orphan_grace_seconds)")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("worker", help="run compression workers")
    p.add_argument("--processes", type=int, default=None)
    p.add_argument("--once", action="store_true", help="drain the queue once and exit")
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("token", help="partner API tokens: create, list, revoke")
    tokens = p.add_subparsers(dest="action", required=True)
    t = tokens.add_parser("create", help="create a token; its last line of output is the token")
    t.add_argument("--partner", required=True, metavar="NAME")
    t.add_argument("--scope", required=True, choices=("read", "write", "admin"))
    t.add_argument("--expires", default=None, metavar="DURATION", help="e.g. 30d, 12h (default: never)")
    t = tokens.add_parser("list", help="list tokens (never the tokens themselves)")
    t = tokens.add_parser("revoke", help="revoke a token")
    t.add_argument("id", type=int, metavar="ID")
    p.set_defaults(func=cmd_token)
    for name in ("share", "unshare"):
        p = sub.add_parser(name, help=f"{name} a study with a partner")
        p.add_argument("study", metavar="STUDY_UID")
        p.add_argument("--partner", required=True, metavar="NAME")
        p.set_defaults(func=cmd_share)
    p = sub.add_parser("audit", help="print the audit trail")
    p.add_argument("--since", default=None, metavar="DATE", help="from this date or time (UTC), e.g. 2026-12-01")
    p.add_argument("--study", default=None, metavar="UID")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.set_defaults(func=cmd_audit)
    for name in ("serve", "import", "config", "verify", "worker", "token", "share", "unshare", "audit"):
        sub.choices[name].add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .startup import EXIT_STARTUP, StartupError

    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"pacs-lite: configuration error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"pacs-lite: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP


if __name__ == "__main__":
    sys.exit(main())
