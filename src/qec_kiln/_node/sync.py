"""Uploading a batch's rows: complete lines of the local resume file, as a compare-and-swap.

With ``only`` (several batches run by one sinter, one resume file), a batch's fragment is the
header and the rows of its own strong_ids: the rows of an append-only file, filtered, are an
append-only sequence too, so each fragment still only grows by extension of one history.
"""

from __future__ import annotations

import csv
import pathlib
import threading
from collections.abc import Callable

from qec_kiln._errors import PreconditionFailed, StorageError
from qec_kiln._storage import Bucket, RetryPolicy
from qec_kiln._sweep.fragments import complete_lines


def rows_of(data: bytes, only: frozenset[str]) -> bytes:
    r"""The first line (sinter's header) and the rows of ``data`` whose strong_id is in ``only``.

    >>> rows_of(b"h\n1,0,0,0.1,x,aa,{},\n2,0,0,0.1,\"y,z\",bb,{},\n", frozenset({"bb"}))
    b'h\n2,0,0,0.1,"y,z",bb,{},\n'
    """
    lines = data.splitlines(keepends=True)
    kept = lines[:1]
    for line in lines[1:]:
        fields = line.split(b",", 6)
        if b'"' in b",".join(fields[:5]):  # a quoted field (a decoder named with a comma)
            fields = [f.encode() for f in next(csv.reader([line.decode("utf-8", "replace")]))]
        if len(fields) > 5 and fields[5].strip().decode("ascii", "replace") in only:
            kept.append(line)
    return b"".join(kept)


class FragmentSync:
    """Uploads complete lines of a local resume file whenever it has grown (thread-safe).

    Every upload is a compare-and-swap on the version of the object that this runner last wrote
    (or restored from; a create-if-absent when there was none), so the object only ever grows by
    extension of one history. If the swap fails, another run-batch of the same batch wrote the
    object (a second launch, a duplicated job, a runner that took over an expired lease): this
    one records a ``conflict``, calls ``on_conflict`` and never uploads again. ``only``: upload
    just the rows of these strong_ids (see :func:`rows_of`).
    """

    def __init__(self, bucket: Bucket, key: str, path: pathlib.Path, uploaded: int,
                 log: Callable[[str], None], on_conflict: Callable[[], None] | None = None,
                 version: str | None = None, only: frozenset[str] | None = None):
        self.only = only  # strong_ids of this batch, where the resume file holds others' too
        self.bucket = bucket
        self.key = key
        self.path = path
        self.uploaded = uploaded
        self.version = version
        self.log = log
        self.on_conflict = on_conflict
        self.conflict: str | None = None
        self.uploads = 0
        self._lock = threading.Lock()

    def stand_down(self, why: str) -> None:
        """Stop uploading for good (another runner owns the batch now)."""
        if self.conflict:
            return
        self.conflict = why
        self.log("error: " + why)
        if self.on_conflict is not None:
            self.on_conflict()

    def sync(self, retry: RetryPolicy | None = None) -> bool:
        """Upload if the file has more complete lines than the bucket; True when the bucket is current."""
        with self._lock:
            if self.conflict:
                return False
            try:
                data = complete_lines(self.path.read_bytes())
            except FileNotFoundError:
                return True
            if self.only is not None:
                data = rows_of(data, self.only)
            if len(data) <= self.uploaded:
                return True
            try:
                self.version = self.bucket.write_if(self.key, data, self.version, retry=retry)
            except PreconditionFailed as ex:
                self.stand_down(
                    f"{ex}: another run-batch of the same batch is running (a second launch or a "
                    "duplicated job); this one stops without uploading"
                )
                return False
            except StorageError as ex:
                self.log(f"warning: upload of {self.key} failed, will retry: {ex}")
                return False
            self.uploaded = len(data)
            self.uploads += 1
            return True
