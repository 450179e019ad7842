"""Run the Debian dcmtk tools (storescu, findscu, getscu, movescu, echoscu, storescp).

Every run has a timeout and returns what happened in a form a test (or the benchmark) can check:
:func:`storescu` parses its debug log into one :class:`StoreOutcome` per input file
(stored, a failure status with the SCP's ErrorComment, skipped by storescu as not
DICOM, or no presentation context), :func:`findscu` returns the response identifiers
as datasets, :func:`getscu` the files it received. :class:`Storescp` is a storage SCP
process for C-MOVE destinations.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from harness.net import LOOPBACK, free_port, wait_for_port
from harness.processes import ManagedProcess

#: getscu/storescp preference option that makes the peer accept a stored transfer syntax as is.
PREFER_OPTION = {
    "1.2.840.10008.1.2": "+x=",
    "1.2.840.10008.1.2.1": "+xe",
    "1.2.840.10008.1.2.2": "+xb",
    "1.2.840.10008.1.2.1.99": "+xd",
    "1.2.840.10008.1.2.4.50": "+xy",
    "1.2.840.10008.1.2.4.51": "+xx",
    "1.2.840.10008.1.2.4.70": "+xs",
    "1.2.840.10008.1.2.4.80": "+xt",
    "1.2.840.10008.1.2.4.81": "+xu",
    "1.2.840.10008.1.2.4.90": "+xv",
    "1.2.840.10008.1.2.4.91": "+xw",
    "1.2.840.10008.1.2.5": "+xr",
}


class DcmtkError(RuntimeError):
    """A dcmtk tool failed or timed out; the message carries its output."""


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run one dcmtk command line (no shell), capturing stdout and stderr as text."""
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(
            [os.fspath(a) for a in args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-4000:] if isinstance(exc.stdout, bytes) else str(exc.stdout or "")[-4000:]
        raise DcmtkError(f"{Path(os.fspath(args[0])).name} timed out after {timeout} s:\n{out}") from None
    if check and proc.returncode != 0:
        raise DcmtkError(
            f"{' '.join(map(str, args[:3]))}... exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def echoscu(
    port: int, *, aec: str, aet: str = "ECHOSCU", host: str = LOOPBACK, extra: Sequence[str] = (), timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """C-ECHO; ``returncode == 0`` means success."""
    return run(["echoscu", "-aet", aet, "-aec", aec, *extra, host, str(port)], timeout=timeout)


# -- storescu -------------------------------------------------------------------------------------


@dataclass
class StoreOutcome:
    """What happened to one file given to storescu.

    ``outcome`` is ``"stored"`` (success or warning status), ``"failed"`` (a failure
    status; ``status`` and ``comment`` from the SCP), ``"skipped"`` (storescu refused to
    read it: not DICOM, no SOP UIDs), ``"no-context"`` (no accepted presentation context),
    ``"error"`` (the transfer failed otherwise) or ``"unknown"`` (no trace in the log).
    """

    path: str
    outcome: str = "unknown"
    status: int | None = None
    comment: str = ""
    detail: str = ""


APP_LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.logger.dcmtk.apps.{app} = DEBUG
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %P: %m%n
"""

_SENDING = re.compile(r"^I: Sending file: (.*)$")
_RESPONSE = re.compile(r"^I: Received Store Response")
_STATUS = re.compile(r"^D: DIMSE Status\s*: 0x([0-9a-fA-F]{4})")
_COMMENT = re.compile(r"^D: \(0000,0902\) LO \[(.*)\]")
_BAD_FILE = re.compile(
    r"^E: (Bad DICOM file|No SOP Class or Instance UID in file|cannot access file)[:]? (.*?)(: (.*))?$"
)
_STORE_FAILED = re.compile(r"^E: Store Failed, file: (.*?):?$")
_NO_CONTEXT = re.compile(r"^E: No presentation context for: (.*)$")
_IGNORING = re.compile(r"^W: ignoring file (.*?)(?: \((.*)\))?$")


def parse_storescu_log(text: str, files: Iterable[str | os.PathLike[str]]) -> dict[str, StoreOutcome]:
    """Per-file outcomes from a storescu log with DIMSE dumps (stdout and stderr together)."""
    outcomes = {os.fspath(f): StoreOutcome(os.fspath(f)) for f in files}

    def get(path: str) -> StoreOutcome:
        return outcomes.setdefault(path, StoreOutcome(path))

    current: StoreOutcome | None = None
    in_response = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if m := _SENDING.match(line):
            current, in_response = get(m.group(1).strip()), False
        elif _RESPONSE.match(line):
            in_response = True
        elif in_response and (m := _STATUS.match(line)) and current is not None:
            code = int(m.group(1), 16)
            current.status = code
            current.outcome = "stored" if code == 0 or code & 0xF000 == 0xB000 else "failed"
        elif in_response and (m := _COMMENT.match(line)) and current is not None:
            current.comment = m.group(1).strip()
        elif m := _BAD_FILE.match(line):
            item = get(m.group(2).strip())
            item.outcome, item.detail = "skipped", f"{m.group(1)}: {m.group(4) or ''}".strip()
        elif m := _IGNORING.match(line):
            item = get(m.group(1).strip())
            item.outcome, item.detail = "skipped", (m.group(2) or "ignored").strip()
        elif (m := _NO_CONTEXT.match(line)) and current is not None and current.outcome == "unknown":
            current.outcome, current.detail = "no-context", m.group(1)
        elif m := _STORE_FAILED.match(line):
            item = get(m.group(1).strip())
            if item.outcome == "unknown":
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                item.outcome, item.detail = "error", nxt[3:].strip()
        elif line.startswith("I: ") and in_response and not line.startswith("I: Received Store Response"):
            in_response = False
    return outcomes


def storescu(
    port: int,
    files: Sequence[str | os.PathLike[str]],
    *,
    aec: str,
    aet: str = "STORESCU",
    host: str = LOOPBACK,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    halt: bool = False,
) -> tuple[dict[str, StoreOutcome], subprocess.CompletedProcess[str]]:
    """Send ``files`` in one association; parse the outcomes (one per file, keyed by its path).

    By default storescu goes on after a failed store (``-nh``); with ``halt`` it stops at
    the first one, as a modality would, and the files after it stay ``"unknown"``.
    storescu's own logger runs at debug level (the DIMSE status and ErrorComment of every
    response), the network layers at info level (no PDU hex dumps).
    """
    with tempfile.TemporaryDirectory(prefix="storescu-") as tmp:
        log_config = Path(tmp) / "logger.cfg"
        log_config.write_text(APP_LOG_CONFIG.format(app="storescu"))
        no_halt = [] if halt else ["-nh"]
        args = ["storescu", "-lc", str(log_config), *no_halt, "-aet", aet, "-aec", aec, *extra, host, str(port), *files]
        proc = run(args, timeout=timeout, env=env)
    return parse_storescu_log(proc.stdout + "\n" + proc.stderr, files), proc


def file_syntax(path: str | os.PathLike[str]) -> tuple[set[str], str] | None:
    """(SOP Class UIDs, Transfer Syntax UID) storescu will need for a file, or ``None``.

    The SOP classes are the file meta's and the dataset's (storescu uses the latter;
    they may differ); for a dataset without meta information the transfer syntax is
    the encoding pydicom detects.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - not DICOM at all: let storescu say so
        return None
    meta = getattr(ds, "file_meta", None) or {}
    classes = {str(v).strip() for v in (meta.get("MediaStorageSOPClassUID", ""), ds.get("SOPClassUID", ""))} - {""}
    ts = str(meta.get("TransferSyntaxUID", "") or "").strip()
    if not ts:
        implicit, little = ds.original_encoding
        if implicit is None or little is None:
            return None
        ts = "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
    return (classes, ts) if classes else None


@dataclass
class CorpusRun:
    """Outcomes of :func:`store_in_own_syntax`, in the order the files were sent."""

    outcomes: dict[str, StoreOutcome] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def by_outcome(self, outcome: str) -> list[StoreOutcome]:
        return [o for o in self.outcomes.values() if o.outcome == outcome]


def store_in_own_syntax(
    port: int,
    files: Sequence[str | os.PathLike[str]],
    workdir: Path,
    *,
    aec: str,
    aet: str = "STORESCU",
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> CorpusRun:
    """storescu every file in its own transfer syntax (no conversion by storescu).

    Files are grouped by transfer syntax; for each group a storescu configuration
    profile proposes, per SOP class present, that syntax alone, and one association
    sends the group. Files without readable meta information go to plain storescu,
    which reports them as skipped.
    """
    groups: dict[str, list[str]] = {}
    classes: dict[str, set[str]] = {}
    unreadable: list[str] = []
    for f in map(os.fspath, files):
        found = file_syntax(f)
        if found is None:
            unreadable.append(f)
            continue
        sop_classes, ts = found
        groups.setdefault(ts, []).append(f)
        classes.setdefault(ts, set()).update(sop_classes)
    workdir.mkdir(parents=True, exist_ok=True)
    lines = ["[[TransferSyntaxes]]"]
    for n, ts in enumerate(groups):
        lines += [f"[TS{n}]", f"TransferSyntax1 = {ts}"]
    lines.append("[[PresentationContexts]]")
    for n, ts in enumerate(groups):
        lines.append(f"[PC{n}]")
        for k, sop_class in enumerate(sorted(classes[ts]), 1):
            lines.append(f"PresentationContext{k} = {sop_class}\\TS{n}")
    lines.append("[[Profiles]]")
    for n, _ in enumerate(groups):
        lines += [f"[P{n}]", f"PresentationContexts = PC{n}"]
    config = workdir / "storescu-corpus.cfg"
    config.write_text("\n".join(lines) + "\n")
    result = CorpusRun()
    runs: list[tuple[list[str], list[str]]] = [
        (["-xf", str(config), f"P{n}"], g) for n, g in enumerate(groups.values())
    ]
    if unreadable:
        runs.append(([], unreadable))
    for extra, group in runs:
        outcomes, proc = storescu(port, group, aec=aec, aet=aet, extra=extra, env=env, timeout=timeout)
        result.logs.append(proc.stdout[-2000:] + proc.stderr[-2000:])
        for path in group:
            result.outcomes[path] = outcomes[path]
            result.order.append(path)
    return result


# -- query and retrieve -----------------------------------------------------------------------


def _key_args(keys: Mapping[str, str] | Sequence[tuple[str, str]]) -> list[str]:
    items = keys.items() if isinstance(keys, Mapping) else keys
    out: list[str] = []
    for name, value in items:
        out += ["-k", f"{name}={value}" if value is not None else name]
    return out


def _query_args(
    tool: str,
    options: Sequence[str],
    *,
    model: str,
    aet: str,
    aec: str,
    level: str,
    keys: Mapping[str, str] | Sequence[tuple[str, str]],
    extra: Sequence[str],
    host: str,
    port: int,
) -> list[str]:
    """The command line of a query/retrieve SCU: ``tool``'s own ``options``, then what they all share."""
    return [
        tool,
        *options,
        model,
        "-aet",
        aet,
        "-aec",
        aec,
        "-k",
        f"QueryRetrieveLevel={level}",
        *_key_args(keys),
        *extra,
        host,
        str(port),
    ]


def findscu(
    port: int,
    level: str,
    keys: Mapping[str, str] | Sequence[tuple[str, str]],
    workdir: Path,
    *,
    aec: str,
    model: str = "-S",
    aet: str = "FINDSCU",
    host: str = LOOPBACK,
    extra: Sequence[str] = (),
    timeout: float = 60,
) -> tuple[list[pydicom.Dataset], subprocess.CompletedProcess[str]]:
    """C-FIND; returns the pending-response identifiers (read from ``findscu -X`` files) and the run."""
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("rsp*.dcm"):
        old.unlink()
    options = ["-v", "-X", "-od", str(workdir)]
    args = _query_args("findscu", options, model=model, aet=aet, aec=aec, level=level, keys=keys, extra=extra,
                       host=host, port=port)
    proc = run(args, timeout=timeout)
    found = [pydicom.dcmread(p) for p in sorted(workdir.glob("rsp*.dcm"))]
    return found, proc


def getscu(
    port: int,
    level: str,
    keys: Mapping[str, str] | Sequence[tuple[str, str]],
    outdir: Path,
    *,
    aec: str,
    model: str = "-S",
    aet: str = "GETSCU",
    host: str = LOOPBACK,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> tuple[list[Path], subprocess.CompletedProcess[str]]:
    """C-GET into ``outdir``; returns the files received (bit-preserving) and the run."""
    outdir.mkdir(parents=True, exist_ok=True)
    before = set(outdir.iterdir())
    options = ["-v", "+B", "-od", str(outdir)]
    args = _query_args("getscu", options, model=model, aet=aet, aec=aec, level=level, keys=keys, extra=extra,
                       host=host, port=port)
    proc = run(args, timeout=timeout, env=env)
    return sorted(set(outdir.iterdir()) - before), proc


def movescu(
    port: int,
    level: str,
    keys: Mapping[str, str] | Sequence[tuple[str, str]],
    *,
    destination: str,
    aec: str,
    model: str = "-S",
    aet: str = "MOVESCU",
    host: str = LOOPBACK,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """C-MOVE to ``destination`` (an AE the SCP knows); the log has every response's counts."""
    with tempfile.TemporaryDirectory(prefix="movescu-") as tmp:
        log_config = Path(tmp) / "logger.cfg"
        log_config.write_text(APP_LOG_CONFIG.format(app="movescu"))
        options = ["-lc", str(log_config), "-aem", destination]
        args = _query_args("movescu", options, model=model, aet=aet, aec=aec, level=level, keys=keys, extra=extra,
                           host=host, port=port)
        return run(args, timeout=timeout, env=env)


_SUBOPS = re.compile(r"(Completed|Failed|Warning|Remaining) Suboperations\s*:\s*(\d+)", re.IGNORECASE)


def final_suboperations(output: str) -> dict[str, int]:
    """The last Completed/Failed/Warning/Remaining sub-operation counts in a getscu/movescu log."""
    counts: dict[str, int] = {}
    for name, value in _SUBOPS.findall(output):
        counts[name.lower()] = int(value)
    return counts


class Storescp:
    """A dcmtk ``storescp`` on loopback (a C-MOVE destination) writing files bit-preserving.

    Parameters
    ----------
    workdir
        Directory for received files (``workdir / "in"``) and the log.
    ae_title
        Its AE title.
    accept_all
        Accept every transfer syntax it knows (``+xa``), so objects arrive as stored.
    """

    def __init__(
        self,
        workdir: Path,
        ae_title: str = "STORESCP",
        *,
        accept_all: bool = True,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.ae_title = ae_title
        self.port = free_port()
        self.outdir = workdir / "in"
        self.outdir.mkdir(parents=True, exist_ok=True)
        args = [
            "storescp",
            "-aet",
            ae_title,
            "+B",
            "-od",
            str(self.outdir),
            *(["+xa"] if accept_all else []),
            *extra,
            str(self.port),
        ]
        self.process = ManagedProcess(
            args, workdir / "storescp.log", name="storescp", env={**os.environ, **(env or {})}
        )

    def start(self) -> Storescp:
        self.process.start()
        wait_for_port(LOOPBACK, self.port, timeout=15)
        return self

    def stop(self) -> None:
        self.process.stop()

    def files(self) -> list[Path]:
        return sorted(p for p in self.outdir.iterdir() if p.is_file())

    def __enter__(self) -> Storescp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
