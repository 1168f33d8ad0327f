"""Measure what sinter tasks cost with short pilot runs, and keep the results by strong_id.

:func:`calibrate` runs each task briefly through ``sinter.iter_collect`` (one worker); its
:class:`Calibration` replaces the model's predictions (see :mod:`qec_kiln._cost._model`), and
:class:`CalibrationCache` keeps calibrations between plans.

Example:
    >>> Calibration(seconds_per_shot=1e-6, shots=1000, errors=3).to_json()["shots"]
    1000
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import sys
import time
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import sinter
import stim

from qec_kiln._atomic import atomic_write
from qec_kiln._cost._model import (
    MIN_SECONDS_PER_SHOT,
    PROCESS_STARTUP_SECONDS,
    CircuitFeatures,
    dem_for_circuit,
    predict_seconds_per_shot,
    predict_task_overhead_seconds,
)

__all__ = [
    "Calibration",
    "CalibrationCache",
    "calibrate",
    "default_cache_path",
    "strong_id_of",
]


#: Spread (natural-log standard deviation) assumed for the logical-error-rate prior: a factor ~5.
PRIOR_LOG_SIGMA = math.log(5.0)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What a pilot run of one task measured.

    Example:
        >>> cal = Calibration(seconds_per_shot=2e-6, shots=10_000, errors=0)
        >>> 0 < cal.p_logical_estimate(prior=1e-3) < 1e-3   # zero errors: below the prior, not 0
        True
        >>> round(Calibration(1e-6, 100_000, 1000).p_logical_estimate(prior=1e-4), 4)
        0.01
    """

    seconds_per_shot: float
    shots: int
    errors: int

    def p_logical_estimate(self, prior: float) -> float:
        """Posterior median of the logical error rate, given the pilot counts and a prior.

        The prior is log-normal around ``prior`` (sigma = :data:`PRIOR_LOG_SIGMA`); the pilot
        adds a binomial likelihood. Many errors: ~errors/shots. No errors in a pilot much shorter
        than 1/prior: ~prior. No errors in a long pilot: below 1/shots, never 0. With no prior
        (``prior <= 0``) it is the Jeffreys estimate ``(errors + 0.5) / (shots + 1)``.
        """
        n, e = self.shots, self.errors
        if prior <= 0 or not math.isfinite(prior):
            return (e + 0.5) / (n + 1)
        mu = math.log(min(prior, 0.5))
        lo, hi = mu - 8 * PRIOR_LOG_SIGMA, min(mu + 8 * PRIOR_LOG_SIGMA, math.log(0.999))
        if e > 0:  # make sure the grid covers the likelihood's peak
            peak = math.log(min(e / n, 0.999))
            lo, hi = min(lo, peak - 5), max(hi, min(peak + 1, math.log(0.999)))
        steps = 2000
        grid = [lo + (hi - lo) * i / steps for i in range(steps + 1)]
        log_post = []
        for x in grid:
            p = math.exp(x)
            ll = -0.5 * ((x - mu) / PRIOR_LOG_SIGMA) ** 2
            ll += e * x + (n - e) * math.log1p(-p)
            log_post.append(ll)
        top = max(log_post)
        weights = [math.exp(v - top) for v in log_post]
        half = sum(weights) / 2
        acc = 0.0
        for x, w in zip(grid, weights, strict=True):
            acc += w
            if acc >= half:
                return math.exp(x)
        return math.exp(grid[-1])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_json`)."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_json`; unknown keys (host, time) are ignored."""
        return Calibration(
            seconds_per_shot=float(data["seconds_per_shot"]),
            shots=int(data["shots"]),
            errors=int(data["errors"]),
        )


def default_cache_path() -> pathlib.Path:
    """``$QEC_KILN_CACHE_DIR/calibration.json``, else ``~/.cache/qec-kiln/calibration.json``."""
    base = os.environ.get("QEC_KILN_CACHE_DIR")
    folder = pathlib.Path(base) if base else pathlib.Path.home() / ".cache" / "qec-kiln"
    return folder.expanduser() / "calibration.json"


class CalibrationCache:
    """Calibrations kept in a JSON file, keyed by sinter strong_id.

    Timings are of the machine that ran the pilot (its host name is stored with each entry).
    Writes re-read the file under an exclusive lock and replace it atomically, so concurrent
    planners do not corrupt it.

    Example:
        >>> import tempfile
        >>> cache = CalibrationCache(pathlib.Path(tempfile.mkdtemp()) / "c.json")
        >>> cache.put("abc", Calibration(1e-6, 1000, 3))
        >>> CalibrationCache(cache.path).get("abc")
        Calibration(seconds_per_shot=1e-06, shots=1000, errors=3)
        >>> cache.get("missing") is None
        True
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = pathlib.Path(path) if path is not None else default_cache_path()
        self._entries: dict[str, Calibration] | None = None

    def _read_file(self) -> dict[str, Calibration]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable cache: start again rather than fail a plan
        entries = data.get("entries", {}) if isinstance(data, dict) else {}
        out: dict[str, Calibration] = {}
        for key, value in entries.items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                out[key] = Calibration.from_json(value)
        return out

    def _load(self) -> dict[str, Calibration]:
        if self._entries is None:
            self._entries = self._read_file()
        return self._entries

    def get(self, strong_id: str) -> Calibration | None:
        """The stored calibration of ``strong_id``, or None."""
        return self._load().get(strong_id)

    def __contains__(self, strong_id: object) -> bool:
        return strong_id in self._load()

    def __len__(self) -> int:
        return len(self._load())

    def put(self, strong_id: str, calibration: Calibration) -> None:
        """Store one calibration (written to disk at once)."""
        self.put_many({strong_id: calibration})

    def put_many(self, calibrations: Mapping[str, Calibration]) -> None:
        """Store several calibrations with one write."""
        if not calibrations:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+") as lock:
            with contextlib.suppress(ImportError, OSError):
                import fcntl

                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                raw: dict[str, Any] = {}
                with contextlib.suppress(FileNotFoundError, ValueError, OSError):
                    loaded = json.loads(self.path.read_text())
                    if isinstance(loaded, dict):
                        raw = dict(loaded.get("entries", {}))
                stamp = {
                    "host": platform.node(),
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                }
                for key, cal in calibrations.items():
                    raw[key] = {**cal.to_json(), **stamp}
                atomic_write(self.path, json.dumps({"version": 1, "entries": raw}, indent=1,
                                                   sort_keys=True))
            finally:
                with contextlib.suppress(ImportError, OSError):
                    import fcntl

                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        entries = self._load()
        entries.update(calibrations)


@contextlib.contextmanager
def _spawned_workers_skip_main(objects: Iterable[object]) -> Iterator[None]:
    """Let sinter's 'spawn' workers start without re-running the caller's ``__main__``.

    sinter starts workers with the 'spawn' method, which re-imports the main script in each
    worker: a script without an ``if __name__ == "__main__":`` guard then calls sinter again in
    the worker, which fails and leaves the parent waiting forever. The workers only need sinter's
    own modules, so while they start the main module is replaced by an empty one. Skipped when a
    custom decoder is defined in ``__main__`` (it must be pickled by reference to it; such a
    script needs the guard, as sinter documents).
    """
    main = sys.modules.get("__main__")
    defined_in_main = any(type(o).__module__ == "__main__" for o in objects)
    if main is None or defined_in_main:
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@dataclasses.dataclass
class _Pilot:
    task: sinter.Task
    strong_id: str
    predicted_seconds_per_shot: float
    overhead_seconds: float
    target_shots: int = 0
    shots: int = 0
    errors: int = 0
    seconds: float = 0.0
    round_started: float | None = None  # when this round's sampling of the task began
    done: bool = False  # cut short: gets no further rounds

    @property
    def needs_shots(self) -> bool:
        return not self.done and self.shots < self.target_shots


def _full_task(task: sinter.Task) -> sinter.Task:
    """``task`` with circuit and DEM filled in the way sinter fills them in."""
    if task.decoder is None:
        raise ValueError(f"task has no decoder; set sinter.Task(decoder=...): {task!r}")
    circuit = task.circuit
    if circuit is None:
        if task.circuit_path is None:
            raise ValueError("task has neither a circuit nor a circuit_path")
        circuit = stim.Circuit.from_file(task.circuit_path)
    dem = task.detector_error_model
    if dem is None:
        dem = dem_for_circuit(circuit)
    return sinter.Task(
        circuit=circuit,
        decoder=task.decoder,
        detector_error_model=dem,
        postselection_mask=task.postselection_mask,
        postselected_observables_mask=task.postselected_observables_mask,
        json_metadata=task.json_metadata,
    )


def strong_id_of(task: sinter.Task) -> str:
    """The strong_id sinter gives ``task``, filling in its DEM as sinter does when it has none.

    Example:
        >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
        ...                            after_clifford_depolarization=0.02)
        >>> t = sinter.Task(circuit=c, decoder="pymatching")
        >>> strong_id_of(t) == sinter.Task(circuit=c, decoder="pymatching",
        ...                                detector_error_model=dem_for_circuit(c)).strong_id()
        True
    """
    return _full_task(task).strong_id()


def _run_sinter(
    pilots: list[_Pilot],
    *,
    deadline: float,
    allowance: Mapping[str, float],
    custom_decoders: Mapping[str, Any] | None,
    startup: list[float] | None = None,
) -> bool:
    """One ``sinter.iter_collect`` call (one worker) that brings each pilot to its target shots.

    Stops early, killing the worker, once ``deadline`` passes or once a task has sampled for
    longer than its ``allowance`` (it is marked done; the caller starts a new run for the
    others). Returns True when sinter finished every task. Appends to ``startup`` the seconds
    from the call to the first shot (worker start-up and first task set-up).
    """
    called = time.monotonic()
    by_id = {p.strong_id: p for p in pilots}
    tasks = []
    for p in pilots:
        p.round_started = None
        tasks.append(
            sinter.Task(
                circuit=p.task.circuit,
                decoder=p.task.decoder,
                detector_error_model=p.task.detector_error_model,
                postselection_mask=p.task.postselection_mask,
                postselected_observables_mask=p.task.postselected_observables_mask,
                json_metadata=p.task.json_metadata,
                collection_options=sinter.CollectionOptions(max_shots=p.target_shots - p.shots),
            )
        )
    decoders = dict(custom_decoders or {})
    startup_seen = False
    with _spawned_workers_skip_main(decoders.values()):
        for progress in sinter.iter_collect(
            num_workers=1,
            tasks=tasks,
            hint_num_tasks=len(tasks),
            max_batch_seconds=1,  # the worker reports (and can be stopped) about every second
            custom_decoders=decoders or None,
        ):
            now = time.monotonic()
            for stat in progress.new_stats:
                p = by_id[stat.strong_id]
                if p.round_started is None:
                    p.round_started = now - stat.seconds
                    if startup is not None and not startup_seen:
                        startup.append(p.round_started - called)
                        startup_seen = True
                p.shots += stat.shots
                p.errors += stat.errors
                p.seconds += stat.seconds
            if now > deadline:
                return False
            for stat in progress.new_stats:
                p = by_id[stat.strong_id]
                assert p.round_started is not None
                if p.needs_shots and now - p.round_started > allowance[p.strong_id]:
                    p.done = True
                    return False
    return True


def calibrate(
    tasks: Iterable[sinter.Task],
    *,
    seconds_budget: float = 60.0,
    min_shots: int = 1000,
    cache: CalibrationCache | None = None,
    custom_decoders: Mapping[str, Any] | None = None,
) -> dict[str, Calibration]:
    """Pilot-run each task with ``sinter.iter_collect`` (one worker) and measure its cost.

    Phase 1, one sinter run (one worker process) over the tasks not in ``cache``: every task
    gets up to ``min_shots`` shots (fewer if half its predicted share of the budget is less), so
    each is measured early. Phase 2, a new run repeated while it is worth a worker start-up: the
    time left is split equally between the tasks, sized with the seconds/shot measured so far.
    Wall time is bounded by ``seconds_budget``: worst case about a second over it, two on a busy
    machine (the worker reports about once a second, and a worker's start-up and a task's
    DEM/decoder set-up cannot be interrupted). A task that samples for much longer than its share
    is cut short and the others go on in a new run. Tasks that got no shot (budget spent) are
    left out of the result. Results go into ``cache``; tasks found there are not sampled again,
    so a second call with a warm cache runs nothing.

    The seconds/shot measured include whatever else the machine runs: calibrate on an idle one.

    Works from library code and from scripts without a ``__main__`` guard (see
    :func:`_spawned_workers_skip_main`). Tasks need a decoder; keys are :func:`strong_id_of`
    (circuit, decoder, DEM, postselection and json_metadata: keep the metadata the batch uses).

    Example:
        >>> import stim, sinter
        >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
        ...                            after_clifford_depolarization=0.02)
        >>> task = sinter.Task(circuit=c, decoder="pymatching", json_metadata={"d": 3})
        >>> cal = calibrate([task], seconds_budget=3)  # doctest: +SKIP
        >>> cal[strong_id_of(task)].seconds_per_shot > 0  # doctest: +SKIP
        True
    """
    start = time.monotonic()
    deadline = start + seconds_budget
    pilots: dict[str, _Pilot] = {}
    result: dict[str, Calibration] = {}
    for task in tasks:
        full = _full_task(task)
        strong_id = full.strong_id()
        if strong_id in pilots or strong_id in result:
            continue
        cached = cache.get(strong_id) if cache is not None else None
        if cached is not None:
            result[strong_id] = cached
            continue
        assert full.circuit is not None and full.decoder is not None
        features = CircuitFeatures.of(full.circuit, full.detector_error_model)
        pilots[strong_id] = _Pilot(
            task=full,
            strong_id=strong_id,
            predicted_seconds_per_shot=predict_seconds_per_shot(features, full.decoder),
            overhead_seconds=predict_task_overhead_seconds(features, full.decoder),
        )
    if not pilots:
        return result

    startups: list[float] = []  # observed: longer than usual on a busy machine

    def share_of(todo: list[_Pilot]) -> float:
        left = deadline - time.monotonic() - max([PROCESS_STARTUP_SECONDS, *startups])
        left -= sum(p.overhead_seconds for p in todo)
        return max(0.0, left) / max(1, len(todo))

    # Phase 1: up to min_shots each, from the predictions.
    todo = list(pilots.values())
    share = share_of(todo)
    for p in todo:
        p.target_shots = max(1, int(min(min_shots, 0.5 * share / p.predicted_seconds_per_shot)))
    runs = 0
    replans = 0
    while runs < 2 * len(pilots) + 6 and time.monotonic() < deadline:
        todo = [p for p in pilots.values() if p.needs_shots]
        if not todo:
            # Phase 2 (repeated while worth a new worker): split the time left, sized with the
            # seconds per shot measured so far.
            replans += 1
            todo = [p for p in pilots.values() if not p.done]
            share = share_of(todo)
            if replans > 4 or share < 0.25:
                break
            for p in todo:
                sps = p.seconds / p.shots if p.shots else p.predicted_seconds_per_shot
                extra = int(min(share / max(sps, MIN_SECONDS_PER_SHOT), 10**9))
                if extra >= max(100, 0.2 * p.shots):
                    p.target_shots = p.shots + extra
            todo = [p for p in todo if p.needs_shots]
            if not todo:
                break
        share = share_of(todo)
        allowance = {p.strong_id: 1.5 * share + p.overhead_seconds + 0.5 for p in todo}
        runs += 1
        _run_sinter(
            todo,
            deadline=deadline,
            allowance=allowance,
            custom_decoders=custom_decoders,
            startup=startups,
        )

    measured = {
        sid: Calibration(
            seconds_per_shot=max(p.seconds / p.shots, MIN_SECONDS_PER_SHOT),
            shots=p.shots,
            errors=p.errors,
        )
        for sid, p in pilots.items()
        if p.shots > 0
    }
    if cache is not None:
        cache.put_many(measured)
    result.update(measured)
    return result
