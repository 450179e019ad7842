"""The measurements: ingest, stored bytes, WADO-RS, QIDO-RS at scale, peak RSS.

Every phase runs each measurement on every system in the same run, in rounds, and
rotates the order of the systems from round to round so that none always goes first
(cold caches) or last. Values land in :class:`bench.report.Results` as one list per
system with one value per round; the report prints medians and ratios.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

from harness.processes import memory_kib

from . import data as bdata
from .report import Results, Target
from .systems import (
    SCU_AET,
    OrthancSystem,
    PacsLite,
    Storescp,
    ensure_running,
    wait_all_ready,
)

MB = 1_000_000
JPEG_LS = "1.2.840.10008.1.2.4.80"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
ACCEPT_DICOM = 'multipart/related; type="application/dicom"'
ACCEPT_OCTET = 'multipart/related; type="application/octet-stream"'
ACCEPT_JSON = "application/dicom+json"


@dataclass(frozen=True)
class Scale:
    """How much work each measurement does (full benchmark or ``--quick``)."""

    rounds: int = 3
    # The full sets go through the one-association tuned run (the targets); the other modes
    # send the first N instances of each set, so that 3 rounds fit in 15 minutes on 2 cores.
    unmodified_ct: int = 50  # the 40 ms stall makes a full set take minutes on the stalled systems
    unmodified_small: int = 100
    concurrent_ct: int = 150  # instances sent over 4 associations
    concurrent_small: int = 200
    wado_requests: int = 40
    metadata_repeats: int = 3
    qido_queries_per_kind: int = 12


FULL_SCALE = Scale()
QUICK_SCALE = Scale(rounds=1, unmodified_ct=6, unmodified_small=10, concurrent_ct=12, concurrent_small=40,
                    wado_requests=8, metadata_repeats=2, qido_queries_per_kind=3)


@dataclass
class Context:
    """What every phase needs: data, scale, a scratch directory, the results, the systems."""

    data: bdata.BenchData
    scale: Scale
    workdir: Path
    cache_dir: Path
    results: Results
    log: Callable[[str], None] = print
    systems: dict[str, Any] = field(default_factory=dict)
    #: stored bytes per system key and data set, measured when the set was first sent to it
    stored: dict[str, dict[str, int]] = field(default_factory=dict)
    #: raw bytes of what a system accepted, where it refused some files (the real images)
    raw_accepted: dict[str, dict[str, int]] = field(default_factory=dict)
    #: a variant of the CT series that system key holds completely (for WADO-RS)
    ct_variant: dict[str, int] = field(default_factory=dict)
    variant: int = bdata.BASE_VARIANT

    def next_variant(self) -> int:
        self.variant += 1
        return self.variant

    def system(self, key: str) -> Any:
        """The running system ``key`` (started, with the others asked for at once, if needed)."""
        if key not in self.systems:
            self.start([key])
        return self.systems[key]

    def start(self, keys: Iterable[str]) -> None:
        """Start the systems ``keys`` that are not running yet, in parallel, and wait for them."""
        new = []
        for key in keys:
            if key in self.systems:
                continue
            where = self.workdir / key
            if key == "pacs":
                system: Any = PacsLite(where, "PACS-lite (JPEG-LS)")
            elif key == "pacs_none":
                system = PacsLite(where, "PACS-lite (none)", compression="none")
            elif key == "orthanc":
                system = OrthancSystem(where, "Orthanc")
            elif key == "orthanc_zlib":
                system = OrthancSystem(where, "Orthanc (StorageCompression)", storage_compression=True)
            elif key == "storescp":
                system = Storescp(where)
            else:
                raise KeyError(key)
            self.systems[key] = system
            new.append(system)
        started = time.monotonic()
        for system in new:
            system.start()
        wait_all_ready(new)
        if new:
            seconds = time.monotonic() - started
            self.log(f"  started {', '.join(s.label for s in new)} in {seconds:.0f} s")
            self.results.extra.setdefault("startup_seconds", {})[" + ".join(s.label for s in new)] = round(seconds, 1)

    def stop(self, keys: Iterable[str] | None = None) -> None:
        """Stop the systems ``keys`` (default: all), in parallel."""
        chosen = [(key, self.systems.pop(key)) for key in list(self.systems if keys is None else keys)
                  if key in self.systems]
        for key, _system in chosen:
            self.stored.pop(key, None)
            self.ct_variant.pop(key, None)
        stop_all([system for _key, system in chosen], self.log)


def stop_all(systems: Sequence[Any], log: Callable[[str], None] = print) -> None:
    """Stop ``systems`` in parallel threads (each stop waits for a graceful shutdown)."""

    def stop(system: Any) -> None:
        try:
            system.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            log(f"  warning: stopping {system.label} failed: {exc}")

    with ThreadPoolExecutor(max(1, len(systems))) as pool:
        list(pool.map(stop, systems))


#: The systems each part uses (started together at the beginning of the run).
PART_SYSTEMS = {"storage": ("pacs", "orthanc", "orthanc_zlib"), "wado": ("pacs", "orthanc"),
                "ingest": ("pacs", "pacs_none", "orthanc", "storescp"),
                "rss": ("pacs", "pacs_none", "orthanc", "storescp"), "qido": (), "viewer": ("pacs",)}


def rotate(items: Sequence[Any], k: int) -> list[Any]:
    """``items`` rotated left by ``k`` (round-robin order of systems per round)."""
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# -- RSS sampling -------------------------------------------------------------------------------


class RssSampler:
    """Samples the summed RSS of a system's process tree every ``interval`` s in a thread."""

    def __init__(self, system: Any, interval: float = 0.05) -> None:
        self.system = system
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._pids: list[int] = []
        self._pids_at = 0.0

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            if now - self._pids_at > 0.5:  # process trees change rarely; rescan /proc twice a second
                self._pids, self._pids_at = self.system.pids(), now
            rss, _ = memory_kib(self._pids)
            self.peak_kib = max(self.peak_kib, rss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- C-STORE ---------------------------------------------------------------------------------


def storescu_env(tuned: bool) -> dict[str, str]:
    """The environment for storescu: ``TCP_NODELAY=1`` when tuned, else without it."""
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if tuned:
        env["TCP_NODELAY"] = "1"
    return env


def send(system: Any, files: Sequence[Path], *, tuned: bool = True, associations: int = 1,
         timeout: float = 900) -> tuple[float, list[str]]:
    """C-STORE ``files`` to ``system`` with ``associations`` parallel storescu processes.

    Returns the seconds from the first process start to the last one's exit (after its
    last C-STORE response and release) and the error output of failed runs.
    """
    chunks = list(bdata.iter_chunks(files, associations))
    env = storescu_env(tuned)
    errors: list[str] = []
    started = time.perf_counter()
    procs = [subprocess.Popen(
        ["storescu", "-aet", SCU_AET, "-aec", system.aet, "127.0.0.1", str(system.dicom_port), *map(str, chunk)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, text=True,
        errors="replace") for chunk in chunks]
    deadline = started + timeout
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            errors.append(f"storescu timed out after {timeout:.0f} s")
        if proc.returncode != 0:
            errors.append(f"storescu exit {proc.returncode}: {out[-600:]}")
    return time.perf_counter() - started, errors


def wait_compressed(system: Any, timeout: float = 900.0) -> None:
    """Poll the index until no instance is pending compression."""
    deadline = time.monotonic() + timeout
    while system.pending_compression() > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{system.label}: compression still pending after {timeout:.0f} s")
        time.sleep(0.05)


def settled_bytes(system: Any, timeout: float = 15.0) -> int:
    """``system.stored_bytes()`` once it stops changing (originals are deleted just after the index switch)."""
    deadline = time.monotonic() + timeout
    last = system.stored_bytes()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = system.stored_bytes()
        if now == last:
            return now
        last = now
    return last


@dataclass
class IngestResult:
    seconds_ack: float
    seconds_done: float
    instances: int
    bytes: int
    peak_rss_kib: int
    errors: list[str]


def ingest_once(ctx: Context, key: str, files: Sequence[Path], *, tuned: bool, associations: int,
                storage_set: str | None = None) -> IngestResult:
    """Send a fresh variant of ``files`` (new UIDs), time the acks and, for PACS-lite, compression.

    With ``storage_set`` (a complete data set) the stored bytes it added are recorded in
    ``ctx.stored`` (once compression has finished), so that the storage part need not
    send it again.
    """
    system = ctx.systems[key]
    ensure_running(system)
    variant = ctx.next_variant()
    copy_dir = ctx.workdir / "variants" / str(variant)
    copies = bdata.make_variant(files, variant, copy_dir)
    if isinstance(system, Storescp):
        system.clear()
    before = system.instance_count()
    bytes_before = system.stored_bytes() if storage_set else 0
    with RssSampler(system) as sampler:
        started = time.perf_counter()
        seconds, errors = send(system, copies, tuned=tuned, associations=associations)
        done = seconds
        if system.compresses:
            wait_compressed(system)
            done = time.perf_counter() - started
    stored = system.instance_count() - before
    if stored != len(files):
        errors.append(f"{system.label}: {stored} of {len(files)} instances stored")
    elif storage_set:
        ctx.stored.setdefault(key, {})[storage_set] = settled_bytes(system) - bytes_before
        if storage_set == "ct":
            ctx.ct_variant.setdefault(key, variant)
    shutil.rmtree(copy_dir, ignore_errors=True)
    if isinstance(system, Storescp):
        system.clear()
    return IngestResult(seconds, done, len(files), sum(f.stat().st_size for f in files), sampler.peak_kib, errors)


INGEST_MODES = (
    # key, label, tuned sender, associations
    ("tuned", "storescu TCP_NODELAY=1, 1 association", True, 1),
    ("plain", "unmodified storescu, 1 association", False, 1),
    ("tuned4", "storescu TCP_NODELAY=1, 4 associations", True, 4),
)


def phase_ingest(ctx: Context, *, record_ingest: bool = True) -> None:
    """C-STORE ingest of the CT series and the small instances, every mode, every system, each round."""
    keys = ["pacs", "pacs_none", "orthanc", "storescp"]
    ctx.start(keys)
    systems = {k: ctx.system(k) for k in keys}
    res = ctx.results
    rss_peaks: dict[str, list[float]] = {k: [] for k in keys}
    sc = ctx.scale
    sets = [("ct", ctx.data.ct, {"plain": sc.unmodified_ct, "tuned4": sc.concurrent_ct}),
            ("small", ctx.data.small, {"plain": sc.unmodified_small, "tuned4": sc.concurrent_small})]
    modes = INGEST_MODES if record_ingest else INGEST_MODES[:1]
    for r in range(ctx.scale.rounds):
        round_peak = {k: 0.0 for k in keys}
        for s_i, (set_name, dataset, subsets) in enumerate(sets):
            for m_i, (mode, label, tuned, assocs) in enumerate(modes):
                files = dataset.files[:subsets.get(mode, len(dataset.files))]
                for key in rotate(keys, r + s_i + m_i):
                    measure_storage = (set_name if mode == "tuned" and key in ("pacs", "orthanc")
                                       and set_name not in ctx.stored.get(key, {}) else None)
                    out = ingest_once(ctx, key, files, tuned=tuned, associations=assocs,
                                      storage_set=measure_storage)
                    for err in out.errors:
                        res.error(f"ingest {set_name}/{mode}/{key}: {err}")
                    round_peak[key] = max(round_peak[key], out.peak_rss_kib / 1024)
                    if not record_ingest:
                        continue
                    rate, mbps = out.instances / out.seconds_ack, out.bytes / MB / out.seconds_ack
                    set_label = f"{'CT 512x512' if set_name == 'ct' else 'small'} ({len(files)} inst.)"
                    for pl_key, suffix in (("pacs", "JPEG-LS"), ("pacs_none", "compression none")):
                        target = (Target("ratio>=", 1.2, ">= 1.2x Orthanc")
                                  if mode == "tuned" and pl_key == "pacs" else None)
                        row = res.row(f"ingest.{set_name}.{mode}.{pl_key}", "Ingest",
                                      f"{set_label}, {label}: PACS-lite {suffix}, until last ack",
                                      "inst/s", "higher", secondary_unit="MB/s", target=target)
                        if key == pl_key:
                            row.add("pacs", rate, mbps)
                        elif key in ("orthanc", "storescp"):
                            row.add(key, rate, mbps)
                    if key in ("pacs", "orthanc", "storescp"):
                        row = res.row(f"ingest.{set_name}.{mode}.compressed", "Ingest",
                                      f"{set_label}, {label}: PACS-lite until all compressed+verified "
                                      "(others: until last ack)", "inst/s", "higher", secondary_unit="MB/s")
                        seconds = out.seconds_done if key == "pacs" else out.seconds_ack
                        row.add(key, out.instances / seconds, out.bytes / MB / seconds)
                ctx.log(f"  round {r + 1}: ingest {set_name} {mode} done")
        for key in keys:
            rss_peaks[key].append(round_peak[key])
    for key, label in (("pacs", "PACS-lite (JPEG-LS)"), ("pacs_none", "PACS-lite (compression none)")):
        row = res.row(f"rss.ingest.{key}", "Memory",
                      f"Peak RSS during ingest (process tree, sampled), {label}", "MB", "lower")
        for system_key in (key, "orthanc", "storescp"):
            for value in rss_peaks[system_key]:
                row.add("pacs" if system_key == key else system_key, value)
    for key in keys:
        _rss, hwm = memory_kib(systems[key].pids())
        res.extra.setdefault("vmhwm_sum_mb_after_ingest", {})[key] = round(hwm / 1024, 1)


# -- stored bytes ---------------------------------------------------------------------------------


def load_base(ctx: Context, key: str, sets: Sequence[str] = ("ct",)) -> dict[str, int]:
    """Make sure system ``key`` holds each of ``sets``; return the stored bytes each added.

    A set the ingest part already sent completely is not sent again (its stored bytes
    were recorded then); otherwise the cached base variant is sent now, one association.
    """
    system = ctx.system(key)
    ensure_running(system)
    measured = ctx.stored.setdefault(key, {})
    for name in sets:
        if name in measured:
            continue
        dataset = getattr(ctx.data, name)
        before = system.stored_bytes()
        count_before = system.instance_count()
        if name == "real":
            from harness.dcmtk import store_in_own_syntax

            run = store_in_own_syntax(system.dicom_port, dataset.files, ctx.workdir / "corpus" / key,
                                      aec=system.aet, aet=SCU_AET, env={"TCP_NODELAY": "1"}, timeout=600)
            stored = run.by_outcome("stored")
            ctx.raw_accepted.setdefault(key, {})[name] = sum(Path(o.path).stat().st_size for o in stored)
            ctx.results.extra.setdefault("real_images_accepted", {})[key] = f"{len(stored)}/{len(dataset.files)}"
            ctx.results.extra.setdefault("real_images_refused", {})[key] = {
                Path(o.path).name: (o.comment or o.detail or o.outcome)[:120]
                for o in run.outcomes.values() if o.outcome != "stored"}
        else:
            _seconds, errors = send(system, dataset.files)
            for err in errors:
                ctx.results.error(f"load {name} into {key}: {err}")
        if system.compresses:
            wait_compressed(system)
        measured[name] = settled_bytes(system) - before
        count = system.instance_count() - count_before
        if name != "real" and count != len(dataset.files):
            ctx.results.error(f"load {name} into {key}: {count} of {len(dataset.files)} instances stored")
        if name == "ct":
            ctx.ct_variant.setdefault(key, bdata.BASE_VARIANT)
    return {name: measured[name] for name in sets}


def phase_storage(ctx: Context) -> None:
    """Stored bytes after ingest of each set, against the raw (sent) bytes."""
    keys = ["pacs", "orthanc", "orthanc_zlib"]
    ctx.start(keys)
    names = ("ct", "small", "real")
    sizes = {key: load_base(ctx, key, names) for key in keys}
    raw = {name: getattr(ctx.data, name).bytes for name in names}
    res = ctx.results
    pacs = ctx.system("pacs")
    res.extra["pacs_index_object_bytes"] = pacs.index_object_bytes()
    res.extra["raw_bytes"] = raw
    res.extra["raw_bytes_accepted"] = ctx.raw_accepted
    res.extra["stored_bytes"] = sizes
    with pacs.catalog().reader() as s:
        from sqlalchemy import func, select

        from pacs_lite.catalog.models import Instance

        res.extra["pacs_compression_states"] = dict(
            s.execute(select(Instance.compression_state, func.count()).group_by(Instance.compression_state)).all())
    labels = {"ct": f"CT series ({len(ctx.data.ct.files)} x 512x512, {raw['ct'] / MB:.0f} MB raw)",
              "small": f"small instances ({len(ctx.data.small.files)}, {raw['small'] / MB:.0f} MB raw)",
              "real": f"pydicom-data images ({len(ctx.data.real.files)}, {raw['real'] / MB:.0f} MB as sent; "
                      "ratio over the files each system accepted)"}
    for name in names:
        for other, other_label in (("orthanc", "Orthanc default"), ("orthanc_zlib", "Orthanc StorageCompression")):
            target = Target("value<=", 0.25, "<= 0.25x raw") if name == "ct" and other == "orthanc" else None
            row = res.row(f"storage.{name}.{other}", "Storage",
                          f"Stored / raw, {labels[name]}; vs {other_label}", "x raw", "lower", target=target,
                          secondary_unit="MB")
            for system_key, column in (("pacs", "pacs"), (other, "orthanc")):
                sent = ctx.raw_accepted.get(system_key, {}).get(name, raw[name])  # refused files do not count
                row.add(column, sizes[system_key][name] / sent, sizes[system_key][name] / MB)
    ctx.stop(["orthanc_zlib"])


# -- WADO-RS ---------------------------------------------------------------------------------------


def timed_get(session: requests.Session, url: str, accept: str) -> tuple[float, int, int]:
    """GET ``url`` and read the whole body; (seconds, status, body bytes)."""
    started = time.perf_counter()
    response = session.get(url, headers={"Accept": accept}, timeout=120)
    body = response.content
    return time.perf_counter() - started, response.status_code, len(body)


def latencies(urls: Sequence[str], accept: str, clients: int) -> tuple[list[float], list[str]]:
    """GET every URL (split over ``clients`` threads, one keep-alive session each); latencies in ms."""
    chunks = [list(urls[i::clients]) for i in range(clients)]
    errors: list[str] = []

    def worker(chunk: list[str]) -> list[float]:
        out = []
        with requests.Session() as session:
            for url in chunk:
                seconds, status, _size = timed_get(session, url, accept)
                if status != 200:
                    errors.append(f"HTTP {status} for {url}")
                out.append(seconds * 1000)
        return out

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(worker, chunks))
    return [v for chunk in results for v in chunk], errors


def phase_wado(ctx: Context) -> None:
    """Instance and frame latency (1 and 4 clients), series metadata, study retrieve throughput."""
    keys = ["pacs", "orthanc"]
    ctx.start(keys)
    for key in keys:
        load_base(ctx, key, ("ct",))
        ensure_running(ctx.system(key))
    base_marker = f"{bdata.UID_ROOT}.{bdata.BASE_VARIANT}."

    def uids(key: str) -> tuple[str, str, list[str]]:
        """Study, series and SOP Instance UIDs of the CT series as system ``key`` holds it."""
        marker = f"{bdata.UID_ROOT}.{ctx.ct_variant[key]}."
        return (ctx.data.ct.study_uids[0].replace(base_marker, marker),
                ctx.data.ct_series_uid.replace(base_marker, marker),
                [u.replace(base_marker, marker) for u in ctx.data.ct_sop_uids])

    rng = random.Random(5)
    n = ctx.scale.wado_requests
    picks = [rng.randrange(len(ctx.data.ct_sop_uids)) for _ in range(n)]
    sops = ctx.data.ct_sop_uids
    res = ctx.results
    kinds = (
        # key, label, path suffix, accept, client counts, target on p50
        ("instance", "instance, default (uncompressed)", "", ACCEPT_DICOM, (1, 4), True),
        ("instance_any", "instance, transfer-syntax=*", "", ACCEPT_DICOM + "; transfer-syntax=*", (1,), False),
        ("frame", "frame 1, default (uncompressed)", "/frames/1", ACCEPT_OCTET, (1, 4), True),
        ("frame_any", "frame 1, transfer-syntax=*", "/frames/1", ACCEPT_OCTET + "; transfer-syntax=*", (1,), False),
    )
    raw_study = ctx.data.ct.bytes
    def instance_urls(key: str, suffix: str = "") -> list[str]:
        study, series, sop_uids = uids(key)
        base = f"{ctx.system(key).dicomweb}/studies/{study}/series/{series}/instances/"
        return [base + sop_uids[i] + suffix for i in picks]

    for key in keys:  # warm-up: first requests pay imports, connection set-up, caches
        latencies(instance_urls(key)[:4], ACCEPT_DICOM, 1)
    for r in range(ctx.scale.rounds):
        for k_i, (kind, label, suffix, accept, client_counts, with_target) in enumerate(kinds):
            for clients in client_counts:
                for key in rotate(keys, r + k_i):
                    ensure_running(ctx.system(key))
                    values, errors = latencies(instance_urls(key, suffix), accept, clients)
                    for err in errors[:3]:
                        res.error(f"wado {kind} {key}: {err}")
                    for stat, q in (("p50", 50), ("p95", 95)):
                        target = (Target("ratio<=", 0.5, "<= 0.5x Orthanc")
                                  if with_target and stat == "p50" else None)
                        row = res.row(f"wado.{kind}.c{clients}.{stat}", "WADO-RS",
                                      f"WADO-RS {label}, {clients} client{'s' if clients > 1 else ''}, {stat}",
                                      "ms", "lower", target=target)
                        row.add(key, percentile(values, q))
        # series metadata of the CT series (warm: one untimed request first)
        for key in rotate(keys, r):
            study, series, _sops = uids(key)
            url = f"{ctx.system(key).dicomweb}/studies/{study}/series/{series}/metadata"
            with requests.Session() as session:
                first, status, size = timed_get(session, url, ACCEPT_JSON)
                if status != 200:
                    res.error(f"metadata {key}: HTTP {status}")
                times = [timed_get(session, url, ACCEPT_JSON)[0] * 1000 for _ in range(ctx.scale.metadata_repeats)]
            res.extra.setdefault("metadata_first_request_ms", {}).setdefault(key, []).append(round(first * 1000, 1))
            res.extra.setdefault("metadata_bytes", {})[key] = size
            row = res.row("wado.series_metadata", "WADO-RS",
                          f"Series metadata, {len(sops)}-slice CT series, p50", "ms", "lower",
                          target=Target("speedup>=", 10, ">= 10x faster than Orthanc"))
            row.add(key, statistics.median(times))
        # whole-study retrieve
        for ts_key, ts_label, accept in (("any", "transfer-syntax=*", ACCEPT_DICOM + "; transfer-syntax=*"),
                                         ("uncompressed", "uncompressed",
                                          ACCEPT_DICOM + f"; transfer-syntax={EXPLICIT_LE}")):
            for key in rotate(keys, r):
                url = f"{ctx.system(key).dicomweb}/studies/{uids(key)[0]}"
                started = time.perf_counter()
                wire = 0
                with requests.get(url, headers={"Accept": accept}, stream=True, timeout=600) as response:
                    for block in response.iter_content(1 << 20):
                        wire += len(block)
                    status = response.status_code
                seconds = time.perf_counter() - started
                if status != 200:
                    res.error(f"study retrieve {ts_key} {key}: HTTP {status}")
                res.extra.setdefault(f"study_retrieve_{ts_key}", {}).setdefault(key, []).append(
                    {"seconds": round(seconds, 3), "wire_bytes": wire})
                row = res.row(f"wado.study.{ts_key}", "WADO-RS",
                              f"Study retrieve ({len(sops)} CT slices), {ts_label}: raw study MB per second",
                              "MB/s", "higher", secondary_unit="wire MB/s")
                row.add(key, raw_study / MB / seconds, wire / MB / seconds)
        ctx.log(f"  round {r + 1}: WADO-RS done")


# -- QIDO-RS ---------------------------------------------------------------------------------------


def qido_queries(population: Sequence[bdata.StudyRecord], per_kind: int, seed: int = 11) -> list[tuple[str, dict[str, str]]]:
    """A realistic mix of study searches drawn from the population (same list for every system)."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, str]]] = []
    for _ in range(per_kind):
        rec = rng.choice(population)
        last = rec.patient_name.split("^")[0]
        day = rec.study_date
        import datetime as dt

        start = dt.datetime.strptime(day, "%Y%m%d").date()
        week = (start + dt.timedelta(days=6)).strftime("%Y%m%d")
        month_start = start.replace(day=1).strftime("%Y%m%d")
        month_end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
        out += [
            ("PatientID", {"PatientID": rec.patient_id}),
            ("PatientName prefix", {"PatientName": f"{last[:4]}*"}),  # Orthanc's plugin matches no "^" query
            ("AccessionNumber", {"AccessionNumber": rec.accession}),
            ("StudyInstanceUID", {"StudyInstanceUID": rec.study_uid}),
            ("StudyDate 7 days", {"StudyDate": f"{day}-{week}"}),
            ("Modality + month", {"ModalitiesInStudy": rec.modality,
                                  "StudyDate": f"{month_start}-{month_end.strftime('%Y%m%d')}"}),
            ("newest 25", {"limit": "25"}),
        ]
    return out


def run_queries(base: str, queries: Sequence[tuple[str, dict[str, str]]]) -> tuple[list[float], list[int], list[str]]:
    """Run ``queries`` against ``base/studies`` in one session: latencies (ms), result counts, errors."""
    times, counts, errors = [], [], []
    with requests.Session() as session:
        for kind, params in queries:
            started = time.perf_counter()
            # "*" stays literal: Orthanc 1.10's DICOMweb plugin does not match a percent-encoded %2A
            url = f"{base}/studies?{urlencode(params, safe='*')}" if params else f"{base}/studies"
            response = session.get(url, headers={"Accept": ACCEPT_JSON}, timeout=60)
            body = response.content
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code not in (200, 204):
                errors.append(f"{kind}: HTTP {response.status_code} {body[:200]!r}")
                counts.append(-1)
                continue
            counts.append(len(response.json()) if body else 0)
    return times, counts, errors


def postgres_admin_url() -> tuple[str | None, str]:
    """The admin URL of the PostgreSQL on 127.0.0.1:5432, or ``None`` and why not."""
    import psycopg

    url = os.environ.get("PACS_LITE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return url, ""
    except psycopg.Error as exc:
        return None, f"no PostgreSQL answers at {url.split('@')[-1]}: {str(exc).strip().splitlines()[0]}"


def orthanc_qido_seed(ctx: Context) -> Path:
    """An Orthanc data folder (index + storage) holding the QIDO studies, built once and cached."""
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "orthanc"], capture_output=True,
                             text=True).stdout.strip()
    seed = ctx.cache_dir / f"orthanc-qido-{ctx.data.spec.key()}-{version.replace(':', '_')}"
    if (seed / "done").exists():
        return seed
    build = Path(tempfile.mkdtemp(prefix="orthanc-qido-", dir=ctx.cache_dir))
    ctx.log(f"  populating Orthanc with {len(ctx.data.qido.files)} studies (1 instance each; cached for later runs)")
    system = OrthancSystem(build, "Orthanc (QIDO seed)").start()
    try:
        started = time.monotonic()
        _seconds, errors = send(system, ctx.data.qido.files, associations=4, timeout=3600)
        count = system.instance_count()
        if count != len(ctx.data.qido.files):
            raise RuntimeError(f"Orthanc stored {count} of {len(ctx.data.qido.files)} QIDO instances: {errors[:2]}")
        ctx.log(f"  Orthanc populated in {time.monotonic() - started:.0f} s")
    finally:
        system.stop()
    for part in ("orthanc.json", "orthanc.log"):
        with contextlib.suppress(FileNotFoundError):
            (build / part).unlink()
    shutil.rmtree(seed, ignore_errors=True)
    os.replace(build, seed)
    (seed / "done").write_text("ok\n")
    return seed


def sqlite_qido_seed(ctx: Context) -> Path:
    """A PACS-lite SQLite index with the QIDO population inserted directly, built once and cached."""
    from pacs_lite.catalog.migrate import MIGRATIONS

    heads = sorted(p.name for p in (MIGRATIONS / "versions").glob("*.py"))
    spec = ctx.data.spec
    seed = ctx.cache_dir / f"sqlite-qido-{spec.key()}-{len(heads)}-{heads[-1] if heads else 'none'}.db"
    if seed.exists():
        return seed
    tmp = seed.with_suffix(f".tmp{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(str(tmp) + suffix).unlink()
    info = bdata.populate_index(f"sqlite:///{tmp}", ctx.data.population, spec.qido_series_per_study,
                                spec.qido_instances_per_study, ctx.log)
    ctx.results.extra["qido_sqlite_population"] = info
    import sqlite3

    with sqlite3.connect(tmp) as conn:  # fold the WAL into the file before caching it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.replace(tmp, seed)
    return seed


def phase_qido(ctx: Context) -> None:
    """QIDO-RS study search latency on a populated index: SQLite and PostgreSQL vs Orthanc."""
    import psycopg

    spec, res = ctx.data.spec, ctx.results
    n_studies, n_inst = spec.qido_studies, spec.qido_studies * spec.qido_instances_per_study
    admin, reason = postgres_admin_url()
    pg_db = f"pacs_lite_bench_{os.getpid()}"
    pg_url = None
    jobs: dict[str, Any] = {}
    systems: dict[str, Any] = {}
    try:  # the bench database is dropped whatever fails, from here on
        with ThreadPoolExecutor(3) as pool:  # the three populations use different cores and servers
            jobs["sqlite"] = pool.submit(sqlite_qido_seed, ctx)
            jobs["orthanc"] = pool.submit(orthanc_qido_seed, ctx)
            if admin is not None:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{pg_db}"')
                    conn.execute(f'CREATE DATABASE "{pg_db}"')
                pg_url = admin.rsplit("/", 1)[0] + "/" + pg_db
                jobs["pg"] = pool.submit(bdata.populate_index, pg_url, ctx.data.population, spec.qido_series_per_study,
                                         spec.qido_instances_per_study, ctx.log)
            else:
                ctx.log(f"  PostgreSQL part skipped: {reason}")
                res.extra["qido_postgresql_skipped"] = reason
            outcome = {name: job.result() for name, job in jobs.items()}
        if "pg" in outcome:
            res.extra["qido_postgresql_population"] = outcome["pg"]
        sqlite_dir = ctx.workdir / "qido-sqlite"
        (sqlite_dir / "pacs-data").mkdir(parents=True)
        shutil.copyfile(outcome["sqlite"], sqlite_dir / "pacs-data" / "index.db")
        systems["sqlite"] = PacsLite(sqlite_dir, "PACS-lite (SQLite)")
        if pg_url is not None:
            systems["pg"] = PacsLite(ctx.workdir / "qido-pg", "PACS-lite (PostgreSQL)", index_url=pg_url)
        systems["orthanc"] = OrthancSystem(ctx.workdir / "qido-orthanc", "Orthanc (QIDO)", seed_dir=outcome["orthanc"])
        for system in systems.values():
            system.start()
        wait_all_ready(systems.values())
        queries = qido_queries(ctx.data.population[: spec.qido_orthanc_studies], ctx.scale.qido_queries_per_kind)
        for system in systems.values():  # warm-up
            run_queries(system.dicomweb, queries[:7])
        kinds = [kind for kind, _ in queries]
        order = list(systems)
        counts: dict[str, list[int]] = {}
        for r in range(ctx.scale.rounds):
            for key in rotate(order, r):
                times, found, errors = run_queries(systems[key].dicomweb, queries)
                counts[key] = found
                for err in errors[:3]:
                    res.error(f"qido {key}: {err}")
                for db_key, db_label in (("sqlite", "SQLite"), ("pg", "PostgreSQL")):
                    if db_key not in systems:
                        continue
                    if key not in (db_key, "orthanc"):
                        continue
                    scale_label = (f"PACS-lite {db_label} {n_studies // 1000 if n_studies >= 1000 else n_studies}"
                                   f"{'k' if n_studies >= 1000 else ''} studies/{_count(n_inst)} instances vs Orthanc "
                                   f"{_count(spec.qido_orthanc_studies)} studies/{_count(spec.qido_orthanc_studies)} "
                                   "instances")
                    for stat, q in (("p50", 50), ("p95", 95)):
                        target = (Target("ratio<=", 1.0, "<= Orthanc") if stat == "p50"
                                  else Target("value<=", 50.0, "<= 50 ms"))
                        row = res.row(f"qido.{db_key}.{stat}", "QIDO-RS",
                                      f"QIDO-RS study search {stat}, {scale_label}", "ms", "lower", target=target)
                        row.add("pacs" if key == db_key else "orthanc", percentile(times, q))
            ctx.log(f"  round {r + 1}: QIDO-RS done")
        mismatch = {key: [f"{kind}: {a} vs {b}" for kind, a, b in zip(kinds, counts[key], counts["orthanc"], strict=True)
                          if a != b] for key in counts if key != "orthanc"}
        res.extra["qido_result_count_mismatches_vs_orthanc"] = mismatch
        res.extra["qido_queries"] = {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)}
    finally:
        stop_all(list(systems.values()), ctx.log)
        if pg_url is not None and admin is not None:
            with contextlib.suppress(psycopg.Error), psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')


def _count(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)
