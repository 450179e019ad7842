"""Processes the tests and the benchmark start: dcmtk, Orthanc, PostgreSQL, SeaweedFS.

Shared by ``tests/`` and ``bench/`` (which imports nothing from ``tests/``); not part of the
installed product. Modules:

* :mod:`harness.net`: loopback ports (free ports, waiting for listeners, who listens where).
* :mod:`harness.processes`: :class:`~harness.processes.ManagedProcess` (own process group, log
  file, always stopped and reaped) and ``/proc`` helpers (process trees, RSS).
* :mod:`harness.dcmtk`: dcmtk's SCU tools with parsed outcomes, and ``storescp``.
* :mod:`harness.orthanc`: a throw-away Orthanc with its DICOMweb plugin.
* :mod:`harness.postgres`: a PostgreSQL server (a running one, or a private cluster).
* :mod:`harness.seaweedfs`: a throw-away SeaweedFS (``weed mini``) S3 server.
"""
