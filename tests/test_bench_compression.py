"""Smoke run of the compression benchmark (tiny data) so that it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_compression_benchmark_quick_run(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "bench.compression", "--quick", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "compression.json").read_text())
    codecs = {r["codec"] for r in result["rows"]}
    assert codecs == {"jpeg-ls", "htj2k", "jpeg2000", "rle"}
    for row in result["rows"]:
        assert 0 < row["stored_fraction"] < 1.5 and row["encode_verify_ms_median"] > 0
    assert "stored/raw" in out.stdout
