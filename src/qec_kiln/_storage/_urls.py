"""Bucket URLs: parse, normalize and describe ``s3://``, ``gs://`` and local directory URLs."""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from qec_kiln._errors import StorageError

ACCEPTED_FORMS = "s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], a directory path or file://PATH"

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
_CONTROL_RE = re.compile("[\x00-\x1f\x7f]")  # merge checks thousands of keys


def _bad_url(url: object, why: str) -> StorageError:
    return StorageError(f"bad bucket URL {str(url)!r}: {why}; use {ACCEPTED_FORMS}")


def key_problem(path: str, *, partial_last: bool = False) -> str | None:
    """Why ``path`` is not a safe relative key (or key prefix), or None if it is."""
    if path.startswith("/"):
        return "absolute keys are not allowed"
    if "\\" in path:
        return "use '/' as the separator, not '\\'"
    if _CONTROL_RE.search(path):
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
        problem = key_problem(prefix)
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
        endpoint = s3_endpoint_setting()
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


def s3_endpoint_setting() -> str:
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


def doing(op: str, target: str) -> str:
    """``("read", "s3://b/k")`` -> ``"reading s3://b/k"`` (for messages)."""
    return f"{_DOING.get(op, op)} {target}"


def one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

