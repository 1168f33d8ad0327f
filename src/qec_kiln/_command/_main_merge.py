"""``qec-kiln merge`` and ``qec_kiln.merge``: combine every batch's fragment into one CSV for
``sinter plot``, and say which tasks reached their targets. It prints plain lines (no rich), as
``sinter combine`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from qec_kiln._argtypes import DEFAULT_BUCKET
from qec_kiln._command._base import Parser, PathLike, parse_args, run
from qec_kiln._errors import KilnError, Log

if TYPE_CHECKING:
    from qec_kiln._report.merge import MergeReport

HELP = "combine all fragments into one CSV for sinter plot"


def merge(bucket: PathLike = DEFAULT_BUCKET, out: PathLike | None = "merged.csv", *,
          sweep: str | None = None, skip_bad: bool = False, log: Log | None = None
          ) -> MergeReport:
    """Combine every batch's fragment as ``sinter combine`` does, into one CSV for
    ``sinter plot`` (``qec-kiln merge``).

    Args:
        bucket: as in :func:`qec_kiln.status`.
        out: the CSV to write, ``"-"`` for standard output, or None to write nothing.
        sweep: only this sweep (default: every sweep in the bucket, in one CSV).
        skip_bad: skip damaged fragments with a warning instead of stopping.
        log: receives warning lines; without it they are only in ``report.warnings``.

    Returns:
        The rows written and the tasks that reached their targets; ``report.stats`` holds the
        merged rows as ``sinter.TaskStats`` (what ``sinter.collect`` returns).

    Examples:
        >>> import tempfile, qec_kiln
        >>> qec_kiln.merge(tempfile.mkdtemp(), None)
        Traceback (most recent call last):
        ...
        qec_kiln._errors.KilnError: ...no sweeps in this bucket...

        A whole sweep: see ``qec_kiln._command._main_launch``.
    """
    from qec_kiln._report.merge import merge_sweeps

    # Without a log, merge's warnings are in the report (MergeReport.warnings), not raised.
    return merge_sweeps(str(bucket), None if out is None else str(out), sweep=sweep,
                        skip_bad=skip_bad, log=log)


def parser() -> Parser:
    p = Parser(prog="qec-kiln merge", description=HELP)
    p.add_argument("--bucket", default=DEFAULT_BUCKET)
    p.add_argument("--out", default="merged.csv",
                   help="the merged CSV (default merged.csv), or - for standard output")
    p.add_argument("--sweep", help="only this sweep (default: every sweep in the bucket, combined "
                   "into one CSV with each sweep's share reported)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip damaged fragments with a warning instead of stopping")
    p.add_argument("--json", action="store_true")
    return p


def main(argv: Sequence[str]) -> int:
    return run(handle, parse_args(parser(), argv))


def handle(args: argparse.Namespace) -> int:
    from qec_kiln._report.output import STDOUT  # with its file writing: only for a merge

    if args.out == STDOUT and args.json:
        raise KilnError("--out - and --json both write to standard output; give --out a file path")
    if "numpy" not in sys.modules:  # a merge does no linear algebra and starts no process:
        # numpy's OpenBLAS need not start (and spin) a thread per core on import
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    report = merge(args.bucket, args.out, sweep=args.sweep, skip_bad=args.skip_bad,
                   log=lambda line: print(line, file=sys.stderr))
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
        return 0
    text = sys.stderr if args.out == STDOUT else sys.stdout  # the CSV has standard output
    for line in merge_lines(report):
        print(line, file=text)
    return 0


def merge_lines(report: MergeReport) -> list[str]:
    """What ``qec-kiln merge`` prints about the merge (the CSV goes to its file)."""
    from qec_kiln._report.output import STDOUT

    where = ("nothing (out=None)" if not report.out
             else "standard output" if report.out == STDOUT else report.out)
    if len(report.sweeps) <= 1:
        lines = [f"wrote {where} ({report.rows} rows): {report.reached} of {report.total} "
                 "task(s) reached max_shots or max_errors"]
    else:  # each sweep on its own line: an unfinished one never blurs a finished one's count
        lines = [f"wrote {where} ({report.rows} rows from {len(report.sweeps)} sweeps); "
                 "targets are judged per sweep:"]
        for s in report.sweeps:
            mine = report.of_sweep(s)
            reached = sum(t.reached for t in mine)
            lines.append(f"  sweep {s}: {len(mine)} task(s), {reached} of {len(mine)} reached, "
                         f"{sum(t.shots for t in mine):,} shots toward its targets (with the "
                         "existing rows a top-up counted)"
                         + ("" if reached == len(mine) else
                            f" (not finished: `qec-kiln status --sweep {s}` says why; "
                            f"`qec-kiln remove --sweep {s}` removes it)"))
        lines.append(f"combined {len(report.sweeps)} sweeps into one CSV: a task in several "
                     "sweeps is one row with their shots summed (`--sweep NAME` merges one)"
                     + (":" if report.combined else ""))
        shown = 10  # a big sweep combines thousands of tasks: --json has every one
        for r in report.combined[:shown]:
            shares = " + ".join(f"{s} {n:,}" for s, n in r.shots_per_sweep.items())
            lines.append(f"  {_name(r.metadata)} ({r.decoder}): {r.shots:,} shots = {shares}")
        if len(report.combined) > shown:
            lines.append(f"  ... and {len(report.combined) - shown} more combined task(s) "
                         "(see --json)")
    if report.missing_batches:
        lines.append(f"batches without a fragment yet: {', '.join(report.missing_batches)}")
    several = len(report.sweeps) > 1
    for t in report.not_reached:
        lines.append(f"  not yet: {t.name} ({t.decoder}"
                     f"{', sweep ' + t.sweep if several else ''}): {t.shots:,}/{t.target_shots:,} "
                     f"shots, {t.errors:,}/{t.target_errors:,} errors")
    return lines


def _name(metadata: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in metadata.items())


__all__ = ["merge", "merge_lines"]
