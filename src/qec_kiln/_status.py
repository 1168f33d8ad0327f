"""Progress of a sweep: the fragments in the bucket against the plan's targets, joined with what
the backend says about each batch's job.

Example:
    >>> report = sweep_progress(bucket, manifest, job_states={})  # doctest: +SKIP
    >>> report.fraction_done  # doctest: +SKIP
    0.42
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import sinter

from qec_kiln._errors import KilnError, ObjectNotFound, StorageError
from qec_kiln._fragments import Fragment, parse_fragment
from qec_kiln._manifest import Manifest, fragment_key
from qec_kiln._plan import Batch, Shard
from qec_kiln._storage import Bucket, LocalBucket

if TYPE_CHECKING:  # not imported at run time: merge starts faster without the backends
    from qec_kiln._backends import JobState

#: Fragments read at once from a cloud bucket: N fragments take about N/16 round trips.
CLOUD_READERS = 16
#: Job states after which a batch's fragment must exist (the job uploaded it before it ended).
FINISHED_STATES = frozenset({"SUCCEEDED"})


@dataclasses.dataclass
class ShardProgress:
    shard: Shard
    shots: int
    errors: int
    seconds: float

    @property
    def done(self) -> bool:
        return self.shots >= self.shard.max_shots or self.errors >= self.shard.max_errors

    @property
    def fraction(self) -> float:
        """Share of the shard's predicted work done (by whichever target it is closest to)."""
        if self.done:
            return 1.0
        by_shots = self.shots / max(1.0, self.shard.predicted_shots)
        by_errors = self.errors / max(1, self.shard.max_errors)
        return min(1.0, max(by_shots, by_errors))


@dataclasses.dataclass
class BatchProgress:
    batch: Batch
    shards: list[ShardProgress]
    fragment_found: bool
    job: JobState | None = None
    problem: str | None = None

    @property
    def done(self) -> bool:
        return self.problem is None and not self.lost and all(s.done for s in self.shards)

    @property
    def lost(self) -> bool:
        """The batch's job finished (so it uploaded its fragment) but the fragment is gone."""
        return (self.problem is None and not self.fragment_found and self.job is not None
                and self.job.state.upper() in FINISHED_STATES)

    @property
    def shots(self) -> int:
        return sum(s.shots for s in self.shards)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.shards)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.shards)

    @property
    def fraction(self) -> float:
        total = self.batch.predicted_seconds
        if total <= 0:
            return 1.0 if self.done else 0.0
        return sum(s.fraction * s.shard.predicted_seconds for s in self.shards) / total

    @property
    def state(self) -> str:
        if self.problem:
            return "BAD FRAGMENT"
        if self.lost:
            return "LOST"
        if self.job is not None and self.job.active:
            return self.job.state.upper()
        if self.done:
            return "DONE"
        if self.job is not None:
            return self.job.state.upper()
        return "STARTED" if self.fragment_found else "NOT STARTED"

    @property
    def eta_seconds(self) -> float | None:
        """Remaining wall seconds if the batch keeps its pace (None before any data, or when its
        job has ended without finishing)."""
        f = self.fraction
        if self.done:
            return 0.0
        if self.job is not None and not self.job.active:
            return None
        if f <= 0 or self.seconds <= 0:
            return None
        return self.seconds * (1 - f) / f


@dataclasses.dataclass
class SweepProgress:
    """One sweep's progress (``qec_kiln.status`` returns one per sweep, as ``StatusReport``)."""

    manifest: Manifest
    batches: list[BatchProgress]
    warnings: list[str]  # about the fragments (damaged, truncated)
    backend: str = ""  # the backend whose job states were joined in
    backend_warnings: list[str] = dataclasses.field(default_factory=list)  # what it could not tell

    @property
    def fraction_done(self) -> float:
        total = sum(b.batch.predicted_seconds for b in self.batches)
        if total <= 0:
            return 0.0
        return sum(b.fraction * b.batch.predicted_seconds for b in self.batches) / total

    @property
    def unfinished(self) -> list[str]:
        return [b.batch.id for b in self.batches if not b.done]

    def to_json(self) -> dict:
        return {
            "sweep": self.manifest.sweep,
            "fraction_done": round(self.fraction_done, 6),
            "batches": [
                {
                    "id": b.batch.id,
                    "state": b.state,
                    "job_id": b.job.job_id if b.job else None,
                    "recoveries": b.job.recoveries if b.job else None,
                    "job_detail": b.job.detail if b.job else "",
                    "shots": b.shots,
                    "errors": b.errors,
                    "target_shots": sum(s.max_shots for s in b.batch.shards),
                    "target_errors": sum(s.max_errors for s in b.batch.shards),
                    "fraction": round(b.fraction, 6),
                    "eta_seconds": b.eta_seconds,
                    "problem": b.problem,
                }
                for b in self.batches
            ],
            "warnings": self.warnings,
        }


def read_fragment(bucket: Bucket, manifest: Manifest, batch_id: str) -> Fragment | None:
    """The batch's fragment, parsed; None when it does not exist yet. Raises KilnError if damaged."""
    key = fragment_key(manifest.sweep, batch_id)
    try:
        data = bucket.read_bytes(key)
    except ObjectNotFound:
        return None
    return parse_fragment(data, f"{bucket.url_for(key)}")


def read_fragments(bucket: Bucket, manifest: Manifest, batch_ids: Sequence[str], *,
                   workers: int | None = None) -> list[Fragment | KilnError | None]:
    """:func:`read_fragment` of each batch, in order; a fragment that cannot be read or parsed
    gives its KilnError in its place.

    ``workers`` threads read at once (default: :data:`CLOUD_READERS` for a cloud bucket). A
    directory's fragments are read and parsed by this process alone, or, when there are many,
    cores stand idle and this process runs no other thread, split over up to
    :data:`LOCAL_PROCESSES` forked processes (parsing is what takes the time there, and threads
    would share one core).
    """
    one = functools.partial(_read_one, bucket, manifest, [])
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
              batch_id: str) -> Fragment | KilnError | None:
    """One fragment, or its error; once the bucket has failed (after its retries), the fragments
    not yet read are not tried (an outage would otherwise cost every one its retries)."""
    if failed:
        return StorageError(f"{bucket.url_for(fragment_key(manifest.sweep, batch_id))}: not read, "
                            f"as reading an earlier fragment failed ({failed[0]})")
    try:
        return read_fragment(bucket, manifest, batch_id)
    except StorageError as ex:
        failed.append(ex)
        return ex
    except KilnError as ex:
        return ex


def _local_processes(n: int) -> int:
    """How many processes should parse ``n`` local fragments: 1 (this one alone) unless there
    are many, cores that stand idle, and no other thread here (forking one that runs threads is
    unsafe)."""
    if threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    idle = len(os.sched_getaffinity(0)) - os.getloadavg()[0]
    return max(1, min(LOCAL_PROCESSES, 1 + int(idle), n // FRAGMENTS_PER_PROCESS))


_JOB: Callable | None = None  # what a forked process runs (set before the fork)


def _run_chunk(ids: list[str]) -> list:
    assert _JOB is not None
    return [_JOB(b) for b in ids]


def _in_processes(one: Callable, ids: list[str], procs: int) -> list:
    """``[one(b) for b in ids]``, the first share here and the others in forked processes."""
    global _JOB
    size = -(-len(ids) // procs)
    chunks = [ids[i:i + size] for i in range(0, len(ids), size)]
    if len(chunks) < 2:
        return [one(b) for b in ids]
    _JOB = one
    sys.stdout.flush()  # a forked process must not print this one's buffered output again
    sys.stderr.flush()
    try:
        with multiprocessing.get_context("fork").Pool(len(chunks) - 1) as pool:
            others = pool.map_async(_run_chunk, chunks[1:])
            first = _run_chunk(chunks[0])
            return first + [x for chunk in others.get() for x in chunk]
    finally:
        _JOB = None


def batch_progress(batch: Batch, fragment: Fragment | None) -> list[ShardProgress]:
    stats: dict[str, sinter.TaskStats] = fragment.stats if fragment else {}
    out = []
    for s in batch.shards:
        st = stats.get(s.strong_id)
        out.append(ShardProgress(s, st.shots if st else 0, st.errors if st else 0,
                                 st.seconds if st else 0.0))
    return out


def sweep_progress(bucket: Bucket, manifest: Manifest,
                   job_states: dict[str, JobState] | None = None) -> SweepProgress:
    """Progress of every batch; a damaged fragment, or a finished batch's lost one, is reported,
    not raised."""
    job_states = job_states or {}
    batches, warnings = [], []
    ids = [b.id for b in manifest.batches]
    for b, frag in zip(manifest.batches, read_fragments(bucket, manifest, ids), strict=True):
        problem = None
        if isinstance(frag, KilnError):
            frag, problem = None, str(frag)
            warnings.append(problem)
        if frag is not None and frag.warning:
            warnings.append(frag.warning)
        progress = BatchProgress(b, batch_progress(b, frag), frag is not None,
                                 job=job_states.get(b.id), problem=problem)
        if progress.lost:
            warnings.append(
                f"{bucket.url_for(fragment_key(manifest.sweep, b.id))}: batch {b.id}'s job "
                f"{progress.job.state.upper()} but its fragment is gone (deleted or moved), so its "
                "shots are lost; launch the sweep again to rerun the batch")
        batches.append(progress)
    return SweepProgress(manifest, batches, warnings)


#: The public name of a sweep's progress report (``qec_kiln.StatusReport``).
StatusReport = SweepProgress
