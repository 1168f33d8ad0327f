"""What a bucket already holds of a sweep's tasks: every other sweep's rows of them (as
``merge`` counts them: each planned fragment once, only the rows of the tasks its batch
planned), and whether those rows are final.

Rows are final ("settled") when every shard of the task in that sweep is done by its fragment
(sinter stops a task at max_shots or max_errors, and a rerun of its batch samples no more of
it) and no live runner holds the batch's lease (whose in-flight rows could still arrive). A
top-up counts only settled rows: see :func:`bucket_holdings`.

Example:
    >>> rows, unsettled = bucket_holdings(bucket, {"id-a"}, exclude="new")  # doctest: +SKIP
    >>> rows.stats["id-a"].shots, unsettled  # doctest: +SKIP
    (20000, [])
"""

from __future__ import annotations

from collections.abc import Collection

from qec_kiln._errors import KilnError
from qec_kiln._node.lease import is_held, lease_key
from qec_kiln._report.status import batch_progress
from qec_kiln._storage import Bucket
from qec_kiln._sweep.existing import ExistingRows
from qec_kiln._sweep.fragments import read_fragments
from qec_kiln._sweep.manifest import list_sweeps, load_manifest


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
            progress = [p for p in batch_progress(b, frag) if p.shard.strong_id in wanted]
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


__all__ = ["bucket_holdings"]
