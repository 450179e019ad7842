"""Building PACS-lite configurations for tests, running its command line, finding test images."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydicom.data

from pacs_lite.config import Config, load_config


def make_config(base_dir: Path, *, index_url: str | None = None, **sections: dict[str, Any]) -> Config:
    """Embedded defaults rooted in ``base_dir`` with ``sections`` overridden (no environment)."""
    cfg = load_config(None, environ={}, base_dir=base_dir)
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in sections.items()}
    if index_url:
        overrides.setdefault("index", {})["url"] = index_url
    return cfg.with_overrides(**overrides) if overrides else cfg


def pacs_lite(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pacs_lite ARGS`` in ``cwd``; its output is captured as text.

    The environment is the test's without any ``PACS_LITE_*``/``PACSLITE_*`` variable, plus ``env``.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PACS_LITE_", "PACSLITE_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pacs_lite", *args], cwd=cwd, env=full_env, text=True, capture_output=True,
        timeout=timeout,
    )


def pydicom_test_files() -> list[Path]:
    """Every file in pydicom's own test data folder."""
    root = Path(pydicom.data.__file__).parent / "test_files"
    return sorted(Path(p) for p in glob.glob(str(root / "**" / "*"), recursive=True) if os.path.isfile(p))


def pydicom_data_files() -> list[Path]:
    """Every file of the ``pydicom-data`` package (the images pydicom fetches on demand)."""
    import data_store

    root = Path(data_store.__file__).parent / "data"
    return sorted(Path(p) for p in glob.glob(str(root / "**" / "*"), recursive=True) if os.path.isfile(p))


def corpus_files() -> list[Path]:
    """The real-image corpus: pydicom-data plus pydicom's test files."""
    return pydicom_data_files() + pydicom_test_files()
