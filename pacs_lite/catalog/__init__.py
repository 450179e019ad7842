"""The index (catalog) of patients, studies, series, instances and background jobs."""

from .attributes import EXTRACTED
from .catalog import (
    BASE_PLACEHOLDER,
    EVERYTHING,
    Catalog,
    CatalogUnavailable,
    StoredInstance,
    Visibility,
)
from .jobs import JobQueue
from .matching import QueryError, fold_name
from .recording import InstanceRecord, RecordOutcome, RecordStatus
from .states import CompressionState, Integrity, JobState

__all__ = [
    "BASE_PLACEHOLDER",
    "EVERYTHING",
    "EXTRACTED",
    "Catalog",
    "CatalogUnavailable",
    "CompressionState",
    "InstanceRecord",
    "Integrity",
    "JobQueue",
    "JobState",
    "QueryError",
    "RecordOutcome",
    "RecordStatus",
    "StoredInstance",
    "Visibility",
    "fold_name",
]
