"""discover → plan → upload → start: what ``qec_kiln.plan`` and ``qec_kiln.launch`` do.

A sweep is identified by its name in a bucket. Launching is idempotent: if the sweep's manifest
already exists with the same inputs, its stored plan is reused and only batches that are neither
finished (by their fragments) nor running (by the backend) are started again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from qec_kiln._backends import Backend, LaunchRequest, Submission, get_backend
from qec_kiln._errors import KilnError
from qec_kiln._planning.queue import queue_order
from qec_kiln._planning.result import PlanResult, plan_result
from qec_kiln._report.status import sweep_progress
from qec_kiln._storage import Bucket
from qec_kiln._sweep.inputs import read_inputs
from qec_kiln._sweep.manifest import (
    Manifest,
)
from qec_kiln._sweep.spec import SweepSpec
from qec_kiln._sweep.store import find_sweep
from qec_kiln._topup import plan_new_sweep
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
    """Read the inputs, find the sweep, and plan it (or reload the stored plan of an existing
    sweep with the same inputs): one call per stage.

    A new plan counts what already exists of its tasks (the bucket's other sweeps and
    --existing-data files) and gives each task only what is left of its targets (none when it
    already reaches them), as sinter counts its resume file. ``commit`` (a launch): count and
    upload under the bucket's planning lock, importing --merge-existing-data rows first; the
    result's ``committed`` says whether this call created the manifest."""
    spec, backend = sweep.spec, sweep.backend
    found = read_inputs(spec, run_here=backend.capacity(sweep.options, 1).decoders_run_here,
                        log=log)
    name, existing = find_sweep(bucket, spec.name, spec.circuits, found.digest, log)
    if existing is not None:
        log(f"sweep {name!r} exists in {bucket.url} with the same inputs: reusing its plan")
        ignored = _ignored_flags(spec, existing)
        if ignored:
            log(f"warning: {', '.join(ignored)} ignored: sweep {name!r} keeps its stored plan "
                f"({len(existing.batches)} batch(es)); give --name NEW for a new plan")
        return plan_result(existing, True, found.circuits,
                           backend.capacity(sweep.options, len(existing.batches)),
                           spec.pricing, sweep.options.gpus)
    return plan_new_sweep(spec, lambda n: backend.capacity(sweep.options, n), backend.name,
                          found, name, bucket, log, commit=commit)




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
           "prepare_sweep"]
