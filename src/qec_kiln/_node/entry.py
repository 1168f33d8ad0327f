"""``qec-kiln run-batch``'s command: its flags in, :func:`run_batch`'s exit code out.

Apart from ``_commands`` so that a node's run-batch imports neither rich, the API nor any
backend before it starts sinter (``_cli.main`` builds the light parser for it).
"""

from __future__ import annotations

import argparse

from qec_kiln._errors import KilnError
from qec_kiln._node.runner import run_batch


def pick_batch(batch: str | None, batches: str | None, index: str | None) -> str:
    """``--batch ID``, or the ``--index``-th of ``--batches LIST``.

    >>> pick_batch(None, "b000,b001", "1")
    'b001'
    """
    if batch is not None:
        return batch
    if not batches or index is None:
        raise KilnError("run-batch needs --batch ID, or --batches LIST with --index N")
    ids = [b for b in batches.split(",") if b]
    try:
        idx = int(index)
    except ValueError:
        raise KilnError(f"--index {index!r} is not an integer") from None
    if not 0 <= idx < len(ids):
        raise KilnError(f"--index {idx} is outside --batches ({len(ids)} batches)")
    return ids[idx]


def cmd_run_batch(args: argparse.Namespace) -> int:
    batch = pick_batch(args.batch, args.batches, args.index)
    return run_batch(args.bucket, args.sweep, batch, processes=args.processes,
                     sync_seconds=args.sync_seconds, work_dir=args.work_dir,
                     lease_seconds=args.lease_seconds, cpus_allowed=args.cpus_allowed)
