"""From settings to a plan: the steps ``qec_kiln.plan`` and ``qec_kiln.launch`` share, each
called once, in order (a launch then starts the batches, in ``_command/_main_launch.py``).

1. :meth:`Fleet.build`: where the sweep runs, from the settings alone: its backend, the
   backend's options (normalised and checked) and its
   :class:`~qec_kiln._planning.capacity.Capacity`, asked once. The caller then opens the
   bucket, checked by the backend.
2. :func:`prepare_sweep`: the inputs (``_sweep.inputs``), which sweep this is
   (``_sweep.store``), and for a new sweep the predicted costs (``_planning``), what the
   bucket already holds of its tasks (``_sweep.holdings``, under the bucket's planning lock
   for a launch), the manifest with its plan (``_planning.new_sweep``) and its upload
   (``_sweep.store``).

A sweep is identified by its name in a bucket. Launching is idempotent: if the sweep's manifest
already exists with the same inputs, its stored plan is reused and only batches that are neither
finished (by their fragments) nor running (by the backend) are started again.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

from qec_kiln._backends import Backend, get_backend
from qec_kiln._errors import Log
from qec_kiln._planning._cost import estimate_costs
from qec_kiln._planning.capacity import Capacity
from qec_kiln._planning.new_sweep import plan_new_sweep
from qec_kiln._planning.result import PlanResult
from qec_kiln._storage import Bucket
from qec_kiln._sweep.holdings import count_holdings
from qec_kiln._sweep.inputs import read_inputs
from qec_kiln._sweep.lease import plan_lock
from qec_kiln._sweep.spec import SweepSpec
from qec_kiln._sweep.store import find_sweep, ignored_flags, upload_sweep


@dataclasses.dataclass(frozen=True)
class Fleet:
    """Where a sweep runs, from its settings alone (no circuit is read): the backend, looked
    up, its options normalised and checked, and its capacity asked, once.

    >>> f = Fleet.build({"backend": "slurm", "backend_options": {"partition": "p"}})
    >>> f.backend.name, f.options.partition, f.capacity.slots, f.bucket_url
    ('slurm', 'p', None, 'kiln-results')
    """

    backend: Backend
    options: Any  # the backend's options dataclass
    capacity: Capacity
    settings: Mapping[str, Any]  # the sweep's settings, naming this backend and these options

    @classmethod
    def build(cls, settings: Mapping[str, Any]) -> Fleet:
        """The one way from settings (the API's keywords, or the CLI's flags) to a fleet."""
        SweepSpec.check_setting_names(settings)
        backend = get_backend(settings.get("backend") or SweepSpec.backend)
        options = backend.options(settings.get("backend_options"))
        backend.check_options(options)
        return cls(backend, options, backend.capacity(options),
                   {**settings, "backend": backend.name, "backend_options": options})

    @property
    def bucket_url(self) -> str:
        return SweepSpec.bucket_of(self.settings)


def prepare_sweep(circuits: Any, fleet: Fleet, bucket: Bucket, log: Log, *,
                  commit: bool = False) -> PlanResult:
    """Read the inputs, find the sweep, and plan it (or reload the stored plan of an existing
    sweep with the same inputs): one call per stage.

    A new plan counts what already exists of its tasks (the bucket's other sweeps and
    --existing-data files) and gives each task only what is left of its targets (none when it
    already reaches them), as sinter counts its resume file. ``commit`` (a launch): count and
    upload under the bucket's planning lock, importing --merge-existing-data rows first. When
    another launch created the same sweep first, its plan is returned (``exists``)."""
    spec = SweepSpec.build(circuits, fleet.settings)
    found = read_inputs(spec, run_here=fleet.capacity.decoders_run_here, log=log)
    name, existing = find_sweep(bucket, spec, found.digest, log)
    if existing is not None:
        return PlanResult(existing, True, found.circuits, fleet.capacity, spec.pricing,
                          fleet.options.gpus)
    costs, features = estimate_costs(found.circuits, found.decoders, found.strong_ids,
                                     calibrate=spec.partition.calibrate,
                                     calibrate_seconds=spec.partition.calibrate_seconds,
                                     custom_decoders=found.custom, log=log, masks=found.masks,
                                     pilot_here=lambda d: d in found.runs_here)
    for entry in found.entries:
        entry.features = features.get(entry.key)
    # From the count to the manifest's commit, no other launch plans in this bucket.
    with plan_lock(bucket, log) if commit else contextlib.nullcontext() as lock:
        held = count_holdings(bucket, found, spec.targets, sweep=name, commit=commit, log=log)
        manifest = plan_new_sweep(name, found, costs, held, spec, fleet.backend.name,
                                  fleet.capacity)
        stored = manifest
        if lock is not None and manifest.batches:
            lock.check()  # still this launch's: no other launch counted these rows meanwhile
            stored = upload_sweep(bucket, manifest, found.circuits, log,
                                  found.shipped.blobs if found.shipped else None)
            if stored is not manifest:  # another launch created the sweep first: its plan
                ignored = ignored_flags(spec.partition, stored)
                if ignored:
                    log(f"warning: {', '.join(ignored)} ignored: sweep {name!r} keeps the plan "
                        f"another launch stored ({len(stored.batches)} batch(es))")
    return PlanResult(stored, stored is not manifest, found.circuits, fleet.capacity,
                      spec.pricing, fleet.options.gpus)


__all__ = ["Fleet", "prepare_sweep"]
