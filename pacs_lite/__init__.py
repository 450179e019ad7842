"""PACS-lite core: configuration, the catalog, the one ingest path and the one retrieval path."""

__version__ = "0.1.0"
