"""A new sweep's manifest (:func:`plan_new_sweep`): the tasks' costs with the rates measured
in the rows the bucket already holds in place of the model's guesses, and a plan for what is
left of each task's targets."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

from qec_kiln._planning._cost import Calibration, TaskCost
from qec_kiln._planning.capacity import Capacity
from qec_kiln._planning.plan import plan_sweep
from qec_kiln._planning.result import MODEL_ERROR
from qec_kiln._sweep.batches import Plan
from qec_kiln._sweep.existing import ExistingRows
from qec_kiln._sweep.holdings import Holdings
from qec_kiln._sweep.inputs import SweepInputs
from qec_kiln._sweep.manifest import Manifest
from qec_kiln._sweep.spec import SweepSpec


def plan_new_sweep(name: str, found: SweepInputs, costs: Sequence[TaskCost], held: Holdings,
                   spec: SweepSpec, backend: str, capacity: Capacity) -> Manifest:
    """The manifest of sweep ``name``: its inputs, and a plan of only what ``held`` leaves of
    each task's targets (none when every task already reaches them)."""
    targets = spec.targets
    measured = with_measured_rates(costs, held.rows)
    todo = [c for c in measured if c.strong_id in held.goals]
    plan = (plan_sweep(todo, targets, spec.partition, capacity, model_error=MODEL_ERROR,
                       goals=held.goals) if todo else
            Plan([], targets.max_shots, targets.max_errors, strategy="nothing left"))
    own = targets.batch_options_by_strong_id(found.strong_ids)
    if own:  # each shard runs with its task's own sinter batch options (see sinter_runs)
        for b in plan.batches:
            b.shards = [dataclasses.replace(s, batch_options=own.get(s.strong_id))
                        for s in b.shards]
    return Manifest(
        sweep=name,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        decoders=found.decoders,
        max_shots=targets.max_shots,
        max_errors=targets.max_errors,
        circuits=found.entries,
        plan=plan,
        inputs_digest=found.digest,
        backend=backend,
        custom_decoders_module_function=spec.inputs.custom_decoders_module_function,
        sinter_args=found.sinter_args,
        custom_error_count_key=targets.custom_error_count_key,
        tasks=[dataclasses.asdict(c) for c in measured],
        existing=held.rows.to_manifest(targets.custom_error_count_key),
        metadata_from_names=found.metadata_from_names,
        shipped=found.shipped.record if found.shipped else None,
    )


def with_measured_rates(costs: Sequence[TaskCost], rows: ExistingRows) -> list[TaskCost]:
    """Each task's cost with the seconds/shot and error rate of its existing rows in place of
    the model's guesses (the model's rate as the prior: zero errors bound it, never zero).

    >>> import sinter
    >>> rows = ExistingRows()
    >>> rows.add("s", sinter.TaskStats(strong_id="a", decoder="pymatching", json_metadata={},
    ...                                shots=10_000, errors=100, seconds=2.0))
    >>> t = with_measured_rates([TaskCost("a.stim", "pymatching", "a", 1e-6, 1e-4)], rows)[0]
    >>> t.seconds_per_shot, round(t.p_logical, 3)
    (0.0002, 0.01)
    """
    out = []
    for c in costs:
        st = rows.stats.get(c.strong_id)
        if st is not None and st.shots > 0 and st.seconds > 0:
            cal = Calibration(st.seconds / st.shots, st.shots, st.errors)
            c = dataclasses.replace(c, seconds_per_shot=cal.seconds_per_shot,
                                    p_logical=cal.p_logical_estimate(c.p_logical))
        out.append(c)
    return out


__all__ = ["plan_new_sweep", "with_measured_rates"]
