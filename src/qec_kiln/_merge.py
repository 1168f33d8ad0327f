"""``qec-kiln merge``: pull every batch's fragment from the bucket and combine them with sinter's
own ``sinter combine`` into one CSV that ``sinter plot`` reads.

Only the objects named in the manifest (``fragments/<batch>.csv`` for the plan's batches) are
read, each once: a stray copy in ``fragments/`` would otherwise be counted twice. The output is
written to a temporary file and renamed, so a failed merge never leaves a half file behind.

Example:
    >>> report = merge_sweeps("s3://sinter-results", "merged.csv")  # doctest: +SKIP
    >>> report.reached, report.total  # doctest: +SKIP
    (30, 30)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Callable

import sinter

from qec_kiln._atomic import atomic_write
from qec_kiln._errors import KilnError
from qec_kiln._manifest import Manifest, load_manifest, resolve_sweep
from qec_kiln._runner import sinter_executable
from qec_kiln._status import read_fragment
from qec_kiln._storage import open_bucket


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


@dataclasses.dataclass
class MergeReport:
    out: pathlib.Path
    rows: int
    tasks: list[TaskOutcome]
    missing_batches: list[str]
    warnings: list[str]

    @property
    def total(self) -> int:
        return len(self.tasks)

    @property
    def reached(self) -> int:
        return sum(t.reached for t in self.tasks)

    @property
    def not_reached(self) -> list[TaskOutcome]:
        return [t for t in self.tasks if not t.reached]


def merge_sweeps(
    bucket_url: str,
    out: str | pathlib.Path,
    *,
    sweep: str | None = None,
    skip_bad: bool = False,
    log: Callable[[str], None] | None = None,
) -> MergeReport:
    """Merge the fragments of one sweep (or of every sweep in the bucket) into ``out``."""
    log = log or (lambda s: None)
    out = pathlib.Path(out)
    if out.is_dir():
        raise KilnError(
            f"--out {str(out)!r} is a directory; give a file name, e.g. {str(out / 'merged.csv')!r}"
        )
    bucket = open_bucket(bucket_url)
    bucket.check_access()
    warnings: list[str] = []
    missing: list[str] = []
    outcomes: list[TaskOutcome] = []
    with tempfile.TemporaryDirectory(prefix="qec-kiln-merge-") as tmp:
        files: list[str] = []
        for name in resolve_sweep(bucket, sweep):
            manifest = load_manifest(bucket, name)
            warnings += _stray_objects(bucket, manifest)
            per_task: dict[str, sinter.TaskStats] = {}
            for b in manifest.batches:
                try:
                    frag = read_fragment(bucket, manifest, b.id)
                except KilnError as ex:
                    if not skip_bad:
                        raise
                    warnings.append(f"skipped: {ex}")
                    continue
                if frag is None:
                    missing.append(f"{name}/{b.id}")
                    continue
                if frag.warning:
                    warnings.append(frag.warning)
                if not frag.stats:
                    continue
                path = pathlib.Path(tmp) / f"{len(files):05d}.csv"
                path.write_bytes(frag.clean)
                files.append(str(path))
                for sid, st in frag.stats.items():
                    per_task[sid] = per_task[sid] + st if sid in per_task else st
            outcomes += _outcomes(manifest, per_task)
        if not files:
            raise KilnError(
                f"{bucket.url}: no fragment has any rows yet, so there is nothing to merge; "
                "check `qec-kiln status` and try again later"
            )
        merged = pathlib.Path(tmp) / "merged.csv"
        with open(merged, "wb") as f:
            proc = subprocess.run(sinter_executable() + ["combine", *files], stdout=f,
                                  stderr=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            raise KilnError(f"sinter combine failed: {proc.stderr.decode(errors='replace').strip()[-400:]}")
        rows = len(sinter.read_stats_from_csv_files(str(merged)))
        _write_out(out, merged.read_bytes())
    for w in warnings:
        log("warning: " + w)
    return MergeReport(out=out, rows=rows, tasks=outcomes, missing_batches=missing, warnings=warnings)


def _write_out(out: pathlib.Path, data: bytes) -> None:
    """Write ``out`` whole or not at all: a staged file of its own (two merges may run at once)
    renamed over it, removed on failure."""
    try:
        atomic_write(out, data, tmp_prefix=f".{out.name}.")
    except OSError as ex:
        raise KilnError(
            f"--out {str(out)!r}: cannot write it ({ex.strerror or ex}); choose a writable file path"
        ) from ex


def _stray_objects(bucket, manifest: Manifest) -> list[str]:
    """Objects in fragments/ that are not a batch's fragment (never merged: they could double count)."""
    expected = {f"{manifest.sweep}/fragments/{b.id}.csv" for b in manifest.batches}
    return [
        f"{bucket.url_for(k)}: not a fragment of this sweep's plan, ignored (a copy would be counted twice)"
        for k in bucket.list_keys(f"{manifest.sweep}/fragments/")
        if k not in expected
    ]


def _outcomes(manifest: Manifest, per_task: dict[str, sinter.TaskStats]) -> list[TaskOutcome]:
    targets = manifest.plan.task_targets()
    info = {}
    for b in manifest.batches:
        for s in b.shards:
            info[s.strong_id] = (s.decoder, manifest.circuit(s.circuit).metadata)
    out = []
    for sid, (ts, te) in targets.items():
        st = per_task.get(sid)
        decoder, metadata = info[sid]
        out.append(TaskOutcome(manifest.sweep, sid, decoder, metadata, st.shots if st else 0,
                               st.errors if st else 0, ts, te))
    return out


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def cmd_merge(args: argparse.Namespace) -> int:
    report = merge_sweeps(args.bucket, args.out, sweep=args.sweep, skip_bad=args.skip_bad,
                          log=_log)
    if args.json:
        print(json.dumps({
            "out": str(report.out), "rows": report.rows, "tasks": report.total,
            "reached": report.reached, "missing_batches": report.missing_batches,
            "not_reached": [dict(t.metadata, decoder=t.decoder, shots=t.shots, errors=t.errors,
                                 target_shots=t.target_shots, target_errors=t.target_errors)
                            for t in report.not_reached],
            "warnings": report.warnings,
        }, indent=1))
        return 0
    print(f"wrote {report.out} ({report.rows} rows): {report.reached} of {report.total} "
          "task(s) reached max_shots or max_errors")
    if report.missing_batches:
        print(f"batches without a fragment yet: {', '.join(report.missing_batches)}")
    for t in report.not_reached:
        name = ",".join(f"{k}={v}" for k, v in t.metadata.items())
        print(f"  not yet: {name} ({t.decoder}): {t.shots:,}/{t.target_shots:,} shots, "
              f"{t.errors:,}/{t.target_errors:,} errors")
    return 0
