"""The archive: catalog, object store, ingest and retrieval built from one configuration.

The DICOM SCP, the web application and the CLI each build one :class:`Archive` and
share nothing else.
"""

from __future__ import annotations

import pydicom.config

from storage import ObjectStore, open_store

from .activity import ReceivingSignal
from .catalog import Catalog
from .config import Config
from .ingest import IngestService
from .metrics import IngestMetrics
from .retrieval import RetrievalService


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
        self.catalog.object_exists = self.store.exists
        self.ingest = IngestService(
            self.catalog, self.store,
            compression_target=config.get("compression", "transfer_syntax"),
            duplicates=config.get("ingest", "duplicates"),
            max_object_bytes=config.get("ingest", "max_object_bytes"),
            metrics=IngestMetrics(),
            receiving=ReceivingSignal.for_config(config),
        )
        self.retrieval = RetrievalService(self.catalog, self.store)

    def close(self) -> None:
        self.ingest.close()
        self.catalog.close()
        self.store.close()
