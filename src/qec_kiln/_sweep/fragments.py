"""Reading and checking fragments: a batch's sinter resume CSV as stored in the bucket.

Parsing is sinter's own (``sinter.CSV_HEADER`` and ``ExistingData.from_file``); this module only
cuts a fragment back to its last complete line and turns sinter's parse errors into one clear
line naming the fragment.

Example:
    >>> import sinter
    >>> HEADER_LINE == (sinter.CSV_HEADER + "\\n").encode()
    True
    >>> complete_lines((sinter.CSV_HEADER + "\\n12,3").encode())
    b'     shots,    errors,  discards, seconds,decoder,strong_id,json_metadata,custom_counts\\n'
"""

from __future__ import annotations

import dataclasses
import functools
import io
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from qec_kiln._errors import KilnError, ObjectNotFound, StorageError
from qec_kiln._storage import Bucket, LocalBucket
from qec_kiln._sweep.manifest import Manifest, fragment_key

if TYPE_CHECKING:
    import sinter

#: sinter's CSV header line (``sinter.CSV_HEADER``), spelled here so that run-batch and a fresh
#: batch need not import sinter (numpy) at all; a doctest checks it against sinter's.
HEADER_LINE = (b"     shots,    errors,  discards, seconds,decoder,strong_id,json_metadata,"
               b"custom_counts\n")
#: Fragments read at once from a cloud bucket: N fragments take about N/16 round trips.
CLOUD_READERS = 16


def complete_lines(data: bytes) -> bytes:
    """``data`` cut back to (and including) its last newline."""
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""


@dataclasses.dataclass
class Fragment:
    """A parsed fragment: the clean bytes (``b""`` from :func:`read_fragments` unless asked to
    keep them), sinter's stats per strong_id, and what was dropped."""

    name: str
    clean: bytes
    stats: dict[str, sinter.TaskStats]
    dropped_bytes: int = 0

    @property
    def warning(self) -> str | None:
        if self.dropped_bytes:
            return f"{self.name}: dropped a truncated last line ({self.dropped_bytes} bytes)"
        return None


def parse_fragment(data: bytes, name: str) -> Fragment:
    """Check and parse a fragment; raise KilnError naming it when it is not a sinter CSV.

    An empty object is an empty fragment. A truncated last line is dropped (and reported in
    ``warning``); anything else that sinter cannot read is an error.
    """
    clean = complete_lines(data)
    dropped = len(data) - len(clean)
    if not clean.strip():
        if data.strip() and not HEADER_LINE.startswith(data.strip()):
            raise KilnError(
                f"{name}: not a sinter CSV (no header line); move it out of fragments/ or delete it"
            )
        return Fragment(name=name, clean=b"", stats={}, dropped_bytes=0)
    first = clean.split(b"\n", 1)[0] + b"\n"
    if first.replace(b" ", b"") != HEADER_LINE.replace(b" ", b""):
        shown = first[:60].decode("utf-8", "replace").strip()
        raise KilnError(
            f"{name}: not a sinter resume CSV (header {shown!r} is not sinter's "
            f"{HEADER_LINE.decode().strip()[:40]!r}...); move it out of fragments/ or delete it"
        )
    import sinter  # here: an empty fragment (a fresh batch) never needs it

    try:
        text = clean.decode("utf-8")
        rows = sinter.read_stats_from_csv_files(io.StringIO(text))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as ex:
        line = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise KilnError(
            f"{name}: a row is not valid sinter CSV ({line[:120]}); the fragment is damaged: "
            "move it out of fragments/ to rerun that batch"
        ) from ex
    return Fragment(name=name, clean=clean, stats={r.strong_id: r for r in rows}, dropped_bytes=dropped)


def read_fragment(bucket: Bucket, manifest: Manifest, batch_id: str) -> Fragment | None:
    """The batch's fragment, parsed; None when it does not exist yet. Raises KilnError if damaged."""
    key = fragment_key(manifest.sweep, batch_id)
    try:
        data = bucket.read_bytes(key)
    except ObjectNotFound:
        return None
    return parse_fragment(data, f"{bucket.url_for(key)}")


def read_fragments(bucket: Bucket, manifest: Manifest, batch_ids: Sequence[str], *,
                   workers: int | None = None,
                   keep_bytes: bool = False) -> list[Fragment | KilnError | None]:
    """:func:`read_fragment` of each batch, in order; a fragment that cannot be read or parsed
    gives its KilnError in its place. Only the parsed stats are kept (``clean`` is ``b""``)
    unless ``keep_bytes``: merge and status need no more, and a forked share sends less back.

    ``workers`` threads read at once (default: :data:`CLOUD_READERS` for a cloud bucket). A
    directory's fragments are read and parsed by this process alone, or, when there are many,
    the machine has more than one core and this process runs no other thread, split over up to
    :data:`LOCAL_PROCESSES` forked processes (parsing is what takes the time there, and threads
    would share one core).
    """
    one = functools.partial(_read_one, bucket, manifest, [], keep_bytes=keep_bytes)
    if workers is None and isinstance(bucket, LocalBucket):
        procs = _local_processes(len(batch_ids))
        if procs > 1:
            return _in_processes(one, list(batch_ids), procs)
        workers = 1
    workers = CLOUD_READERS if workers is None else workers
    if workers <= 1 or len(batch_ids) <= 1:
        return [one(b) for b in batch_ids]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(workers, len(batch_ids))) as pool:
        return list(pool.map(one, batch_ids))


#: At most this many processes parse a directory's fragments, each at least this many.
LOCAL_PROCESSES, FRAGMENTS_PER_PROCESS = 4, 250


def _read_one(bucket: Bucket, manifest: Manifest, failed: list[StorageError],
              batch_id: str, *, keep_bytes: bool = True) -> Fragment | KilnError | None:
    """One fragment, or its error; once the bucket has failed (after its retries), the fragments
    not yet read are not tried (an outage would otherwise cost every one its retries)."""
    if failed:
        return StorageError(f"{bucket.url_for(fragment_key(manifest.sweep, batch_id))}: not read, "
                            f"as reading an earlier fragment failed ({failed[0]})")
    try:
        fragment = read_fragment(bucket, manifest, batch_id)
    except StorageError as ex:
        failed.append(ex)
        return ex
    except KilnError as ex:
        return ex
    if fragment is not None and not keep_bytes:
        fragment.clean = b""
    return fragment


def _local_processes(n: int) -> int:
    """How many processes should parse ``n`` local fragments: 1 (this one alone) unless there
    are many and no other thread runs here (forking one that runs threads is unsafe); then one
    per core, up to :data:`LOCAL_PROCESSES`, each with at least :data:`FRAGMENTS_PER_PROCESS`.

    A forked share costs a fork and sending its parsed rows back, far less than parsing them,
    so many fragments are parsed sooner in shares (bench/merge_speed.py measures it). On a busy
    machine the shares simply take turns, for the same CPU time.
    """
    if threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(LOCAL_PROCESSES, len(os.sched_getaffinity(0)), n // FRAGMENTS_PER_PROCESS))


_JOB: Callable | None = None  # what a forked process runs (set before the fork)


def _run_chunk(ids: list[str]) -> list:
    assert _JOB is not None
    return [_JOB(b) for b in ids]


def _in_processes(one: Callable, ids: list[str], procs: int) -> list:
    """``[one(b) for b in ids]``, the first share here and the others in forked processes. A
    share whose process dies (killed, out of memory) is parsed here instead."""
    global _JOB
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    size = -(-len(ids) // procs)
    chunks = [ids[i:i + size] for i in range(0, len(ids), size)]
    if len(chunks) < 2:
        return [one(b) for b in ids]
    _JOB = one
    sys.stdout.flush()  # a forked process must not print this one's buffered output again
    sys.stderr.flush()
    try:
        with ProcessPoolExecutor(len(chunks) - 1,
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_run_chunk, chunk) for chunk in chunks[1:]]
            results = _run_chunk(chunks[0])
            for chunk, future in zip(chunks[1:], futures, strict=True):
                try:
                    results += future.result()
                except BrokenProcessPool:
                    results += _run_chunk(chunk)
            return results
    finally:
        _JOB = None
