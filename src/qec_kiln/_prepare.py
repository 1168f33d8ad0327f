"""discover → plan → upload → start: what ``qec_kiln.plan`` and ``qec_kiln.launch`` do, each
stage called once, in order.

1. :meth:`Sweep.build`: the settings as a ``SweepSpec``, its backend, the backend's options
   and its :class:`~qec_kiln._planning.capacity.Capacity` (asked once); then the bucket,
   checked by the backend.
2. :func:`prepare_sweep`: the inputs (``_sweep.inputs``), which sweep this is
   (``_sweep.store``), and for a new sweep the predicted costs (``_planning``), what the
   bucket already holds of its tasks (``_report.holdings``, under the bucket's planning lock
   for a launch), the plan (``_planning``) and its upload (``_sweep.store``).
3. :func:`launch_sweep`: the batches to start (``_report.status``) and the backend's launch.

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

from qec_kiln._backends import Backend, LaunchRequest, get_backend
from qec_kiln._launch_result import DryRun, LaunchResult
from qec_kiln._planning._cost import estimate_costs
from qec_kiln._planning.capacity import Capacity
from qec_kiln._planning.plan import plan_sweep
from qec_kiln._planning.result import MODEL_ERROR, PlanResult, plan_result
from qec_kiln._report.holdings import count_holdings, plan_lock
from qec_kiln._report.status import Relaunch, batches_to_start
from qec_kiln._storage import Bucket
from qec_kiln._sweep.batches import Plan
from qec_kiln._sweep.inputs import read_inputs
from qec_kiln._sweep.manifest import Manifest
from qec_kiln._sweep.spec import SweepSpec
from qec_kiln._sweep.store import find_sweep, ignored_flags, upload_sweep
from qec_kiln._version import __version__

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A spec with its backend, looked up, its options normalised and checked, and its
    capacity asked, once.

    >>> s = Sweep.build("c/", {"backend": "slurm", "backend_options": {"partition": "p"}})
    >>> s.backend.name, s.options.partition, s.capacity.slots
    ('slurm', 'p', None)
    """

    spec: SweepSpec
    backend: Backend
    capacity: Capacity

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
                   backend, backend.capacity(options))


def prepare_sweep(sweep: Sweep, bucket: Bucket, log: Log, *, commit: bool = False
                  ) -> PlanResult:
    """Read the inputs, find the sweep, and plan it (or reload the stored plan of an existing
    sweep with the same inputs): one call per stage.

    A new plan counts what already exists of its tasks (the bucket's other sweeps and
    --existing-data files) and gives each task only what is left of its targets (none when it
    already reaches them), as sinter counts its resume file. ``commit`` (a launch): count and
    upload under the bucket's planning lock, importing --merge-existing-data rows first. When
    another launch created the same sweep first, its plan is returned (``exists``)."""
    spec, targets = sweep.spec, sweep.spec.targets
    found = read_inputs(spec, run_here=sweep.capacity.decoders_run_here, log=log)
    name, existing = find_sweep(bucket, spec, found.digest, log)
    if existing is not None:
        return plan_result(existing, True, found.circuits, sweep.capacity, spec.pricing,
                           sweep.options.gpus)
    costs, features = estimate_costs(found.circuits, found.decoders, found.strong_ids,
                                     calibrate=spec.partition.calibrate,
                                     calibrate_seconds=spec.partition.calibrate_seconds,
                                     custom_decoders=found.custom, log=log, masks=found.masks,
                                     pilot_here=lambda d: d in found.runs_here)
    for entry in found.entries:
        entry.features = features.get(entry.key)
    # From the count to the manifest's commit, no other launch plans in this bucket.
    with plan_lock(bucket, log) if commit else contextlib.nullcontext() as lock:
        held = count_holdings(bucket, found, costs, targets, sweep=name, commit=commit, log=log)
        todo = held.todo
        plan = (plan_sweep(todo, targets, spec.partition, sweep.capacity,
                           model_error=MODEL_ERROR, goals=held.goals) if todo else
                Plan([], targets.max_shots, targets.max_errors, strategy="nothing left"))
        manifest = Manifest(
            sweep=name,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            decoders=found.decoders,
            max_shots=targets.max_shots,
            max_errors=targets.max_errors,
            circuits=found.entries,
            plan=plan,
            inputs_digest=found.digest,
            backend=sweep.backend.name,
            custom_decoders_module_function=spec.inputs.custom_decoders_module_function,
            sinter_args=found.sinter_args,
            custom_error_count_key=targets.custom_error_count_key,
            tasks=[dataclasses.asdict(c) for c in held.costs],
            existing=held.rows.to_manifest(targets.custom_error_count_key),
            metadata_from_names=found.metadata_from_names,
        )
        stored = manifest
        if lock is not None and plan.batches:
            lock.check()  # still this launch's: no other launch counted these rows meanwhile
            stored = upload_sweep(bucket, manifest, found.circuits, log)
            if stored is not manifest:  # another launch created the sweep first: its plan
                ignored = ignored_flags(spec.partition, stored)
                if ignored:
                    log(f"warning: {', '.join(ignored)} ignored: sweep {name!r} keeps the plan "
                        f"another launch stored ({len(stored.batches)} batch(es))")
    return plan_result(stored, stored is not manifest, found.circuits, sweep.capacity,
                       spec.pricing, sweep.options.gpus)


def plan_only(circuits: Any, settings: Mapping[str, Any], log: Log) -> PlanResult:
    """What ``qec_kiln.plan`` does: the plan, with nothing uploaded (an unreachable bucket reads as
    empty, with a warning)."""
    sweep = Sweep.build(circuits, settings)
    bucket = sweep.backend.open_bucket(sweep.spec.bucket, must_reach=False, launching=False,
                                       log=log)
    return prepare_sweep(sweep, bucket, log)


BeforeStart = Callable[[PlanResult, list[str], Relaunch | None], None]


def launch_sweep(circuits: Any, settings: Mapping[str, Any], *, dry_run: bool, log: Log,
                 live: bool = False, before_start: BeforeStart | None = None) -> LaunchResult:
    """What ``qec_kiln.launch`` does: plan (uploaded unless ``dry_run``), then start every batch that is
    neither finished nor running, or describe them (``dry_run``)."""
    sweep = Sweep.build(circuits, settings)
    backend = sweep.backend
    bucket = backend.open_bucket(sweep.spec.bucket, must_reach=not dry_run, launching=True,
                                 log=log)
    prepared = prepare_sweep(sweep, bucket, log, commit=not dry_run)
    m = prepared.manifest
    request = LaunchRequest(
        log=log, live=live, bucket_url=bucket.url, sweep=m.sweep,
        batch_ids=tuple(b.id for b in m.batches), options=sweep.options,
        num_batches_total=len(m.batches), kiln_version=__version__,
        decoders=tuple(m.decoders),
        custom_decoders_module_function=m.custom_decoders_module_function,
        node_hour_price=prepared.node_hour_price)
    if not m.batches:
        log(f"nothing to launch: every task already reaches max_shots or max_errors with the "
            f"rows that exist (in {bucket.url} or --existing-data)")
        return LaunchResult(prepared, bucket.url, "nothing to launch",
                            dry_run=DryRun("nothing to sample") if dry_run else None)
    if dry_run:
        dry = DryRun(backend.describe(request), backend.describe_json(request))
        for w in backend.warnings():
            log(f"warning: {w}")
        return LaunchResult(prepared, bucket.url, "dry run: nothing was uploaded or launched",
                            dry_run=dry)
    states = backend.job_states(bucket.url, m.sweep) if prepared.exists else {}
    todo, relaunch = batches_to_start(bucket, m, prepared.exists, states)
    if relaunch is not None:
        log(f"{len(relaunch.done)} batch(es) already finished, {len(relaunch.running)} running")
    if not todo:
        log(f"nothing to launch: sweep {m.sweep!r} has no unfinished, idle batch; "
            "see `qec-kiln status`")
        return LaunchResult(prepared, bucket.url, "nothing to launch", relaunch=relaunch)
    if before_start is not None:
        before_start(prepared, todo, relaunch)
    started = backend.launch(dataclasses.replace(request, batch_ids=tuple(todo)))
    for w in backend.warnings():
        log(f"warning: {w}")
    return LaunchResult(prepared, bucket.url, started.message, launched=todo, submission=started,
                        relaunch=relaunch)


__all__ = ["DryRun", "LaunchResult", "Relaunch", "Sweep", "launch_sweep", "plan_only",
           "prepare_sweep"]
