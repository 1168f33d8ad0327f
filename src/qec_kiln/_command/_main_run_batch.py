"""``qec-kiln run-batch``: what a node runs, one batch or several; its flags in,
:func:`run_batch`'s exit code out. It imports neither rich, the API nor any backend before it
starts sinter (which imports sinter, numpy and stim once).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from qec_kiln._argtypes import SYNC_SECONDS, positive_float, processes, sync_seconds
from qec_kiln._command._base import Parser, parse_args, run
from qec_kiln._errors import KilnError
from qec_kiln._node.runner import run_batch

HELP = "run one batch (what a node runs)"


def parser() -> Parser:
    p = Parser(prog="qec-kiln run-batch", description=HELP)
    p.add_argument("--bucket", required=True)
    p.add_argument("--sweep", required=True)
    p.add_argument("--batch", help="batch id, e.g. b003")
    p.add_argument("--batches", help="comma-separated batch ids; --index picks one")
    p.add_argument("--index", help="index into --batches (e.g. $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--all", action="store_true",
                   help="run every batch of --batches here (batches that share no task in one "
                   "sinter, each with its own fragment: what a local worker does)")
    p.add_argument("--processes", type=processes, metavar="N|auto",
                   help="sinter --processes (default auto: one per allowed CPU)")
    p.add_argument("--cpus-allowed", metavar="LIST",
                   help="CPUs sinter may use, e.g. 0-3 (default: this process's affinity mask)")
    p.add_argument("--sync-seconds", type=sync_seconds, default=SYNC_SECONDS)
    p.add_argument("--work-dir", help="local folder for the resume file (default: temp dir)")
    p.add_argument("--lease-seconds", type=positive_float,
                   help="the batch's lease lasts this long unless renewed; a dead runner's batch "
                        "may be taken over after it (default: 4 sync periods, at least 60)")
    return p


def main(argv: Sequence[str]) -> int:
    return run(handle, parse_args(parser(), argv))


def pick_batches(batch: str | None, batches: str | None, index: str | None,
                 every: bool = False) -> list[str]:
    """``--batch ID``, the ``--index``-th of ``--batches LIST``, or all of them (``--all``).

    >>> pick_batches(None, "b000,b001", "1"), pick_batches(None, "b000,b001", None, every=True)
    (['b001'], ['b000', 'b001'])
    """
    if batch is not None:
        return [batch]
    ids = [b for b in (batches or "").split(",") if b]
    if every and ids and index is None:
        return ids
    if not ids or index is None:
        raise KilnError("run-batch needs --batch ID, or --batches LIST with --index N (or --all)")
    try:
        idx = int(index)
    except ValueError:
        raise KilnError(f"--index {index!r} is not an integer") from None
    if not 0 <= idx < len(ids):
        raise KilnError(f"--index {idx} is outside --batches ({len(ids)} batches)")
    return [ids[idx]]


def handle(args: argparse.Namespace) -> int:
    batches = pick_batches(args.batch, args.batches, args.index, args.all)
    return run_batch(args.bucket, args.sweep, batches, processes=args.processes,
                     sync_seconds=args.sync_seconds, work_dir=args.work_dir,
                     lease_seconds=args.lease_seconds, cpus_allowed=args.cpus_allowed)
