"""Compression at rest: stored bytes per modality and codec, encode and verify time.

``python -m bench.compression [--out DIR] [--quick]`` compresses every native image of
the ``pydicom-data`` package and slices of the generated 512x512 CT series with each
lossless target of :mod:`storage.pixels`, exactly as the compression workers do
(``pixels.compress(..., verify=True)``: encode, decode, compare), and reports the stored
pixel bytes as a fraction of the raw pixel bytes, per modality and codec, against the
targets (CT <= 0.25x, MR <= 0.30x, CR/DX <= 0.45x with the default codec).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import pydicom
from pydicom.encaps import generate_fragments

from bench.data import _shifted, pydicom_data_dir
from storage import pixels

TARGETS = {"jpeg-ls": "1.2.840.10008.1.2.4.80", "htj2k": "1.2.840.10008.1.2.4.201",
           "jpeg2000": "1.2.840.10008.1.2.4.90", "rle": "1.2.840.10008.1.2.5"}
DEFAULT = "jpeg-ls"
LIMITS = {"CT": 0.25, "MR": 0.30, "CR": 0.45, "DX": 0.45}
NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def _images(quick: bool) -> list[tuple[str, str, pydicom.Dataset]]:
    """(name, modality, dataset) for every native image of pydicom-data, plus generated CT slices."""
    out = []
    for path in sorted(pydicom_data_dir().rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - not a DICOM file
            continue
        if "PixelData" not in ds or ds.file_meta.get("TransferSyntaxUID") not in NATIVE:
            continue
        out.append((path.name, str(ds.get("Modality", "OT")), ds))
    ct_source = next((ds for name, mod, ds in out if name == "693_UNCR.dcm"), None)
    if ct_source is not None:
        img = ct_source.pixel_array
        background = int(ct_source.get("PixelPaddingValue", img.min()))
        for k in range(0, 300, 60 if quick else 10):
            ds = ct_source.copy()
            ds.PixelData = _shifted(img, k, background).astype(img.dtype).tobytes()
            out.append((f"series-slice-{k:03d}", "CT", ds))
    return out[:8] if quick else out


def _pixel_bytes(ds: pydicom.Dataset) -> int:
    return sum(len(f) for f in generate_fragments(ds.PixelData)) if ds.file_meta.TransferSyntaxUID not in NATIVE \
        else len(ds.PixelData)


def measure(quick: bool = False) -> dict:
    """Compress every image with every target; return per-modality, per-codec aggregates."""
    raw_total: dict[tuple[str, str], int] = defaultdict(int)
    stored_total: dict[tuple[str, str], int] = defaultdict(int)
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    refused: dict[str, list[str]] = defaultdict(list)
    for name, modality, ds in _images(quick):
        raw = len(ds.PixelData)
        for codec, uid in TARGETS.items():
            started = time.perf_counter()
            try:
                out = pixels.compress(ds, uid, verify=True)
            except pixels.CodecError as exc:
                refused[codec].append(f"{name}: {getattr(exc, 'reason', '') or exc}"[:120])
                continue
            times[(modality, codec)].append(time.perf_counter() - started)
            raw_total[(modality, codec)] += raw
            stored_total[(modality, codec)] += _pixel_bytes(out)
    rows = []
    for (modality, codec), raw in sorted(raw_total.items()):
        fraction = stored_total[(modality, codec)] / raw
        limit = LIMITS.get(modality) if codec == DEFAULT else None
        rows.append({
            "modality": modality, "codec": codec, "images": len(times[(modality, codec)]),
            "raw_bytes": raw, "stored_bytes": stored_total[(modality, codec)], "stored_fraction": fraction,
            "encode_verify_ms_median": 1000 * statistics.median(times[(modality, codec)]),
            "target": limit, "result": None if limit is None else ("PASS" if fraction <= limit else "MISS"),
        })
    return {"rows": rows, "refused": dict(refused)}


def table(result: dict) -> str:
    lines = [f"{'modality':8} {'codec':9} {'images':>6} {'stored/raw':>10} {'enc+verify ms':>13}  target",
             "-" * 62]
    for r in result["rows"]:
        target = "" if r["target"] is None else f"<= {r['target']:.2f}x {r['result']}"
        lines.append(f"{r['modality']:8} {r['codec']:9} {r['images']:6d} {r['stored_fraction']:10.3f} "
                     f"{r['encode_verify_ms_median']:13.1f}  {target}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compression", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--quick", action="store_true", help="a few images only (smoke test)")
    args = parser.parse_args(argv)
    result = measure(args.quick)
    print(table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compression.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
