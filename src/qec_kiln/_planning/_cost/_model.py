"""The fitted cost model: what one sinter task is predicted to cost, before anything is sampled.

A task's cost is ``overhead + seconds_per_shot * shots_needed`` seconds of one sinter worker
process, where ``shots_needed = min(max_shots, max_errors / p_logical)``. This module gives
:class:`CircuitFeatures` (the few numbers of a circuit that the cost depends on) and
:func:`predict_seconds_per_shot`, :func:`predict_task_overhead_seconds`,
:func:`predict_logical_error_rate` and :data:`PROCESS_STARTUP_SECONDS`: a model fitted by
``bench/fit_cost_model.py`` on real ``sinter.collect`` runs; its coefficients are in
``qec_kiln/data/cost_model.json``.

Example:
    >>> import stim
    >>> c = stim.Circuit.generated("surface_code:rotated_memory_x", distance=5, rounds=5,
    ...                            after_clifford_depolarization=0.005)
    >>> f = CircuitFeatures.of(c)
    >>> f.graphlike_distance
    5
    >>> 0 < predict_seconds_per_shot(f, "pymatching") < 1e-3
    True
    >>> shots_needed(10**6, 1000, 0.01)
    100000.0
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import stim

from qec_kiln._sweep.discover import dem_for_circuit

if TYPE_CHECKING:
    from qec_kiln._planning._cost._cache import Calibration

__all__ = [
    "PROCESS_STARTUP_SECONDS",
    "CircuitFeatures",
    "TaskCost",
    "load_model",
    "predict_logical_error_rate",
    "predict_seconds_per_shot",
    "predict_task_overhead_seconds",
    "predict_task_seconds",
    "shots_needed",
]

#: ``shortest_graphlike_error`` is only run on DEMs with at most this many error mechanisms:
#: its time grows with them, and up to this many it stays small beside the rest of a plan.
GRAPHLIKE_DISTANCE_MAX_DEM_ERRORS = 2_000_000

#: Smallest seconds-per-shot any prediction returns (guards empty or noiseless circuits).
MIN_SECONDS_PER_SHOT = 1e-9

#: Decoder whose fitted figures stand in for decoders the model does not know.
FALLBACK_DECODER = "pymatching"


# ---------------------------------------------------------------------------------------------
# Model file
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def load_model() -> dict[str, Any]:
    """The fitted coefficients (``qec_kiln/data/cost_model.json``), read once.

    Example:
        >>> load_model()["schema"]
        1
    """
    text = importlib.resources.files("qec_kiln").joinpath("data/cost_model.json").read_text()
    return json.loads(text)


#: Wall seconds of one ``sinter collect`` CLI invocation on a one-shot, tiny circuit
#: (interpreter start, imports, worker spawn, CSV write): add it once per process the plan starts.
PROCESS_STARTUP_SECONDS: float = float(load_model()["process_startup_seconds"])


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------




def _count_errors(dem: stim.DetectorErrorModel) -> tuple[int, float]:
    """(number of error mechanisms, sum of their probabilities), REPEAT blocks unrolled."""
    n = 0
    total = 0.0
    for inst in dem:
        if isinstance(inst, stim.DemRepeatBlock):
            sub_n, sub_total = _count_errors(inst.body_copy())
            n += sub_n * inst.repeat_count
            total += sub_total * inst.repeat_count
        elif inst.type == "error":
            n += 1
            total += inst.args_copy()[0]
    return n, total


@dataclasses.dataclass(frozen=True)
class CircuitFeatures:
    """The numbers of a circuit that its sampling cost and logical error rate depend on.

    Example:
        >>> c = stim.Circuit.generated("repetition_code:memory", distance=5, rounds=5,
        ...                            after_clifford_depolarization=0.01)
        >>> f = CircuitFeatures.of(c)
        >>> (f.num_detectors, f.num_observables, f.graphlike_distance)
        (24, 1, 5)
        >>> CircuitFeatures.from_json(f.to_json()) == f
        True
    """

    num_qubits: int
    num_detectors: int
    num_observables: int
    num_measurements: int
    num_dem_errors: int
    mean_error_probability: float
    graphlike_distance: int | None

    @staticmethod
    def of(circuit: stim.Circuit, dem: stim.DetectorErrorModel | None = None) -> CircuitFeatures:
        """Features of ``circuit``; ``dem`` defaults to :func:`dem_for_circuit` (what sinter uses).

        ``graphlike_distance`` is ``len(dem.shortest_graphlike_error())``, or None when the DEM
        has more than :data:`GRAPHLIKE_DISTANCE_MAX_DEM_ERRORS` mechanisms or no graphlike
        logical error.
        """
        if dem is None:
            dem = dem_for_circuit(circuit)
        n_errors, total_p = _count_errors(dem)
        distance: int | None = None
        if 0 < n_errors <= GRAPHLIKE_DISTANCE_MAX_DEM_ERRORS and dem.num_observables > 0:
            try:
                distance = len(dem.shortest_graphlike_error())
            except ValueError:
                distance = None
        return CircuitFeatures(
            num_qubits=circuit.num_qubits,
            num_detectors=circuit.num_detectors,
            num_observables=circuit.num_observables,
            num_measurements=circuit.num_measurements,
            num_dem_errors=n_errors,
            mean_error_probability=total_p / n_errors if n_errors else 0.0,
            graphlike_distance=distance,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_json`)."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> CircuitFeatures:
        """Inverse of :meth:`to_json`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(CircuitFeatures)}
        return CircuitFeatures(**{k: v for k, v in data.items() if k in names})

    @property
    def expected_errors_per_shot(self) -> float:
        """Sum of the DEM's error probabilities: mechanisms that fire in an average shot."""
        return self.mean_error_probability * self.num_dem_errors


# ---------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------


def _decoder_entry(table: Mapping[str, Any], decoder: str) -> Any:
    return table.get(decoder, table.get(FALLBACK_DECODER))


def _pymatching_seconds_per_shot(f: CircuitFeatures, c: Mapping[str, float]) -> float:
    n = max(f.num_detectors, 1)
    lam = f.expected_errors_per_shot
    degree = max(f.num_dem_errors, 1) / n
    sampling = math.exp(c["log_a"]) * f.num_measurements
    decoding = 0.0
    if lam > 0:
        decoding = math.exp(
            c["log_b"] + c["c"] * math.log(lam) + c["e"] * math.log(degree) + c["f"] * math.log(n)
        )
    return sampling + decoding


def _decoder_factor(f: CircuitFeatures, decoder: str) -> float:
    factors = load_model()["seconds_per_shot"]["decoder_factors"]
    entry = factors.get(decoder)
    if entry is None:
        return 1.0
    lam = max(f.expected_errors_per_shot, 1e-12)
    return math.exp(entry["log_k"] + entry["g"] * math.log(lam))


def predict_seconds_per_shot(features: CircuitFeatures, decoder: str) -> float:
    """Predicted seconds per shot of one sinter worker (stim sampling + decoding).

    The fitted form (coefficients in ``cost_model.json``; ``lam`` = expected errors per shot =
    mean_error_probability * num_dem_errors, ``N`` = num_detectors, ``E`` = num_dem_errors,
    ``M`` = num_measurements)::

        s_pymatching = exp(log_a) * M + exp(log_b) * lam**c * (E/N)**e * N**f
        s_decoder    = s_pymatching * exp(log_k[decoder]) * lam**g[decoder]

    Decoders without a fitted factor (unknown names, custom decoders) get pymatching's figure.

    Example:
        >>> small = CircuitFeatures(26, 24, 1, 32, 291, 0.0029, 3)
        >>> big = CircuitFeatures(376, 2184, 1, 2366, 48137, 0.0017, 13)
        >>> predict_seconds_per_shot(small, "pymatching") < predict_seconds_per_shot(big, "pymatching")
        True
    """
    coef = load_model()["seconds_per_shot"]["pymatching"]
    seconds = _pymatching_seconds_per_shot(features, coef) * _decoder_factor(features, decoder)
    return max(seconds, MIN_SECONDS_PER_SHOT)


def predict_task_overhead_seconds(features: CircuitFeatures, decoder: str) -> float:
    """Seconds a sinter worker spends on a task before its first shot.

    Measured end to end for a task given without a DEM (as ``sinter collect`` does): the worker
    builds the DEM twice (strong id, then job), compiles the decoder and the sampler. Fitted as
    ``o0 + o1 * num_dem_errors`` per decoder; unknown decoders get pymatching's line. Does not
    include :data:`PROCESS_STARTUP_SECONDS`.

    Example:
        >>> f = CircuitFeatures(376, 2184, 1, 2366, 48137, 0.0017, 13)
        >>> 0 < predict_task_overhead_seconds(f, "pymatching") < 5
        True
    """
    entry = _decoder_entry(load_model()["task_overhead"], decoder)
    return max(0.0, entry["o0"] + entry["o1"] * features.num_dem_errors)


def _estimated_distance(f: CircuitFeatures) -> int:
    if f.graphlike_distance is not None:
        return max(1, f.graphlike_distance)
    # Unknown: a d-round distance-d surface-code memory has ~d^3 detectors.
    return max(1, round(max(f.num_detectors, 1) ** (1 / 3)))


def predict_logical_error_rate(features: CircuitFeatures, decoder: str | None = None) -> float:
    """A prior for the per-shot logical error rate, before anything was sampled.

    Fitted (binomial likelihood, pymatching) on rotated/unrotated surface-code and repetition-code
    memories; with ``k = (d + 1) / 2`` (``d`` = graphlike distance, or ``num_detectors**(1/3)``
    when unknown), ``p`` = mean DEM error probability, ``E``, ``N`` as above and ``K`` =
    num_observables::

        x   = exp(c0 + k * (log p + c1 + c2 * log(E/N)) + c3 * log N)
        p_L = s * (1 - exp(-x / s)) * factor[decoder],   s = 1 - 2**-K

    Median 1.2x, worst ~3x off the measured rate on the fit data (surface codes at d=3..13, up
    to 25 rounds); worse on other families (pymatching on XYZ color codes: 2-6x): treat it as an
    order of magnitude and prefer :func:`calibrate`. 0 for circuits without observables or noise.

    Example:
        >>> d5 = CircuitFeatures(49, 120, 1, 145, 1958, 0.00218, 5)
        >>> d9 = CircuitFeatures(161, 720, 1, 800, 14969, 0.00175, 9)
        >>> predict_logical_error_rate(d9) < predict_logical_error_rate(d5) < 0.1
        True
    """
    f = features
    if f.num_observables <= 0 or f.mean_error_probability <= 0 or f.num_dem_errors <= 0:
        return 0.0
    model = load_model()["logical_error_rate"]
    c = model["coefficients"]
    n = max(f.num_detectors, 1)
    k = (_estimated_distance(f) + 1) / 2
    log_x = (
        c["c0"]
        + k * (math.log(f.mean_error_probability) + c["c1"] + c["c2"] * math.log(f.num_dem_errors / n))
        + c["c3"] * math.log(n)
    )
    saturation = 1.0 - 2.0 ** -min(f.num_observables, 60)
    p = saturation * -math.expm1(-math.exp(min(log_x, 50.0)) / saturation)
    if decoder is not None:
        p *= model["decoder_factors"].get(decoder, 1.0)
    return min(p, saturation)


def shots_needed(max_shots: int, max_errors: int | None, p_logical: float) -> float:
    """Expected shots before sinter stops: ``min(max_shots, max_errors / p_logical)``, at least 1.

    Example:
        >>> shots_needed(10**6, 1000, 1e-2)
        100000.0
        >>> shots_needed(10**6, 1000, 0.0)  # never sees an error: runs to max_shots
        1000000.0
        >>> shots_needed(10**6, None, 0.5)
        1000000.0
    """
    shots = float(max_shots)
    if max_errors is not None and p_logical > 0:
        shots = min(shots, max_errors / p_logical)
    return max(1.0, shots)


@dataclasses.dataclass(frozen=True)
class TaskCost:
    """The predicted cost of one (circuit, decoder) task: what the planner balances.

    Example:
        >>> t = TaskCost("a.stim", "pymatching", "id-a", seconds_per_shot=1e-6, p_logical=1e-2,
        ...              overhead_seconds=0.5)
        >>> t.shots_needed(10**6, 1000)
        100000.0
        >>> t.predicted_seconds(10**6, 1000)
        0.6
    """

    circuit: str  # circuit key (path relative to the sweep folder)
    decoder: str
    strong_id: str
    seconds_per_shot: float
    p_logical: float
    overhead_seconds: float = 0.0

    def shots_needed(self, max_shots: int, max_errors: int | None) -> float:
        """Shots sinter will take before it stops (:func:`shots_needed`)."""
        return shots_needed(max_shots, max_errors, self.p_logical)

    def predicted_seconds(self, max_shots: int, max_errors: int | None) -> float:
        """Seconds of one worker: overhead + seconds/shot * shots needed."""
        return self.overhead_seconds + self.seconds_per_shot * self.shots_needed(max_shots, max_errors)

    @staticmethod
    def predict(
        features: CircuitFeatures,
        decoder: str,
        *,
        circuit: str = "",
        strong_id: str = "",
        calibration: Calibration | None = None,
    ) -> TaskCost:
        """The model's prediction for ``features`` and ``decoder``.

        A ``calibration`` replaces the predicted seconds per shot and sharpens ``p_logical``
        (the model's prior and the pilot's counts, see ``Calibration.p_logical_estimate``).
        """
        prior = predict_logical_error_rate(features, decoder)
        if calibration is None:
            sps = predict_seconds_per_shot(features, decoder)
            p_l = prior
        else:
            sps = calibration.seconds_per_shot
            p_l = calibration.p_logical_estimate(prior)
        return TaskCost(circuit=circuit, decoder=decoder, strong_id=strong_id, seconds_per_shot=sps,
                        p_logical=p_l,
                        overhead_seconds=predict_task_overhead_seconds(features, decoder))


def predict_task_seconds(
    features: CircuitFeatures,
    decoder: str,
    *,
    max_shots: int,
    max_errors: int | None,
    calibration: Calibration | None = None,
) -> float:
    """Predicted seconds of one worker for a whole task: overhead + seconds/shot * shots needed.

    A ``calibration`` replaces the predicted seconds per shot and sharpens ``p_logical``
    (see :meth:`TaskCost.predict`).

    Example:
        >>> f = CircuitFeatures(49, 120, 1, 145, 1958, 0.00218, 5)
        >>> a = predict_task_seconds(f, "pymatching", max_shots=10**6, max_errors=100)
        >>> b = predict_task_seconds(f, "pymatching", max_shots=10**6, max_errors=1000)
        >>> a < b
        True
    """
    cost = TaskCost.predict(features, decoder, calibration=calibration)
    return cost.predicted_seconds(max_shots, max_errors)
