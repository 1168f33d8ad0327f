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

Retries: S3 and GCS calls are retried on the errors their client libraries classify as transient
(botocore's standard retry mode; google-cloud-storage's ``DEFAULT_RETRY``: connection refused or
reset, timeouts, HTTP 5xx, throttling), with exponential backoff and jitter, within the attempts
and deadline of a :class:`RetryPolicy`; never on a missing object, a missing bucket or a
credentials problem. Every bucket has a default
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

from typing import TYPE_CHECKING

from qec_kiln._storage._bucket import (
    PATIENT_RETRY,
    QUICK_RETRY,
    Bucket,
    RetryPolicy,
)
from qec_kiln._storage._listed import listed
from qec_kiln._storage._local import LocalBucket
from qec_kiln._storage._open import open_bucket
from qec_kiln._storage._urls import (
    ACCEPTED_FORMS,
    BucketURL,
    describe_url,
    key_problem,
    parse_url,
)

if TYPE_CHECKING:
    from qec_kiln._storage._gcs import GCSBucket
    from qec_kiln._storage._s3 import S3Bucket

#: The cloud buckets' modules load when first asked for: a local merge or status never needs them.
_LAZY = {"GCSBucket": "qec_kiln._storage._gcs", "S3Bucket": "qec_kiln._storage._s3"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qec_kiln._storage' has no attribute {name!r}")


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
    "key_problem",
    "listed",
    "open_bucket",
    "parse_url",
]
