"""Predicted cost of each (circuit, decoder) task, from circuit features and, with ``--calibrate``,
a short pilot run of sinter on this machine (cached by strong_id).

Example:
    >>> costs = estimate_costs(circuits, ["pymatching"], ids)  # doctest: +SKIP
    >>> costs[0].seconds_per_shot  # doctest: +SKIP
    1.3e-07
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qec_kiln import _cost
from qec_kiln._discover import CircuitFile
from qec_kiln._plan import TaskCost


def estimate_costs(
    circuits: Sequence[CircuitFile],
    decoders: Sequence[str],
    strong_ids: dict[tuple[str, str], str],
    *,
    calibrate: bool = False,
    calibrate_seconds: float = 60.0,
    custom_decoders: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[TaskCost], dict[str, dict]]:
    """TaskCosts for every (circuit, decoder), and each circuit's features (for the manifest)."""
    features = {c.key: _cost.CircuitFeatures.of(c.circuit, c.dem) for c in circuits}
    calibrations: dict[str, _cost.Calibration] = {}
    if calibrate:
        calibrations = _calibrate(circuits, decoders, strong_ids, calibrate_seconds,
                                  custom_decoders, log)
    out = []
    for c in circuits:
        f = features[c.key]
        for d in decoders:
            prior = _cost.predict_logical_error_rate(f, d)
            sid = strong_ids[(c.key, d)]
            cal = calibrations.get(sid)
            sps = cal.seconds_per_shot if cal else _cost.predict_seconds_per_shot(f, d)
            p_l = cal.p_logical_estimate(prior) if cal else prior
            out.append(TaskCost(
                circuit=c.key, decoder=d, strong_id=sid, seconds_per_shot=sps, p_logical=p_l,
                overhead_seconds=_cost.predict_task_overhead_seconds(f, d),
            ))
    return out, {k: f.to_json() for k, f in features.items()}


def _calibrate(circuits, decoders, strong_ids, seconds, custom_decoders, log) -> dict:
    import sinter

    cache = _cost.CalibrationCache()
    tasks = []
    cached = {}
    for c in circuits:
        for d in decoders:
            sid = strong_ids[(c.key, d)]
            hit = cache.get(sid)
            if hit is not None:
                cached[sid] = hit
                continue
            tasks.append(sinter.Task(circuit=c.circuit, decoder=d, detector_error_model=c.dem,
                                     json_metadata=c.metadata))
    if tasks:
        if log:
            log(f"calibrating {len(tasks)} task(s) for up to {seconds:g} s "
                f"({len(cached)} cached)")
        fresh = _cost.calibrate(tasks, seconds_budget=seconds, cache=cache,
                                custom_decoders=custom_decoders)
        cached.update(fresh)
    return cached
