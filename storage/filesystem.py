"""A blob store on a local (or mounted) filesystem.

Each object is one file ``<root>/<key>``. Writes go to ``<root>/.tmp/`` first, are
fsynced and then renamed into place, so a crash or a full disk never leaves a partial
object under a key; the directory entries are fsynced too, so a returned ``put``
survives a power cut. Temporary files orphaned by a crash are removed by
:meth:`FilesystemStore.sweep_temp`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from storage import base

#: Name of the folder, directly under the root, that holds in-flight writes.
TEMP_DIR_NAME = ".tmp"

#: Suffix of in-flight write files, so that a sweep touches nothing else.
TEMP_SUFFIX = ".part"

_ERRNO_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only filesystem",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "I/O error",
}


def _unavailable(action: str, path: Path, exc: OSError) -> base.StoreUnavailable:
    """Build a :class:`base.StoreUnavailable` naming the cause in plain words."""
    reason = _ERRNO_REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    return base.StoreUnavailable(f"filesystem store: cannot {action} {path}: {reason}")


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries (new, renamed or removed names) to stable storage."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(path: Path) -> None:
    """Create ``path`` and any missing parents, fsyncing each new directory's parent.

    ``os.makedirs`` alone does not make the new directory entries durable: after a
    power cut the rename into a new folder could vanish with its folder.
    """
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # created concurrently by another writer: already durable there
        _fsync_dir(directory.parent)


class FilesystemStore(base.ObjectStore):
    """Objects as files under one root directory.

    Parameters
    ----------
    root
        Directory holding the objects. It is created (with its parents) on the first
        :meth:`put` or :meth:`check`; nothing touches the disk at construction.
    """

    backend = "filesystem"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.temp_dir = self.root / TEMP_DIR_NAME
        self._made_dirs: set[Path] = set()  # folders known to exist durably: no stat per write

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        """Map a checked key to its file, refusing anything that resolves outside root.

        The key pattern already excludes ``..`` and absolute paths; resolving as well
        guards against a symlink planted inside the root.
        """
        path = (self.root / base.check_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise base.StoreError(f"filesystem store: key {key!r} resolves outside {self.root}")
        return path

    def _key_of(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- writing -----------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` to a temp file, fsync it, rename it to ``key``, fsync the folder.

        Raises
        ------
        InvalidKey
            Before anything is written, when ``key`` is not a valid key.
        base.StoreUnavailable
            On any OS error (disk full, read-only, permissions...). The temp file is
            removed and nothing new is visible under ``key``.
        """
        target = self._path(key)
        try:
            self._write(target, data)
        except FileNotFoundError:
            self._made_dirs.clear()  # a folder was removed behind our back: make it again
            try:
                self._write(target, data)
            except FileNotFoundError as exc:
                raise _unavailable("write", target, exc) from exc

    def _write(self, target: Path, data: bytes) -> None:
        temp = self.temp_dir / f"{uuid.uuid4().hex}{TEMP_SUFFIX}"
        try:
            self._makedirs(self.temp_dir)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self._makedirs(target.parent)
            os.replace(temp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            if isinstance(exc, FileNotFoundError):
                raise  # a folder vanished: put() makes the folders again and retries once
            raise _unavailable("write", target, exc) from exc
        try:
            _fsync_dir(target.parent)
        except OSError as exc:
            # The complete object is in place but its name may not survive a crash;
            # the caller treats the put as failed, and an orphan sweep can reclaim it.
            raise _unavailable("sync directory of", target, exc) from exc

    def _makedirs(self, path: Path) -> None:
        if path not in self._made_dirs:
            _makedirs_durable(path)
            self._made_dirs.add(path)

    def delete(self, key: str) -> None:
        """Remove the object's file; a missing file is fine. Empty folders are kept.

        The folder is not fsynced: the archive deletes only objects no index row refers to
        any more, so a removal undone by a power cut leaves an orphan, which the sweeper
        removes again. That saves a disk flush per compressed instance.
        """
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return  # a folder is not an object
        except OSError as exc:
            raise _unavailable("delete", path, exc) from exc

    # -- reading -----------------------------------------------------------------

    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        """Read the whole object and check it against ``expected_sha256`` when given."""
        with self.open(key) as handle:
            try:
                data = handle.read()
            except OSError as exc:
                raise _unavailable("read", self._path(key), exc) from exc
        return base.verify_checksum(key, data, expected_sha256)

    def open(self, key: str) -> BinaryIO:
        """Open the object's file for reading (caller closes it)."""
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise base.ObjectNotFound(f"no object {key}") from exc
        except OSError as exc:
            raise _unavailable("open", path, exc) from exc

    def exists(self, key: str) -> bool:
        """Whether a regular file is stored under ``key``."""
        return self._path(key).is_file()

    def iter_objects(self, prefix: str = "") -> Iterator[base.ObjectInfo]:
        """Walk the root (never ``.tmp``) and report files whose key starts with ``prefix``.

        Files whose relative path is not a valid key (strays put there by hand) are
        skipped, so every reported key can be passed back to :meth:`get`.
        """
        base.check_prefix(prefix)
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            # Prune hidden folders (".tmp") so in-flight writes are never listed.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                key = self._key_of(path)
                if not key.startswith(prefix) or not base.KEY_PATTERN.match(key):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # deleted while we walked
                modified = _dt.datetime.fromtimestamp(stat.st_mtime, tz=_dt.UTC)
                yield base.ObjectInfo(key=key, size=stat.st_size, modified=modified)

    # -- maintenance -------------------------------------------------------------

    def iter_temp_files(self, older_than: _dt.datetime) -> Iterator[Path]:
        """Temp files last modified before ``older_than`` (timezone-aware).

        These are left by a crash between creating and renaming a temp file; a write
        in progress keeps touching its file, so a generous cut-off never hits one.
        """
        if not self.temp_dir.is_dir():
            return
        cutoff = older_than.timestamp()
        for entry in os.scandir(self.temp_dir):
            if not entry.name.endswith(TEMP_SUFFIX) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    yield Path(entry.path)
            except FileNotFoundError:
                continue

    def sweep_temp(self, older_than_seconds: float = 3600.0) -> int:
        """Remove temp files older than ``older_than_seconds``; return how many went."""
        cutoff = _dt.datetime.fromtimestamp(time.time() - older_than_seconds, tz=_dt.UTC)
        removed = 0
        for path in list(self.iter_temp_files(cutoff)):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _unavailable("remove temp file", path, exc) from exc
            removed += 1
        return removed

    def check(self) -> None:
        """Create the root if needed and write, fsync and remove a probe file in ``.tmp``.

        Raises
        ------
        base.StoreUnavailable
            When the root cannot be created or written now.
        """
        probe = self.temp_dir / f"probe-{uuid.uuid4().hex}.check"
        try:
            _makedirs_durable(self.temp_dir)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"ok")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _unavailable("write to", self.root, exc) from exc
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
