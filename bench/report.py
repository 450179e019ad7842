"""Results: per-round values, medians, ratios, targets; printed as a table, saved as JSON and PNG.

Each :class:`Row` holds, per system (``"pacs"``, ``"orthanc"``, ``"storescp"``), one
value per round. The table shows medians, the ratios PACS-lite / Orthanc and
PACS-lite / storescp, and the target with PASS or MISS. Targets are reported, never
enforced: the benchmark does not fail on a MISS.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEMS = ("pacs", "orthanc", "storescp")
SYSTEM_NAMES = {"pacs": "PACS-lite", "orthanc": "Orthanc", "storescp": "storescp"}


@dataclass(frozen=True)
class Target:
    """A goal for PACS-lite's median.

    ``kind`` is ``"ratio>="``/``"ratio<="`` (PACS-lite / Orthanc against ``threshold``),
    ``"speedup>="`` (Orthanc / PACS-lite, for times) or ``"value<="``/``"value>="`` (PACS-lite alone).
    """

    kind: str
    threshold: float
    text: str

    def check(self, pacs: float | None, orthanc: float | None) -> bool | None:
        if pacs is None or (not self.kind.startswith("value") and not orthanc):
            return None
        if self.kind == "value<=":
            return pacs <= self.threshold
        if self.kind == "value>=":
            return pacs >= self.threshold
        if self.kind == "ratio>=":
            return pacs / orthanc >= self.threshold  # type: ignore[operator]
        if self.kind == "ratio<=":
            return pacs / orthanc <= self.threshold  # type: ignore[operator]
        if self.kind == "speedup>=":
            return orthanc / pacs >= self.threshold if pacs > 0 else True  # type: ignore[operator]
        raise ValueError(self.kind)


@dataclass
class Row:
    """One measurement: per-system values (one per round) and what they mean."""

    key: str
    section: str
    label: str
    unit: str
    better: str  # "higher" or "lower"
    secondary_unit: str | None = None
    target: Target | None = None
    values: dict[str, list[float]] = field(default_factory=dict)
    secondary: dict[str, list[float]] = field(default_factory=dict)

    def add(self, system: str, value: float, secondary: float | None = None) -> None:
        self.values.setdefault(system, []).append(float(value))
        if secondary is not None:
            self.secondary.setdefault(system, []).append(float(secondary))

    def median(self, system: str) -> float | None:
        values = self.values.get(system)
        return statistics.median(values) if values else None

    def secondary_median(self, system: str) -> float | None:
        values = self.secondary.get(system)
        return statistics.median(values) if values else None

    def ratio(self, other: str) -> float | None:
        """PACS-lite's median / ``other``'s median."""
        pacs, ref = self.median("pacs"), self.median(other)
        if pacs is None or not ref:
            return None
        return pacs / ref

    def verdict(self) -> bool | None:
        return self.target.check(self.median("pacs"), self.median("orthanc")) if self.target else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key, "section": self.section, "label": self.label, "unit": self.unit, "better": self.better,
            "values": self.values, "median": {s: self.median(s) for s in self.values},
            "ratio_orthanc": self.ratio("orthanc"), "ratio_storescp": self.ratio("storescp"),
        }
        if self.secondary:
            out["secondary_unit"] = self.secondary_unit
            out["secondary_values"] = self.secondary
            out["secondary_median"] = {s: self.secondary_median(s) for s in self.secondary}
        if self.target:
            verdict = self.verdict()
            out["target"] = {"kind": self.target.kind, "threshold": self.target.threshold, "text": self.target.text,
                             "result": None if verdict is None else ("PASS" if verdict else "MISS")}
        return out


@dataclass
class Results:
    """Every row, the errors seen, extra facts and the run's metadata."""

    meta: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, Row] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, key: str, section: str, label: str, unit: str, better: str, *,
            secondary_unit: str | None = None, target: Target | None = None) -> Row:
        """The row ``key``, created on first use."""
        if key not in self.rows:
            self.rows[key] = Row(key, section, label, unit, better, secondary_unit, target)
        return self.rows[key]

    def error(self, message: str) -> None:
        print(f"  ERROR: {message}")
        self.errors.append(message)

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "measurements": [row.to_json() for row in self.rows.values()],
                "errors": self.errors, "extra": self.extra}

    # -- table -------------------------------------------------------------------------------

    def table(self) -> str:
        """A Markdown table of every measurement (medians over the rounds)."""
        lines = [
            "| Measurement | Unit | PACS-lite | Orthanc | storescp | PACS-lite / Orthanc | PACS-lite / storescp | Target | Result |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        section = None
        for row in self.rows.values():
            if row.section != section:
                section = row.section
                lines.append(f"| **{section}** | | | | | | | | |")
            unit = row.unit + (f" ({row.secondary_unit})" if row.secondary else "")
            cells = [_cell(row.median(s), row.secondary_median(s)) for s in SYSTEMS]
            ratios = [_ratio(row.ratio(s)) for s in ("orthanc", "storescp")]
            verdict = row.verdict()
            result = "" if row.target is None else ("n/a" if verdict is None else ("PASS" if verdict else "MISS"))
            target = row.target.text if row.target else ""
            lines.append(f"| {row.label} | {unit} | " + " | ".join(cells + ratios) + f" | {target} | {result} |")
        return "\n".join(lines)

    def summary(self) -> list[str]:
        """One line per target: PASS/MISS with the numbers."""
        out = []
        for row in self.rows.values():
            if row.target is None:
                continue
            verdict = row.verdict()
            result = "n/a " if verdict is None else ("PASS" if verdict else "MISS")
            out.append(f"{result}  {row.target.text:<28} {row.label}: PACS-lite {_fmt(row.median('pacs'))} "
                       f"{row.unit}, Orthanc {_fmt(row.median('orthanc'))} {row.unit}")
        return out

    # -- files -------------------------------------------------------------------------------

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, default=str) + "\n")

    def write_chart(self, path: Path) -> None:
        """A PNG overview: ingest, storage, WADO-RS, QIDO-RS and memory, PACS-lite vs the others."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        colors = {"PACS-lite": "#1f77b4", "PACS-lite (none)": "#9ecae1", "Orthanc": "#ff7f0e",
                  "Orthanc zlib": "#fdae6b", "storescp": "#7f7f7f"}
        fig, axes = plt.subplots(2, 3, figsize=(16, 9))
        title = "PACS-lite benchmark"
        if self.meta.get("date"):
            title += f" - {self.meta['date']}"
        if self.meta.get("machine"):
            m = self.meta["machine"]
            title += f" - {m.get('nproc')} cores, {m.get('ram_gb')} GB, {m.get('cpu')}"
        fig.suptitle(title, fontsize=11)

        def bars(ax: Any, groups: list[tuple[str, dict[str, float | None]]], ylabel: str, log: bool = False) -> None:
            series = [name for name in colors if any(values.get(name) is not None for _, values in groups)]
            width = 0.8 / max(1, len(series))
            for i, name in enumerate(series):
                xs = [g + i * width for g in range(len(groups))]
                ys = [values.get(name) or 0.0 for _, values in groups]
                ax.bar(xs, ys, width, label=name, color=colors[name])
            ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))])
            ax.set_xticklabels([label for label, _ in groups], fontsize=8)
            ax.set_ylabel(ylabel, fontsize=9)
            if log:
                ax.set_yscale("log")
            if series:
                ax.legend(fontsize=7)
            ax.grid(axis="y", alpha=0.3)

        def med(key: str, system: str) -> float | None:
            row = self.rows.get(key)
            return row.median(system) if row else None

        ingest = []
        for set_name in ("ct", "small"):
            for mode, mode_label in (("tuned", "tuned"), ("plain", "unmodified"), ("tuned4", "tuned x4")):
                ingest.append((f"{set_name.upper() if set_name == 'ct' else 'small'}\n{mode_label}", {
                    "PACS-lite": med(f"ingest.{set_name}.{mode}.pacs", "pacs"),
                    "PACS-lite (none)": med(f"ingest.{set_name}.{mode}.pacs_none", "pacs"),
                    "Orthanc": med(f"ingest.{set_name}.{mode}.pacs", "orthanc"),
                    "storescp": med(f"ingest.{set_name}.{mode}.pacs", "storescp")}))
        bars(axes[0][0], ingest, "C-STORE instances/s (until last ack)")
        axes[0][0].set_title("Ingest", fontsize=10)

        storage = [(name, {"PACS-lite": med(f"storage.{name}.orthanc", "pacs"),
                           "Orthanc": med(f"storage.{name}.orthanc", "orthanc"),
                           "Orthanc zlib": med(f"storage.{name}.orthanc_zlib", "orthanc")})
                   for name in ("ct", "small", "real")]
        bars(axes[0][1], storage, "stored bytes / raw bytes")
        axes[0][1].axhline(0.25, color="green", linestyle="--", linewidth=1)
        axes[0][1].set_title("Storage (target CT <= 0.25)", fontsize=10)

        wado = []
        for key, label in (("instance.c1", "instance\n1 client"), ("instance.c4", "instance\n4 clients"),
                           ("instance_any.c1", "instance ts=*\n1 client"), ("frame.c1", "frame\n1 client"),
                           ("frame.c4", "frame\n4 clients"), ("frame_any.c1", "frame ts=*\n1 client")):
            wado.append((label, {"PACS-lite": med(f"wado.{key}.p50", "pacs"),
                                 "Orthanc": med(f"wado.{key}.p50", "orthanc")}))
        bars(axes[0][2], wado, "p50 latency, ms (log)", log=True)
        axes[0][2].set_title("WADO-RS", fontsize=10)

        other = [("series\nmetadata", {"PACS-lite": med("wado.series_metadata", "pacs"),
                                       "Orthanc": med("wado.series_metadata", "orthanc")})]
        for db in ("sqlite", "pg"):
            for stat in ("p50", "p95"):
                if f"qido.{db}.{stat}" in self.rows:
                    other.append((f"QIDO {'SQLite' if db == 'sqlite' else 'PG'}\n{stat}",
                                  {"PACS-lite": med(f"qido.{db}.{stat}", "pacs"),
                                   "Orthanc": med(f"qido.{db}.{stat}", "orthanc")}))
        bars(axes[1][0], other, "ms (log)", log=True)
        axes[1][0].set_title("Series metadata and QIDO-RS study search", fontsize=10)

        retrieve = [(label, {"PACS-lite": med(f"wado.study.{key}", "pacs"), "Orthanc": med(f"wado.study.{key}", "orthanc")})
                    for key, label in (("any", "transfer-syntax=*"), ("uncompressed", "uncompressed"))]
        bars(axes[1][1], retrieve, "raw study MB/s")
        axes[1][1].set_title("WADO-RS study retrieve", fontsize=10)

        rss = [("peak RSS\nduring ingest", {"PACS-lite": med("rss.ingest.pacs", "pacs"),
                                            "PACS-lite (none)": med("rss.ingest.pacs_none", "pacs"),
                                            "Orthanc": med("rss.ingest.pacs", "orthanc"),
                                            "storescp": med("rss.ingest.pacs", "storescp")})]
        bars(axes[1][2], rss, "MB (process tree)")
        axes[1][2].set_title("Memory", fontsize=10)

        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cell(value: float | None, secondary: float | None) -> str:
    text = _fmt(value)
    if secondary is not None:
        text += f" ({_fmt(secondary)})"
    return text


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
