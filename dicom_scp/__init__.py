"""PACS-lite's DICOM (DIMSE) server: :class:`DicomServer`."""

from .server import DicomServer

__all__ = ["DicomServer"]
