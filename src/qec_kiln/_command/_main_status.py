"""``qec-kiln status`` and ``qec_kiln.status``: progress of a sweep's batches, the fragments
against the plan's targets joined with the backend's job states, and the table that shows it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from qec_kiln._argtypes import DEFAULT_BUCKET, positive_int
from qec_kiln._command._base import Parser, PathLike, err, out, parse_args, quiet, run, say
from qec_kiln._errors import KilnError, Log
from qec_kiln._report.units import duration, percent

if TYPE_CHECKING:
    from qec_kiln._report.status import BatchProgress, StatusReport

HELP = "progress of a sweep's batches"


def status(bucket: PathLike = DEFAULT_BUCKET, *, sweep: str | None = None,
           backend: str | None = None, log: Log | None = None) -> list[StatusReport]:
    """Progress of a bucket's sweeps: the fragments against the plan's targets, joined with the
    backend's job states (``qec-kiln status``).

    Args:
        bucket: ``s3://BUCKET[/PREFIX]``, ``gs://BUCKET[/PREFIX]`` or a folder; only read.
        sweep: only this sweep (default: every sweep in the bucket).
        backend: whose job states (default: the one the sweep was launched with).
        log: receives warning lines, as in :func:`qec_kiln.plan`.

    Returns:
        One ``StatusReport`` per sweep; what the backend could not find out is in its
        ``backend_warnings``.

    Examples:
        >>> import tempfile, qec_kiln
        >>> qec_kiln.status(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        qec_kiln._errors.KilnError: ...: no sweeps in this bucket; ...
    """
    from qec_kiln._backends import get_backend
    from qec_kiln._report.status import sweep_progress
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import load_manifest, resolve_sweep

    log = log or quiet
    store = open_bucket(str(bucket))  # only read: a read-only bucket is fine
    reports = []
    for name in resolve_sweep(store, sweep, lambda w: log(f"warning: {w}")):
        manifest = load_manifest(store, name)
        chosen = get_backend(backend or manifest.backend)
        try:
            states = chosen.job_states(store.url, name)
        except KilnError as ex:
            log(f"warning: {ex}; showing fragment progress only")
            states = {}
        report = sweep_progress(store, manifest, states)
        _prefer_live(report, chosen.live_fragments(store.url, name))
        report.backend = chosen.name
        report.backend_warnings = chosen.warnings()
        for w in report.backend_warnings:
            log(f"warning: {w}")
        reports.append(report)
    return reports


def _prefer_live(report: StatusReport, live: Mapping[str, bytes]) -> None:
    """Use a batch's local resume file (parsed by sinter) where it holds more shots than the
    fragment in the bucket (it is synced only every ``sync_seconds``)."""
    from qec_kiln._sweep.fragments import Fragment, parse_fragment
    from qec_kiln._sweep.progress import batch_progress

    parsed: dict[bytes, Fragment | None] = {}  # one run-batch --all: one file, many batches
    for bp in report.batches:
        data = live.get(bp.batch.id)
        if not data or bp.problem:
            continue
        if data not in parsed:
            try:
                parsed[data] = parse_fragment(data, bp.batch.id)
            except KilnError:
                parsed[data] = None
        fragment = parsed[data]
        if fragment is None:
            continue
        shards = batch_progress(bp.batch, fragment, report.manifest.errors_of)
        if sum(s.shots for s in shards) > bp.shots:
            bp.shards, bp.fragment_found = shards, True


def parser() -> Parser:
    p = Parser(prog="qec-kiln status", description=HELP)
    p.add_argument("--bucket", default=DEFAULT_BUCKET)
    p.add_argument("--sweep", help="default: every sweep in the bucket")
    p.add_argument("--backend", help="default: the one the sweep was launched with")
    p.add_argument("--json", action="store_true", help="every batch, machine-readable")
    p.add_argument("--rows", type=positive_int, default=40, metavar="N",
                   help="batches the table shows, failed, running and unfinished ones first; "
                   "one line counts the rest (default 40; the totals count every batch)")
    p.add_argument("--all", action="store_true", help="a row for every batch")
    return p


def main(argv: Sequence[str]) -> int:
    return run(handle, parse_args(parser(), argv))


def handle(args: argparse.Namespace) -> int:
    reports = status(args.bucket, sweep=args.sweep, backend=args.backend, log=say)
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=1))
        return 0
    for r in reports:
        print_status(r, rows=None if args.all else args.rows)
    return 0


def print_status(report: StatusReport, rows: int | None = None) -> None:
    """The sweep's table: ``rows`` batches (None: all), failed, running and unfinished ones
    first (``StatusReport.by_urgency``), one line counting the rest, and totals over all."""
    m = report.manifest
    from rich.table import Table

    table = Table(title=f"sweep {m.sweep} ({report.backend or m.backend}): "
                  f"{percent(report.fraction_done)} done",
                  title_justify="left")
    ordered = report.by_urgency()
    shown, rest = (ordered, []) if rows is None else (ordered[:rows], ordered[rows:])
    show_recoveries = any(b.job and b.job.recoveries is not None for b in shown)
    cols = ["batch", "state", "job"] + (["recoveries"] if show_recoveries else [])
    for col in cols + ["shots", "errors", "done", "ETA"]:
        table.add_column(col, justify="left" if col in ("batch", "state", "job") else "right")
    for b in shown:
        eta = b.eta_seconds
        row = [b.batch.id, b.state, b.job.job_id if b.job else "-"]
        if show_recoveries:
            row.append("-" if not b.job or b.job.recoveries is None else str(b.job.recoveries))
        row += [f"{b.shots:,}", f"{b.errors:,}", percent(b.fraction), duration(eta)]
        table.add_row(*row)
    out.print(table)
    if rest:
        out.print(_rest_line(rest), markup=False)
    shots = sum(b.shots for b in report.batches)
    out.print(f"total: {shots:,} shots, {sum(b.errors for b in report.batches):,} errors; "
              f"{len(report.batches) - len(report.unfinished)}/{len(report.batches)} batches done",
              markup=False)
    for b in shown:  # why a job failed, recovers or waits (SkyPilot's reason)
        detail = b.job.detail if b.job else ""
        if b.error and b.error not in detail:  # the last error line of its log
            detail = f"{detail}: {b.error}" if detail else b.error
        if b.job and detail and not b.done:
            rec = "" if b.job.recoveries is None else f", {b.job.recoveries} recoveries"
            out.print(f"{b.batch.id} {b.state} (job {b.job.job_id}{rec}): {detail}",
                      markup=False)
    for w in report.warnings:
        err.print(f"warning: {w}", markup=False)


def _rest_line(rest: list[BatchProgress]) -> str:
    """One line for the batches the table leaves out: ``... and 1,960 finished batches``."""
    if all(b.done and not (b.job and b.job.active) for b in rest):
        what = f"{len(rest):,} finished batch{'es' if len(rest) > 1 else ''}"
    else:
        states: dict[str, int] = {}
        for b in rest:
            states[b.state] = states.get(b.state, 0) + 1
        what = (f"{len(rest):,} more batch{'es' if len(rest) > 1 else ''} ("
                + ", ".join(f"{n:,} {state}" for state, n in states.items()) + ")")
    return f"... and {what}: --all shows every row, --rows N the first N"


__all__ = ["print_status", "status"]
