"""A read-only view of a cloud bucket's objects under one prefix, listed once.

``merge`` and ``status`` read every fragment of a sweep: thousands of GETs. The view lists the
prefix once (one request per 1,000 keys, each key with its version: S3's ETag, GCS's
generation), then

* a key under the prefix that the listing lacks is :class:`ObjectNotFound` at once (a batch not
  started yet costs no request);
* a key read by an earlier command, unchanged since (the same version), comes from a local
  cache of those bytes (``$QEC_KILN_HOME/bucket-cache``, default ``~/.cache/qec-kiln``); only
  new or changed objects are fetched.

The bytes are the object's own, whole (a version names one content), so what the caller parses
is exactly what a GET would give. What the listing saw is a snapshot: an object written after it
is read as it was then (or as absent), like a read a moment earlier. ``close()`` (or leaving a
``with`` block) stores what was fetched; the cache is skipped, never an error, when it cannot be
read or written. ``QEC_KILN_BUCKET_CACHE=0`` turns it off (the listing still saves the GETs of
missing objects).

Example:
    >>> import tempfile
    >>> from qec_kiln._storage import listed, open_bucket
    >>> b = open_bucket(tempfile.mkdtemp())
    >>> listed(b, "s/") is b   # a local folder: every read is already local
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import threading

from qec_kiln._atomic import atomic_write
from qec_kiln._errors import ObjectNotFound, StorageError
from qec_kiln._storage._bucket import Bucket, RetryPolicy

#: A cache file larger than this is not written (the fragments of a sweep are usually far less).
MAX_CACHE_BYTES = 256 * 2**20


def cache_folder() -> pathlib.Path:
    """``$QEC_KILN_HOME/bucket-cache`` (default ``~/.cache/qec-kiln/bucket-cache``)."""
    home = os.environ.get("QEC_KILN_HOME")
    return (pathlib.Path(home) if home else pathlib.Path.home() / ".cache" / "qec-kiln") / "bucket-cache"


def listed(bucket: Bucket, prefix: str) -> Bucket:
    """A read-only view of ``bucket`` for reading many objects under ``prefix`` (see the module
    docstring); a local folder is its own view. Close it (``with``) to keep what it fetched."""
    identity = bucket.cache_identity()
    return bucket if identity is None else ListedView(bucket, prefix, identity)


class ListedView(Bucket):
    """``bucket``'s objects under ``prefix`` as one listing saw them (see the module docstring).
    Reads outside the prefix, and every other call, go to ``bucket``."""

    def __init__(self, bucket: Bucket, prefix: str, identity: str, *,
                 retry: RetryPolicy | None = None) -> None:
        super().__init__(bucket._parsed, retry=retry or bucket.retry)
        self.inner = bucket
        self.prefix = bucket._check_prefix(prefix)
        # The listing runs in a thread of its own, so that the caller can do something else
        # (import sinter) while it waits for the server; ``versions`` waits for it.
        self._listing: dict[str, str] | BaseException | None = None
        self._lister = threading.Thread(target=self._list, name="kiln-listing", daemon=True)
        self._lister.start()
        self._lock = threading.Lock()
        self._fetched = 0
        self._path: pathlib.Path | None = None
        self._identity = identity
        self._cached: dict[str, tuple[str, bytes]] = {}
        self._used: dict[str, tuple[str, bytes]] = {}
        self._gone: set[str] = set()
        self._prefetched = False  # see reads_are_local
        self._failed: tuple[str, StorageError] | None = None  # the first failed read
        if os.environ.get("QEC_KILN_BUCKET_CACHE", "1").strip().lower() not in ("0", "off", "no"):
            name = hashlib.sha256(f"{identity}\n{self.url_for(prefix)}".encode()).hexdigest()[:32]
            self._path = cache_folder() / f"{name}.pack"
            self._cached = _load(self._path, identity)

    def _list(self) -> None:
        try:
            self._listing = self.inner.list_versions(self.prefix)
        except BaseException as ex:  # noqa: BLE001 - raised in the caller's thread
            self._listing = ex

    @property
    def versions(self) -> dict[str, str]:
        """``key -> version`` of the listing (waits for it; raises what it raised)."""
        if self._lister.is_alive():
            self._lister.join()
        if isinstance(self._listing, BaseException):
            raise self._listing
        assert self._listing is not None
        return self._listing

    def keys(self) -> list[str]:
        """The listed keys, sorted (what ``list_keys(prefix)`` gave at the listing)."""
        return sorted(self.versions)

    def read_bytes(self, key: str, *, retry: RetryPolicy | None = None) -> bytes:
        if not key.startswith(self.prefix):
            return self.inner.read_bytes(key, retry=retry)
        version = self.versions.get(self._check_key(key))
        if version is None or key in self._gone:
            raise ObjectNotFound(f"{self.url_for(key)}: no such object")
        used = self._used.get(key)
        if used is not None:
            return used[1]
        hit = self._cached.get(key)
        if hit is not None and version and hit[0] == version:
            data = hit[1]
        else:
            if self._failed is not None:
                if self._failed[0] == key:
                    raise self._failed[1]
                raise StorageError(f"{self.url_for(key)}: not read, as reading an earlier "
                                   f"object failed ({self._failed[1]})")
            data, version = self.inner.read_versioned(key, retry=retry)
            with self._lock:
                self._fetched += 1
        with self._lock:
            self._used[key] = (version, data)
        return data

    def reads_are_local(self) -> bool:
        """After a :meth:`prefetch` that failed on nothing: every listed key asked for is in
        memory, and any other under the prefix is ObjectNotFound."""
        return self._prefetched and self._failed is None and not self._lister.is_alive()

    def prefetch(self, keys: list[str], workers: int = 16) -> int:
        """Fetch, ``workers`` at once, those of ``keys`` that the listing has and the cache
        lacks (then reading any of ``keys`` is a lookup); returns how many were fetched. After a
        read fails (its retries spent), the others are not tried: reading one of them raises."""
        todo = [k for k in keys if k in self.versions and k not in self._used
                and not (self.versions[k] and self._cached.get(k, ("",))[0] == self.versions[k])]

        def one(key: str) -> None:
            if self._failed is not None:
                return
            try:
                self.read_bytes(key)
            except ObjectNotFound:
                self._gone.add(key)  # deleted since the listing
            except StorageError as ex:
                self._failed = self._failed or (key, ex)

        self._prefetched = False
        if len(todo) > 1 and workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
                list(pool.map(one, todo))
        else:
            for key in todo:
                one(key)
        self._prefetched = True
        return len(todo)

    def close(self) -> None:
        """Store the bytes read (if any was fetched or an entry is gone); the inner bucket stays
        open."""
        with self._lock:
            used, fetched, self._fetched = dict(self._used), self._fetched, 0
        if self._path is None or (not fetched and set(used) >= set(self._cached)):
            return
        keep = {k: v for k, v in {**self._cached, **used}.items() if k in self.versions}
        _store(self._path, self._identity, keep)
        self._cached = keep

    # Everything else is the inner bucket's.
    def write_bytes(self, key: str, data: bytes, *, retry: RetryPolicy | None = None) -> None:
        self.inner.write_bytes(key, data, retry=retry)

    def read_versioned(self, key: str, *, retry: RetryPolicy | None = None) -> tuple[bytes, str]:
        return self.inner.read_versioned(key, retry=retry)

    def _write_if(self, key: str, data: bytes, version: str | None, *,
                  retry: RetryPolicy | None) -> str:
        return self.inner.write_if(key, data, version, retry=retry)

    def list_keys(self, prefix: str = "", *, retry: RetryPolicy | None = None) -> list[str]:
        """Under the view's prefix: from its listing (no request)."""
        if prefix.startswith(self.prefix):
            return sorted(k for k in self.versions if k.startswith(prefix))
        return self.inner.list_keys(prefix, retry=retry)

    def list_versions(self, prefix: str = "", *,
                      retry: RetryPolicy | None = None) -> dict[str, str]:
        return self.inner.list_versions(prefix, retry=retry)

    def exists(self, key: str, *, retry: RetryPolicy | None = None) -> bool:
        return self.inner.exists(key, retry=retry)

    def delete(self, key: str, *, retry: RetryPolicy | None = None) -> None:
        self.inner.delete(key, retry=retry)

    def check_access(self, *, retry: RetryPolicy | None = None) -> None:
        self.inner.check_access(retry=retry)


# A cache file: one JSON line {"identity", "entries": [[key, version, length], ...]}, then the
# entries' bytes one after another.

def _load(path: pathlib.Path, identity: str) -> dict[str, tuple[str, bytes]]:
    try:
        raw = path.read_bytes()
        cut = raw.index(b"\n")
        head = json.loads(raw[:cut])
        if head.get("identity") != identity:
            return {}
        out, at = {}, cut + 1
        for key, version, length in head["entries"]:
            out[str(key)] = (str(version), raw[at:at + int(length)])
            at += int(length)
        return out if at == len(raw) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _store(path: pathlib.Path, identity: str, entries: dict[str, tuple[str, bytes]]) -> None:
    head = {"identity": identity, "entries": [[k, v, len(d)] for k, (v, d) in entries.items()]}
    body = json.dumps(head, separators=(",", ":")).encode() + b"\n" + b"".join(
        d for _, d in entries.values())
    if len(body) > MAX_CACHE_BYTES:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, body, tmp_prefix=f".{path.name}.")
    except OSError:
        pass
