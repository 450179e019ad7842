"""The index (catalog) of patients, studies, series, instances and background jobs."""

from .catalog import (
    BASE_PLACEHOLDER,
    EVERYTHING,
    Catalog,
    CatalogUnavailable,
    InstanceRecord,
    RecordOutcome,
    StoredInstance,
    Visibility,
)
from .matching import QueryError, fold_name

__all__ = [
    "BASE_PLACEHOLDER",
    "EVERYTHING",
    "Catalog",
    "CatalogUnavailable",
    "InstanceRecord",
    "QueryError",
    "RecordOutcome",
    "StoredInstance",
    "Visibility",
    "fold_name",
]
