"""The sweep in its bucket: which sweep a launch is (its name, and its stored manifest when it
exists with the same inputs: a relaunch), and its upload (circuits and shipped decoder objects,
then the manifest, only ever created). A ``--name`` whose sweep has other inputs names a top-up
``NAME-<8 hex of the inputs>``; a folder with a run's objects but no manifest is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from qec_kiln._errors import KilnError, Log, ObjectNotFound, PreconditionFailed
from qec_kiln._storage import Bucket
from qec_kiln._sweep.discover import CircuitFile
from qec_kiln._sweep.manifest import (
    Manifest,
    check_sweep_name,
    circuit_key,
    decoder_object_key,
    load_manifest,
    manifest_key,
    orphan_message,
)
from qec_kiln._sweep.spec import Partition, SweepSpec, default_sweep_name


def find_sweep(bucket: Bucket, spec: SweepSpec, digest: str, log: Log
               ) -> tuple[str, Manifest | None]:
    """The sweep's name, and its manifest if the bucket holds it with these inputs (saying
    which of ``spec``'s partition flags its stored plan ignores)."""
    name, circuits = spec.name, spec.circuits
    found, existing = _named(bucket, name, circuits, digest, log)
    if existing is None:
        left = bucket.list_keys(f"{found}/")
        if manifest_key(found) in left:  # another launch created the sweep just now
            found, existing = _named(bucket, name, circuits, digest, log)
        if existing is None:
            _check_no_orphans(bucket, found, left)
    if existing is not None:
        log(f"sweep {found!r} exists in {bucket.url} with the same inputs: reusing its plan")
        ignored = ignored_flags(spec.partition, existing)
        if ignored:
            log(f"warning: {', '.join(ignored)} ignored: sweep {found!r} keeps its stored plan "
                f"({len(existing.batches)} batch(es)); give --name NEW for a new plan")
    return found, existing


def ignored_flags(part: Partition, existing: Manifest) -> list[str]:
    """Partition flags that would have changed the stored plan of an existing sweep."""
    plan = existing.plan
    flags = []
    if part.jobs is not None and part.jobs != len(plan.batches):
        flags.append(f"--jobs {part.jobs}")
    if part.target_hours is not None:
        flags.append(f"--target-hours {part.target_hours:g}")
    if part.circuits_per_job is not None:
        flags.append(f"--circuits-per-job {part.circuits_per_job}")
    if not part.shards and any(s.count > 1 for b in plan.batches for s in b.shards):
        flags.append("--no-shards")
    if part.calibrate:
        flags.append("--calibrate")
    return flags


def _named(bucket: Bucket, given: str | None, circuits: str | list[str], digest: str,
           log: Log) -> tuple[str, Manifest | None]:
    name = check_sweep_name(given) if given else default_sweep_name(circuits, digest)
    existing = _load_if_there(bucket, name)
    if existing is not None and existing.inputs_digest != digest and given:
        derived = f"{name[:54]}-{digest[:8]}"
        log(f"sweep {name!r} exists in {bucket.url} with other circuits, decoders or targets: "
            f"this launch is sweep {derived!r}, and the rows of {name!r} count toward its targets")
        name, existing = derived, _load_if_there(bucket, derived)
    if existing is not None and existing.inputs_digest != digest:
        raise KilnError(
            f"sweep {name!r} already exists in {bucket.url} with other circuits, decoders or "
            "targets; choose another --name (or delete that sweep's folder to start over)"
        )
    return name, existing


def _load_if_there(bucket: Bucket, name: str) -> Manifest | None:
    try:
        return load_manifest(bucket, name) if bucket.exists(manifest_key(name)) else None
    except ObjectNotFound:
        return None


def _check_no_orphans(bucket: Bucket, sweep: str, keys: list[str]) -> None:
    """Refuse a new plan where a sweep of that name left fragments, leases or logs (``keys``:
    the sweep folder's objects) but has no manifest: those rows were counted against another
    plan (a task's shards differ between plans), and a run-batch of it may still be writing;
    merging them under a new plan could exceed its targets."""
    left = [k for k in keys if not k.startswith((f"{sweep}/circuits/", f"{sweep}/decoders/"))]
    if left:
        raise KilnError(orphan_message(bucket, sweep, left) + "; or give --name NEW")


def upload_sweep(bucket: Bucket, manifest: Manifest, circuits: list[CircuitFile],
                 log: Log, objects: Mapping[str, bytes] | None = None) -> Manifest:
    """Circuits (and ``objects``: shipped decoder pickles by sha256) first, the manifest last:
    a manifest in the bucket means the sweep is complete there.

    Each object is only created, never replaced (the same bytes already there count as written),
    so two launches of one sweep at the same time cannot swap plans under each other's batches.
    Returns the sweep's manifest: ``manifest``, or the one another launch created first (with
    the same inputs: that plan is the sweep's, and this launch goes on with it).
    """
    m = manifest
    uploads = [(circuit_key(m.sweep, c.key), c.text.encode("utf-8")) for c in circuits]
    uploads += [(decoder_object_key(m.sweep, sha), blob) for sha, blob in (objects or {}).items()]
    for key, data in uploads:
        try:
            bucket.write_if(key, data, None)
        except PreconditionFailed as ex:
            _refused_create(bucket, key, ex)
            raise KilnError(
                f"{bucket.url_for(key)} already exists with other contents (left by a launch of "
                f"sweep {m.sweep!r} with other inputs?); give --name NEW, or delete "
                f"{bucket.url_for(m.sweep)} to start over"
            ) from None
    key = manifest_key(m.sweep)
    try:
        bucket.write_if(key, m.dumps(), None)
    except PreconditionFailed as ex:
        _refused_create(bucket, key, ex)
        stored = _load_if_there(bucket, m.sweep)
        if stored is None or stored.inputs_digest != m.inputs_digest:
            raise KilnError(f"sweep {m.sweep!r}: another launch created its manifest in "
                            f"{bucket.url} at the same time, with other inputs or unreadable; "
                            "launch again") from None
        log(f"sweep {m.sweep!r} was created in {bucket.url} by another launch at the same time: "
            "using its plan")
        return stored
    shipped = f", {len(objects)} decoder object(s)" if objects else ""
    log(f"uploaded {len(circuits)} circuit(s){shipped} and the manifest to "
        f"{bucket.url_for(m.sweep)}")
    return m


def _refused_create(bucket: Bucket, key: str, ex: PreconditionFailed) -> None:
    """A create-if-absent refused although no object is there (a store that answered a
    conflict, or the object deleted meanwhile): say so, rather than blame another launch."""
    if not bucket.exists(key):
        raise KilnError(f"{bucket.url_for(key)}: the bucket refused to create it ({ex}) and it "
                        "is not there; launch again") from None


__all__ = ["find_sweep", "ignored_flags", "upload_sweep"]
