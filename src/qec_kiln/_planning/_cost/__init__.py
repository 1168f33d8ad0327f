"""Predict what one sinter task costs (:mod:`._model`), measure it with short pilot runs
(:mod:`._calibrate`, kept by :mod:`._cache`), and put both together for a sweep (:mod:`._estimate`).

Example:
    >>> shots_needed(10**6, 1000, 0.01)
    100000.0
"""

from qec_kiln._planning._cost._cache import (
    PRIOR_LOG_SIGMA,
    Calibration,
    CalibrationCache,
    default_cache_path,
)
from qec_kiln._planning._cost._calibrate import calibrate, calibrate_by_strong_id, strong_id_of
from qec_kiln._planning._cost._estimate import estimate_costs
from qec_kiln._planning._cost._model import (
    FALLBACK_DECODER,
    GRAPHLIKE_DISTANCE_MAX_DEM_ERRORS,
    MIN_SECONDS_PER_SHOT,
    PROCESS_STARTUP_SECONDS,
    CircuitFeatures,
    TaskCost,
    load_model,
    predict_logical_error_rate,
    predict_seconds_per_shot,
    predict_task_overhead_seconds,
    predict_task_seconds,
    shots_needed,
)

__all__ = [
    "FALLBACK_DECODER",
    "GRAPHLIKE_DISTANCE_MAX_DEM_ERRORS",
    "MIN_SECONDS_PER_SHOT",
    "PRIOR_LOG_SIGMA",
    "PROCESS_STARTUP_SECONDS",
    "Calibration",
    "CalibrationCache",
    "CircuitFeatures",
    "TaskCost",
    "calibrate",
    "calibrate_by_strong_id",
    "default_cache_path",
    "estimate_costs",
    "load_model",
    "predict_logical_error_rate",
    "predict_seconds_per_shot",
    "predict_task_overhead_seconds",
    "predict_task_seconds",
    "shots_needed",
    "strong_id_of",
]
