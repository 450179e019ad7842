"""The archive: catalog, object store, ingest and retrieval built from one configuration.

The DICOM SCP, the web application and the CLI each build one :class:`Archive` and
share nothing else.
"""

from __future__ import annotations

import logging

import pydicom.config

from storage import ObjectStore, StoreError, open_store

from .activity import ReceivingSignal
from .catalog import EVERYTHING, Catalog, CatalogUnavailable, Visibility
from .config import Config
from .ingest import IngestService
from .metrics import IngestMetrics
from .retrieval import RetrievalService

log = logging.getLogger(__name__)


def open_object_store(config: Config) -> ObjectStore:
    """The object store the configuration names."""
    st = config["storage"]
    if st["backend"] == "filesystem":
        return open_store("filesystem", path=str(config.path("storage", "path")))
    return open_store(
        "s3", endpoint=st["endpoint"], bucket=st["bucket"], access_key=st["access_key"],
        secret_key=st["secret_key"], secure=st["secure"], region=st["region"] or None,
    )


class Archive:
    """Everything the services share, for one process."""

    def __init__(self, config: Config, *, migrate: bool = True) -> None:
        # pydicom's warnings quote element values, which may be patient data: never log them
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        self.config = config
        if config.index_url.startswith("sqlite:///"):
            from pathlib import Path

            Path(config.index_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(config.index_url)
        if migrate:
            self.catalog.migrate()
        self.store = open_object_store(config)
        self.ingest = IngestService(
            self.catalog, self.store,
            compression_target=config.get("compression", "transfer_syntax"),
            duplicates=config.get("ingest", "duplicates"),
            max_object_bytes=config.get("ingest", "max_object_bytes"),
            metrics=IngestMetrics(),
            receiving=ReceivingSignal.for_config(config),
        )
        self.retrieval = RetrievalService(self.catalog, self.store)

    def delete(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None, *,
               visibility: Visibility = EVERYTHING) -> int | None:
        """Delete a study, series or instance: the index rows in one transaction, then the objects.

        Returns how many objects were removed from the index, or ``None`` when nothing
        matched. An object that cannot be deleted after the commit stays as an orphan
        for the sweeper; the index never points at a deleted object.
        """
        keys = self.catalog.delete(study_uid, series_uid, sop_uid, visibility=visibility)
        if keys is None:
            return None
        for key in keys:
            try:
                self.store.delete(key)
            except StoreError as exc:
                log.warning("could not delete object %s after removing it from the index: %s", key, exc)
        return len(keys)

    def readiness(self) -> list[str]:
        """What cannot serve now (empty when ready): the index database, the object store."""
        problems = []
        try:
            self.catalog.check()
        except CatalogUnavailable as exc:
            log.warning("readiness: %s", exc)
            problems.append("index database unavailable")
        try:
            self.store.check()
        except StoreError as exc:
            log.warning("readiness: %s", exc)
            problems.append("object store unavailable")
        return problems

    def close(self) -> None:
        self.ingest.close()
        self.catalog.close()
        self.store.close()
