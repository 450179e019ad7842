"""Prometheus metrics shared by every PACS-lite process.

``pacs-lite serve`` runs the SCP, the web server and the workers as separate processes;
it points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder so that counters from all of
them add up in ``/metrics`` (prometheus_client's multiprocess mode). Gauges that
describe the archive itself (instances, compression backlog) are read from the index
when scraped, so every node reports the same truth.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

INSTANCES_RECEIVED = Counter(
    "pacs_lite_instances_received_total", "Objects received by the ingest path, by outcome", ["outcome"])
BYTES_STORED = Counter("pacs_lite_bytes_stored_total", "Bytes of objects written by the ingest path")
INGEST_SECONDS = Histogram(
    "pacs_lite_ingest_seconds", "Time from parse to durable index commit for one object",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ERRORS = Counter("pacs_lite_errors_total", "Errors by kind", ["kind"])
COMPRESSION = Counter("pacs_lite_compression_total", "Compression jobs by outcome", ["outcome"])


class IngestMetrics:
    """What :class:`pacs_lite.ingest.IngestService` reports."""

    def count_ingest(self, status: str) -> None:
        INSTANCES_RECEIVED.labels(status).inc()
        if status == "failed":
            ERRORS.labels("ingest_failed").inc()

    def observe_ingest(self, seconds: float, size: int) -> None:
        INGEST_SECONDS.observe(seconds)
        BYTES_STORED.inc(size)


def count_error(kind: str) -> None:
    ERRORS.labels(kind).inc()


class ArchiveCollector:
    """Gauges read from the index at scrape time."""

    def __init__(self, catalog: object) -> None:
        self.catalog = catalog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self.catalog.counts()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - an unreachable index shows as pacs_lite_index_up 0
            yield GaugeMetricFamily("pacs_lite_index_up", "Whether the index answered", value=0)
            return
        yield GaugeMetricFamily("pacs_lite_index_up", "Whether the index answered", value=1)
        for key in ("patients", "studies", "series", "instances"):
            yield GaugeMetricFamily(f"pacs_lite_{key}", f"Number of {key} in the index", value=counts[key])
        yield GaugeMetricFamily("pacs_lite_compression_backlog", "Instances waiting to be compressed",
                                value=counts["pending_compression"])


def render(catalog: object) -> bytes:
    """The exposition text for ``/metrics``."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        for collector in (INSTANCES_RECEIVED, BYTES_STORED, INGEST_SECONDS, ERRORS, COMPRESSION):
            registry.register(collector)
    registry.register(ArchiveCollector(catalog))
    return generate_latest(registry)
