"""GCSBucket: ``gs://BUCKET[/PREFIX]`` on Google Cloud Storage, through google-cloud-storage."""

from __future__ import annotations

import mimetypes
import os
import threading
from typing import Any

from qec_kiln._errors import ObjectNotFound, PreconditionFailed, StorageError
from qec_kiln._storage._bucket import Bucket, RetryPolicy, precondition_message
from qec_kiln._storage._urls import BucketURL, doing, one_line

_GCS_ADC_HINT = (
    "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
)


class GCSBucket(Bucket):
    """``gs://BUCKET[/PREFIX]`` through google-cloud-storage.

    Credentials are Application Default Credentials; the project (needed only to create
    buckets, which this class never does) comes from ``GOOGLE_CLOUD_PROJECT`` if set. When
    ``STORAGE_EMULATOR_HOST`` is set (e.g. ``http://127.0.0.1:9023``), the emulator there is used
    with anonymous credentials. Each thread gets its own client. Retries are the library's
    (``google.cloud.storage.retry.DEFAULT_RETRY``'s classification) within the
    :class:`RetryPolicy`'s attempts, delays and deadline (:meth:`_retry`); every request gets
    the policy's ``(connect_timeout, read_timeout)``.
    """

    def __init__(self, parsed: BucketURL, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(parsed, retry=retry)
        self.bucket_name = parsed.bucket
        self.prefix = parsed.prefix
        self._local = threading.local()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            from google.cloud import storage

            project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                client = storage.Client(
                    project=project or "qec-kiln-emulator", credentials=AnonymousCredentials()
                )
            else:
                client = storage.Client(project=project or None)
            # Recent versions fetch bucket metadata in a background thread (with the library's
            # own long retries) only to label OpenTelemetry spans; we do not need it.
            if getattr(client, "_bucket_metadata_cache", None) is not None:
                client._bucket_metadata_cache = None
            self._local.client = client
        return client

    def _blob(self, key: str) -> Any:
        full = f"{self.prefix}/{key}" if self.prefix else key
        return self._client().bucket(self.bucket_name).blob(full)

    @staticmethod
    def _timeout(policy: RetryPolicy) -> tuple[float, float]:
        return (policy.connect_timeout, policy.read_timeout)

    def _retry(self, policy: RetryPolicy) -> Any:
        """The library's DEFAULT_RETRY, bounded by ``policy`` (its attempts and deadline)."""
        from google.api_core.retry import Retry
        from google.cloud.storage.retry import DEFAULT_RETRY

        transient = DEFAULT_RETRY._predicate  # the library's classification (retry._should_retry)
        failures = [0]

        def predicate(exc: Exception) -> bool:
            if not transient(exc):
                return False
            failures[0] += 1
            return self._may_retry(policy, failures[0], exc) is not None

        return Retry(
            predicate=predicate,
            initial=max(policy.base_delay, 0.01),
            maximum=max(policy.max_delay, 0.01),
            multiplier=2.0,
            timeout=policy.deadline_seconds,
        )

    def read_bytes(self, key: str, *, retry: RetryPolicy | None = None) -> bytes:
        self._check_key(key)
        policy = retry or self.retry

        def op() -> bytes:
            return self._blob(key).download_as_bytes(
                timeout=self._timeout(policy), retry=self._retry(policy)
            )

        return self._call("read", self.url_for(key), policy, op)

    def write_bytes(self, key: str, data: bytes, *, retry: RetryPolicy | None = None) -> None:
        self._check_key(key)
        data = self._check_data(data)
        policy = retry or self.retry
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"

        def op() -> None:
            self._blob(key).upload_from_string(
                data, content_type=content_type, timeout=self._timeout(policy),
                retry=self._retry(policy),
            )

        self._call("write", self.url_for(key), policy, op)

    def read_versioned(self, key: str, *, retry: RetryPolicy | None = None) -> tuple[bytes, str]:
        self._check_key(key)
        policy = retry or self.retry

        def op() -> tuple[bytes, str]:
            blob = self._blob(key)
            data = blob.download_as_bytes(timeout=self._timeout(policy), retry=self._retry(policy))
            if blob.generation is None:  # a server that sends no x-goog-generation (an emulator)
                blob.reload(timeout=self._timeout(policy), retry=self._retry(policy))
            return data, str(blob.generation)

        return self._call("read", self.url_for(key), policy, op)

    def _write_if(
        self, key: str, data: bytes, version: str | None, *, retry: RetryPolicy | None
    ) -> str:
        self._check_key(key)
        policy = retry or self.retry
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"

        def op() -> str:
            from google.api_core.exceptions import PreconditionFailed as GCSPreconditionFailed

            blob = self._blob(key)
            try:
                blob.upload_from_string(
                    data, content_type=content_type, timeout=self._timeout(policy),
                    retry=self._retry(policy),
                    if_generation_match=0 if version is None else int(version),
                )
            except GCSPreconditionFailed:
                raise PreconditionFailed(precondition_message(
                    self.url_for(key), version, "another")) from None
            return str(blob.generation)

        return self._call("write", self.url_for(key), policy, op)

    def list_keys(self, prefix: str = "", *, retry: RetryPolicy | None = None) -> list[str]:
        self._check_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        policy = retry or self.retry

        def op() -> list[str]:
            blobs = self._client().list_blobs(
                self.bucket_name,
                prefix=full_prefix or None,
                timeout=self._timeout(policy),
                retry=self._retry(policy),
            )
            return sorted(blob.name[strip:] for blob in blobs)

        return self._call("list", self.url_for(prefix) if prefix else self.url, policy, op)

    def list_versions(self, prefix: str = "", *,
                      retry: RetryPolicy | None = None) -> dict[str, str]:
        """Each key's generation (as :meth:`read_versioned` gives it; ``""`` where a server
        sends none, which never matches a cached one)."""
        self._check_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        policy = retry or self.retry

        def op() -> dict[str, str]:
            blobs = self._client().list_blobs(
                self.bucket_name,
                prefix=full_prefix or None,
                timeout=self._timeout(policy),
                retry=self._retry(policy),
            )
            return {blob.name[strip:]: "" if blob.generation is None else str(blob.generation)
                    for blob in blobs}

        return self._call("list", self.url_for(prefix) if prefix else self.url, policy, op)

    def cache_identity(self) -> str:
        """The server: Google's, or the emulator's (``STORAGE_EMULATOR_HOST``)."""
        return f"gcs {os.environ.get('STORAGE_EMULATOR_HOST') or 'storage.googleapis.com'}"

    def exists(self, key: str, *, retry: RetryPolicy | None = None) -> bool:
        self._check_key(key)
        policy = retry or self.retry

        def op() -> bool:
            return bool(
                self._blob(key).exists(timeout=self._timeout(policy), retry=self._retry(policy))
            )

        return self._call("check", self.url_for(key), policy, op)

    def delete(self, key: str, *, retry: RetryPolicy | None = None) -> None:
        self._check_key(key)
        policy = retry or self.retry

        def op() -> None:
            from google.api_core.exceptions import NotFound

            blob = self._blob(key)
            try:
                blob.delete(timeout=self._timeout(policy), retry=self._retry(policy))
            except NotFound:
                # A missing object is fine; a missing bucket is not.
                if not self._client().bucket(self.bucket_name).exists(
                    timeout=self._timeout(policy), retry=None
                ):
                    raise

        self._call("delete", self.url_for(key), policy, op)

    def check_access(self, *, retry: RetryPolicy | None = None) -> None:
        policy = retry or self.retry

        def op() -> None:
            blobs = self._client().list_blobs(
                self.bucket_name,
                prefix=f"{self.prefix}/" if self.prefix else None,
                max_results=1,
                timeout=self._timeout(policy),
                retry=self._retry(policy),
            )
            next(iter(blobs.pages), None)

        self._call("access", self.url, policy, op)

    # -- error handling -------------------------------------------------------------------

    def _unwrap(self, exc: Exception) -> Exception:
        from google.api_core.exceptions import RetryError

        if isinstance(exc, RetryError):  # the library's retries ran out of time
            self._tries.gave_up = True
            return exc.cause if isinstance(exc.cause, Exception) else exc
        return exc

    @staticmethod
    def _cause(exc: Exception) -> str:
        """The useful part of a requests/urllib3 error ("... Connection refused")."""
        inner = exc.args[0] if exc.args else None
        reason = getattr(inner, "reason", None)
        return one_line(reason if isinstance(reason, BaseException) else exc, 160)

    def _endpoint_text(self) -> str:
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        return f"{emulator} (STORAGE_EMULATOR_HOST)" if emulator else "storage.googleapis.com"

    def _translate(self, exc: Exception, op: str, target: str) -> StorageError:
        from google.api_core import exceptions as gx
        from google.auth import exceptions as ax

        if isinstance(exc, ax.DefaultCredentialsError):
            detail = ""
            if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
                detail = f" (GOOGLE_APPLICATION_CREDENTIALS: {one_line(exc, 160)})"
            return StorageError(
                f"no Google Cloud credentials for {self.url}{detail}: {_GCS_ADC_HINT}"
            )
        if isinstance(exc, (ax.RefreshError, gx.Unauthenticated)):
            return StorageError(
                f"Google Cloud rejected the credentials for {self.url} ({type(exc).__name__}): "
                f"they are invalid or expired; {_GCS_ADC_HINT}"
            )
        if isinstance(exc, gx.NotFound):
            if op == "read":
                return ObjectNotFound(f"{target}: no such object")
            return StorageError(
                f"GCS bucket {self.bucket_name!r} does not exist ({self.url} at "
                f"{self._endpoint_text()}): create it "
                f"(`gcloud storage buckets create gs://{self.bucket_name}`) or fix the URL"
            )
        if isinstance(exc, gx.Forbidden):
            return StorageError(
                f"GCS denied {doing(op, target)} (HTTP 403): the account lacks permission; "
                "grant it "
                f"roles/storage.objectAdmin on gs://{self.bucket_name}, or {_GCS_ADC_HINT} "
                "with another account"
            )
        if isinstance(exc, gx.GoogleAPICallError):
            return StorageError(
                f"GCS error while {doing(op, target)}: HTTP {exc.code}: {one_line(exc, 160)}"
            )
        return StorageError(f"GCS error while {doing(op, target)}: {one_line(exc)}")

    def _give_up(
        self, exc: Exception, op: str, target: str, attempts: int, elapsed: float
    ) -> StorageError:
        from google.api_core import exceptions as gx

        tries = f"{attempts} attempt{'s' if attempts != 1 else ''} in {elapsed:.0f} s"
        if isinstance(exc, gx.GoogleAPICallError):
            return StorageError(
                f"GCS kept failing while {doing(op, target)} (HTTP {exc.code}, {tries}): "
                "the service is "
                "overloaded or down, try again later"
            )
        return StorageError(
            f"cannot reach GCS at {self._endpoint_text()} while {doing(op, target)} ({tries}; "
            f"last error: {self._cause(exc)}): check the network"
            + (" and STORAGE_EMULATOR_HOST" if os.environ.get("STORAGE_EMULATOR_HOST") else "")
            + ", or try again later"
        )
