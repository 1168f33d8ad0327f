"""How many batches B to give K workers: the engine's queue, start-up, and the model's error.

A sweep runs B batches on K workers (machines that stay up). The engine's own queue (local batch
slots, a Slurm array ``%K`` throttle, a SkyPilot pool) hands the next batch to whichever worker is
free first, so a mispredicted batch no longer sets the makespan, at the price of one start-up per
batch. This module is pure arithmetic (no sinter, no I/O), fast enough for every plan:

* :func:`list_schedule`: the makespan of that queue for given batch times, with a start-up per
  batch, or a first (cold) start-up per worker plus a smaller one per later batch (a warm pool).
* :func:`queue_makespan`: that makespan for planned batches (seconds per task in each), mean over
  seeded draws of each task's true time, off its prediction by the model's error.
* :func:`choose_batch_count`: B such that each batch's work stays >= ``min_work_per_startup`` x the
  per-batch start-up, yet B >= ``batches_per_worker`` x K where the work allows, capped by tasks x
  shards; with the predicted makespan and efficiency of that plan and of one job per batch (B = K).

Efficiency is one worker's time / (K x makespan), start-up included, so it is at most 1; its limit
with perfect balance is ideal / (ideal + first start-up), ideal = work / K.

Example:
    >>> list_schedule([4, 3, 2, 1], workers=2, startup_seconds=1)  # (1+4, 1+1) and (1+3, 1+2)
    7.0
    >>> c = choose_batch_count(6600, n_tasks=30, workers=7, startup_seconds=5,
    ...                        first_startup_seconds=330)
    >>> c.batches, round(c.efficiency, 2), round(c.one_job_per_batch_efficiency, 2)
    (63, 0.7, 0.57)
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections.abc import Hashable, Sequence

from qec_kiln._errors import KilnError
from qec_kiln._sweep.batches import Batch

__all__ = ["BatchChoice", "choose_batch_count", "efficiency", "list_schedule", "predicted_makespan",
           "queue_order",
           "queue_makespan"]


def _check(name: str, value: float, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = "a positive" if positive else "a non-negative"
        raise KilnError(f"{name} must be {need} finite number (got {value!r})")


def list_schedule(
    batch_seconds: Sequence[float],
    workers: int,
    startup_seconds: float = 0.0,
    *,
    first_startup_seconds: float | None = None,
) -> float:
    """Makespan of the engine's queue: each batch, in the given order, goes to the worker free first.

    Every batch pays ``startup_seconds`` before its work, except a worker's first batch, which pays
    ``first_startup_seconds`` instead (default: the same; a warm pool's cold VM start-up otherwise).
    Ties go to the lowest worker, so the first ``workers`` batches start on distinct workers.

    Example:
        >>> list_schedule([5, 1, 1, 1], workers=2)                # the long batch sets the makespan
        5.0
        >>> list_schedule([2, 2, 2, 2], workers=2, startup_seconds=1)  # 2 rounds of (1 + 2)
        6.0
        >>> list_schedule([2, 2, 2, 2], workers=2, startup_seconds=1, first_startup_seconds=10)
        15.0
        >>> list_schedule([], workers=3)
        0.0
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise KilnError(f"workers must be a whole number >= 1 (got {workers!r})")
    _check("startup_seconds", startup_seconds)
    first = startup_seconds if first_startup_seconds is None else first_startup_seconds
    _check("first_startup_seconds", first)
    free: list[tuple[float, int, bool]] = [(0.0, w, False) for w in range(workers)]  # (time, id, warm)
    makespan = 0.0
    for seconds in batch_seconds:
        _check("a batch's seconds", seconds)
        t, w, warm = heapq.heappop(free)
        t += (startup_seconds if warm else first) + seconds
        makespan = max(makespan, t)
        heapq.heappush(free, (t, w, True))
    return makespan


def queue_makespan(
    batches: Sequence[Sequence[tuple[Hashable, float]]],
    workers: int,
    startup_seconds: float = 0.0,
    *,
    first_startup_seconds: float | None = None,
    model_error: float = 0.2,
    draws: int = 8,
    seed: int = 0,
) -> float:
    """Predicted makespan of planned ``batches`` (in the queue's order; each a list of (task key,
    predicted seconds)) on ``workers`` workers: the mean of :func:`list_schedule` over ``draws``
    seeded draws in which each task runs a lognormal factor (mean 1, sigma ``model_error``) times
    its prediction, the same factor for all its shards (a model is wrong about a circuit, not a
    shard). Deterministic; ``O(draws x (shards + batches log workers))``.

    Example:
        >>> queue_makespan([[("a", 2.0)], [("b", 2.0)]], workers=2, model_error=0)
        2.0
        >>> queue_makespan([[("a", 2.0)], [("a", 2.0)]], workers=1, startup_seconds=1, model_error=0)
        6.0
        >>> queue_makespan([[("a", 2.0)], [("b", 2.0)]], workers=2, model_error=0.5) > 2.0
        True
    """
    _check("model_error", model_error)
    if draws < 1:
        raise KilnError(f"error: draws must be >= 1 (got {draws!r})")
    if model_error == 0:
        draws = 1
    keys = sorted({k for b in batches for k, _ in b}, key=str)
    rng = random.Random(seed)
    total = 0.0
    for _ in range(draws):
        factor = {k: rng.lognormvariate(-model_error ** 2 / 2, model_error) for k in keys}
        times = [sum(x * factor[k] for k, x in b) for b in batches]
        total += list_schedule(times, workers, startup_seconds,
                               first_startup_seconds=first_startup_seconds)
    return total / draws


def efficiency(work_seconds: float, workers: int, makespan_seconds: float) -> float:
    """One worker's time / (workers x makespan): the share of the paid machine time that did work.

    Example:
        >>> efficiency(6600, 7, 2628)  # the public peer's 7-node run: 36%
        0.35877...
    """
    _check("work_seconds", work_seconds)
    _check("makespan_seconds", makespan_seconds, positive=True)
    if workers < 1:
        raise KilnError(f"workers must be >= 1 (got {workers!r})")
    return work_seconds / (workers * makespan_seconds)


@dataclasses.dataclass(frozen=True)
class BatchChoice:
    """The chosen batch count and what it is predicted to give, beside one job per batch (B = K)."""

    batches: int
    workers: int
    makespan_seconds: float
    efficiency: float
    one_job_per_batch_batches: int
    one_job_per_batch_makespan_seconds: float
    one_job_per_batch_efficiency: float
    limit: float  # efficiency with perfect balance: ideal / (ideal + first start-up)


def _predicted_makespan(work: float, batches: int, workers: int, startup: float, first: float,
                        model_error: float) -> float:
    # The planner balances predicted work, so the batches are predicted equal (size each): with
    # r = ceil(B / K) rounds the queue ends at first + size + (r - 1) (startup + size). Each batch's
    # actual work is off by ~model_error (relative standard deviation), so the last batches to finish
    # overrun by about the expected maximum of min(B, K) such errors: sigma sqrt(2 ln n) size.
    # One worker runs every batch in turn: its errors add up to the work's, no uneven tail.
    size = work / batches
    rounds = math.ceil(batches / workers)
    n = min(batches, workers)
    tail = model_error * size * math.sqrt(2 * math.log(n)) if n > 1 else 0.0
    return first + size + (rounds - 1) * (startup + size) + tail


def predicted_makespan(work_seconds: float, batches: int, workers: int, startup_seconds: float,
                       *, first_startup_seconds: float | None = None,
                       model_error: float = 0.2) -> float:
    """Predicted makespan of ``batches`` balanced batches of ``work_seconds`` in all on ``workers``
    workers, each batch's work off by ``model_error`` (relative standard deviation).

    Example:
        >>> predicted_makespan(100, 4, 2, 1, model_error=0)  # 2 rounds of (1 + 25)
        52.0
    """
    _check("work_seconds", work_seconds, positive=True)
    first = startup_seconds if first_startup_seconds is None else first_startup_seconds
    if batches < 1 or workers < 1:
        raise KilnError(f"batches and workers must be >= 1 (got {batches}, {workers})")
    return _predicted_makespan(work_seconds, batches, workers, startup_seconds, first, model_error)


def choose_batch_count(
    total_work_seconds: float,
    n_tasks: int,
    workers: int,
    startup_seconds: float,
    *,
    first_startup_seconds: float | None = None,
    model_error: float = 0.2,
    min_work_per_startup: float = 20.0,
    batches_per_worker: int = 4,
    max_shards_per_task: int = 64,
) -> BatchChoice:
    """Pick B for ``total_work_seconds`` of ``n_tasks`` tasks on ``workers`` workers.

    ``startup_seconds`` is what each batch pays before its work (a cold managed job ~360 s, a
    warm pool job a few seconds, Slurm tens of seconds, local ~2 s); ``first_startup_seconds`` what
    a worker's first batch pays instead (a pool's cold VM start-up; default the same).
    ``model_error`` is the relative standard deviation of a batch's actual work around its
    prediction. B keeps each batch's work >= ``min_work_per_startup`` x ``startup_seconds`` and is
    at least ``batches_per_worker`` x K where that allows, at least K, at most ``n_tasks x
    max_shards_per_task`` (a batch holds at most one shard of a task); within those bounds it is the
    whole number of rounds of K with the smallest predicted makespan (more batches shorten the
    queue's uneven tail, each pays a start-up).

    Example:
        >>> c = choose_batch_count(86400, n_tasks=30, workers=64, startup_seconds=360)
        >>> c.batches  # a cold start-up per batch: 4 x 64 batches would each be < 20 x 360 s
        64
        >>> c = choose_batch_count(86400, n_tasks=30, workers=64, startup_seconds=5,
        ...                        first_startup_seconds=330)
        >>> c.batches, round(c.limit, 3)  # a warm start-up per batch: 12 rounds of 64
        (768, 0.804)
        >>> choose_batch_count(100, n_tasks=2, workers=8, startup_seconds=1,
        ...                    max_shards_per_task=3).batches  # 2 tasks x 3 shards
        6
    """
    _check("total_work_seconds", total_work_seconds, positive=True)
    _check("startup_seconds", startup_seconds)
    first = startup_seconds if first_startup_seconds is None else first_startup_seconds
    _check("first_startup_seconds", first)
    _check("model_error", model_error)
    _check("min_work_per_startup", min_work_per_startup)
    for name, value in (("n_tasks", n_tasks), ("workers", workers),
                        ("batches_per_worker", batches_per_worker),
                        ("max_shards_per_task", max_shards_per_task)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise KilnError(f"{name} must be a whole number >= 1 (got {value!r})")
    cap = n_tasks * max_shards_per_task
    floor = startup_seconds * min_work_per_startup  # the least work a batch should hold
    by_startup = cap if floor == 0 else min(cap, math.floor(total_work_seconds / floor))
    one = min(workers, cap)
    upper = max(one, by_startup)
    lower = max(one, min(batches_per_worker * workers, upper))

    def predict(batches: int) -> tuple[float, float]:
        t = _predicted_makespan(total_work_seconds, batches, workers, startup_seconds, first,
                                model_error)
        return t, efficiency(total_work_seconds, workers, t)

    # Whole rounds of K from lower to upper (the planner's batches are predicted equal): more
    # batches shorten the queue's uneven tail, each costs a start-up; keep the best predicted.
    start = -(-lower // workers) * workers
    count = max(0, (upper - start) // workers + 1)
    step = max(1, count // 4096)  # a bounded search for huge sweeps on cheap start-ups
    candidates = {lower, *range(start, start + count * workers, step * workers)}
    if workers == 1:  # a queue with nothing to balance: one batch, one start-up
        candidates.add(one)
    b = min(candidates, key=lambda n: (predict(n)[0], n))
    t_b, e_b = predict(b)
    t_1, e_1 = predict(one)
    ideal = total_work_seconds / workers
    return BatchChoice(
        batches=b, workers=workers, makespan_seconds=t_b, efficiency=e_b,
        one_job_per_batch_batches=one, one_job_per_batch_makespan_seconds=t_1,
        one_job_per_batch_efficiency=e_1, limit=ideal / (ideal + first),
    )


def queue_order(batches: list[Batch]) -> list[str]:
    """Batch ids longest (predicted) first, ties in id order: the order backends start them
    (Slurm array task k, the local slots' queue), so the queue ends on short batches.

    >>> from qec_kiln._sweep.batches import Batch, Shard
    >>> b = lambda i, s: Batch(i, [Shard("c", "d", "x", 1, 1, s, 1)])
    >>> queue_order([b("b000", 1.0), b("b001", 3.0), b("b002", 1.0)])
    ['b001', 'b000', 'b002']
    """
    return [b.id for b in sorted(batches, key=lambda b: -b.predicted_seconds)]
