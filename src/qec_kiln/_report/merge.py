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
    >>> combined_csv([sinter.TaskStats(strong_id="a", decoder="pymatching", json_metadata={"d": 9},
    ...                                shots=10, errors=1)]).splitlines()[1].split(",")[:2]
    ['        10', '         1']
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import sinter

from qec_kiln._errors import KilnError
from qec_kiln._report.output import check_output, write_output
from qec_kiln._storage import open_bucket
from qec_kiln._sweep.batches import Batch
from qec_kiln._sweep.fragments import Fragment, read_fragments
from qec_kiln._sweep.manifest import Manifest, load_manifest, resolve_sweep


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

    def to_json(self) -> dict:
        """The task as the watch page and report show it."""
        return {"name": self.name, "decoder": self.decoder, "shots": self.shots,
                "errors": self.errors, "target_shots": self.target_shots,
                "target_errors": self.target_errors, "reached": self.reached}


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
    log: Callable[[str], None] | None = None,
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
        warnings += _stray_objects(bucket, manifest)
        mine = per_sweep[manifest.sweep] = {}
        frags = read_fragments(bucket, manifest, [b.id for b in manifest.batches], workers=workers)
        for b, frag in zip(manifest.batches, frags, strict=True):
            if isinstance(frag, KilnError):
                if not skip_bad:
                    raise frag
                warnings.append(f"skipped: {frag}")
                continue
            if frag is None:
                missing.append(f"{manifest.sweep}/{b.id}")
                continue
            if frag.warning:
                warnings.append(frag.warning)
            kept, dropped = _planned_rows(frag, b)
            if dropped:
                warnings.append(dropped)
            for sid, st in kept.items():  # sinter combine's order: file by file, row by row
                mine[sid] = mine[sid] + st if sid in mine else st
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


def _metadata_order(s: sinter.TaskStats):
    """sinter combine's sort key (its default ``--order metadata``)."""
    return sinter.better_sorted_str_terms(json.dumps(s.json_metadata, separators=(",", ":"),
                                                     sort_keys=True))


def _csv(stats: list[sinter.TaskStats]) -> str:
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


# ---------------------------------------------------------------------------------------------
# The command

