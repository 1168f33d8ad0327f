"""The Bucket interface and its retry policy (:func:`qec_kiln._storage.open_bucket` gives one)."""

from __future__ import annotations

import abc
import dataclasses
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from qec_kiln._errors import ObjectNotFound, PreconditionFailed, StorageError
from qec_kiln._storage._urls import BucketURL, doing, key_problem, one_line

_T = TypeVar("_T")

# --------------------------------------------------------------------------------------------
# Retry policy


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How long to keep retrying transient errors, and how long one attempt may take.

    Attributes:
        attempts: most attempts in all (the first one included); ``None``: as many as fit in
            ``deadline_seconds``.
        base_delay: seconds to wait after the first failure; the wait doubles after each
            further failure, up to ``max_delay``, with jitter (each wait is drawn between half
            and all of its nominal value).
        max_delay: longest wait between two attempts, in seconds.
        deadline_seconds: no new attempt starts later than this many seconds after the first;
            the last attempt may then run for up to its own timeout.
        connect_timeout: seconds to wait for a TCP/TLS connection in one attempt.
        read_timeout: seconds to wait for the server to answer (or send more data) in one
            attempt.

    Example:
        >>> RetryPolicy().deadline_seconds                    # QUICK_RETRY: periodic syncs
        15.0
        >>> patient = RetryPolicy(deadline_seconds=300)       # PATIENT_RETRY: a final upload
        >>> [patient.backoff(n, jitter=False) for n in range(1, 7)]
        [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    """

    attempts: int | None = None
    base_delay: float = 0.5
    max_delay: float = 10.0
    deadline_seconds: float = 15.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1 or None, not {self.attempts}")
        for name in ("base_delay", "max_delay", "deadline_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0, not {getattr(self, name)}")
        for name in ("connect_timeout", "read_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RetryPolicy.{name} must be > 0, not {getattr(self, name)}")

    def backoff(self, attempt: int, *, jitter: bool = True) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first)."""
        delay = min(self.max_delay, self.base_delay * 2.0 ** min(max(attempt - 1, 0), 60))
        if jitter:
            delay = delay / 2 + random.uniform(0, delay / 2)
        return delay


QUICK_RETRY = RetryPolicy()
"""Default policy: a few attempts over about 15 s (periodic syncs; a later sync tries again)."""

PATIENT_RETRY = RetryPolicy(deadline_seconds=300.0)
"""For a final upload that must get through: keeps retrying for up to 5 minutes."""

# --------------------------------------------------------------------------------------------
# The interface


class Bucket(abc.ABC):
    """Whole-object storage under one root: a local directory, an S3 or a GCS bucket (+ prefix).

    Use :func:`open_bucket` to get one. ``url`` is the normalized URL; ``retry`` the default
    :class:`RetryPolicy` of its calls (each method also takes ``retry=`` for one call).

    Example:
        >>> import tempfile
        >>> from qec_kiln._storage import open_bucket
        >>> b = open_bucket(tempfile.mkdtemp())
        >>> b.write_bytes("a/x.csv", b"1")
        >>> b.exists("a/x.csv"), b.exists("a/y.csv")
        (True, False)
        >>> b.delete("a/x.csv"); b.list_keys()
        []
    """

    url: str
    retry: RetryPolicy

    def __init__(self, parsed: BucketURL, *, retry: RetryPolicy | None = None) -> None:
        self.url = parsed.url
        self.retry = retry or QUICK_RETRY
        self._parsed = parsed
        self._tries = threading.local()  # the current call of this thread (see _call)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def __enter__(self) -> Bucket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Release network connections (the bucket can still be used afterwards)."""

    def url_for(self, key: str) -> str:
        """The full URL of ``key``, e.g. ``s3://b/prefix/sweep1/x.csv`` (for messages)."""
        return f"{self.url}/{key}"

    def _check_key(self, key: str) -> str:
        if not isinstance(key, str) or not key:
            raise StorageError(f"{self.url}: empty or non-string object key {key!r}")
        problem = key_problem(key)
        if problem:
            raise StorageError(f"{self.url}: invalid object key {key!r}: {problem}")
        return key

    def _check_prefix(self, prefix: str) -> str:
        if not isinstance(prefix, str):
            raise StorageError(f"{self.url}: non-string key prefix {prefix!r}")
        if prefix:
            problem = key_problem(prefix, partial_last=True)
            if problem:
                raise StorageError(f"{self.url}: invalid key prefix {prefix!r}: {problem}")
        return prefix

    @staticmethod
    def _check_data(data: bytes) -> bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write_bytes needs bytes, not {type(data).__name__}")
        return bytes(data)

    @abc.abstractmethod
    def read_bytes(self, key: str, *, retry: RetryPolicy | None = None) -> bytes:
        """The whole object; raises ObjectNotFound if it does not exist."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes, *, retry: RetryPolicy | None = None) -> None:
        """Create or replace the object; a reader sees either the old or the new data, whole."""

    @abc.abstractmethod
    def read_versioned(self, key: str, *, retry: RetryPolicy | None = None) -> tuple[bytes, str]:
        """The whole object and its version (an opaque string for :meth:`write_if`); raises
        ObjectNotFound if it does not exist."""

    def write_if(
        self, key: str, data: bytes, version: str | None, *, retry: RetryPolicy | None = None
    ) -> str:
        """Create the object only if it does not exist (``version=None``), or replace it only if
        its current version is ``version``; return the new version. Raises
        :class:`~qec_kiln._errors.PreconditionFailed` otherwise (the object is left as it was).

        A retried write whose first attempt did land (its answer was lost) finds its own bytes
        there: that counts as success.

        Example:
            >>> import tempfile
            >>> from qec_kiln._storage import open_bucket
            >>> b = open_bucket(tempfile.mkdtemp())
            >>> v1 = b.write_if("lease.json", b"a", None)
            >>> b.write_if("lease.json", b"b", None)
            Traceback (most recent call last):
            ...
            qec_kiln._errors.PreconditionFailed: .../lease.json: already exists
            >>> v2 = b.write_if("lease.json", b"b", v1)
            >>> b.read_versioned("lease.json") == (b"b", v2)
            True
        """
        data = self._check_data(data)
        try:
            return self._write_if(key, data, version, retry=retry)
        except PreconditionFailed:
            try:
                current, current_version = self.read_versioned(key, retry=retry)
            except ObjectNotFound:
                raise PreconditionFailed(
                    f"{self.url_for(key)}: no longer exists (version {version} expected)"
                ) from None
            if current == data and current_version != version:
                return current_version
            raise

    @abc.abstractmethod
    def _write_if(
        self, key: str, data: bytes, version: str | None, *, retry: RetryPolicy | None
    ) -> str:
        """:meth:`write_if` without the check for a lost answer."""

    @abc.abstractmethod
    def list_keys(self, prefix: str = "", *, retry: RetryPolicy | None = None) -> list[str]:
        """Sorted keys (relative to the bucket root) that start with ``prefix``."""

    @abc.abstractmethod
    def list_versions(self, prefix: str = "", *,
                      retry: RetryPolicy | None = None) -> dict[str, str]:
        """``key -> version`` (as :meth:`read_versioned` gives it) of the keys that start with
        ``prefix``, from one listing."""

    def prefetch(self, keys: list[str], workers: int = 16) -> int:
        """Read ahead, ``workers`` at once, what a :func:`~qec_kiln._storage.listed` view will
        be asked for; a bucket that is no such view reads nothing ahead (returns 0, the number
        fetched)."""
        return 0

    def reads_are_local(self) -> bool:
        """Whether reading needs no network connection (nor a thread): then a forked process
        may read too (merge parses a folder's fragments in several)."""
        return False

    def cache_identity(self) -> str | None:
        """What names this bucket's server in a :func:`~qec_kiln._storage.listed` view's cache
        (None: a local folder, which no view or cache would make faster)."""
        return None

    @abc.abstractmethod
    def exists(self, key: str, *, retry: RetryPolicy | None = None) -> bool:
        """Whether the object exists (in S3 and GCS a missing bucket also gives False; use
        :meth:`check_access` to tell)."""

    @abc.abstractmethod
    def delete(self, key: str, *, retry: RetryPolicy | None = None) -> None:
        """Delete the object; no error if it does not exist."""

    @abc.abstractmethod
    def check_access(self, *, retry: RetryPolicy | None = None) -> None:
        """One cheap call that raises StorageError (one line: what, URL, what to do) if the
        bucket cannot be used: missing or wrong credentials, unreachable endpoint, no bucket."""

    # -- retries: the client library classifies errors, the policy bounds the time ---------

    def _translate(self, exc: Exception, op: str, target: str) -> StorageError:
        return StorageError(f"error while {doing(op, target)}: {one_line(exc)}")

    def _give_up(
        self, exc: Exception, op: str, target: str, attempts: int, elapsed: float
    ) -> StorageError:
        return self._translate(exc, op, target)

    def _unwrap(self, exc: Exception) -> Exception:
        """The error to explain, when a client wraps the last one (GCS's RetryError)."""
        return exc

    def _may_retry(self, policy: RetryPolicy, attempt: int, exc: object) -> float | None:
        """Called by a client's retry hook after failed attempt ``attempt`` of an error that the
        client classified as transient: seconds to wait before the next attempt, or None to give
        up (the policy's attempts or deadline are spent)."""
        tries = self._tries
        tries.attempts = attempt
        remaining = policy.deadline_seconds - (time.monotonic() - tries.start)
        if (policy.attempts is not None and attempt >= policy.attempts) or remaining <= 0:
            tries.gave_up = True
            return None
        delay = min(policy.backoff(attempt), remaining)
        import logging  # here: merge and status of a folder never retry, and start faster

        logging.getLogger(__name__).warning(
            "%s: attempt %d failed (%s); retrying in %.1f s", tries.doing, attempt,
            one_line(exc, 120) if isinstance(exc, BaseException) else exc, delay)
        return delay

    def _call(self, op: str, target: str, retry: RetryPolicy | None, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` (whose client retries through :meth:`_may_retry`); translate every failure
        to a one-line StorageError."""
        tries = self._tries
        tries.start, tries.attempts, tries.gave_up = time.monotonic(), 1, False
        tries.doing = doing(op, target)
        try:
            return fn()
        except (StorageError, TypeError, AttributeError, NameError, AssertionError):
            raise  # ours already, or a bug: not a storage problem to explain
        except Exception as exc:
            cause = self._unwrap(exc)
            if tries.gave_up:
                elapsed = time.monotonic() - tries.start
                raise self._give_up(cause, op, target, tries.attempts, elapsed) from exc
            raise self._translate(cause, op, target) from exc


def precondition_message(target: str, expected: str | None, found: str | None) -> str:
    """One line for a failed conditional write.

    >>> precondition_message("/b/k", None, "7")
    '/b/k: already exists'
    """
    if expected is None:
        return f"{target}: already exists"
    if found is None:
        return f"{target}: no longer exists (version {expected} expected)"
    return f"{target}: was replaced by {found} writer (version {expected} expected)"
