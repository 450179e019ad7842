"""Benchmark of PACS-lite against Orthanc and dcmtk's storescp: ``python -m bench`` (see README.md)."""
