"""The benchmark must keep working: ``python -m bench --quick`` end to end, as a user runs it.

Tiny data, one round, every part (ingest, stored bytes, WADO-RS, QIDO-RS, RSS) against
real PACS-lite (``pacs-lite serve``), Debian Orthanc with its DICOMweb plugin and dcmtk
``storescp``. The assertions are on the report's shape, not on speed: every measurement
has numeric values for PACS-lite and the systems it is compared with, and the chart exists.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.peers  # the benchmark: PACS-lite, Orthanc and storescp

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("storescu", "storescp", "/usr/sbin/Orthanc", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

#: Every measurement the report must contain (the PostgreSQL rows only when a server answers).
EXPECTED_PREFIXES = ("ingest.ct.tuned.", "ingest.ct.plain.", "ingest.ct.tuned4.", "ingest.small.tuned.",
                     "ingest.small.plain.", "ingest.small.tuned4.", "storage.ct.", "storage.small.", "storage.real.",
                     "wado.instance.", "wado.frame.", "wado.series_metadata", "wado.study.any",
                     "wado.study.uncompressed", "qido.sqlite.p50", "qido.sqlite.p95", "rss.ingest.")


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(300)
def test_bench_quick_run_reports_every_measurement(tmp_path: Path) -> None:
    missing = [n for n in NEEDED if shutil.which(n) is None and not os.path.exists(n)]
    if missing:
        pytest.skip(f"benchmark peers not installed: {', '.join(missing)}")
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=280)
    log = proc.stdout[-6000:] + "\n" + proc.stderr[-4000:]
    assert proc.returncode == 0, log

    report = json.loads((out / "latest.json").read_text())
    rows = {row["key"]: row for row in report["measurements"]}
    for prefix in EXPECTED_PREFIXES:
        assert any(key.startswith(prefix) for key in rows), f"no measurement {prefix}*\n{log}"
    if "qido_postgresql_skipped" not in report["extra"]:
        assert "qido.pg.p50" in rows and "qido.pg.p95" in rows
    for key, row in rows.items():
        assert _numeric(row["median"].get("pacs")), f"{key}: no PACS-lite value: {row}"
        assert _numeric(row["median"].get("orthanc")), f"{key}: no Orthanc value: {row}"
        if key.startswith("ingest.") and not key.endswith(".compressed"):
            assert _numeric(row["median"].get("storescp")), f"{key}: no storescp value"
            assert _numeric(row["ratio_storescp"])
        assert _numeric(row["ratio_orthanc"]), f"{key}: no ratio"
        if "target" in row:
            assert row["target"]["result"] in ("PASS", "MISS"), row
    assert report["errors"] == []
    assert report["meta"]["versions"]["orthanc"] and report["meta"]["machine"]["nproc"]

    png = out / "latest.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = proc.stdout
    assert "| Measurement |" in table and ("PASS" in table or "MISS" in table)
