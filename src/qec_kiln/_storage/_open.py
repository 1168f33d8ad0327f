"""``open_bucket``: a URL or a path to the Bucket that serves it."""

from __future__ import annotations

import os

from qec_kiln._storage._bucket import PATIENT_RETRY, Bucket, RetryPolicy  # noqa: F401 (doctest)
from qec_kiln._storage._local import LocalBucket
from qec_kiln._storage._urls import parse_url


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
    if parsed.scheme == "s3":  # each cloud's module only where its bucket is opened
        from qec_kiln._storage._s3 import S3Bucket

        return S3Bucket(parsed, retry=retry)
    if parsed.scheme == "gs":
        from qec_kiln._storage._gcs import GCSBucket

        return GCSBucket(parsed, retry=retry)
    return LocalBucket(parsed, retry=retry)
