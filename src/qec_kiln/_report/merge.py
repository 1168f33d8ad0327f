"""``qec-kiln merge``: read every batch's fragment from the bucket and combine them as
``sinter combine`` does into one CSV that ``sinter plot`` reads.

Only the objects named in the manifest (``fragments/<batch>.csv`` for the plan's batches) are
read, each once: a stray copy in ``fragments/`` would otherwise be counted twice. From each
fragment only the rows of the tasks its batch planned are kept (rows of another plan of
the sweep are dropped with a warning). Fragments are parsed once, by sinter
(``sinter.read_stats_from_csv_files``), summed with ``sinter.TaskStats`` addition in sinter
combine's order, and printed with sinter's CSV functions in its default ``--order metadata``: the
output is byte for byte what ``sinter combine`` prints for the kept rows. Cloud fragments are
read 16 at a time.

Several sweeps in one bucket are merged into one CSV (a task in several sweeps is one row with
their shots summed, valid statistics for independent runs), and the report says which sweeps
were combined and each one's share; targets are judged per sweep. ``--sweep NAME`` merges one.

Example:
    >>> report = merge_sweeps("s3://sinter-results", "merged.csv")  # doctest: +SKIP
    >>> report.reached, report.total  # doctest: +SKIP
    (30, 30)
    >>> import sinter
    >>> combined_csv([sinter.TaskStats(strong_id="a", decoder="pymatching", json_metadata={"d": 9},
    ...                                shots=10, errors=1)]).splitlines()[1].split(",")[:2]
    ['        10', '         1']
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import pickle
import sys
import threading
from typing import TYPE_CHECKING

from qec_kiln._errors import KilnError, Log
from qec_kiln._report.output import check_output, write_output
from qec_kiln._storage import Bucket, listed, open_bucket
from qec_kiln._sweep.batches import Batch
from qec_kiln._sweep.fragments import CLOUD_READERS, Fragment, read_fragments
from qec_kiln._sweep.manifest import Manifest, fragment_key, load_manifest, resolve_sweep

if TYPE_CHECKING:  # imported where used: a cloud merge imports it while its listing is in flight
    import sinter


@dataclasses.dataclass
class TaskOutcome:
    sweep: str
    strong_id: str
    decoder: str
    metadata: dict
    shots: int
    errors: int
    target_shots: int
    target_errors: int

    @property
    def reached(self) -> bool:
        return self.shots >= self.target_shots or self.errors >= self.target_errors

    @property
    def name(self) -> str:
        """The circuit's name as its file had it: ``d=5,p=0.001``."""
        return ",".join(f"{k}={v}" for k, v in self.metadata.items())


@dataclasses.dataclass
class CombinedRow:
    """A merged row summed over several sweeps, with each sweep's share."""

    strong_id: str
    decoder: str
    metadata: dict
    shots_per_sweep: dict[str, int]
    errors_per_sweep: dict[str, int]

    @property
    def shots(self) -> int:
        return sum(self.shots_per_sweep.values())


@dataclasses.dataclass
class MergeReport:
    out: str
    rows: int
    tasks: list[TaskOutcome]
    missing_batches: list[str]
    warnings: list[str]
    sweeps: list[str] = dataclasses.field(default_factory=list)
    combined: list[CombinedRow] = dataclasses.field(default_factory=list)
    #: The merged rows (one sinter.TaskStats per task, summed over sweeps), in the CSV's order.
    stats: list[sinter.TaskStats] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.tasks)

    @property
    def reached(self) -> int:
        return sum(t.reached for t in self.tasks)

    @property
    def not_reached(self) -> list[TaskOutcome]:
        return [t for t in self.tasks if not t.reached]

    def of_sweep(self, sweep: str) -> list[TaskOutcome]:
        return [t for t in self.tasks if t.sweep == sweep]

    def to_json(self) -> dict:
        """What ``qec-kiln merge --json`` prints."""
        report = self
        return {
            "out": report.out, "rows": report.rows, "tasks": report.total,
            "reached": report.reached, "missing_batches": report.missing_batches,
            "sweeps": report.sweeps,
            "per_sweep": [{"sweep": s, "tasks": len(report.of_sweep(s)),
                           "reached": sum(t.reached for t in report.of_sweep(s)),
                           "complete": all(t.reached for t in report.of_sweep(s)),
                           "shots": sum(t.shots for t in report.of_sweep(s))} for s in report.sweeps],
            "combined": [dict(r.metadata, decoder=r.decoder, strong_id=r.strong_id, shots=r.shots,
                              shots_per_sweep=r.shots_per_sweep, errors_per_sweep=r.errors_per_sweep)
                         for r in report.combined],
            "not_reached": [dict(t.metadata, decoder=t.decoder, sweep=t.sweep, shots=t.shots,
                                 errors=t.errors, target_shots=t.target_shots,
                                 target_errors=t.target_errors)
                            for t in report.not_reached],
            "warnings": report.warnings,
        }


def merge_sweeps(
    bucket_url: str,
    out: str | None,
    *,
    sweep: str | None = None,
    skip_bad: bool = False,
    log: Log | None = None,
    workers: int | None = None,
) -> MergeReport:
    """Merge the fragments of one sweep (or of every sweep in the bucket) into ``out`` (a path,
    or ``-`` for standard output). Only reads the bucket. ``out=None`` writes nothing: the merged
    rows are in ``report.stats`` (none yet is then no error)."""
    log = log or (lambda s: None)
    if out is not None:
        check_output(out)
    bucket = open_bucket(bucket_url)
    warnings: list[str] = []
    missing: list[str] = []
    outcomes: list[TaskOutcome] = []
    per_sweep: dict[str, dict[str, sinter.TaskStats]] = {}
    manifests = [load_manifest(bucket, name) for name in resolve_sweep(bucket, sweep, warnings.append)]
    for manifest in manifests:
        folded = _fold_sweep(bucket, manifest, skip_bad=skip_bad, workers=workers)
        if folded.error is not None:
            raise folded.error
        mine = per_sweep[manifest.sweep] = folded.sums
        warnings += folded.warnings
        missing += folded.missing
        outcomes += _outcomes(manifest, mine)
        warnings += _counted_elsewhere(manifest, single=sweep is not None)
    total: dict[str, sinter.TaskStats] = {}
    for mine in per_sweep.values():  # one sweep: its own sums, unchanged
        for sid, st in mine.items():
            total[sid] = total[sid] + st if sid in total else st
    if not total and out is not None:
        raise KilnError(
            f"{bucket.url}: no fragment has any rows yet, so there is nothing to merge; "
            "check `qec-kiln status` and try again later"
        )
    stats = sorted(total.values(), key=_metadata_order)
    if out is not None:
        write_output(out, _csv(stats).encode())
    for w in warnings:
        log("warning: " + w)
    return MergeReport(out="" if out is None else str(out), rows=len(total), tasks=outcomes,
                       missing_batches=missing, warnings=warnings,
                       sweeps=[m.sweep for m in manifests],
                       combined=_combined_rows(manifests, per_sweep), stats=stats)


@dataclasses.dataclass
class _Folded:
    """A sweep's fragments summed so far, in sinter combine's order (fragment by fragment, row
    by row), and what was said about them; ``error``: the first damaged fragment (when not
    skipping them), after which nothing more is summed."""

    sums: dict[str, sinter.TaskStats] = dataclasses.field(default_factory=dict)
    missing: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    error: KilnError | None = None


def _fold(folded: _Folded, sweep: str, batches: list[Batch],
          frags: list[Fragment | KilnError | None], skip_bad: bool) -> _Folded:
    """Add these batches' fragments (in order) to ``folded``."""
    mine = folded.sums
    for b, frag in zip(batches, frags, strict=True):
        if folded.error is not None:
            break
        if isinstance(frag, KilnError):
            if not skip_bad:
                folded.error = frag
                break
            folded.warnings.append(f"skipped: {frag}")
            continue
        if frag is None:
            folded.missing.append(f"{sweep}/{b.id}")
            continue
        if frag.warning:
            folded.warnings.append(frag.warning)
        kept, dropped = _planned_rows(frag, b)
        if dropped:
            folded.warnings.append(dropped)
        for sid, st in kept.items():  # sinter combine's order: file by file, row by row
            mine[sid] = mine[sid] + st if sid in mine else st
    return folded


#: A sweep's fragments are parsed in up to this many processes, each with at least this many
#: of them and about this many of their bytes: forking a process that loaded sinter costs CPU
#: that a smaller share's parse does not repay on a busy machine (bench/merge_speed.py measures
#: where a second process starts to pay).
LOCAL_PROCESSES, FRAGMENTS_PER_PROCESS, BYTES_PER_PROCESS = 4, 2, 2**20
#: Fragments read to estimate the size of all (a plan's batches are balanced: theirs are alike).
SIZE_SAMPLE = 5


def _fold_sweep(bucket: Bucket, manifest: Manifest, *, skip_bad: bool,
                workers: int | None) -> _Folded:
    """Read, parse (sinter) and sum the sweep's fragments. One listing of its fragments/ serves
    the stray check and the reads. A cloud bucket's fragments are fetched ``workers`` at once
    (those unchanged since an earlier read come from the local cache), then parsed like a
    directory's: split over forked processes when that can pay (see
    :func:`_fold_in_processes`), else here in turn."""
    sweep, batches = manifest.sweep, list(manifest.batches)
    ids = [b.id for b in batches]
    folded = _Folded()
    with listed(bucket, f"{sweep}/fragments/") as fragments:
        import sinter  # noqa: F401 - numpy and all: on a cloud bucket, while the listing waits

        folded.warnings += _stray_objects(fragments, manifest)
        if fragments is not bucket:
            fragments.prefetch([fragment_key(sweep, i) for i in ids], workers or CLOUD_READERS)
            workers = None  # all in memory now (or failed): parse as a directory's
        # A forked process may read only what needs no network (nor a thread) to read.
        procs = _local_processes(len(ids)) if workers is None and fragments.reads_are_local() else 1
        if procs > 1:  # as many as the fragments' bytes pay for
            procs = _local_processes(len(ids), _estimated_bytes(fragments, sweep, ids))
        if procs > 1:
            return _fold_in_processes(folded, fragments, manifest, procs, skip_bad)
        return _fold(folded, sweep, batches,
                     read_fragments(fragments, manifest, ids,
                                    workers=1 if fragments is not bucket else workers),
                     skip_bad)


def _local_processes(n: int, size: int | None = None) -> int:
    """How many processes should parse ``n`` fragments (of ``size`` bytes in all, when known):
    1 (this process alone) unless no other thread runs here (forking one that runs threads is
    unsafe); then one per core, up to :data:`LOCAL_PROCESSES`, each with at least
    :data:`FRAGMENTS_PER_PROCESS` fragments and :data:`BYTES_PER_PROCESS` bytes."""
    if threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    by_size = n if size is None else size // BYTES_PER_PROCESS
    return max(1, min(LOCAL_PROCESSES, len(os.sched_getaffinity(0)), n // FRAGMENTS_PER_PROCESS,
                      by_size))


def _estimated_bytes(bucket: Bucket, sweep: str, ids: list[str]) -> int:
    """The size of the fragments of batches ``ids``, from :data:`SIZE_SAMPLE` of them spread
    over the plan (one missing or unreadable counts 0 here: its share's read reports it)."""
    sample = ids[::max(1, len(ids) // SIZE_SAMPLE)][:SIZE_SAMPLE]
    total = 0
    for batch_id in sample:
        with contextlib.suppress(KilnError):
            total += len(bucket.read_bytes(fragment_key(sweep, batch_id)))
    return total * len(ids) // max(1, len(sample))


def _fold_in_processes(folded: _Folded, bucket: Bucket, manifest: Manifest, procs: int,
                       skip_bad: bool) -> _Folded:
    """:func:`_fold` of every fragment, parsed in ``procs`` shares at once: the first here, each
    other in a forked process. The sums stay in sinter combine's order and pass through the
    pipes, not the parsed fragments: this process sums its share, hands the running sums to the
    second share's process, which adds its own and hands them back, and so on (a few rows each
    way, so forking costs little more than the fork). A share whose process died or failed is
    parsed here instead."""
    sweep, batches = manifest.sweep, list(manifest.batches)
    size = -(-len(batches) // procs)
    shares = [batches[i:i + size] for i in range(0, len(batches), size)]
    sys.stdout.flush()  # a forked process must not print this one's buffered output again
    sys.stderr.flush()
    children = [_fork_share(bucket, manifest, share, skip_bad) for share in shares[1:]]
    try:
        folded = _fold(folded, sweep, shares[0],
                       read_fragments(bucket, manifest, [b.id for b in shares[0]], workers=1),
                       skip_bad)
        for share, child in zip(shares[1:], children, strict=True):
            got = _ask(child, folded) if child is not None else None
            if got is None:  # no process, or it died: this share here
                got = _fold(folded, sweep, share, read_fragments(
                    bucket, manifest, [b.id for b in share], workers=1), skip_bad)
            folded = got
        return folded
    finally:
        for child in children:
            if child is not None:
                _reap(child)


@dataclasses.dataclass
class _Share:
    """A forked process parsing one share, and this process's ends of its two pipes (-1 once
    closed)."""

    pid: int
    to_child: int
    from_child: int

    def close(self) -> None:
        for fd in (self.to_child, self.from_child):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.to_child = self.from_child = -1


def _fork_share(bucket: Bucket, manifest: Manifest, share: list[Batch],
                skip_bad: bool) -> _Share | None:
    """Fork a process that parses ``share`` at once, then waits for the running sums, adds its
    share and sends them back; None if it cannot fork."""
    try:
        from_parent, to_child = os.pipe()  # (read end, write end)
        from_child, to_parent = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(to_child)
            os.close(from_child)
            frags = read_fragments(bucket, manifest, [b.id for b in share], workers=1)
            with os.fdopen(from_parent, "rb") as inp, os.fdopen(to_parent, "wb") as outp:
                folded = pickle.load(inp)
                pickle.dump(_fold(folded, manifest.sweep, share, frags, skip_bad), outp)
            code = 0
        except BaseException:  # noqa: BLE001, S110 - the parent parses this share itself
            pass
        finally:
            os._exit(code)
    os.close(from_parent)
    os.close(to_parent)
    return _Share(pid, to_child, from_child)


def _ask(child: _Share, folded: _Folded) -> _Folded | None:
    """Send the running sums to a share's process and read back its sums (None if it died)."""
    try:
        with os.fdopen(child.to_child, "wb") as outp:
            child.to_child = -1
            pickle.dump(folded, outp)
        with os.fdopen(child.from_child, "rb") as inp:
            child.from_child = -1
            got = pickle.load(inp)
        return got if isinstance(got, _Folded) else None
    except (OSError, EOFError, pickle.UnpicklingError):
        return None


def _reap(child: _Share) -> None:
    child.close()  # a process still waiting for the sums reads EOF and exits
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child.pid, 0)


def _metadata_order(s: sinter.TaskStats):
    """sinter combine's sort key (its default ``--order metadata``)."""
    import sinter

    return sinter.better_sorted_str_terms(json.dumps(s.json_metadata, separators=(",", ":"),
                                                     sort_keys=True))


def _csv(stats: list[sinter.TaskStats]) -> str:
    import sinter

    return "".join([sinter.CSV_HEADER + "\n"] + [s.to_csv_line() + "\n" for s in stats])


def combined_csv(stats: list[sinter.TaskStats]) -> str:
    """What ``sinter combine`` prints for these totals (its default ``--order metadata``)."""
    return _csv(sorted(stats, key=_metadata_order))


def _planned_rows(frag: Fragment, batch: Batch) -> tuple[dict[str, sinter.TaskStats], str | None]:
    """The fragment's stats of the tasks its batch planned, and a warning about the others."""
    planned = {s.strong_id for s in batch.shards}
    kept = {sid: st for sid, st in frag.stats.items() if sid in planned}
    if len(kept) == len(frag.stats):
        return kept, None
    other = [st for sid, st in frag.stats.items() if sid not in planned]
    return kept, (
        f"{frag.name}: ignored {sum(s.shots for s in other):,} shots of {len(other)} task(s) that "
        f"batch {batch.id} does not plan (copied in from another plan or sweep?); they are not merged"
    )


def _stray_objects(bucket, manifest: Manifest) -> list[str]:
    """Objects in fragments/ that are not a batch's fragment (never merged: they could double count)."""
    expected = {f"{manifest.sweep}/fragments/{b.id}.csv" for b in manifest.batches}
    return [
        f"{bucket.url_for(k)}: not a fragment of this sweep's plan, ignored (a copy would be counted twice)"
        for k in bucket.list_keys(f"{manifest.sweep}/fragments/")
        if k not in expected
    ]


def _task_info(manifest: Manifest) -> dict[str, tuple[str, dict]]:
    """strong_id -> (decoder, metadata) of every planned task (a top-up's tasks that needed no
    shard included)."""
    info = {}
    for b in manifest.batches:
        for s in b.shards:
            if s.strong_id not in info:
                info[s.strong_id] = (s.decoder, manifest.circuit(s.circuit).metadata)
    for t in manifest.tasks:
        sid = t.get("strong_id")
        if sid and sid not in info and sid in manifest.existing:
            info[sid] = (t["decoder"], manifest.circuit(t["circuit"]).metadata)
    return info


def _outcomes(manifest: Manifest, per_task: dict[str, sinter.TaskStats]) -> list[TaskOutcome]:
    """Each task against the sweep's targets, counting what its plan counted as existing (a
    top-up). An import has no targets."""
    if manifest.kind == "import":
        return []
    info = _task_info(manifest)
    targets = manifest.plan.task_targets()
    out = []
    for sid, (decoder, metadata) in info.items():
        st = per_task.get(sid)
        had = manifest.existing.get(sid, {})
        ts, te = ((manifest.max_shots, manifest.max_errors) if manifest.existing
                  else targets.get(sid, (manifest.max_shots, manifest.max_errors)))
        out.append(TaskOutcome(manifest.sweep, sid, decoder, metadata,
                               (st.shots if st else 0) + had.get("shots", 0),
                               (manifest.errors_of(st) if st else 0) + had.get("errors", 0),
                               ts, te))
    return out


def _counted_elsewhere(manifest: Manifest, *, single: bool) -> list[str]:
    """Warnings about rows a top-up counted that this output lacks: --existing-data files
    left outside the bucket, and (merging one sweep) the other sweeps it counted."""
    shots: dict[str, int] = {}
    for had in manifest.existing.values():
        for source, n in had.get("from", {}).items():
            shots[source] = shots.get(source, 0) + n
    files = sorted(s for s in shots if s.startswith("file "))
    sweeps = sorted(s for s in shots if not s.startswith("file "))
    out = []
    if files:
        out.append(f"sweep {manifest.sweep} counted rows of {', '.join(files)} toward its "
                   "targets; they are not in the bucket, so not in this output (`sinter combine` "
                   "them with it, or launch with --merge-existing-data to import them)")
    if single and sweeps:
        out.append(f"sweep {manifest.sweep} counted rows of sweep(s) {', '.join(sweeps)} "
                   f"({sum(shots[s] for s in sweeps):,} shots) toward its targets; they are not "
                   "in this output: merge without --sweep for the bucket's totals")
    return out


def _combined_rows(manifests: list[Manifest],
                   per_sweep: dict[str, dict[str, sinter.TaskStats]]) -> list[CombinedRow]:
    """Rows of tasks planned by more than one of the merged sweeps, with each sweep's share."""
    rows: dict[str, CombinedRow] = {}
    for m in manifests:
        for sid, (decoder, metadata) in _task_info(m).items():
            st = per_sweep[m.sweep].get(sid)
            r = rows.setdefault(sid, CombinedRow(sid, decoder, metadata, {}, {}))
            r.shots_per_sweep[m.sweep] = st.shots if st else 0
            r.errors_per_sweep[m.sweep] = st.errors if st else 0
    return [r for r in rows.values() if len(r.shots_per_sweep) > 1]
