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

from qec_kiln._errors import Log
from qec_kiln._planning._cost._cache import Calibration, CalibrationCache
from qec_kiln._planning._cost._calibrate import calibrate_by_strong_id
from qec_kiln._planning._cost._model import CircuitFeatures, TaskCost

if TYPE_CHECKING:
    from qec_kiln._sweep.discover import CircuitFile

__all__ = ["MEASURED_DECODERS", "estimate_costs"]

#: Decoders whose speed the fitted model knows well (its figures for others, tesseract and
#: fusion_blossom included, were off by 2-30x on circuits unlike the fit's): others are piloted.
MEASURED_DECODERS = frozenset({"pymatching", "vacuous"})
#: The automatic pilot's budget: a few seconds per task, at most this many in all.
PILOT_SECONDS_MAX = 20.0


def _pilot_unmeasured(decoders: Sequence[str], tasks_of: Callable[[Sequence[str]], dict[str, Any]],
                      pilot_here: Callable[[str], bool], budget: float,
                      custom_decoders: Mapping[str, Any] | None,
                      log: Log) -> dict[str, Calibration]:
    """Time the tasks of decoders the model does not know with a short pilot (cached by
    strong_id), or say plainly that their predicted times are a guess."""
    unmeasured = [d for d in decoders if d not in MEASURED_DECODERS]
    here = [d for d in unmeasured if pilot_here(d)]
    for d in unmeasured:
        if d not in here:
            log(f"warning: decoder {d!r} is not in the cost model and does not run here, so its "
                "predicted times are a guess (pymatching's figures scaled); `--calibrate` on a "
                "machine with it installed measures them")
    if not here:
        return {}
    tasks = tasks_of(here)
    seconds = min(budget, PILOT_SECONDS_MAX, 2.0 + 1.0 * len(tasks))
    cache = CalibrationCache()
    if any(cache.get(sid) is None for sid in tasks):
        log(f"decoder(s) {', '.join(here)} not in the cost model: timing {len(tasks)} task(s) "
            f"with a pilot of up to {seconds:g} s here (--calibrate times every task)")
    try:
        return calibrate_by_strong_id(tasks, seconds_budget=seconds, cache=cache,
                                      custom_decoders=custom_decoders, log=None)
    except Exception as ex:  # the decoder itself failed on these circuits: the batch will too
        first = (str(ex).strip().splitlines() or [""])[0]
        log(f"warning: the pilot of decoder(s) {', '.join(here)} failed ({type(ex).__name__}: "
            f"{first}); their predicted times are a guess, and the batches will likely fail "
            "the same way")
        return {}


def estimate_costs(
    circuits: Sequence[CircuitFile],
    decoders: Sequence[str],
    strong_ids: Mapping[tuple[str, str], str],
    *,
    calibrate: bool = False,
    calibrate_seconds: float = 60.0,
    custom_decoders: Mapping[str, Any] | None = None,
    log: Log | None = None,
    masks: Mapping[str, tuple[Any, Any]] | None = None,
    pilot_here: Callable[[str], bool] = lambda decoder: False,
) -> tuple[list[TaskCost], dict[str, dict[str, Any]]]:
    """TaskCosts for every (circuit, decoder), and each circuit's features (for the manifest).

    ``strong_ids`` maps (circuit key, decoder) to the task's strong_id
    (``_sweep.discover.check_duplicates``). With ``calibrate``, tasks not in the
    :class:`CalibrationCache` are pilot-run for up to ``calibrate_seconds`` in all. Without
    it, the tasks of decoders the model was not fitted on (:data:`MEASURED_DECODERS`) get a
    short automatic pilot where ``pilot_here(decoder)`` (the decoder runs on this machine),
    and a ``warning:`` line saying their times are a guess where not.
    """
    features = {c.key: CircuitFeatures.of(c.circuit, c.dem) for c in circuits}
    calibrations: dict[str, Calibration] = {}

    def tasks_of(chosen: Sequence[str]) -> dict[str, Any]:
        return {  # with the sweep's postselection masks: the pilot samples the same task
            strong_ids[(c.key, d)]: c.task(d, (masks or {}).get(c.key, (None, None)))
            for c in circuits
            for d in chosen
        }

    if calibrate:
        calibrations = calibrate_by_strong_id(tasks_of(decoders), seconds_budget=calibrate_seconds,
                                              cache=CalibrationCache(),
                                              custom_decoders=custom_decoders, log=log)
    else:
        calibrations = _pilot_unmeasured(decoders, tasks_of, pilot_here, calibrate_seconds,
                                         custom_decoders, log or (lambda _: None))
    out = []
    for c in circuits:
        for d in decoders:
            sid = strong_ids[(c.key, d)]
            out.append(TaskCost.predict(features[c.key], d, circuit=c.key, strong_id=sid,
                                        calibration=calibrations.get(sid)))
    return out, {k: f.to_json() for k, f in features.items()}
