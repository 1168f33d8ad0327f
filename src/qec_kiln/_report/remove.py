"""``qec-kiln remove``: delete one sweep's objects from a bucket (its manifest, circuits,
fragments, leases and logs), refused while any of its batches runs.

    >>> import tempfile
    >>> from qec_kiln._storage import open_bucket
    >>> b = open_bucket(tempfile.mkdtemp())
    >>> b.write_bytes("s1/manifest.json", b"{}"); b.write_bytes("s1/fragments/b000.csv", b"x")
    >>> sweep_objects(b, "s1")
    ['s1/fragments/b000.csv', 's1/manifest.json']
"""

from __future__ import annotations

from collections.abc import Mapping

from qec_kiln._errors import KilnError
from qec_kiln._storage import Bucket
from qec_kiln._sweep.lease import live_holder
from qec_kiln._sweep.manifest import check_sweep_name, manifest_key


def sweep_objects(bucket: Bucket, sweep: str) -> list[str]:
    """Every object of the sweep's folder, the manifest last (a half-done removal still shows
    as the sweep, and removing again finishes it)."""
    check_sweep_name(sweep)
    keys = sorted(bucket.list_keys(f"{sweep}/"))
    return sorted(keys, key=lambda k: k == manifest_key(sweep))


def running_batches(bucket: Bucket, sweep: str, active: Mapping[str, str]) -> list[str]:
    """Lines naming batches that still run: by the backend's job states (``active``: batch ->
    state, of active jobs only) or by a live lease in the bucket (a runner of any launch)."""
    out = [f"{b} ({state} by its backend)" for b, state in sorted(active.items())]
    for key in sorted(bucket.list_keys(f"{sweep}/leases/")):
        batch = key.rsplit("/", 1)[-1].removesuffix(".json")
        holder = live_holder(bucket, key)
        if holder and batch not in active:
            out.append(f"{batch} (lease {holder})")
    return out


def remove_sweep(bucket: Bucket, sweep: str, active: Mapping[str, str], *,
                 dry_run: bool = False) -> list[str]:
    """Delete (or with ``dry_run`` only list) the sweep's objects; refuse while batches run."""
    keys = sweep_objects(bucket, sweep)
    if not keys:
        raise KilnError(f"{bucket.url_for(sweep)}: no such sweep in the bucket (nothing to remove); "
                        "`qec-kiln status --bucket URL` lists the sweeps")
    running = running_batches(bucket, sweep, active)
    if running:
        raise KilnError(f"sweep {sweep!r} still runs: {', '.join(running)}; `qec-kiln cancel "
                        f"--sweep {sweep}` first, then remove it")
    if not dry_run:
        for key in keys:
            bucket.delete(key)
    return keys


__all__ = ["remove_sweep", "running_batches", "sweep_objects"]
