"""The predicted cost of every (circuit, decoder) task of a sweep: the fitted model, or, with
``calibrate=True``, a short pilot run of sinter on this machine (cached by strong_id).

Example:
    >>> import pathlib, tempfile, stim
    >>> from qec_kiln._sweep.discover import discover_circuits, check_duplicates
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
    ...     after_clifford_depolarization=0.01).to_file(folder / "d=3.stim")
    >>> circuits = discover_circuits(str(folder))
    >>> costs, features = estimate_costs(circuits, ["pymatching"],
    ...                                  check_duplicates(circuits, ["pymatching"]))
    >>> [(c.circuit, c.decoder) for c in costs], features["d=3.stim"]["graphlike_distance"]
    ([('d=3.stim', 'pymatching')], 3)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qec_kiln._planning._cost._cache import Calibration, CalibrationCache
from qec_kiln._planning._cost._calibrate import calibrate_by_strong_id
from qec_kiln._planning._cost._model import CircuitFeatures, TaskCost

if TYPE_CHECKING:
    from qec_kiln._sweep.discover import CircuitFile

__all__ = ["estimate_costs"]


def estimate_costs(
    circuits: Sequence[CircuitFile],
    decoders: Sequence[str],
    strong_ids: Mapping[tuple[str, str], str],
    *,
    calibrate: bool = False,
    calibrate_seconds: float = 60.0,
    custom_decoders: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    masks: Mapping[str, tuple[Any, Any]] | None = None,
) -> tuple[list[TaskCost], dict[str, dict[str, Any]]]:
    """TaskCosts for every (circuit, decoder), and each circuit's features (for the manifest).

    ``strong_ids`` maps (circuit key, decoder) to the task's strong_id
    (``_discover.check_duplicates``). With ``calibrate``, tasks not in the
    :class:`CalibrationCache` are pilot-run for up to ``calibrate_seconds`` in all.
    """
    features = {c.key: CircuitFeatures.of(c.circuit, c.dem) for c in circuits}
    calibrations: dict[str, Calibration] = {}
    if calibrate:
        tasks = {  # with the sweep's postselection masks: the pilot samples the same task
            strong_ids[(c.key, d)]: c.task(d, (masks or {}).get(c.key, (None, None)))
            for c in circuits
            for d in decoders
        }
        calibrations = calibrate_by_strong_id(tasks, seconds_budget=calibrate_seconds,
                                              cache=CalibrationCache(),
                                              custom_decoders=custom_decoders, log=log)
    out = []
    for c in circuits:
        for d in decoders:
            sid = strong_ids[(c.key, d)]
            out.append(TaskCost.predict(features[c.key], d, circuit=c.key, strong_id=sid,
                                        calibration=calibrations.get(sid)))
    return out, {k: f.to_json() for k, f in features.items()}
