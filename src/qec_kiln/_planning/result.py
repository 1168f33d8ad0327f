"""A sweep's plan with its predictions: what ``qec_kiln.plan`` returns (``PlanResult``)."""

from __future__ import annotations

import dataclasses
import functools

from qec_kiln._planning.capacity import Capacity
from qec_kiln._planning.makespan import list_schedule, predicted_makespan
from qec_kiln._sweep.batches import Batch
from qec_kiln._sweep.discover import CircuitFile
from qec_kiln._sweep.manifest import Manifest
from qec_kiln._sweep.spec import Pricing

#: Relative error of a batch's predicted work (the dry run's makespan and efficiency).
MODEL_ERROR = 0.2


@dataclasses.dataclass
class PlanResult:
    """A sweep's plan, what ``qec_kiln.plan`` returns: the manifest (batches, shards, predicted
    seconds) and how the backend would run it.

    ``exists``: the sweep was already in the bucket with the same inputs, and this is its stored
    plan. Hours are predicted: core-hours of sinter's work, wall hours with ``node_processes``
    processes per batch plus ``startup_seconds`` each, ``slots`` batches at once.
    """

    manifest: Manifest
    exists: bool  # the manifest was already in the bucket (a relaunch)
    circuits: list[CircuitFile] = dataclasses.field(repr=False)
    #: the backend's answer for any batch count (``capacity`` is it at this plan's)
    backend_capacity: Capacity = dataclasses.field(repr=False)
    pricing: Pricing = Pricing()
    gpus: str | None = None  # the backend's GPUs per batch (priced per GPU-hour)

    @functools.cached_property
    def capacity(self) -> Capacity:
        """How the backend runs these batches (processes, start-up, slots)."""
        return self.backend_capacity.at(len(self.manifest.batches))

    @functools.cached_property
    def estimated_cost(self) -> float | None:
        """Node-hours of all batches (start-up included) times the price of a node-hour,
        where prices per CPU or GPU hour were given."""
        node_hours = sum(self.wall_seconds(b.predicted_seconds)
                         for b in self.manifest.plan.batches) / 3600
        total = None
        if self.pricing.price_per_cpu_hour is not None:
            total = node_hours * self.node_processes * self.pricing.price_per_cpu_hour
        if self.pricing.price_per_gpu_hour is not None and self.gpus:
            gpus = self.gpus
            count = int(gpus.rpartition(":")[2] or 1) if ":" in gpus else 1
            total = (total or 0.0) + node_hours * count * self.pricing.price_per_gpu_hour
        return total

    @property
    def node_processes(self) -> int:
        return self.capacity.processes

    @property
    def startup_seconds(self) -> float:
        return self.capacity.startup_seconds

    @property
    def slots(self) -> int:
        return self.capacity.slots or len(self.batches)  # at(n) gives a number

    @property
    def sweep(self) -> str:
        return self.manifest.sweep

    @property
    def batches(self) -> list[Batch]:
        return self.manifest.batches

    @property
    def balance_ratio(self) -> float:
        """Predicted makespan over the ideal one (1.0: perfectly balanced)."""
        return self.manifest.plan.balance_ratio

    @property
    def node_hour_price(self) -> float | None:
        """The price of one node-hour implied by the estimated cost (None without prices)."""
        hours = sum(self.wall_seconds(b.predicted_seconds) for b in self.batches) / 3600
        if self.estimated_cost is None or hours <= 0:
            return None
        return self.estimated_cost / hours

    def wall_seconds(self, core_seconds: float) -> float:
        """Predicted wall seconds of a batch with ``core_seconds`` of work, start-up included."""
        return core_seconds / self.node_processes + self.startup_seconds

    @property
    def workers(self) -> int:
        """K: batches running at once, each worker taking the next batch when it is free."""
        return max(1, self.slots or len(self.batches))

    @property
    def work_seconds(self) -> float:
        """One worker's time for the whole sweep without start-up: predicted core-seconds / the
        processes of a batch."""
        return self.manifest.plan.total_predicted_seconds / self.node_processes

    def _model_makespan(self, batches: int) -> float:
        return predicted_makespan(self.work_seconds, batches, self.workers, self.startup_seconds,
                                  model_error=MODEL_ERROR) if self.work_seconds > 0 else 0.0

    @property
    def predicted_makespan_seconds(self) -> float:
        """Wall seconds until the last batch ends: the engine's queue (batches in plan order,
        longest first, each to the worker free first, a start-up each), and at least what the
        model's error adds to balanced batches (``queue.predicted_makespan``)."""
        walls = [b.predicted_seconds / self.node_processes for b in self.batches]
        queue = list_schedule(walls, self.workers, self.startup_seconds)
        return max(queue, self._model_makespan(len(walls)))

    def efficiency(self, makespan: float) -> float:
        """One worker's time / (K x makespan), start-up included."""
        return self.work_seconds / (self.workers * makespan) if makespan > 0 else 1.0

    @property
    def one_job_per_batch_makespan_seconds(self) -> float:
        """The same work as K balanced batches, one per worker (the model's error included)."""
        return self._model_makespan(self.workers)

    def task_rows(self) -> list[dict]:
        """Per task: what exists (counted toward the targets) and what is left to sample
        (the sum of its shards' targets; 0 when it already reaches them)."""
        m = self.manifest
        left = m.plan.task_targets()
        rows = []
        for t in m.tasks:
            had = m.existing.get(t["strong_id"], {})
            shots, errors = left.get(t["strong_id"], (0, 0))
            rows.append({"circuit": t["circuit"], "decoder": t["decoder"],
                         "strong_id": t["strong_id"], "existing_shots": had.get("shots", 0),
                         "existing_errors": had.get("errors", 0),
                         "existing_from": had.get("from", {}),
                         "left_shots": shots, "left_errors": errors})
        return rows

    def to_json(self) -> dict:
        """What ``qec-kiln plan --json`` prints."""
        plan = self.manifest.plan
        data = {
            "sweep": self.sweep,
            "existing": self.exists,
            "strategy": plan.strategy,
            "batches": [
                {"id": b.id, "circuits": len({s.circuit for s in b.shards}),
                 "shards": [s.to_json() for s in b.shards],
                 "predicted_core_hours": b.predicted_seconds / 3600,
                 "predicted_wall_hours": self.wall_seconds(b.predicted_seconds) / 3600,
                 "predicted_shots": b.predicted_shots}
                for b in plan.batches
            ],
            "balance_ratio": plan.balance_ratio,
            "total_predicted_cpu_hours": plan.total_predicted_seconds / 3600,
            "predicted_makespan_hours": self.predicted_makespan_seconds / 3600,
            "batches_at_once": self.slots or len(plan.batches),
            "workers": self.workers,
            "num_batches": len(plan.batches),
            "predicted_efficiency": self.efficiency(self.predicted_makespan_seconds),
            "one_job_per_batch": {
                "num_batches": self.workers,
                "predicted_makespan_hours": self.one_job_per_batch_makespan_seconds / 3600,
                "predicted_efficiency": self.efficiency(self.one_job_per_batch_makespan_seconds),
            },
            "max_shots": self.manifest.max_shots,
            "max_errors": self.manifest.max_errors,
            "tasks": self.task_rows(),
            "processes_per_batch": self.node_processes,
            "startup_seconds_per_batch": self.startup_seconds,
        }
        if self.estimated_cost is not None:
            data["estimated_cost"] = self.estimated_cost
        if self.manifest.shipped is not None:  # custom_decoders objects: names, kinds, digests
            data["shipped_decoders"] = self.manifest.shipped.to_json()
        return data


