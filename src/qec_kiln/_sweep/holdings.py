"""What a bucket already holds of a new plan's tasks, counted in one call
(:func:`count_holdings`): every other sweep's rows of them (as ``merge`` counts them: each
planned fragment once, only the rows of the tasks its batch planned), --existing-data CSVs
(imported into the bucket with --merge-existing-data), and what is left of each task's targets.

Rows are final ("settled") when every shard of the task in that sweep is done by its fragment
(sinter stops a task at max_shots or max_errors, and a rerun of its batch samples no more of
it) and no live runner holds the batch's lease (whose in-flight rows could still arrive). A
top-up counts only settled rows: see :func:`bucket_holdings`. A launch counts under the
bucket's planning lock (``_sweep.lease.plan_lock``), from the count to its manifest's commit.

Example:
    >>> import tempfile
    >>> from qec_kiln._storage import open_bucket
    >>> bucket = open_bucket(tempfile.mkdtemp())
    >>> rows, unsettled = bucket_holdings(bucket, {"id-a"}, exclude="new")
    >>> rows.stats, unsettled
    ({}, [])
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Collection, Mapping, Sequence

from qec_kiln._errors import KilnError, Log, ObjectNotFound, PreconditionFailed
from qec_kiln._storage import Bucket
from qec_kiln._sweep.batches import Batch, Plan, Shard
from qec_kiln._sweep.existing import (
    IMPORT_PREFIX,
    ExistingFile,
    ExistingRows,
    import_name,
    remaining_targets,
)
from qec_kiln._sweep.fragments import HEADER_LINE, parse_fragment, read_fragments
from qec_kiln._sweep.inputs import SweepInputs
from qec_kiln._sweep.lease import is_held, lease_key
from qec_kiln._sweep.manifest import (
    CircuitEntry,
    Manifest,
    fragment_key,
    list_sweeps,
    load_manifest,
    manifest_key,
)
from qec_kiln._sweep.progress import batch_progress
from qec_kiln._sweep.spec import Targets


@dataclasses.dataclass
class Holdings:
    """What a new plan starts from: the rows it counts per task, and what is left of each
    task's targets (tasks that reach them are out)."""

    rows: ExistingRows
    goals: dict[str, tuple[int, int]]  # strong_id -> (shots, errors) still to sample


def count_holdings(bucket: Bucket, found: SweepInputs, targets: Targets, *, sweep: str,
                   commit: bool, log: Log) -> Holdings:
    """Everything a new plan of ``sweep`` counts, in one call: the bucket's settled rows of its
    tasks and the --existing-data rows (imported first when ``commit`` with
    --merge-existing-data), and the targets left. ``commit`` (a launch, under the planning
    lock) refuses what a dry run only warns of."""
    counted = count_existing(bucket, found.files, set(found.tasks), sweep=sweep,
                             fresh=targets.fresh, merge_files=targets.merge_existing_data,
                             strict=commit, log=log)
    rows = counted.rows
    if commit and targets.merge_existing_data:
        by_key = {e.key: e for e in found.entries}
        for path, lines in counted.new_lines.items():
            imported = import_rows(bucket, lines, found.tasks, by_key, log)
            for shares in rows.sources.values():
                if f"file {path}" in shares:
                    shares[imported] = shares.pop(f"file {path}")
    goals = remaining_targets(list(found.tasks), targets.max_shots, targets.max_errors, rows,
                              targets.custom_error_count_key,
                              own=targets.by_strong_id(found.strong_ids))
    if rows.stats:
        log(f"counted existing rows of {len(rows.stats)} of {len(found.tasks)} task(s); "
            f"{len(found.tasks) - len(goals)} already reach their targets")
    return Holdings(rows, goals)


@dataclasses.dataclass
class Counted:
    """What a plan counts per task, and the --existing-data rows not yet in the bucket."""

    rows: ExistingRows
    new_lines: dict[str, list[str]]  # file path -> its rows not already imported into the bucket


def count_existing(bucket: Bucket, files: Sequence[ExistingFile], strong_ids: set[str], *,
                   sweep: str, fresh: bool, merge_files: bool, strict: bool, log: Log) -> Counted:
    """The rows a new plan of ``sweep`` counts: every other sweep's settled rows of its tasks,
    and the --existing-data rows not already imported (each row once).

    Refused (one line, ``strict``; else a warning, for a dry run): another sweep still has work
    on these tasks (counting its rows now could take a task past its targets once it ends:
    finish it first); ``fresh`` in a bucket that holds rows of them (merge would add them);
    ``merge_files`` rows of tasks that a sweep of the bucket already sampled (the file may be
    a merge of this very bucket: its rows would be counted twice)."""
    held, unsettled = bucket_holdings(bucket, strong_ids, exclude=sweep)
    if unsettled:
        line = ("; ".join(unsettled) + ": finish it first (launch it again with its own "
                "targets, or wait for it), then launch this again; counting its rows now could "
                "take a task past these targets once it ends")
        if strict:
            raise KilnError(line)
        log("warning: " + line + " (a launch now would be refused)")
    if fresh and held.stats:
        names = sorted({s for sid in held.stats for s in held.sources.get(sid, {})})
        raise KilnError(
            f"--fresh: {bucket.url} already holds rows of {len(held.stats)} of these task(s) "
            f"(sweep(s) {', '.join(names)}), and a merge of the bucket would add a fresh run's "
            "rows to them; give a new --bucket for a fresh start, or drop --fresh to top up")
    seen = _imported_lines(bucket)
    new_lines: dict[str, list[str]] = {}
    rows = held
    for f in files:
        lines = [ln for ln in f.lines if ln not in seen]
        seen.update(lines)
        if len(lines) < len(f.lines):
            log(f"--existing-data {f.path}: {len(f.lines) - len(lines)} of its row(s) are already "
                "in the bucket (imported before): counted once")
        if f.other_rows:
            log(f"--existing-data {f.path}: {f.other_rows} row(s) of other tasks ignored")
        if not lines:
            continue
        new_lines[f.path] = lines
        extra = parse_fragment(HEADER_LINE + "\n".join(lines).encode() + b"\n", f.path).stats
        sampled = [sid for sid in extra if any(not s.startswith(IMPORT_PREFIX)
                                               for s in held.sources.get(sid, {}))]
        if merge_files and sampled:
            raise KilnError(
                f"--merge-existing-data {f.path}: sweeps of {bucket.url} already sampled "
                f"{len(sampled)} of its task(s); importing its rows too could count one run "
                "twice (is it a merge of this bucket?): import it into a new --bucket, or give "
                "it without --merge-existing-data to count it only")
        more = ExistingRows()
        for st in extra.values():
            more.add(f"file {f.path}", st)
        rows = rows.merged(more)
    return Counted(rows, new_lines)


def _imported_lines(bucket: Bucket) -> set[str]:
    """Every row already imported into the bucket (the fragments of its import sweeps)."""
    out: set[str] = set()
    for name in list_sweeps(bucket):
        if not name.startswith(IMPORT_PREFIX):
            continue
        try:
            data = bucket.read_bytes(fragment_key(name, "b000"))
        except ObjectNotFound:
            continue
        out.update(ln.rstrip() for ln in data.decode("utf-8", "replace").splitlines()[1:])
    return out


def import_rows(bucket: Bucket, lines: list[str], tasks: Mapping[str, tuple[str, str]],
                circuits: Mapping[str, CircuitEntry], log: Log) -> str:
    """Upload rows as a read-only sweep ``import-<hash>`` (its fragment, then its manifest,
    each only created), so that merge includes them once. ``tasks``: strong_id ->
    (circuit key, decoder). Returns the sweep's name."""
    name = import_name(lines)
    data = HEADER_LINE + "\n".join(lines).encode() + b"\n"
    stats = parse_fragment(data, name).stats
    shards = [Shard(circuit=tasks[sid][0], decoder=tasks[sid][1], strong_id=sid,
                    max_shots=st.shots, max_errors=st.errors, predicted_seconds=0.0,
                    predicted_shots=float(st.shots)) for sid, st in sorted(stats.items())]
    manifest = Manifest(
        sweep=name,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        decoders=sorted({s.decoder for s in shards}),
        max_shots=max(s.max_shots for s in shards),
        max_errors=max(s.max_errors for s in shards),
        circuits=[circuits[k] for k in sorted({s.circuit for s in shards})],
        plan=Plan([Batch("b000", shards)], 0, 0, strategy="import"),
        inputs_digest=name, kind="import")
    for key, body in ((fragment_key(name, "b000"), data), (manifest_key(name), manifest.dumps())):
        try:
            bucket.write_if(key, body, None)
        except PreconditionFailed:
            if key.endswith(".csv") and bucket.read_bytes(key) != body:
                raise KilnError(f"{bucket.url_for(key)} exists with other rows; delete "
                                f"{bucket.url_for(name)} and launch again") from None
    log(f"imported {len(lines)} row(s) of {len(shards)} task(s) into {bucket.url_for(name)} "
        "(a read-only sweep: merge includes them once)")
    return name


def bucket_holdings(bucket: Bucket, strong_ids: Collection[str], *, exclude: str
                    ) -> tuple[ExistingRows, list[str]]:
    """The rows of ``strong_ids`` in every sweep of ``bucket`` but ``exclude``, and one line
    per sweep whose rows of them are not final yet (unfinished shards, or a running batch).
    A damaged manifest or fragment is an error: its rows cannot be counted."""
    rows = ExistingRows()
    unsettled: list[str] = []
    wanted = set(strong_ids)
    for name in list_sweeps(bucket):
        if name == exclude:
            continue
        manifest = load_manifest(bucket, name)
        batches = [b for b in manifest.batches if any(s.strong_id in wanted for s in b.shards)]
        if not batches:
            continue
        frags = read_fragments(bucket, manifest, [b.id for b in batches])
        open_batches, running = [], []
        tasks = set()
        for b, frag in zip(batches, frags, strict=True):
            if isinstance(frag, KilnError):
                raise KilnError(f"{frag}; its rows of these tasks cannot be counted toward the "
                                "targets") from None
            planned = {s.strong_id for s in b.shards} & wanted
            for sid, st in (frag.stats if frag else {}).items():
                if sid in planned:
                    rows.add(name, st)
            progress = [p for p in batch_progress(b, frag, manifest.errors_of)
                        if p.shard.strong_id in wanted]
            if manifest.kind == "import":
                continue
            if not all(p.done for p in progress):
                open_batches.append(b.id)
                tasks |= {p.shard.strong_id for p in progress if not p.done}
            elif is_held(bucket, lease_key(name, b.id)):
                running.append(b.id)
                tasks |= planned
        if open_batches or running:
            what = []
            if open_batches:
                what.append(f"batch(es) {', '.join(open_batches)} not finished")
            if running:
                what.append(f"batch(es) {', '.join(running)} still running")
            unsettled.append(
                f"sweep {name!r} (max_shots {manifest.max_shots}, max_errors "
                f"{manifest.max_errors}) still has work on {len(tasks)} of these task(s): "
                f"{'; '.join(what)}")
    return rows, unsettled


__all__ = ["Counted", "Holdings", "bucket_holdings", "count_existing", "count_holdings",
           "import_rows"]
