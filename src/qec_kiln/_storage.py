"""Buckets: one small interface over a local directory, Amazon S3 and Google Cloud Storage.

A bucket URL names where a sweep keeps its fragments:

* ``s3://BUCKET[/PREFIX]`` -- Amazon S3 or any S3-compatible store (boto3; honours ``AWS_PROFILE``,
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``).
* ``gs://BUCKET[/PREFIX]`` -- Google Cloud Storage (Application Default Credentials; when
  ``STORAGE_EMULATOR_HOST`` is set, the emulator there with anonymous credentials).
* a directory path, relative or absolute, or ``file://PATH`` -- a local (or shared NFS) directory,
  created on the first write.

Keys are relative, ``/``-separated names such as ``sweep1/fragments/b000.csv``; with a prefix in
the URL every key lives under it.

Example:
    >>> import tempfile
    >>> bucket = open_bucket(tempfile.mkdtemp() + "/bucket")
    >>> bucket.write_bytes("sweep1/fragments/b000.csv", b"shots,errors\\n")
    >>> bucket.list_keys("sweep1/")
    ['sweep1/fragments/b000.csv']
    >>> bucket.read_bytes("sweep1/fragments/b000.csv")
    b'shots,errors\\n'

Retries: S3 and GCS calls are retried on transient errors (connection refused or reset, timeouts,
HTTP 5xx, throttling) with exponential backoff and jitter, as a :class:`RetryPolicy` says; never
on a missing object, a missing bucket or a credentials problem. Every bucket has a default
policy (``open_bucket(url, retry=...)``, else :data:`QUICK_RETRY`, about 15 s, meant for periodic
syncs) and every call takes ``retry=`` to override it for that call, e.g. a final upload that
must ride out an outage of a minute or two::

    bucket.write_bytes(key, data, retry=PATIENT_RETRY)   # keeps trying for up to 5 minutes

Every failure is a :class:`~qec_kiln._errors.StorageError` (a missing object:
:class:`~qec_kiln._errors.ObjectNotFound`) whose message is one line naming the URL and what to
do. Messages never contain secrets.

A bucket may be used from several threads at once (e.g. a background sync thread and the main
thread): each bucket has its own clients and no global client is shared.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
import mimetypes
import os
import random
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from qec_kiln._errors import ObjectNotFound, StorageError

__all__ = [
    "ACCEPTED_FORMS",
    "PATIENT_RETRY",
    "QUICK_RETRY",
    "Bucket",
    "BucketURL",
    "GCSBucket",
    "LocalBucket",
    "RetryPolicy",
    "S3Bucket",
    "describe_url",
    "open_bucket",
    "parse_url",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

ACCEPTED_FORMS = "s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], a directory path or file://PATH"

# Temporary files of atomic local writes start with this; list_keys() never shows them.
_TMP_PREFIX = ".kiln-tmp-"


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
# URLs and keys


class BucketURL(NamedTuple):
    """A parsed bucket URL.

    ``scheme`` is ``"s3"``, ``"gs"`` or ``"file"``; ``bucket`` the bucket name (for ``file``: the
    absolute directory); ``prefix`` the key prefix without slashes at its ends (``""`` for none);
    ``url`` the normalized URL (for ``file``: the absolute directory path).
    """

    scheme: str
    bucket: str
    prefix: str
    url: str


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_S3_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_GS_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]$")
_IPV4_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def _bad_url(url: object, why: str) -> StorageError:
    return StorageError(f"bad bucket URL {str(url)!r}: {why}; use {ACCEPTED_FORMS}")


_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")


def _path_problem(path: str, *, partial_last: bool = False) -> str | None:
    """Why ``path`` is not a safe relative key (or key prefix), or None if it is."""
    if path.startswith("/"):
        return "absolute keys are not allowed"
    if "\\" in path:
        return "use '/' as the separator, not '\\'"
    if _CONTROL_CHARACTER.search(path):
        return "control characters are not allowed"
    parts = path.split("/")
    if partial_last and parts and parts[-1] == "":
        parts = parts[:-1]  # "sweep1/" as a listing prefix
    for part in parts:
        if part == "..":
            return "'..' would escape the bucket root"
        if part in ("", "."):
            return "empty and '.' path segments are not allowed"
    return None


def parse_url(url: str | os.PathLike[str]) -> BucketURL:
    """Parse and normalize a bucket URL, or raise StorageError naming it and the accepted forms.

    Example:
        >>> parse_url("s3://my-bucket/runs/2024/")
        BucketURL(scheme='s3', bucket='my-bucket', prefix='runs/2024', url='s3://my-bucket/runs/2024')
        >>> parse_url("gs://my-bucket").url
        'gs://my-bucket'
        >>> parse_url("file:///data/kiln").url
        '/data/kiln'
        >>> parse_url("http://example.com/x")
        Traceback (most recent call last):
        ...
        qec_kiln._errors.StorageError: bad bucket URL 'http://example.com/x': unsupported scheme \
'http://'; use s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], a directory path or file://PATH

    A local directory whose name looks like a scheme (``foo:bar``) must be written ``./foo:bar``.
    """
    try:
        text = os.fspath(url)
    except TypeError:
        raise _bad_url(url, f"expected a string, not {type(url).__name__}") from None
    if not isinstance(text, str):
        raise _bad_url(url, "expected a string, not bytes")
    if not text.strip():
        raise _bad_url(url, "it is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise _bad_url(url, "it contains control characters")
    match = _SCHEME_RE.match(text)
    if match is None:
        path = os.path.abspath(os.path.expanduser(text))
        return BucketURL("file", path, "", path)
    scheme = match.group(1).lower()
    rest = text[match.end() :]
    if scheme == "file":
        if not rest.startswith("//") or not rest[2:]:
            raise _bad_url(url, "expected file://PATH")
        path = rest[2:]
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        path = os.path.abspath(os.path.expanduser(path))
        return BucketURL("file", path, "", path)
    if scheme not in ("s3", "gs"):
        hint = " (write gs:// for Google Cloud Storage)" if scheme == "gcs" else ""
        raise _bad_url(url, f"unsupported scheme '{scheme}://'{hint}")
    if not rest.startswith("//"):
        raise _bad_url(url, f"expected {scheme}://BUCKET[/PREFIX]")
    bucket, _, prefix = rest[2:].partition("/")
    if not bucket:
        raise _bad_url(url, "no bucket name")
    if scheme == "s3":
        if not _S3_BUCKET_RE.match(bucket) or _IPV4_RE.match(bucket) or ".." in bucket:
            raise _bad_url(
                url,
                f"{bucket!r} is not a valid S3 bucket name "
                "(3-63 characters: lowercase letters, digits, '-' and '.')",
            )
    elif not _GS_BUCKET_RE.match(bucket) or ".." in bucket:
        raise _bad_url(
            url,
            f"{bucket!r} is not a valid GCS bucket name "
            "(3-63 characters: lowercase letters, digits, '-', '_' and '.')",
        )
    prefix = prefix.strip("/")
    if prefix:
        problem = _path_problem(prefix)
        if problem:
            raise _bad_url(url, f"bad prefix {prefix!r}: {problem}")
    normalized = f"{scheme}://{bucket}" + (f"/{prefix}" if prefix else "")
    return BucketURL(scheme, bucket, prefix, normalized)


def describe_url(url: str | os.PathLike[str]) -> str:
    """One line saying where a bucket URL points and which settings will be used (no secrets).

    Example:
        >>> describe_url("/tmp/kiln")
        'local directory /tmp/kiln'
    """
    parsed = parse_url(url)
    under = f", keys under {parsed.prefix + '/'!r}" if parsed.prefix else ""
    if parsed.scheme == "file":
        return f"local directory {parsed.url}"
    if parsed.scheme == "s3":
        endpoint = _s3_endpoint_setting()
        if os.environ.get("AWS_PROFILE"):
            creds = f"profile {os.environ['AWS_PROFILE']!r} (AWS_PROFILE)"
        elif os.environ.get("AWS_ACCESS_KEY_ID"):
            creds = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        else:
            creds = "the default AWS credential chain"
        return f"S3 bucket {parsed.bucket!r}{under}; endpoint {endpoint}; credentials from {creds}"
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        return (
            f"GCS bucket {parsed.bucket!r}{under}; emulator {emulator} (STORAGE_EMULATOR_HOST), "
            "anonymous credentials"
        )
    return (
        f"GCS bucket {parsed.bucket!r}{under}; endpoint https://storage.googleapis.com; "
        "Application Default Credentials"
    )


def _s3_endpoint_setting() -> str:
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return f"{os.environ[var]} ({var})"
    return "AWS default"


_DOING = {
    "read": "reading",
    "write": "writing",
    "list": "listing",
    "check": "checking",
    "delete": "deleting",
    "access": "accessing",
}


def _doing(op: str, target: str) -> str:
    """``("read", "s3://b/k")`` -> ``"reading s3://b/k"`` (for messages)."""
    return f"{_DOING.get(op, op)} {target}"


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# The interface


class Bucket(abc.ABC):
    """Whole-object storage under one root: a local directory, an S3 or a GCS bucket (+ prefix).

    Use :func:`open_bucket` to get one. ``url`` is the normalized URL; ``retry`` the default
    :class:`RetryPolicy` of its calls (each method also takes ``retry=`` for one call).

    Example:
        >>> import tempfile
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
        problem = _path_problem(key)
        if problem:
            raise StorageError(f"{self.url}: invalid object key {key!r}: {problem}")
        return key

    def _check_prefix(self, prefix: str) -> str:
        if not isinstance(prefix, str):
            raise StorageError(f"{self.url}: non-string key prefix {prefix!r}")
        if prefix:
            problem = _path_problem(prefix, partial_last=True)
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
    def list_keys(self, prefix: str = "", *, retry: RetryPolicy | None = None) -> list[str]:
        """Sorted keys (relative to the bucket root) that start with ``prefix``."""

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

    # -- retry machinery shared by the cloud buckets --------------------------------------

    def _is_transient(self, exc: Exception) -> bool:
        return False

    def _translate(self, exc: Exception, op: str, target: str) -> StorageError:
        return StorageError(f"error while {_doing(op, target)}: {_one_line(exc)}")

    def _give_up(
        self, exc: Exception, op: str, target: str, attempts: int, elapsed: float
    ) -> StorageError:
        return self._translate(exc, op, target)

    def _call(self, op: str, target: str, retry: RetryPolicy | None, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` with retries on transient errors; translate every failure to StorageError."""
        policy = retry or self.retry
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except (StorageError, TypeError, AttributeError, NameError, AssertionError):
                raise  # ours already, or a bug: not a storage problem to explain
            except Exception as exc:
                if not self._is_transient(exc):
                    raise self._translate(exc, op, target) from exc
                elapsed = time.monotonic() - start
                remaining = policy.deadline_seconds - elapsed
                if (policy.attempts is not None and attempt >= policy.attempts) or remaining <= 0:
                    raise self._give_up(exc, op, target, attempt, elapsed) from exc
                delay = min(policy.backoff(attempt), remaining)
                log.warning(
                    "%s: attempt %d failed (%s); retrying in %.1f s",
                    _doing(op, target),
                    attempt,
                    _one_line(exc, 120),
                    delay,
                )
                time.sleep(delay)


def open_bucket(url: str | os.PathLike[str], *, retry: RetryPolicy | None = None) -> Bucket:
    """The bucket at ``url`` (see the module docstring for the accepted forms).

    Nothing is contacted yet: credentials and the endpoint are first used by the first call
    (use :meth:`Bucket.check_access` to test them early). ``retry`` is the bucket's default
    policy (else :data:`QUICK_RETRY`); every call can override it with ``retry=``.

    Example:
        >>> open_bucket("s3://my-bucket/sweeps")
        S3Bucket('s3://my-bucket/sweeps')
        >>> open_bucket("gs://my-bucket", retry=PATIENT_RETRY).retry.deadline_seconds
        300.0
    """
    parsed = parse_url(url)
    if parsed.scheme == "s3":
        return S3Bucket(parsed, retry=retry)
    if parsed.scheme == "gs":
        return GCSBucket(parsed, retry=retry)
    return LocalBucket(parsed, retry=retry)


# --------------------------------------------------------------------------------------------
# Local directory


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


_HOST = socket.gethostname().replace(".", "-") or "host"
#: A temp file this old is abandoned whoever wrote it (no fragment upload takes an hour).
_ABANDONED_TEMP_SECONDS = 3600.0


def _remove_abandoned_temp_files(path: Path) -> None:
    """Delete temp files of earlier writes of ``path`` whose writer died mid-write (SIGKILL).

    A temp file is named ``.kiln-tmp-<name>.<host>.<pid>.<random>``: it is abandoned when that
    host is this one and the pid is gone, or (another host on a shared file system) when it is
    older than an hour.
    """
    prefix = f"{_TMP_PREFIX}{path.name}."
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    now = time.time()
    for tmp in candidates:
        host, _, rest = tmp.name[len(prefix):].partition(".")
        pid = rest.partition(".")[0]
        try:
            if host == _HOST and pid.isdigit():
                if int(pid) == os.getpid() or _pid_alive(int(pid)):
                    continue
            elif now - tmp.stat().st_mtime < _ABANDONED_TEMP_SECONDS:
                continue
            tmp.unlink()
        except OSError:
            continue


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalBucket(Bucket):
    """A directory (local disk or a shared file system); created on the first write.

    Writes go to a temporary file in the same directory, are fsynced and renamed over the key
    (``os.replace``), so a reader never sees a partial object. ``retry`` is accepted and ignored.
    """

    def __init__(self, parsed: BucketURL, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(parsed, retry=retry)
        self.root = Path(parsed.bucket)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*self._check_key(key).split("/"))

    def _os_error(self, exc: OSError, op: str, key: str | None) -> StorageError:
        target = self.url_for(key) if key else self.url
        return StorageError(f"cannot {op} {target}: {exc.strerror or _one_line(exc)}")

    def read_bytes(self, key: str, *, retry: RetryPolicy | None = None) -> bytes:
        path = os.path.join(self.root, self._check_key(key))  # a plain string: merge reads thousands
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"{self.url_for(key)}: no such object") from None
        except OSError as exc:
            raise self._os_error(exc, "read", key) from exc

    def write_bytes(self, key: str, data: bytes, *, retry: RetryPolicy | None = None) -> None:
        path = self._path(key)
        data = self._check_data(data)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            owner = f"{_TMP_PREFIX}{path.name}.{_HOST}.{os.getpid()}."
            fd, tmp = tempfile.mkstemp(prefix=owner, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o666 & ~_umask())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise self._os_error(exc, "write", key) from exc
        _remove_abandoned_temp_files(path)
        with contextlib.suppress(OSError):  # make the rename durable too (best effort)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def list_keys(self, prefix: str = "", *, retry: RetryPolicy | None = None) -> list[str]:
        prefix = self._check_prefix(prefix)
        dir_part = prefix.rpartition("/")[0]
        start = self.root.joinpath(*dir_part.split("/")) if dir_part else self.root
        keys: list[str] = []

        def on_error(exc: OSError) -> None:
            if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                raise self._os_error(exc, "list", None)

        for dirpath, dirnames, filenames in os.walk(start, onerror=on_error):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in filenames:
                key = rel + name
                if not name.startswith(_TMP_PREFIX) and key.startswith(prefix):
                    keys.append(key)
            # Only descend into directories that can hold keys starting with the prefix.
            dirnames[:] = [
                d
                for d in dirnames
                if (rel + d + "/").startswith(prefix) or prefix.startswith(rel + d + "/")
            ]
        return sorted(keys)

    def exists(self, key: str, *, retry: RetryPolicy | None = None) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str, *, retry: RetryPolicy | None = None) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            pass
        except OSError as exc:
            raise self._os_error(exc, "delete", key) from exc

    def check_access(self, *, retry: RetryPolicy | None = None) -> None:
        path = self.root
        if path.exists():
            if not path.is_dir():
                raise StorageError(f"{self.url} exists but is not a directory; use another path")
            if not os.access(path, os.W_OK | os.X_OK):
                raise StorageError(f"directory {self.url} is not writable; fix its permissions")
            return
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise StorageError(
                f"cannot create directory {self.url}: {ancestor} is not a writable directory"
            )


# --------------------------------------------------------------------------------------------
# Amazon S3 (and S3-compatible stores)

_S3_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
_S3_BAD_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
    }
)
_AWS_CREDENTIALS_HINT = (
    "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run `aws configure`"
)


class S3Bucket(Bucket):
    """``s3://BUCKET[/PREFIX]`` through boto3.

    The endpoint, region and credentials come from the usual AWS settings (``AWS_PROFILE``,
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
    ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``~/.aws``), read when the first call
    creates the client. botocore's own retries are off (this class retries, see
    :class:`RetryPolicy`); the policy's connect/read timeouts are set on the client.
    """

    def __init__(self, parsed: BucketURL, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(parsed, retry=retry)
        self.bucket_name = parsed.bucket
        self.prefix = parsed.prefix
        self._lock = threading.Lock()
        self._session: Any = None
        self._clients: dict[tuple[float, float], Any] = {}
        self._endpoint: str | None = None

    def _client(self, policy: RetryPolicy) -> Any:
        timeouts = (policy.connect_timeout, policy.read_timeout)
        with self._lock:
            client = self._clients.get(timeouts)
            if client is None:
                import boto3.session
                from botocore.config import Config

                if self._session is None:
                    self._session = boto3.session.Session()
                client = self._session.client(
                    "s3",
                    config=Config(
                        connect_timeout=policy.connect_timeout,
                        read_timeout=policy.read_timeout,
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        max_pool_connections=32,  # merge/status read 16 fragments at once
                    ),
                )
                self._clients[timeouts] = client
                self._endpoint = client.meta.endpoint_url
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()

    def _full_key(self, key: str) -> str:
        key = self._check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _list_prefix(self, prefix: str) -> str:
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def read_bytes(self, key: str, *, retry: RetryPolicy | None = None) -> bytes:
        full = self._full_key(key)
        policy = retry or self.retry

        def op() -> bytes:
            response = self._client(policy).get_object(Bucket=self.bucket_name, Key=full)
            with contextlib.closing(response["Body"]) as body:
                return body.read()

        return self._call("read", self.url_for(key), policy, op)

    def write_bytes(self, key: str, data: bytes, *, retry: RetryPolicy | None = None) -> None:
        full = self._full_key(key)
        data = self._check_data(data)
        policy = retry or self.retry
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"

        def op() -> None:
            self._client(policy).put_object(
                Bucket=self.bucket_name, Key=full, Body=data, ContentType=content_type
            )

        self._call("write", self.url_for(key), policy, op)

    def list_keys(self, prefix: str = "", *, retry: RetryPolicy | None = None) -> list[str]:
        full_prefix = self._list_prefix(self._check_prefix(prefix))
        strip = len(self.prefix) + 1 if self.prefix else 0
        policy = retry or self.retry

        def op() -> list[str]:
            client = self._client(policy)
            keys: list[str] = []
            kwargs: dict[str, Any] = {"Bucket": self.bucket_name, "Prefix": full_prefix}
            while True:
                response = client.list_objects_v2(**kwargs)
                keys.extend(item["Key"][strip:] for item in response.get("Contents", ()))
                if not response.get("IsTruncated"):
                    return sorted(keys)
                kwargs["ContinuationToken"] = response["NextContinuationToken"]

        return self._call("list", self.url_for(prefix) if prefix else self.url, policy, op)

    def exists(self, key: str, *, retry: RetryPolicy | None = None) -> bool:
        full = self._full_key(key)
        policy = retry or self.retry

        def op() -> bool:
            from botocore.exceptions import ClientError

            try:
                self._client(policy).head_object(Bucket=self.bucket_name, Key=full)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return False
                raise
            return True

        return self._call("check", self.url_for(key), policy, op)

    def delete(self, key: str, *, retry: RetryPolicy | None = None) -> None:
        full = self._full_key(key)
        policy = retry or self.retry

        def op() -> None:
            self._client(policy).delete_object(Bucket=self.bucket_name, Key=full)

        self._call("delete", self.url_for(key), policy, op)

    def check_access(self, *, retry: RetryPolicy | None = None) -> None:
        policy = retry or self.retry
        full_prefix = self._list_prefix("")

        def op() -> None:
            self._client(policy).list_objects_v2(
                Bucket=self.bucket_name, Prefix=full_prefix, MaxKeys=1
            )

        self._call("access", self.url, policy, op)

    # -- error handling -------------------------------------------------------------------

    def _is_transient(self, exc: Exception) -> bool:
        from botocore import exceptions as bx

        if isinstance(exc, bx.SSLError):
            return False
        if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError)):
            return True
        if isinstance(exc, bx.ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return error.get("Code") in _S3_TRANSIENT_CODES or status >= 500 or status == 429
        return isinstance(exc, (ConnectionError, TimeoutError))

    def _endpoint_text(self) -> str:
        return self._endpoint or _s3_endpoint_setting()

    def _translate(self, exc: Exception, op: str, target: str) -> StorageError:
        from botocore import exceptions as bx

        if isinstance(exc, bx.NoCredentialsError):
            return StorageError(f"no AWS credentials found for {self.url}: {_AWS_CREDENTIALS_HINT}")
        if isinstance(exc, bx.PartialCredentialsError):
            return StorageError(
                f"incomplete AWS credentials for {self.url} ({_one_line(exc)}): "
                f"{_AWS_CREDENTIALS_HINT}"
            )
        if isinstance(exc, bx.ProfileNotFound):
            return StorageError(
                f"AWS profile {os.environ.get('AWS_PROFILE', '?')!r} (AWS_PROFILE) not found, "
                f"needed for {self.url}: run `aws configure --profile NAME` or fix AWS_PROFILE"
            )
        if isinstance(
            exc, (bx.CredentialRetrievalError, bx.TokenRetrievalError, bx.SSOError)
        ) or type(exc).__name__.endswith("TokenError"):
            return StorageError(
                f"could not load AWS credentials for {self.url} ({type(exc).__name__}): "
                f"run `aws sso login` if you use SSO, or {_AWS_CREDENTIALS_HINT}"
            )
        if isinstance(exc, bx.SSLError):
            return StorageError(
                f"TLS error talking to S3 at {self._endpoint_text()} for {target}: "
                f"{_one_line(exc)}; check AWS_CA_BUNDLE and the endpoint URL"
            )
        if isinstance(exc, bx.ClientError):
            return self._translate_client_error(exc, op, target)
        return StorageError(f"S3 error while {_doing(op, target)}: {_one_line(exc)}")

    def _translate_client_error(self, exc: Any, op: str, target: str) -> StorageError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404", "NotFound") and op == "read":
            return ObjectNotFound(f"{target}: no such object")
        if code == "NoSuchBucket":
            return StorageError(
                f"S3 bucket {self.bucket_name!r} does not exist ({self.url} at "
                f"{self._endpoint_text()}): create it (`aws s3 mb s3://{self.bucket_name}`) "
                "or fix the URL"
            )
        if code in _S3_BAD_CREDENTIAL_CODES:
            return StorageError(
                f"S3 rejected the AWS credentials for {self.url} ({code}): the access key or "
                f"secret is wrong or expired; {_AWS_CREDENTIALS_HINT}"
            )
        if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
            return StorageError(
                f"S3 denied {_doing(op, target)} ({code if code.isalpha() else 'HTTP 403'}): "
                "the credentials are wrong or "
                f"lack permission; grant s3:ListBucket, s3:GetObject, s3:PutObject and "
                f"s3:DeleteObject on {self.bucket_name}, or {_AWS_CREDENTIALS_HINT}"
            )
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301"):
            return StorageError(
                f"S3 bucket {self.bucket_name!r} is in another region ({code}): set "
                "AWS_DEFAULT_REGION (or the profile's region) to the bucket's region"
            )
        message = " ".join(str(error.get("Message", "")).split())
        detail = f": {message}" if message else ""
        code = code or "error"
        return StorageError(
            f"S3 error while {_doing(op, target)}: {code} (HTTP {status}){detail}"
        )

    def _give_up(
        self, exc: Exception, op: str, target: str, attempts: int, elapsed: float
    ) -> StorageError:
        from botocore import exceptions as bx

        tries = f"{attempts} attempt{'s' if attempts != 1 else ''} in {elapsed:.0f} s"
        if isinstance(exc, bx.ClientError):
            base = self._translate_client_error(exc, op, target)
            return StorageError(f"{base} ({tries}); the service is overloaded, try again later")
        return StorageError(
            f"cannot reach S3 at {self._endpoint_text()} while {_doing(op, target)} ({tries}; "
            "last error: "
            f"{_one_line(exc, 160)}): check the network and AWS_ENDPOINT_URL, or try again later"
        )


# --------------------------------------------------------------------------------------------
# Google Cloud Storage

_GCS_ADC_HINT = (
    "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
)


class GCSBucket(Bucket):
    """``gs://BUCKET[/PREFIX]`` through google-cloud-storage.

    Credentials are Application Default Credentials; the project (needed only to create
    buckets, which this class never does) comes from ``GOOGLE_CLOUD_PROJECT`` if set. When
    ``STORAGE_EMULATOR_HOST`` is set (e.g. ``http://127.0.0.1:9023``), the emulator there is used
    with anonymous credentials. Each thread gets its own client; the library's own retries are
    off (``retry=None``, this class retries) and every request gets the policy's
    ``(connect_timeout, read_timeout)``.
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

    def read_bytes(self, key: str, *, retry: RetryPolicy | None = None) -> bytes:
        self._check_key(key)
        policy = retry or self.retry

        def op() -> bytes:
            return self._blob(key).download_as_bytes(timeout=self._timeout(policy), retry=None)

        return self._call("read", self.url_for(key), policy, op)

    def write_bytes(self, key: str, data: bytes, *, retry: RetryPolicy | None = None) -> None:
        self._check_key(key)
        data = self._check_data(data)
        policy = retry or self.retry
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"

        def op() -> None:
            self._blob(key).upload_from_string(
                data, content_type=content_type, timeout=self._timeout(policy), retry=None
            )

        self._call("write", self.url_for(key), policy, op)

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
                retry=None,
            )
            return sorted(blob.name[strip:] for blob in blobs)

        return self._call("list", self.url_for(prefix) if prefix else self.url, policy, op)

    def exists(self, key: str, *, retry: RetryPolicy | None = None) -> bool:
        self._check_key(key)
        policy = retry or self.retry

        def op() -> bool:
            return bool(self._blob(key).exists(timeout=self._timeout(policy), retry=None))

        return self._call("check", self.url_for(key), policy, op)

    def delete(self, key: str, *, retry: RetryPolicy | None = None) -> None:
        self._check_key(key)
        policy = retry or self.retry

        def op() -> None:
            from google.api_core.exceptions import NotFound

            blob = self._blob(key)
            try:
                blob.delete(timeout=self._timeout(policy), retry=None)
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
                retry=None,
            )
            next(iter(blobs.pages), None)

        self._call("access", self.url, policy, op)

    # -- error handling -------------------------------------------------------------------

    def _is_transient(self, exc: Exception) -> bool:
        import http.client

        import requests
        import urllib3
        from google.api_core import exceptions as gx
        from google.auth import exceptions as ax

        if isinstance(exc, gx.GoogleAPICallError):
            return exc.code in (408, 429) or (isinstance(exc.code, int) and exc.code >= 500)
        if isinstance(
            exc,
            (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                http.client.HTTPException,
                urllib3.exceptions.HTTPError,
                ConnectionError,
                TimeoutError,
            ),
        ):
            return not isinstance(exc, (requests.exceptions.SSLError, urllib3.exceptions.SSLError))
        if isinstance(exc, ax.TransportError):
            cause = exc.args[0] if exc.args else None
            return isinstance(cause, Exception) and self._is_transient(cause)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if type(exc).__name__ in ("InvalidResponse", "DataCorruption"):
            return type(exc).__name__ == "DataCorruption" or status in (408, 429) or (
                isinstance(status, int) and status >= 500
            )
        return False

    @staticmethod
    def _cause(exc: Exception) -> str:
        """The useful part of a requests/urllib3 error ("... Connection refused")."""
        inner = exc.args[0] if exc.args else None
        reason = getattr(inner, "reason", None)
        return _one_line(reason if isinstance(reason, BaseException) else exc, 160)

    def _endpoint_text(self) -> str:
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        return f"{emulator} (STORAGE_EMULATOR_HOST)" if emulator else "storage.googleapis.com"

    def _translate(self, exc: Exception, op: str, target: str) -> StorageError:
        from google.api_core import exceptions as gx
        from google.auth import exceptions as ax

        if isinstance(exc, ax.DefaultCredentialsError):
            detail = ""
            if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
                detail = f" (GOOGLE_APPLICATION_CREDENTIALS: {_one_line(exc, 160)})"
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
                f"GCS denied {_doing(op, target)} (HTTP 403): the account lacks permission; "
                "grant it "
                f"roles/storage.objectAdmin on gs://{self.bucket_name}, or {_GCS_ADC_HINT} "
                "with another account"
            )
        if isinstance(exc, gx.GoogleAPICallError):
            return StorageError(
                f"GCS error while {_doing(op, target)}: HTTP {exc.code}: {_one_line(exc, 160)}"
            )
        return StorageError(f"GCS error while {_doing(op, target)}: {_one_line(exc)}")

    def _give_up(
        self, exc: Exception, op: str, target: str, attempts: int, elapsed: float
    ) -> StorageError:
        from google.api_core import exceptions as gx

        tries = f"{attempts} attempt{'s' if attempts != 1 else ''} in {elapsed:.0f} s"
        if isinstance(exc, gx.GoogleAPICallError):
            return StorageError(
                f"GCS kept failing while {_doing(op, target)} (HTTP {exc.code}, {tries}): "
                "the service is "
                "overloaded or down, try again later"
            )
        return StorageError(
            f"cannot reach GCS at {self._endpoint_text()} while {_doing(op, target)} ({tries}; "
            f"last error: {self._cause(exc)}): check the network"
            + (" and STORAGE_EMULATOR_HOST" if os.environ.get("STORAGE_EMULATOR_HOST") else "")
            + ", or try again later"
        )
