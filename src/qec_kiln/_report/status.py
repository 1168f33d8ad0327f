"""Progress of a sweep: the fragments in the bucket against the plan's targets, joined with what
the backend says about each batch's job.

Example:
    >>> report = sweep_progress(bucket, manifest, job_states={})  # doctest: +SKIP
    >>> report.fraction_done  # doctest: +SKIP
    0.42
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from qec_kiln._errors import KilnError
from qec_kiln._planning.makespan import queue_order
from qec_kiln._report.failures import batch_error
from qec_kiln._storage import Bucket, listed
from qec_kiln._sweep.batches import Batch
from qec_kiln._sweep.fragments import CLOUD_READERS, read_fragments
from qec_kiln._sweep.manifest import Manifest, fragment_key
from qec_kiln._sweep.progress import (
    NOT_DONE,
    ShardProgress,
    batch_progress,
    eta_seconds,
    weighted_share,
)

if TYPE_CHECKING:  # not imported at run time: merge starts faster without the backends

    from qec_kiln._backends.jobs import JobState

#: Job states after which a batch's fragment must exist (the job uploaded it before it ended).
FINISHED_STATES = frozenset({"SUCCEEDED"})


@dataclasses.dataclass
class BatchProgress:
    batch: Batch
    shards: list[ShardProgress]
    fragment_found: bool
    job: JobState | None = None
    problem: str | None = None
    error: str | None = None  # the last error line of a failed batch's log

    @property
    def done(self) -> bool:
        return self.problem is None and not self.lost and all(s.done for s in self.shards)

    @property
    def failed(self) -> bool:
        """Its job ended without finishing the batch (failed, or stopped and not done)."""
        return (not self.done and self.job is not None and not self.job.active
                and self.job.state.upper() not in ("CANCELLED", "SUCCEEDED"))

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
        """Its shards' shares done, weighted by their predicted seconds (below 1.0 until every
        shard is done)."""
        if self.done:
            return 1.0
        return min(NOT_DONE, weighted_share((s.fraction, s.shard.predicted_seconds)
                                            for s in self.shards))

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
        if self.done:
            return 0.0
        if self.job is not None and not self.job.active or self.seconds <= 0:
            return None
        return eta_seconds(self.seconds, self.fraction, gained=self.fraction)


@dataclasses.dataclass
class StatusReport:
    """One sweep's progress (``qec_kiln.status`` returns one per sweep)."""

    manifest: Manifest
    batches: list[BatchProgress]
    warnings: list[str]  # about the fragments (damaged, truncated)
    backend: str = ""  # the backend whose job states were joined in
    backend_warnings: list[str] = dataclasses.field(default_factory=list)  # what it could not tell

    @property
    def fraction_done(self) -> float:
        if self.batches and all(b.done for b in self.batches):
            return 1.0
        return min(NOT_DONE, weighted_share((b.fraction, b.batch.predicted_seconds)
                                            for b in self.batches))

    @property
    def unfinished(self) -> list[str]:
        return [b.batch.id for b in self.batches if not b.done]

    def by_urgency(self) -> list[BatchProgress]:
        """The batches as ``qec-kiln status`` lists them: failed, damaged or lost first, then
        those whose job runs or waits, then the other unfinished, then the finished; each group
        in plan order."""
        return sorted(self.batches, key=_urgency)

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
                    "error": b.error,
                }
                for b in self.batches
            ],
            "warnings": self.warnings,
        }


def _urgency(b: BatchProgress) -> int:
    if b.problem or b.lost or b.failed:
        return 0
    if b.job is not None and b.job.active:
        return 1
    return 3 if b.done else 2


def sweep_progress(bucket: Bucket, manifest: Manifest,
                   job_states: dict[str, JobState] | None = None) -> StatusReport:
    """Progress of every batch; a damaged fragment, or a finished batch's lost one, is reported,
    not raised."""
    job_states = job_states or {}
    batches, warnings = [], []
    ids = [b.id for b in manifest.batches]
    # One listing; on a cloud bucket the GETs (of what the local cache lacks) go at once, then
    # sinter parses the fragments here in turn (threads would share one core to parse).
    with listed(bucket, f"{manifest.sweep}/fragments/") as fragments:
        import sinter  # noqa: F401 - numpy and all: on a cloud bucket, while the listing waits

        if fragments.prefetch([fragment_key(manifest.sweep, i) for i in ids], CLOUD_READERS) or \
                fragments is not bucket:
            frags = read_fragments(fragments, manifest, ids, workers=1)
        else:
            frags = read_fragments(fragments, manifest, ids)
    for b, frag in zip(manifest.batches, frags, strict=True):
        problem = None
        if isinstance(frag, KilnError):
            frag, problem = None, str(frag)
            warnings.append(problem)
        if frag is not None and frag.warning:
            warnings.append(frag.warning)
        progress = BatchProgress(b, batch_progress(b, frag, manifest.errors_of), frag is not None,
                                 job=job_states.get(b.id), problem=problem)
        if progress.failed:
            progress.error = batch_error(bucket, manifest.sweep, b.id)
        if progress.lost:
            warnings.append(
                f"{bucket.url_for(fragment_key(manifest.sweep, b.id))}: batch {b.id}'s job "
                f"{progress.job.state.upper() if progress.job else 'ENDED'} but its fragment is "
                "gone (deleted or moved), so its shots are lost; launch the sweep again to rerun "
                "the batch")
        batches.append(progress)
    return StatusReport(manifest, batches, warnings)


@dataclasses.dataclass(frozen=True)
class Relaunch:
    """What a launch of an existing sweep found: batches it left alone, and the predicted
    core-seconds still to do per batch it starts (by the fragments so far)."""

    done: list[str]
    running: list[str]
    remaining: dict[str, float]


def batches_to_start(bucket: Bucket, manifest: Manifest, exists: bool,
                     job_states: dict[str, JobState]) -> tuple[list[str], Relaunch | None]:
    """Batches that are neither finished (by their fragments) nor running (by ``job_states``),
    longest first: all of them for a new sweep; for an existing one (``exists``), also what it
    left alone. A damaged fragment is refused (its batch's rows could not be resumed)."""
    relaunch = None
    if exists:
        progress = sweep_progress(bucket, manifest, job_states)
        bad = [b for b in progress.batches if b.problem]
        if bad:
            raise KilnError(bad[0].problem)
        idle = {b.batch.id for b in progress.batches
                if not b.done and not (b.job and b.job.active)}
        relaunch = Relaunch(
            done=[b.batch.id for b in progress.batches if b.done],
            running=[b.batch.id for b in progress.batches
                     if b.job and b.job.active and not b.done],  # done counts as done
            remaining={b.batch.id: b.batch.predicted_seconds * (1.0 - b.fraction)
                       for b in progress.batches if b.batch.id in idle})
    order = queue_order(manifest.batches)
    return [b for b in order if relaunch is None or b in relaunch.remaining], relaunch
