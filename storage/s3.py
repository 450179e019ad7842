"""A blob store on any S3-compatible server (SeaweedFS, MinIO, AWS), via ``minio``.

Every request has bounded connect and read timeouts, and transient failures
(connection errors, HTTP 5xx, ``SlowDown``) are retried here with exponential
backoff; ``minio``'s own urllib3 retries are switched off so the total time spent on
an unreachable server is predictable. When retries run out the caller gets
:class:`~storage.base.StoreUnavailable`, never a hang.

Integrity in transit is the client's: over plain HTTP every request is signed with
the SHA-256 of its payload, over HTTPS ``minio`` sends ``Content-MD5``; the server
rejects a body that does not match either.
"""

from __future__ import annotations

import datetime as _dt
import io
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import MAX_PART_SIZE, check_bucket_name

from storage import base

T = TypeVar("T")

#: S3 error codes worth another attempt (besides any HTTP 5xx status).
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "OperationAborted",
    }
)

#: Sleep before the first retry; doubled before each further one (0.1, 0.2, 0.4 s...).
FIRST_BACKOFF_SECONDS = 0.1


def _is_transient(exc: Exception) -> bool:
    """Whether a failed request may succeed if simply tried again."""
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        return exc.code in TRANSIENT_CODES or status >= 500
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):
        # A non-XML answer, typically an HTML 502/503 page from a proxy in front.
        return (getattr(exc, "_code", 0) or 0) >= 500
    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError))


class _ResponseStream(io.RawIOBase):
    """A readable stream over an HTTP response body that returns its connection on close."""

    def __init__(self, response: urllib3.BaseHTTPResponse, key: str) -> None:
        super().__init__()
        self._response = response
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return self._response.readinto(buffer)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise base.StoreUnavailable(f"S3 store: reading {self._key} failed: {exc}") from exc

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


class S3Store(base.ObjectStore):
    """Objects in one bucket of an S3-compatible server.

    Parameters
    ----------
    endpoint
        ``host:port`` of the server, without scheme.
    bucket
        Bucket holding the objects; checked for validity here, created on first use
        when ``create_bucket`` is true.
    access_key, secret_key
        Credentials of an identity allowed to read and write the bucket.
    secure
        Use HTTPS (certificates are verified).
    region
        Region to sign for; ``None`` asks the server once per bucket.
    create_bucket
        Create the bucket if it does not exist (on the first operation).
    timeout
        Connect and read timeout of each HTTP request, in seconds.
    retries
        Further attempts after a transient failure, with exponential backoff.

    Notes
    -----
    The constructor makes no request, so a store can be built while the server is
    down; :meth:`check` tells whether it is reachable.
    """

    backend = "s3"

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str | None = None,
        create_bucket: bool = True,
        timeout: float = 10.0,
        retries: int = 3,
    ) -> None:
        if not endpoint or "://" in endpoint or "/" in endpoint:
            raise ValueError(f"S3 endpoint must be host:port without scheme, got {endpoint!r}")
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as exc:
            raise ValueError(f"invalid S3 bucket name {bucket!r}") from exc
        if retries < 0 or timeout <= 0:
            raise ValueError("S3 retries must be >= 0 and timeout > 0")
        self.endpoint = endpoint
        self.bucket = bucket
        self.create_bucket = create_bucket
        self.retries = retries
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,  # retried by _call, with our own backoff and error mapping
            maxsize=10,
            cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
        )
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=self._http,
        )
        self._bucket_ready = False

    def __repr__(self) -> str:
        return f"S3Store(endpoint={self.endpoint!r}, bucket={self.bucket!r})"

    # -- plumbing ----------------------------------------------------------------

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying transient failures, mapping errors to ours.

        Raises
        ------
        base.ObjectNotFound
            The server answered ``NoSuchKey``.
        base.StoreUnavailable
            A transient failure persisted through every retry, or the bucket is gone.
        base.StoreError
            Any other refusal (access denied, bad request...).
        """
        delay = FIRST_BACKOFF_SECONDS
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                return operation()
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    raise base.ObjectNotFound(f"no object {exc.object_name or what}") from exc
                if exc.code == "NoSuchBucket":
                    self._bucket_ready = False
                    raise base.StoreUnavailable(f"S3 store: bucket {self.bucket} does not exist on {self.endpoint}") from exc
                if not _is_transient(exc):
                    raise base.StoreError(f"S3 store: {what} refused: {exc.code}: {exc.message}") from exc
                last = exc
            except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
                if not _is_transient(exc):
                    raise base.StoreError(f"S3 store: {what} failed: {exc}") from exc
                last = exc
        raise base.StoreUnavailable(
            f"S3 store: {what} on {self.endpoint} failed after {self.retries + 1} attempts: {last}"
        ) from last

    def _ensure_bucket(self) -> None:
        """Create the bucket once if allowed and missing (remembered after success)."""
        if self._bucket_ready:
            return
        if not self._call("bucket_exists", lambda: self._client.bucket_exists(self.bucket)):
            if not self.create_bucket:
                raise base.StoreUnavailable(f"S3 store: bucket {self.bucket} does not exist on {self.endpoint}")
            self._call("make_bucket", self._make_bucket)
        self._bucket_ready = True

    def _make_bucket(self) -> None:
        try:
            self._client.make_bucket(self.bucket)
        except S3Error as exc:
            # Lost a race with another creator (or a retry after a lost reply): fine.
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    # -- the interface -----------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        """Upload ``data`` in one PUT (atomic on S3: visible whole or not at all).

        The object carries its SHA-256 as user metadata (``x-amz-meta-sha256``) so
        that tools can verify it without our database.
        """
        base.check_key(key)
        self._ensure_bucket()
        digest = base.sha256_hex(data)

        def upload() -> None:
            self._client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                metadata={"sha256": digest},
                part_size=MAX_PART_SIZE,  # one PUT up to 5 GiB, never a multipart upload
            )

        self._call(f"put {key}", upload)

    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        """Download the whole object (retrying on a broken transfer) and verify it."""
        base.check_key(key)

        def download() -> bytes:
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        data = self._call(f"get {key}", download)
        return base.verify_checksum(key, data, expected_sha256)

    def open(self, key: str) -> BinaryIO:
        """Stream the object; the connection goes back to the pool when closed."""
        base.check_key(key)
        response = self._call(
            f"get {key}",
            lambda: self._client.get_object(self.bucket, key),
        )
        return io.BufferedReader(_ResponseStream(response, key))  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        """Remove the object; S3 treats a missing key as success too."""
        base.check_key(key)
        try:
            self._call(f"delete {key}", lambda: self._client.remove_object(self.bucket, key))
        except base.ObjectNotFound:
            pass

    def exists(self, key: str) -> bool:
        """Whether a HEAD on the object succeeds."""
        base.check_key(key)
        try:
            self._call(f"stat {key}", lambda: self._client.stat_object(self.bucket, key))
        except base.ObjectNotFound:
            return False
        return True

    def iter_objects(self, prefix: str = "") -> Iterator[base.ObjectInfo]:
        """List the bucket, page by page; a failed page is retried from the last key seen."""
        base.check_prefix(prefix)
        self._ensure_bucket()
        last_key: str | None = None
        while True:
            page = self._call(
                "list",
                lambda after=last_key: self._list_page(prefix, after),
            )
            yield from page
            if len(page) < 1000:
                return
            last_key = page[-1].key

    def _list_page(self, prefix: str, start_after: str | None, limit: int = 1000) -> list[base.ObjectInfo]:
        """At most ``limit`` objects after ``start_after``, read fully so a retry is clean."""
        page: list[base.ObjectInfo] = []
        listing = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True, start_after=start_after)
        for obj in listing:
            if obj.is_dir or obj.object_name is None:
                continue
            modified = obj.last_modified or _dt.datetime.fromtimestamp(0, tz=_dt.UTC)
            page.append(base.ObjectInfo(key=obj.object_name, size=obj.size or 0, modified=modified))
            if len(page) >= limit:
                break
        return page

    def check(self) -> None:
        """Raise :class:`base.StoreUnavailable` unless the bucket answers (creating it if allowed)."""
        self._bucket_ready = False
        try:
            self._ensure_bucket()
        except base.StoreUnavailable:
            raise
        except base.StoreError as exc:
            raise base.StoreUnavailable(str(exc)) from exc

    def close(self) -> None:
        """Close pooled connections."""
        self._http.clear()
