"""Uploading a batch's rows: complete lines of the local resume file, as a compare-and-swap.

With a :class:`RowSplitter` (several batches run by one sinter, one resume file), a
batch's fragment is the header and the rows of its own strong_ids: the rows of an append-only
file, filtered, are an append-only sequence too, so each fragment still only grows by extension
of one history.
"""

from __future__ import annotations

import csv
import pathlib
import threading
from collections.abc import Callable

from qec_kiln._errors import Log, PreconditionFailed, StorageError
from qec_kiln._storage import Bucket, RetryPolicy
from qec_kiln._sweep.fragments import complete_lines


def strong_id_of(line: bytes) -> str | None:
    r"""The strong_id field of one row of sinter's CSV (None if it has none).

    >>> strong_id_of(b'2,0,0,0.1,"y,z",bb,{},\n'), strong_id_of(b"junk\n")
    ('bb', None)
    """
    fields = line.split(b",", 6)
    if b'"' in b",".join(fields[:5]):  # a quoted field (a decoder named with a comma)
        fields = [f.encode() for f in next(csv.reader([line.decode("utf-8", "replace")]))]
    return fields[5].strip().decode("ascii", "replace") if len(fields) > 5 else None


def rows_of(data: bytes, only: frozenset[str]) -> bytes:
    r"""The first line (sinter's header) and the rows of ``data`` whose strong_id is in ``only``.

    >>> rows_of(b"h\n1,0,0,0.1,x,aa,{},\n2,0,0,0.1,\"y,z\",bb,{},\n", frozenset({"bb"}))
    b'h\n2,0,0,0.1,"y,z",bb,{},\n'
    """
    lines = data.splitlines(keepends=True)
    return b"".join(lines[:1] + [line for line in lines[1:] if strong_id_of(line) in only])


class RowSplitter:
    r"""The complete lines of one resume file shared by several batches, split once per change
    into each batch's rows (``rows_of`` of its strong_ids), however many batches ask: a queue
    of B batches reads and splits the file once per sync, not B times (thread-safe).

    >>> import tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "r.csv"
    >>> _ = f.write_bytes(b"h\n1,0,0,0.1,x,aa,{},\n2,0,0,0.1,x,bb,{},\n3,0,0,0.1,x,a")
    >>> split = RowSplitter(f, [frozenset({"aa"}), frozenset({"bb"})])
    >>> split.rows(0), split.rows(1)
    (b'h\n1,0,0,0.1,x,aa,{},\n', b'h\n2,0,0,0.1,x,bb,{},\n')
    """

    def __init__(self, path: pathlib.Path, owners: list[frozenset[str]]):
        self.path = path
        self.owner = {sid: i for i, ids in enumerate(owners) for sid in ids}
        self.parts: list[bytes] = [b""] * len(owners)
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def rows(self, index: int) -> bytes:
        """Batch ``index``'s rows now (FileNotFoundError before sinter wrote the file)."""
        with self._lock:
            st = self.path.stat()
            if (st.st_size, st.st_mtime_ns) != self._stamp:
                data = complete_lines(self.path.read_bytes())
                lines = data.splitlines(keepends=True)
                parts: list[list[bytes]] = [lines[:1] for _ in self.parts]
                for line in lines[1:]:
                    i = self.owner.get(strong_id_of(line) or "")
                    if i is not None:
                        parts[i].append(line)
                self.parts = [b"".join(p) for p in parts]
                self._stamp = (st.st_size, st.st_mtime_ns)
            return self.parts[index]


class FragmentSync:
    """Uploads complete lines of a local resume file whenever it has grown (thread-safe).

    Every upload is a compare-and-swap on the version of the object that this runner last wrote
    (or restored from; a create-if-absent when there was none), so the object only ever grows by
    extension of one history. If the swap fails, another run-batch of the same batch wrote the
    object (a second launch, a duplicated job, a runner that took over an expired lease): this
    one records a ``conflict``, calls ``on_conflict`` and never uploads again. ``split``: upload
    just this batch's rows of a resume file shared with others (see :class:`RowSplitter`).
    """

    def __init__(self, bucket: Bucket, key: str, path: pathlib.Path, uploaded: int,
                 log: Log, on_conflict: Callable[[], None] | None = None,
                 version: str | None = None, split: tuple[RowSplitter, int] | None = None):
        self.split = split  # a resume file shared by batches: its splitter, this batch's index
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
                if self.split is not None:
                    data = self.split[0].rows(self.split[1])
                else:
                    data = complete_lines(self.path.read_bytes())
            except FileNotFoundError:
                return True
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
