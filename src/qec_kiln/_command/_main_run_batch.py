"""``qec-kiln run-batch``'s command: its flags in, :func:`run_batch`'s exit code out.

Apart from ``_commands`` so that a node's run-batch imports neither rich, the API nor any
backend before it starts sinter (``_cli.main`` builds the light parser for it).
"""

from __future__ import annotations

import argparse

from qec_kiln._errors import KilnError
from qec_kiln._node.runner import run_batch


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


def cmd_run_batch(args: argparse.Namespace) -> int:
    batches = pick_batches(args.batch, args.batches, args.index, args.all)
    return run_batch(args.bucket, args.sweep, batches, processes=args.processes,
                     sync_seconds=args.sync_seconds, work_dir=args.work_dir,
                     lease_seconds=args.lease_seconds, cpus_allowed=args.cpus_allowed)
