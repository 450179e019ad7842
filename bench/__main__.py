"""``python -m bench``: PACS-lite against Orthanc and dcmtk storescp, on this machine, now.

Installs nothing: checks that dcmtk, Orthanc and its DICOMweb plugin are installed,
starts every system on free loopback ports with fresh data directories, runs each
measurement on the same data in the same run, alternating between systems, for a
number of rounds, prints a table of medians and ratios with every target marked PASS or
MISS, and writes ``latest.json`` and ``latest.png`` (plus time-stamped copies) to the
output folder. Generated data is cached under ``<out>/cache``.

Usage::

    python -m bench [--quick] [--rounds N] [--out bench/results] [--only ingest,storage,wado,qido,rss,viewer]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

PHASES = ("ingest", "rss", "storage", "wado", "qido", "viewer")
#: What runs without --only: the viewers (a browser, PACS-lite only) run when asked for (--only viewer).
DEFAULT_PHASES = ("ingest", "rss", "storage", "wado", "qido")


def machine() -> dict[str, object]:
    """nproc, RAM, CPU model and kernel of this machine."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        mem_kib = 0
    return {"nproc": os.cpu_count(), "ram_gb": round(mem_kib / 1024 / 1024, 1), "cpu": cpu,
            "kernel": platform.release(), "os": _os_name()}


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, one round (the smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per measurement (default 3; 1 with --quick)")
    parser.add_argument("--out", default="bench/results", help="results folder (default: bench/results)")
    parser.add_argument("--only", default=",".join(DEFAULT_PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)} (default: {','.join(DEFAULT_PHASES)})")
    parser.add_argument("--keep", action="store_true", help="keep the systems' data directories (debugging)")
    args = parser.parse_args(argv)
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(args.only) - set(PHASES)
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    # pynetdicom's console scripts (storescu, ...) in an activated virtualenv would shadow dcmtk's
    venv_bin = os.path.realpath(os.path.dirname(sys.executable))
    os.environ["PATH"] = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != venv_bin)
    args = parse_args(argv)
    from . import data as bdata
    from .systems import preflight, tool_versions

    missing = preflight()
    if missing:
        print("python -m bench: missing (install them, the benchmark installs nothing):", file=sys.stderr)
        for item in missing:
            print(f"  - {item}", file=sys.stderr)
        return 2

    from . import measure
    from .report import Results

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    spec = bdata.QUICK if args.quick else bdata.FULL
    scale = measure.QUICK_SCALE if args.quick else measure.FULL_SCALE
    if args.rounds is not None:
        scale = replace(scale, rounds=args.rounds)
    out = Path(args.out).resolve()
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    now = dt.datetime.now(dt.UTC)
    results = Results(meta={
        "date": now.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "versions": tool_versions(),
        "quick": args.quick, "rounds": scale.rounds, "parts": args.only, "data": spec.__dict__,
        "scale": scale.__dict__, "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    })
    log(f"PACS-lite benchmark: {'quick' if args.quick else 'full'}, {scale.rounds} round(s), parts: "
        f"{', '.join(args.only)}")
    data = bdata.prepare(cache, spec, log)
    log(f"data ready: CT {len(data.ct.files)} slices ({data.ct.bytes / 1e6:.0f} MB), {len(data.small.files)} small, "
        f"{len(data.real.files)} pydicom-data images, QIDO {spec.qido_studies} studies")
    workdir = Path(tempfile.mkdtemp(prefix="pacs-lite-bench-"))
    ctx = measure.Context(data=data, scale=scale, workdir=workdir, cache_dir=cache, results=results, log=log)
    failed = False
    timings: dict[str, float] = {}
    try:
        plan = [p for p in PHASES if p in args.only]
        if "rss" in plan and "ingest" in plan:
            plan.remove("rss")  # peak RSS is sampled during the ingest part
        first = [key for part in plan for key in measure.PART_SYSTEMS[part]]
        if first:
            log("starting the systems")
            try:
                ctx.start(dict.fromkeys(first))  # in parallel: one wait for all start-ups
            except Exception as exc:  # noqa: BLE001 - report it; the parts that need them fail alike
                failed = True
                traceback.print_exc()
                results.error(f"start-up failed: {type(exc).__name__}: {exc}")
                plan = [p for p in plan if not measure.PART_SYSTEMS[p]]
        for part in plan:
            part_started = time.monotonic()
            log(f"== {part}")
            try:
                if part == "storage":
                    measure.phase_storage(ctx)
                elif part == "wado":
                    measure.phase_wado(ctx)
                elif part == "ingest":
                    measure.phase_ingest(ctx)
                elif part == "rss":
                    measure.phase_ingest(ctx, record_ingest=False)
                elif part == "qido":
                    ctx.stop()  # QIDO runs its own servers; free the cores and memory first
                    measure.phase_qido(ctx)
                elif part == "viewer":
                    from .viewer import phase_viewer

                    phase_viewer(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - report it, run the other parts
                failed = True
                traceback.print_exc()
                results.error(f"{part} failed: {type(exc).__name__}: {exc}")
                for system in ctx.systems.values():
                    tail = system.log_tail(15)
                    if tail:
                        print(f"--- {system.label} log tail ---\n{tail}", file=sys.stderr)
            timings[part] = round(time.monotonic() - part_started, 1)
            log(f"   {part} took {timings[part]:.0f} s")
    except KeyboardInterrupt:
        log("interrupted: stopping the systems")
        failed = True
    finally:
        ctx.stop()
        if args.keep:
            log(f"data directories kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - started
    results.meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results.meta["seconds"] = {"total": round(total, 1), **timings}

    print()
    print(f"PACS-lite benchmark, {results.meta['date']}; {scale.rounds} round(s), medians; "
          f"{results.meta['machine']['nproc']} cores, {results.meta['machine']['ram_gb']} GB, "
          f"{results.meta['machine']['cpu']}")
    print(", ".join(f"{k} {v}" for k, v in results.meta["versions"].items()))
    print(f"load average (1/5/15 min) at start {results.meta['loadavg_start']}, at end {results.meta['loadavg_end']}; "
          f"took {total / 60:.1f} min")
    print()
    print(results.table())
    print()
    for line in results.summary():
        print(line)
    if results.errors:
        print(f"\n{len(results.errors)} error(s):")
        for err in results.errors:
            print(f"  - {err}")
    stamp = now.strftime("%Y%m%d-%H%M%S")
    for name in ("latest", f"bench-{stamp}"):
        results.write_json(out / f"{name}.json")
    results.write_chart(out / "latest.png")
    shutil.copyfile(out / "latest.png", out / f"bench-{stamp}.png")
    print(f"\nwrote {out / 'latest.json'} and {out / 'latest.png'} in {total / 60:.1f} min")
    return 1 if failed or results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
