"""Blob stores for PACS-lite: where the bytes of each DICOM object live.

The package is self-contained (it imports nothing from ``pacs_lite``, ``dicom_scp`` or
``viewer``) so that tools and tests can use a store without the server.
:func:`open_store` builds a store from configuration values.
"""

from __future__ import annotations

from pathlib import Path

from storage.base import (
    ChecksumMismatch,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StoreError,
    StoreUnavailable,
    check_key,
    check_prefix,
    sha256_hex,
)
from storage.filesystem import FilesystemStore
from storage.s3 import S3Store

__all__ = [
    "BACKENDS",
    "ChecksumMismatch",
    "FilesystemStore",
    "InvalidKey",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "S3Store",
    "StoreError",
    "StoreUnavailable",
    "check_key",
    "check_prefix",
    "open_store",
    "sha256_hex",
]

#: Accepted values of the ``backend`` setting.
BACKENDS = ("filesystem", "s3")


def open_store(
    backend: str,
    *,
    path: str | Path | None = None,
    endpoint: str | None = None,
    bucket: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    secure: bool = False,
    region: str | None = None,
) -> ObjectStore:
    """Build the store named by ``backend`` from configuration values.

    Parameters
    ----------
    backend
        ``"filesystem"`` (needs ``path``) or ``"s3"`` (needs ``endpoint``, ``bucket``,
        ``access_key`` and ``secret_key``; ``secure`` and ``region`` are optional).

    Returns
    -------
    ObjectStore
        A store that has not yet touched the disk or the network; call
        :meth:`ObjectStore.check` to verify it is usable.

    Raises
    ------
    ValueError
        Naming the setting that is missing or wrong, so a bad configuration fails at
        start-up with a message the operator can act on.
    """
    if backend == "filesystem":
        if not path:
            raise ValueError("storage setting 'path' is required for the filesystem backend")
        return FilesystemStore(path)
    if backend == "s3":
        settings = {
            "endpoint": endpoint,
            "bucket": bucket,
            "access_key": access_key,
            "secret_key": secret_key,
        }
        missing = [name for name, value in settings.items() if not value]
        if missing:
            raise ValueError(f"storage setting(s) {', '.join(repr(m) for m in missing)} required for the s3 backend")
        return S3Store(
            endpoint=str(endpoint),
            bucket=str(bucket),
            access_key=str(access_key),
            secret_key=str(secret_key),
            secure=secure,
            region=region,
        )
    raise ValueError(f"storage setting 'backend' must be one of {BACKENDS}, got {backend!r}")
