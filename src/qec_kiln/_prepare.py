"""From settings to a plan: the steps ``qec_kiln.plan`` and ``qec_kiln.launch`` share, each
called once, in order (a launch then starts the batches, in ``_command/_main_launch.py``).

1. :meth:`Sweep.build`: the settings as a ``SweepSpec``, its backend, the backend's options
   and its :class:`~qec_kiln._planning.capacity.Capacity` (asked once); then the bucket,
   checked by the backend.
2. :func:`prepare_sweep`: the inputs (``_sweep.inputs``), which sweep this is
   (``_sweep.store``), and for a new sweep the predicted costs (``_planning``), what the
   bucket already holds of its tasks (``_planning.holdings``, under the bucket's planning lock
   for a launch), the plan (``_planning``) and its upload (``_sweep.store``).

A sweep is identified by its name in a bucket. Launching is idempotent: if the sweep's manifest
already exists with the same inputs, its stored plan is reused and only batches that are neither
finished (by their fragments) nor running (by the backend) are started again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from qec_kiln._backends import Backend, get_backend
from qec_kiln._errors import Log
from qec_kiln._planning._cost import estimate_costs
from qec_kiln._planning.capacity import Capacity
from qec_kiln._planning.holdings import count_holdings, plan_lock
from qec_kiln._planning.plan import plan_sweep
from qec_kiln._planning.result import MODEL_ERROR, PlanResult, plan_result
from qec_kiln._storage import Bucket
from qec_kiln._sweep.batches import Plan
from qec_kiln._sweep.inputs import read_inputs
from qec_kiln._sweep.manifest import Manifest
from qec_kiln._sweep.spec import SweepSpec
from qec_kiln._sweep.store import find_sweep, ignored_flags, upload_sweep


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
            shipped=found.shipped.record if found.shipped else None,
        )
        stored = manifest
        if lock is not None and plan.batches:
            lock.check()  # still this launch's: no other launch counted these rows meanwhile
            stored = upload_sweep(bucket, manifest, found.circuits, log,
                                  found.shipped.blobs if found.shipped else None)
            if stored is not manifest:  # another launch created the sweep first: its plan
                ignored = ignored_flags(spec.partition, stored)
                if ignored:
                    log(f"warning: {', '.join(ignored)} ignored: sweep {name!r} keeps the plan "
                        f"another launch stored ({len(stored.batches)} batch(es))")
    return plan_result(stored, stored is not manifest, found.circuits, sweep.capacity,
                       spec.pricing, sweep.options.gpus)


__all__ = ["Sweep", "prepare_sweep"]
