"""What the page, the plot and the report show, read from the bucket in one go.

This is the only module of ``_view`` that imports qec-kiln's private modules (the others use
``qec_kiln.KilnError`` and this one): the public API (:func:`qec_kiln.status`,
:func:`qec_kiln.merge` with ``out=None``), the bucket (for the tail of a failed batch's log) and
``atomic_write`` (for ``plot --out``). It only reads the bucket.

Example:
    >>> snap = read_snapshot("kiln-results")  # doctest: +SKIP
    >>> [(s.name, round(s.fraction_done, 2), len(s.stats)) for s in snap.sweeps]  # doctest: +SKIP
    [('demo', 0.42, 30)]
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from qec_kiln._atomic import atomic_write
from qec_kiln._command import _main_merge, _main_status
from qec_kiln._errors import KilnError, ObjectNotFound, StorageError
from qec_kiln._report.merge import TaskOutcome, combined_csv
from qec_kiln._storage import open_bucket

if TYPE_CHECKING:
    import sinter

#: Job states a batch does not recover from by itself (besides a backend's FAILED_*).
_FAILED = ("FAILED", "LOST", "BAD FRAGMENT", "ERROR")
#: Failed batches whose log tail is read from the bucket per refresh (the rest are counted).
MAX_FAILURE_LOGS = 20


class BucketUnreachable(KilnError):
    """The bucket could not be read this time (the page keeps its last data and says so)."""


@dataclasses.dataclass
class SweepView:
    """One sweep: ``status`` (exactly ``qec-kiln status --json``'s object), the merged rows and
    the tasks, the failures with their logs' last lines, and the plan's predicted core-seconds.
    ``circuits`` maps each planned task's strong_id to its circuit's name in the manifest (the
    file name it was planned from); ``kind`` is the manifest's (``import``: rows, no targets)."""

    name: str
    backend: str
    status: dict
    stats: list[sinter.TaskStats]
    tasks: list[TaskOutcome]
    failures: list[dict]
    warnings: list[str]
    predicted_core_seconds: float
    circuits: dict[str, str] = dataclasses.field(default_factory=dict)
    kind: str = "sweep"

    @property
    def fraction_done(self) -> float:
        return float(self.status["fraction_done"])

    @property
    def shots(self) -> int:
        return sum(b["shots"] for b in self.status["batches"])

    @property
    def errors(self) -> int:
        return sum(b["errors"] for b in self.status["batches"])

    @property
    def used_core_seconds(self) -> float:
        """CPU time sinter reports for the merged rows (summed over its worker processes)."""
        return sum(s.seconds for s in self.stats)

    @property
    def reached(self) -> frozenset[str]:
        """strong_ids of the tasks that reached max_shots or max_errors."""
        return frozenset(t.strong_id for t in self.tasks if t.reached)

    def states(self) -> dict[str, int]:
        """Batches per state, e.g. ``{"RUNNING": 2, "DONE": 5}``."""
        out: dict[str, int] = {}
        for b in self.status["batches"]:
            out[b["state"]] = out.get(b["state"], 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def batch_eta_seconds(self) -> float | None:
        """The slowest unfinished batch's ETA, as ``status`` gives it (None while unknown)."""
        etas = [b["eta_seconds"] for b in self.status["batches"] if b["state"] != "DONE"]
        if not etas:
            return 0.0
        return None if any(e is None for e in etas) else max(etas)

    def metadata_keys(self) -> set[str]:
        """Keys every task's metadata has (``p`` and ``d`` pick the plot's default axes)."""
        keys = [set(t.metadata) for t in self.tasks]
        return set.intersection(*keys) if keys else set()


@dataclasses.dataclass
class Snapshot:
    """The bucket at one moment: its sweeps, or why there are none (``problem``)."""

    bucket: str
    taken: float
    sweeps: list[SweepView]
    problem: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    def sweep(self, name: str) -> SweepView | None:
        return next((s for s in self.sweeps if s.name == name), None)


def _is_failure(state: str) -> bool:
    return any(state.upper().startswith(f) for f in _FAILED)


def last_log_line(bucket: Any, sweep: str, batch: str) -> str:
    """The last non-empty line of ``<sweep>/logs/<batch>.log`` ('' when there is none)."""
    try:
        data = bucket.read_bytes(f"{sweep}/logs/{batch}.log")
    except ObjectNotFound:
        return ""
    except StorageError as ex:
        return f"(log unreadable: {ex})"
    lines = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1].strip()[:500] if lines else ""


def _failures(bucket: Any, sweep: str, status: dict) -> list[dict]:
    out: list[dict] = []
    for b in status["batches"]:
        if not _is_failure(b["state"]) and not b["problem"]:
            continue
        log = last_log_line(bucket, sweep, b["id"]) if len(out) < MAX_FAILURE_LOGS else ""
        out.append({"id": b["id"], "state": b["state"], "detail": b["problem"] or b["job_detail"],
                    "last_log_line": log})
    return out


def read_snapshot(bucket: str, *, sweep: str | None = None) -> Snapshot:
    """Read the bucket once: every sweep (or ``sweep``), its status and its merged rows.

    A bucket without sweeps, or a named sweep that is not there, is a Snapshot with ``problem``
    set (a sweep may appear later); a bucket that cannot be read raises
    :class:`BucketUnreachable`. Damaged fragments are skipped and named in the warnings.
    """
    taken = time.time()
    warnings: list[str] = []  # about the bucket (folders without a manifest, ...)
    try:
        store = open_bucket(bucket)
        try:
            reports = _main_status.status(bucket, sweep=sweep, log=warnings.append)
        except StorageError:
            raise
        except KilnError as ex:
            return Snapshot(store.url, taken, [], problem=str(ex))
        views = [_sweep_view(bucket, store, report) for report in reports]
    except StorageError as ex:
        raise BucketUnreachable(str(ex)) from ex
    backend = {w for r in reports for w in r.backend_warnings}
    return Snapshot(store.url, taken, views, warnings=_unique(
        [_plain(w) for w in warnings if _plain(w) not in backend]))


def _sweep_view(bucket: str, store: Any, report: Any) -> SweepView:
    name = report.manifest.sweep
    merge_warnings: list[str] = []
    merged = _main_merge.merge(bucket, None, sweep=name, skip_bad=True, log=merge_warnings.append)
    status = report.to_json()
    manifest = report.manifest
    circuits = {s.strong_id: s.circuit for b in manifest.batches for s in b.shards}
    for t in manifest.tasks:  # a top-up's tasks that needed no shard
        if t.get("strong_id") and t.get("circuit"):
            circuits.setdefault(t["strong_id"], t["circuit"])
    return SweepView(
        name=name, backend=report.backend, status=status, stats=list(merged.stats),
        tasks=list(merged.tasks),
        failures=_failures(store, name, status),
        warnings=_unique(status["warnings"] + list(report.backend_warnings)
                         + [_plain(w) for w in merge_warnings]),
        predicted_core_seconds=manifest.plan.total_predicted_seconds,
        circuits=circuits, kind=manifest.kind)


def _plain(line: str) -> str:
    """A log line without its ``warning: `` (and merge's ``skipped: ``) prefix."""
    return line.removeprefix("warning: ").removeprefix("skipped: ")


@dataclasses.dataclass
class MergedRows:
    """The merged rows of one sweep, or of every sweep combined (what ``merge`` writes)."""

    stats: list[sinter.TaskStats]
    reached: frozenset[str]  # strong_ids at their targets in every sweep that planned them
    tasks: int
    metadata_keys: set[str]
    decoders: list[str]
    warnings: list[str]


def merged_rows(bucket: str, *, sweep: str | None = None) -> MergedRows:
    """``qec-kiln merge`` in memory (damaged fragments skipped, with a warning); raises
    KilnError when there is no sweep, :class:`BucketUnreachable` when the bucket cannot be read."""
    warnings: list[str] = []
    try:
        report = _main_merge.merge(bucket, None, sweep=sweep, skip_bad=True, log=warnings.append)
    except StorageError as ex:
        raise BucketUnreachable(str(ex)) from ex
    behind = {t.strong_id for t in report.tasks if not t.reached}
    keys = [set(t.metadata) for t in report.tasks]
    return MergedRows(
        stats=list(report.stats),
        reached=frozenset(t.strong_id for t in report.tasks if t.strong_id not in behind),
        tasks=len({t.strong_id for t in report.tasks}),
        metadata_keys=set.intersection(*keys) if keys else set(),
        decoders=sorted({t.decoder for t in report.tasks}),
        warnings=_unique([_plain(w) for w in warnings]))


def merged_csv(stats: list[sinter.TaskStats]) -> bytes:
    """The CSV ``qec-kiln merge`` writes for these merged rows: merge's own function (sinter's
    header and ``to_csv_line``, in ``sinter combine``'s default order), not a copy of it."""
    return combined_csv(stats).encode()


def write_file(path: str, data: bytes) -> None:
    """Replace ``path`` whole (a reader never sees half a plot)."""
    atomic_write(path, data)


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


__all__ = ["MAX_FAILURE_LOGS", "BucketUnreachable", "MergedRows", "Snapshot", "SweepView",
           "last_log_line", "merged_csv", "merged_rows", "read_snapshot", "write_file"]
