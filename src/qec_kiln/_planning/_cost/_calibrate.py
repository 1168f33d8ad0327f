"""Measure what sinter tasks cost with short pilot runs.

:func:`calibrate` runs each task briefly through ``sinter.iter_collect`` (one worker); its
:class:`Calibration` replaces the model's predictions (see :mod:`qec_kiln._planning._cost._model`), and a
:class:`CalibrationCache` (:mod:`qec_kiln._planning._cost._cache`) keeps them between plans.

Example:
    >>> import stim, sinter
    >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
    ...                            after_clifford_depolarization=0.02)
    >>> len(strong_id_of(sinter.Task(circuit=c, decoder="pymatching")))
    64
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import sinter
import stim

from qec_kiln._errors import Log
from qec_kiln._planning._cost._cache import Calibration, CalibrationCache
from qec_kiln._planning._cost._model import (
    MIN_SECONDS_PER_SHOT,
    PROCESS_STARTUP_SECONDS,
    CircuitFeatures,
    predict_seconds_per_shot,
    predict_task_overhead_seconds,
)
from qec_kiln._sweep.discover import dem_for_circuit

__all__ = ["calibrate", "calibrate_by_strong_id", "strong_id_of"]


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
    log: Log | None = None,
) -> dict[str, Calibration]:
    """Pilot-run each task with ``sinter.iter_collect`` (one worker) and measure its cost.

    Phase 1, one sinter run (one worker process) over the tasks not in ``cache``: every task
    gets up to ``min_shots`` shots (fewer if half its predicted share of the budget is less), so
    each is measured early. Phase 2, a new run repeated while it is worth a worker start-up: the
    time left is split equally between the tasks, sized with the seconds/shot measured so far.
    Wall time is bounded by ``seconds_budget``: worst case about a worker start-up and a second
    over it (the worker reports about once a second, and a worker's start-up and a task's
    DEM/decoder set-up cannot be interrupted; on a loaded machine a start-up alone takes
    seconds). A task that samples for much longer than its share is cut short and the others go
    on in a new run. Tasks that got no shot (budget spent) are
    left out of the result. Results go into ``cache``; tasks found there are not sampled again,
    so a second call with a warm cache runs nothing. ``log`` gets one line (how many tasks are
    run, how many were cached) when there is something to run.

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
    by_id: dict[str, sinter.Task] = {}
    for task in tasks:
        full = _full_task(task)
        by_id.setdefault(full.strong_id(), full)
    return _calibrate(by_id, start, seconds_budget=seconds_budget, min_shots=min_shots,
                      cache=cache, custom_decoders=custom_decoders, log=log)


def calibrate_by_strong_id(
    tasks: Mapping[str, sinter.Task],
    *,
    seconds_budget: float = 60.0,
    min_shots: int = 1000,
    cache: CalibrationCache | None = None,
    custom_decoders: Mapping[str, Any] | None = None,
    log: Log | None = None,
) -> dict[str, Calibration]:
    """:func:`calibrate` for tasks whose strong_ids the caller already has (key = strong_id).

    Saves computing them again (hashing each circuit's and DEM's text). Tasks found in
    ``cache`` are not even completed with a DEM. ``log`` gets one line when something is run.

    Example:
        >>> import pathlib, tempfile
        >>> cache = CalibrationCache(pathlib.Path(tempfile.mkdtemp()) / "c.json")
        >>> cache.put("id-a", Calibration(1e-6, 1000, 3))
        >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
        ...                            after_clifford_depolarization=0.02)
        >>> task = sinter.Task(circuit=c, decoder="pymatching")
        >>> calibrate_by_strong_id({"id-a": task}, cache=cache)  # all cached: runs nothing
        {'id-a': Calibration(seconds_per_shot=1e-06, shots=1000, errors=3)}
    """
    return _calibrate(tasks, time.monotonic(), seconds_budget=seconds_budget, min_shots=min_shots,
                      cache=cache, custom_decoders=custom_decoders, log=log)


def _calibrate(
    tasks: Mapping[str, sinter.Task],
    start: float,
    *,
    seconds_budget: float,
    min_shots: int,
    cache: CalibrationCache | None,
    custom_decoders: Mapping[str, Any] | None,
    log: Log | None,
) -> dict[str, Calibration]:
    deadline = start + seconds_budget
    pilots: dict[str, _Pilot] = {}
    result: dict[str, Calibration] = {}
    for strong_id, task in tasks.items():
        cached = cache.get(strong_id) if cache is not None else None
        if cached is not None:
            result[strong_id] = cached
            continue
        full = _full_task(task)
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
    if log is not None:
        log(f"calibrating {len(pilots)} task(s) for up to {seconds_budget:g} s "
            f"({len(result)} cached)")

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
