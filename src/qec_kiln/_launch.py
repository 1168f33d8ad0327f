"""discover → plan → upload → start: what ``qec_kiln.plan`` and ``qec_kiln.launch`` do.

A sweep is identified by its name in a bucket. Launching is idempotent: if the sweep's manifest
already exists with the same inputs, its stored plan is reused and only batches that are neither
finished (by their fragments) nor running (by the backend) are started again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import Callable, Mapping
from typing import Any

from qec_kiln._backends import Backend, LaunchRequest, Submission, get_backend
from qec_kiln._errors import KilnError, ObjectNotFound, PreconditionFailed
from qec_kiln._planning._cost import estimate_costs
from qec_kiln._planning.plan import plan_sweep
from qec_kiln._planning.queue import queue_order
from qec_kiln._planning.result import MODEL_ERROR, PlanResult, estimate_cost
from qec_kiln._report.status import sweep_progress
from qec_kiln._storage import Bucket
from qec_kiln._sweep.batches import Plan
from qec_kiln._sweep.decoders import check_decoders, decoder_runs_here, load_custom_decoders
from qec_kiln._sweep.discover import check_decodable, check_duplicates, discover_inputs
from qec_kiln._sweep.existing import read_existing_file, remaining_targets
from qec_kiln._sweep.manifest import (
    CircuitEntry,
    Manifest,
    check_sweep_name,
    circuit_key,
    inputs_digest,
    load_manifest,
    manifest_key,
    orphan_message,
)
from qec_kiln._sweep.postselect import postselection_masks
from qec_kiln._sweep.spec import SweepSpec, default_sweep_name
from qec_kiln._topup import count_existing, import_rows, plan_lock, with_measured_rates
from qec_kiln._version import __version__

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A spec with its backend, looked up and its options normalised and checked once.

    >>> s = Sweep.build("c/", {"backend": "slurm", "backend_options": {"partition": "p"}})
    >>> s.backend.name, s.options.partition
    ('slurm', 'p')
    """

    spec: SweepSpec
    backend: Backend

    @property
    def options(self) -> Any:
        return self.spec.backend_options

    @classmethod
    def build(cls, circuits: Any, settings: Mapping[str, Any]) -> Sweep:
        """The one way from settings (the API's keywords, or the CLI's flags) to a sweep."""
        spec = SweepSpec.build(circuits, settings)
        backend = get_backend(spec.backend)
        options = backend.options(spec.backend_options)
        backend.check_options(options)
        return cls(dataclasses.replace(spec, backend=backend.name, backend_options=options),
                   backend)


@dataclasses.dataclass(frozen=True)
class Relaunch:
    """What a launch of an existing sweep found: batches it left alone, and the predicted
    core-seconds still to do per batch it starts (by the fragments so far)."""

    done: list[str]
    running: list[str]
    remaining: dict[str, float]


def prepare_sweep(sweep: Sweep, bucket: Bucket, log: Log, *, commit: bool = False
                  ) -> PlanResult:
    """Discover and plan (or reload the stored plan of an existing sweep with the same inputs).

    A new plan counts what already exists of its tasks (the bucket's other sweeps and
    --existing-data files) and gives each task only what is left of its targets (none when it
    already reaches them), as sinter counts its resume file. ``commit`` (a launch): count and
    upload under the bucket's planning lock, importing --merge-existing-data rows first; the
    result's ``committed`` says whether this call created the manifest."""
    spec, backend, options = sweep.spec, sweep.backend, sweep.options
    inputs, targets = spec.inputs, spec.targets
    if targets.max_shots < 1 or targets.max_errors < 1:
        raise KilnError("--max-shots and --max-errors must be positive integers")
    if targets.fresh and targets.existing_data:
        raise KilnError("--fresh counts no existing rows: it cannot be given with --existing-data")
    if targets.merge_existing_data and not targets.existing_data:
        raise KilnError("--merge-existing-data needs --existing-data CSV...")
    run_here = backend.capacity(options, 1).decoders_run_here
    custom = load_custom_decoders(inputs.custom_decoders_module_function,
                                  required=run_here or spec.partition.calibrate)
    check_decoders(inputs.decoders, custom, run_here=run_here,
                   custom_spec=inputs.custom_decoders_module_function)
    circuits = discover_inputs(
        spec.circuits, allow_tagged_gates=bool(inputs.custom_decoders_module_function), log=log
    )
    decoders = list(inputs.decoders)
    check_decodable(circuits, decoders)
    masks = postselection_masks(inputs.postselection, circuits, log)
    strong_ids = check_duplicates(circuits, decoders, masks)
    tasks = {sid: key for key, sid in strong_ids.items()}  # strong_id -> (circuit key, decoder)
    files = [read_existing_file(path, {sid: f"{k} ({d})" for sid, (k, d) in tasks.items()})
             for path in targets.existing_data]
    entries = [CircuitEntry(c.key, c.sha256, c.metadata) for c in circuits]
    use = "merged" if targets.merge_existing_data else "counted"
    sinter_args = inputs.sinter_args(targets.custom_error_count_key)
    digest = inputs_digest(entries, decoders, targets.max_shots, targets.max_errors,
                           inputs.custom_decoders_module_function, sinter_args,
                           existing_data={f.sha256: use for f in files})
    name, existing = _sweep_name(bucket, spec, digest, log)
    if existing is None:
        left = bucket.list_keys(f"{name}/")
        if manifest_key(name) in left:  # another launch created the sweep just now
            name, existing = _sweep_name(bucket, spec, digest, log)
        if existing is None:
            _check_no_orphans(bucket, name, left)
    if existing is not None:
        log(f"sweep {name!r} exists in {bucket.url} with the same inputs: reusing its plan")
        ignored = _ignored_flags(spec, existing)
        if ignored:
            log(f"warning: {', '.join(ignored)} ignored: sweep {name!r} keeps its stored plan "
                f"({len(existing.batches)} batch(es)); give --name NEW for a new plan")
        return _result(sweep, existing, True, circuits)

    costs, features = estimate_costs(circuits, decoders, strong_ids,
                                     calibrate=spec.partition.calibrate,
                                     calibrate_seconds=spec.partition.calibrate_seconds,
                                     custom_decoders=custom, log=log, masks=masks,
                                     pilot_here=lambda d: decoder_runs_here(d, custom))
    for entry in entries:
        entry.features = features.get(entry.key)
    # From the count to the manifest's commit, no other launch plans in this bucket.
    with plan_lock(bucket, log) if commit else contextlib.nullcontext():
        counted = count_existing(bucket, files, set(tasks), sweep=name, fresh=targets.fresh,
                                 merge_files=targets.merge_existing_data, strict=commit, log=log)
        rows = counted.rows
        if commit and targets.merge_existing_data:
            by_key = {e.key: e for e in entries}
            for path, lines in counted.new_lines.items():
                imported = import_rows(bucket, lines, tasks, by_key, log)
                for shares in rows.sources.values():
                    if f"file {path}" in shares:
                        shares[imported] = shares.pop(f"file {path}")
        costs = with_measured_rates(costs, rows)
        goals = remaining_targets([c.strong_id for c in costs], targets.max_shots,
                                  targets.max_errors, rows, targets.custom_error_count_key)
        todo = [c for c in costs if c.strong_id in goals]
        if rows.stats:
            log(f"counted existing rows of {len(rows.stats)} of {len(costs)} task(s); "
                f"{len(costs) - len(todo)} already reach their targets")
        plan = (plan_sweep(todo, targets, spec.partition,
                           lambda n: backend.capacity(options, n), model_error=MODEL_ERROR,
                           goals=goals) if todo else
                Plan([], targets.max_shots, targets.max_errors, strategy="nothing left"))
        manifest = Manifest(
            sweep=name,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            decoders=decoders,
            max_shots=targets.max_shots,
            max_errors=targets.max_errors,
            circuits=entries,
            plan=plan,
            inputs_digest=digest,
            backend=backend.name,
            custom_decoders_module_function=inputs.custom_decoders_module_function,
            sinter_args=sinter_args,
            custom_error_count_key=targets.custom_error_count_key,
            tasks=[dataclasses.asdict(c) for c in costs],
            existing=rows.to_manifest(targets.custom_error_count_key),
        )
        result = _result(sweep, manifest, False, circuits)
        if commit and plan.batches:
            result.committed = upload_sweep(bucket, result, log)
    return result


def _sweep_name(bucket: Bucket, spec: SweepSpec, digest: str, log: Log
                ) -> tuple[str, Manifest | None]:
    """The sweep's name and its manifest if it exists with these inputs. A ``--name`` whose
    sweep has other inputs (new targets, more circuits) names a new sweep ``NAME-<8 hex of
    the inputs>`` that tops it up: its rows count toward the new targets."""
    name = check_sweep_name(spec.name) if spec.name else default_sweep_name(spec.circuits, digest)
    existing = _load_if_there(bucket, name)
    if existing is not None and existing.inputs_digest != digest and spec.name:
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


def _result(sweep: Sweep, manifest: Manifest, exists: bool, circuits: list) -> PlanResult:
    capacity = sweep.backend.capacity(sweep.options, len(manifest.batches))
    result = PlanResult(manifest, exists, circuits, capacity)
    result.estimated_cost = estimate_cost(result, sweep.spec.pricing, sweep.options.gpus)
    return result


def _ignored_flags(spec: SweepSpec, existing: Manifest) -> list[str]:
    """Partition flags that would have changed the stored plan of an existing sweep."""
    plan, part = existing.plan, spec.partition
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


def upload_sweep(bucket: Bucket, prepared: PlanResult, log: Callable[[str], None]) -> bool:
    """Circuits first, the manifest last: a manifest in the bucket means the sweep is complete there.

    Each object is only created, never replaced (the same bytes already there count as written),
    so two launches of one sweep at the same time cannot swap plans under each other's batches.
    Returns False when another launch created the manifest first: that plan is the sweep's
    (prepare_sweep again reuses it).
    """
    m = prepared.manifest
    for c in prepared.circuits:
        key = circuit_key(m.sweep, c.key)
        try:
            bucket.write_if(key, c.text.encode("utf-8"), None)
        except PreconditionFailed as ex:
            _refused_create(bucket, key, ex)
            raise KilnError(
                f"{bucket.url_for(key)} already exists with other contents (left by a launch of "
                f"sweep {m.sweep!r} with other circuits?); give --name NEW, or delete "
                f"{bucket.url_for(m.sweep)} to start over"
            ) from None
    key = manifest_key(m.sweep)
    try:
        bucket.write_if(key, m.dumps(), None)
    except PreconditionFailed as ex:
        _refused_create(bucket, key, ex)
        log(f"sweep {m.sweep!r} was created in {bucket.url} by another launch at the same time: "
            "using its plan")
        return False
    log(f"uploaded {len(prepared.circuits)} circuit(s) and the manifest to {bucket.url_for(m.sweep)}")
    return True


def _refused_create(bucket: Bucket, key: str, ex: PreconditionFailed) -> None:
    """A create-if-absent refused although no object is there (a store that answered a
    conflict, or the object deleted meanwhile): say so, rather than blame another launch."""
    if not bucket.exists(key):
        raise KilnError(f"{bucket.url_for(key)}: the bucket refused to create it ({ex}) and it "
                        "is not there; launch again") from None


def _check_no_orphans(bucket: Bucket, sweep: str, keys: list[str]) -> None:
    """Refuse a new plan where a sweep of that name left fragments, leases or logs (``keys``:
    the sweep folder's objects) but has no manifest: those rows were counted against another
    plan (a task's shards differ between plans), and a run-batch of it may still be writing;
    merging them under a new plan could exceed its targets."""
    left = [k for k in keys if not k.startswith(f"{sweep}/circuits/")]
    if left:
        raise KilnError(orphan_message(bucket, sweep, left) + "; or give --name NEW")


def batches_to_launch(bucket: Bucket, prepared: PlanResult, backend: Backend
                      ) -> tuple[list[str], Relaunch | None]:
    """Batches that are neither finished nor running, longest first (all of them for a new
    sweep), and for an existing sweep what it left alone."""
    m = prepared.manifest
    if not prepared.exists:
        return queue_order(m.batches), None
    progress = sweep_progress(bucket, m, backend.job_states(bucket.url, m.sweep))
    bad = [b for b in progress.batches if b.problem]
    if bad:
        raise KilnError(bad[0].problem)
    idle = {b.batch.id for b in progress.batches if not b.done and not (b.job and b.job.active)}
    relaunch = Relaunch(
        done=[b.batch.id for b in progress.batches if b.done],
        running=[b.batch.id for b in progress.batches if b.job and b.job.active],
        remaining={b.batch.id: b.batch.predicted_seconds * (1.0 - b.fraction)
                   for b in progress.batches if b.batch.id in idle})
    return [b for b in queue_order(m.batches) if b in idle], relaunch


def make_request(bucket: Bucket, prepared: PlanResult, batch_ids: list[str], options: Any,
                 log: Log | None = None, live: bool = False) -> LaunchRequest:
    return LaunchRequest(
        log=log,
        live=live,
        bucket_url=bucket.url,
        sweep=prepared.manifest.sweep,
        batch_ids=tuple(batch_ids),
        options=options,
        num_batches_total=len(prepared.manifest.batches),
        kiln_version=__version__,
        decoders=tuple(prepared.manifest.decoders),
        custom_decoders_module_function=prepared.manifest.custom_decoders_module_function,
        node_hour_price=_node_hour_price(prepared),
    )


def _node_hour_price(prepared: PlanResult) -> float | None:
    """The price of one node-hour implied by the estimated cost (None without prices)."""
    hours = sum(prepared.wall_seconds(b.predicted_seconds) for b in prepared.batches) / 3600
    if prepared.estimated_cost is None or hours <= 0:
        return None
    return prepared.estimated_cost / hours


__all__ = ["Relaunch", "Submission", "Sweep", "batches_to_launch", "make_request",
           "prepare_sweep", "upload_sweep"]
