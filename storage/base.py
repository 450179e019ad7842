"""The blob-store interface every backend implements.

PACS-lite keeps each DICOM object as one immutable blob addressed by a key that the
server generates (never a value a peer sent). Stores know nothing of DICOM: they put,
get, list and delete bytes, and report what they hold so that a sweeper can find
orphans.
"""

from __future__ import annotations

import abc
import datetime as _dt
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

#: What a key may look like: lower-case path segments of letters, digits, ``-`` and ``_``,
#: with an optional extension. Stores refuse anything else, so that no caller can ever
#: address a path outside the store even by mistake.
KEY_PATTERN = re.compile(r"^[a-z0-9_-]+(/[a-z0-9_-]+)*(\.[a-z0-9]+)?$")


class StoreError(Exception):
    """The store could not complete an operation (unreachable, full, refused)."""


class StoreUnavailable(StoreError):
    """The store is unreachable or out of space: a transient, resource-type failure."""


class ObjectNotFound(StoreError):
    """The key names no object."""


class ChecksumMismatch(StoreError):
    """The bytes read back do not have the SHA-256 recorded for them."""


class InvalidKey(StoreError, ValueError):
    """The key does not match :data:`KEY_PATTERN`."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a store reports about one object."""

    key: str
    size: int
    modified: _dt.datetime  # timezone-aware UTC


def check_key(key: str) -> str:
    """Return ``key`` unchanged, or raise :class:`InvalidKey`."""
    if not isinstance(key, str) or len(key) > 512 or not KEY_PATTERN.match(key) or ".." in key:
        raise InvalidKey(f"invalid object key {key!r}")
    return key


#: What a listing prefix may look like: the start of a valid key (possibly empty).
PREFIX_PATTERN = re.compile(r"^[a-z0-9_./-]*$")


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged, or raise :class:`InvalidKey`.

    A prefix is any leading part of a key that :func:`check_key` accepts; it may be
    empty. Refusing ``..`` and leading slashes keeps listings inside the store.
    """
    if (
        not isinstance(prefix, str)
        or len(prefix) > 512
        or not PREFIX_PATTERN.match(prefix)
        or ".." in prefix
        or prefix.startswith(("/", "."))
        or "//" in prefix
    ):
        raise InvalidKey(f"invalid key prefix {prefix!r}")
    return prefix


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as lower-case hex."""
    return hashlib.sha256(data).hexdigest()


def verify_checksum(key: str, data: bytes, expected_sha256: str | None) -> bytes:
    """Return ``data`` when it hashes to ``expected_sha256`` (or none is given)."""
    if expected_sha256 is not None and sha256_hex(data) != expected_sha256:
        raise ChecksumMismatch(f"object {key} does not match its recorded SHA-256")
    return data


class ObjectStore(abc.ABC):
    """A flat namespace of immutable blobs.

    Implementations must make :meth:`put` atomic and durable: when it returns, the
    whole object is on stable storage; when it raises, no partial object is visible
    under ``key``.
    """

    #: Short name used in configuration and logs ("filesystem", "s3").
    backend: str = ""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` durably and atomically."""

    @abc.abstractmethod
    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        """Return the object's bytes, checked against ``expected_sha256`` when given.

        Raises :class:`ObjectNotFound`, :class:`ChecksumMismatch` or :class:`StoreError`.
        """

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Return a readable binary stream over the object (caller closes it)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing a missing key is not an error."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    @abc.abstractmethod
    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in no particular order."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store is reachable and writable now."""

    def sweep_temp(self, older_than_seconds: float = 3600.0) -> int:
        """Remove what interrupted writes left behind, older than ``older_than_seconds``; return how many.

        A store whose interrupted writes never become objects has nothing to do here (S3: incomplete
        multipart uploads are left to the bucket's lifecycle rules).
        """
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""
