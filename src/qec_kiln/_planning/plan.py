"""Partition a sweep's tasks into batches balanced by *predicted cost*, splitting a task too big
for one batch into shot shards.

A task is one (circuit, decoder) pair; its predicted cost in core-seconds is::

    overhead + seconds_per_shot * min(max_shots, max_errors / p_logical)

Shards of one task share its strong_id, so ``sinter combine`` sums them into one row
(see docs/design.md). A batch never holds two shards of the same task.

Example:
    >>> tasks = [TaskCost("a.stim", "pymatching", "id-a", 1e-6, 1e-3),
    ...          TaskCost("b.stim", "pymatching", "id-b", 1e-4, 1e-3)]
    >>> plan = make_plan(tasks, max_shots=10**6, max_errors=1000, jobs=2)
    >>> [[(s.circuit, s.max_shots) for s in b.shards] for b in plan.batches]  # b.stim is split in two
    [[('a.stim', 1000000), ('b.stim', 500000)], [('b.stim', 500000)]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from qec_kiln._errors import KilnError
from qec_kiln._planning._cost import TaskCost
from qec_kiln._planning.balance import improve, lpt
from qec_kiln._planning.capacity import Capacity
from qec_kiln._sweep.batches import Batch, Plan, Shard, batch_id, split_targets
from qec_kiln._sweep.spec import Partition, Targets

#: The most batches a plan may have: more is a mistake (and would take long to plan and launch).
MAX_BATCHES = 100_000

#: strong_id -> (max_shots, max_errors) of a task, when it differs from the plan's targets (a
#: top-up: what is left after the rows the bucket already holds).
Goals = Mapping[str, tuple[int, int]]


def _goal(t: TaskCost, max_shots: int, max_errors: int, goals: Goals | None) -> tuple[int, int]:
    """The targets of task ``t``: its own in ``goals``, else the plan's."""
    return goals.get(t.strong_id, (max_shots, max_errors)) if goals else (max_shots, max_errors)


def _cost(t: TaskCost, max_shots: int, max_errors: int, goals: Goals | None) -> float:
    return t.predicted_seconds(*_goal(t, max_shots, max_errors, goals))


def target_work_seconds(target_hours: float, startup_seconds: float, processes: int = 1) -> float:
    """Core-seconds of work a batch may hold so that it ends within ``target_hours``.

    A job first spends ``startup_seconds`` starting, then runs ``processes`` sinter processes.
    Refuses (one line) a target at or below the start-up: no batch could meet it.

    Example:
        >>> target_work_seconds(1.0, 360.0, processes=16)
        51840.0
        >>> target_work_seconds(0.0001, 2.0)
        Traceback (most recent call last):
        ...
        qec_kiln._errors.KilnError: --target-hours 0.0001 (0.36 s) is not more than a job's ...
    """
    if not target_hours > 0:
        raise KilnError(f"--target-hours must be positive (got {target_hours:g})")
    work = target_hours * 3600 - startup_seconds
    if work <= 0:
        raise KilnError(
            f"--target-hours {target_hours:g} ({target_hours * 3600:g} s) is not more than a job's "
            f"start-up ({startup_seconds:g} s): ask for more than {startup_seconds / 3600:.2g} hours"
        )
    return work * max(1, processes)


def plan_sweep(tasks: Sequence[TaskCost], targets: Targets, partition: Partition,
               capacity: Capacity, *, model_error: float = 0.2,
               goals: Goals | None = None) -> Plan:
    """The sweep's batches: the one place that decides how many. ``capacity`` is the
    backend's answer (``Backend.capacity``); ``goals`` the tasks' own targets
    where they differ from ``targets`` (a top-up's remaining shots and errors).

    --jobs, --target-hours or --circuits-per-job choose the count; else, with K workers taking
    batches from a queue, :func:`plan_for_workers`; else (one job per batch, all at once) as many
    batches as keep each job's work at least 4x its start-up (at most 4 per task).

        >>> one = Capacity(processes=1, startup_seconds=10.0)
        >>> tasks = [TaskCost(f"c{i}", "pymatching", f"id{i}", 1e-4, 1e-3) for i in range(3)]
        >>> len(plan_sweep(tasks, Targets(max_shots=10**6), Partition(), one).batches)
        7
    """
    one = capacity.at(1)
    shots, errors = targets.max_shots, targets.max_errors
    # Shards of one task help only if they run at once: never more than the batches at once.
    at_once = capacity.at(MAX_BATCHES).slots
    if partition.is_default and one.workers:
        return plan_for_workers(tasks, max_shots=shots, max_errors=errors, workers=one.workers,
                                startup_seconds=one.startup_seconds,
                                first_startup_seconds=one.first_startup_seconds,
                                processes=one.processes, model_error=model_error,
                                allow_shards=partition.shards,
                                min_shard_seconds=one.startup_seconds * one.processes,
                                goals=goals, max_shards=at_once)
    jobs = partition.jobs
    if partition.is_default:
        wall = sum(_cost(t, shots, errors, goals) for t in tasks) / one.processes
        jobs = max(1, min(len(tasks) * 4, math.floor(wall / (4 * one.startup_seconds)) or 1)) \
            if wall > 0 else 1
    target_seconds = None
    if partition.target_hours is not None:
        target_seconds = target_work_seconds(partition.target_hours, one.startup_seconds,
                                             one.surely_processes)
    return make_plan(tasks, max_shots=shots, max_errors=errors, jobs=jobs,
                     target_seconds=target_seconds, circuits_per_job=partition.circuits_per_job,
                     allow_shards=partition.shards,
                     min_shard_seconds=one.startup_seconds * capacity.at(jobs or 1).processes,
                     workers=one.workers, goals=goals, max_shards=at_once)


def make_plan(
    tasks: Sequence[TaskCost],
    *,
    max_shots: int,
    max_errors: int,
    jobs: int | None = None,
    target_seconds: float | None = None,
    circuits_per_job: int | None = None,
    allow_shards: bool = True,
    min_shard_seconds: float = 0.0,
    workers: int | None = None,
    goals: Goals | None = None,
    max_shards: int | None = None,
) -> Plan:
    """Balance ``tasks`` into batches by predicted cost (each toward its own targets in
    ``goals`` where given, else ``max_shots``/``max_errors``).

    Exactly one of ``jobs`` (N batches), ``target_seconds`` (as many batches as needed so none is
    predicted to exceed it, in core-seconds; see :func:`target_work_seconds`) or
    ``circuits_per_job`` (ceil(tasks / N) batches) sets the number of batches. Plans are
    deterministic: the same input gives the same plan. A task is never split into shards
    predicted to cost less than ``min_shard_seconds`` each (a job's start-up would outweigh them),
    so a plan may have fewer batches than asked for, nor into more than ``max_shards`` (the
    batches that run at once: shards run one after another on one worker only add start-ups).
    Near-linear in tasks and batches (see
    :mod:`qec_kiln._planning.balance`); more than :data:`MAX_BATCHES` batches, or a ``target_seconds`` that
    needs more batches than the tasks can be split into, is refused with one line.

    ``workers`` (K, with ``jobs`` or ``circuits_per_job`` asking for more than K batches): the
    batches run on K workers through the engine's queue, longest first, so they are planned in
    rounds of K of decreasing size (:func:`round_weights`): each worker's last batch is short, and a
    mispredicted batch is evened out by the short ones after it; a task is then split into shards
    no bigger than the shortest batch (unless the tasks are too few to fill that many batches:
    then equal ones). Otherwise batches are of equal predicted size.
    """
    if not tasks:
        raise KilnError("nothing to plan: no circuits were found")
    chosen = [x is not None for x in (jobs, target_seconds, circuits_per_job)]
    if sum(chosen) > 1:
        raise KilnError("give at most one of --jobs, --target-hours and --circuits-per-job")
    n_tasks = len(tasks)
    if circuits_per_job is not None:
        if circuits_per_job < 1:
            raise KilnError(f"--circuits-per-job must be at least 1 (got {circuits_per_job})")
        n = math.ceil(n_tasks / circuits_per_job)
        # --circuits-per-job keeps its meaning (how many batches) but is balanced by cost.
        return _partition(tasks, max_shots, max_errors, n, allow_shards, min_shard_seconds,
                          strategy=f"circuits-per-job={circuits_per_job}", workers=workers,
                          goals=goals, max_shards=max_shards)
    if target_seconds is not None:
        plan = _plan_for_target(tasks, max_shots, max_errors, target_seconds, allow_shards,
                                min_shard_seconds, goals, max_shards)
        if workers and len(plan.batches) > workers:  # its balance is the queue's, K at a time
            plan.workers = workers
        return plan
    if jobs is None:
        jobs = 1
    if jobs < 1:
        raise KilnError(f"--jobs must be at least 1 (got {jobs})")
    if jobs > MAX_BATCHES:
        raise KilnError(f"--jobs {jobs:,} is more than the {MAX_BATCHES:,} batches a plan may have")
    return _partition(tasks, max_shots, max_errors, jobs, allow_shards, min_shard_seconds,
                      strategy=f"jobs={jobs}", workers=workers, goals=goals, max_shards=max_shards)


def _max_shards(cost: float, max_shots: int, max_errors: int, allow_shards: bool,
                min_shard_seconds: float, max_shards: int | None = None) -> int:
    """The most shards a task of predicted ``cost`` can be split into (however many batches).

    >>> _max_shards(100.0, 10**6, 1000, True, 10.0), _max_shards(100.0, 10**6, 1000, True, 10.0, 1)
    (10, 1)
    """
    if not allow_shards:
        return 1
    k = min(max_shots, max_errors, max_shards or max_shots)
    if min_shard_seconds > 0:
        k = min(k, math.floor(cost / min_shard_seconds))
    return max(1, k)


def plan_for_workers(
    tasks: Sequence[TaskCost],
    *,
    max_shots: int,
    max_errors: int,
    workers: int,
    startup_seconds: float,
    first_startup_seconds: float | None = None,
    processes: int = 1,
    model_error: float = 0.2,
    allow_shards: bool = True,
    min_shard_seconds: float = 0.0,
    goals: Goals | None = None,
    max_shards: int | None = None,
) -> Plan:
    """The plan for K ``workers`` when no batch count is given: a few whole rounds of K around
    :func:`qec_kiln._planning.makespan.choose_batch_count`'s B (B, 3/4 B, 1/2 B, none under min(B, 3 K)
    or K), each planned, and the one whose batches the queue is predicted to finish first
    (:func:`qec_kiln._planning.makespan.queue_makespan`: each task's time off by ``model_error``, a
    start-up per batch, ``processes`` sinter processes per batch; preemptions are not modelled).
    Ties go to fewer batches.

    Example:
        >>> tasks = [TaskCost(f"c{i}.stim", "pymatching", f"id{i}", 1e-5 * (i + 1), 1e-3)
        ...          for i in range(6)]
        >>> p = plan_for_workers(tasks, max_shots=10**6, max_errors=1000, workers=2,
        ...                      startup_seconds=1, first_startup_seconds=30)
        >>> p.workers, len(p.batches) % 2, len(p.batches) >= 2
        (2, 0, True)
    """
    from qec_kiln._planning.makespan import choose_batch_count, queue_makespan

    first = startup_seconds if first_startup_seconds is None else first_startup_seconds
    procs = max(1, processes)
    costs = [_cost(t, max_shots, max_errors, goals) for t in tasks]
    work = sum(costs) / procs
    if not tasks or work <= 0:
        return make_plan(tasks, max_shots=max_shots, max_errors=max_errors, jobs=1, goals=goals)
    cap = sum(_max_shards(c, *_goal(t, max_shots, max_errors, goals), allow_shards,
                          min_shard_seconds, max_shards) for t, c in zip(tasks, costs, strict=True))
    b0 = min(MAX_BATCHES, choose_batch_count(
        work, n_tasks=len(tasks), workers=workers, startup_seconds=startup_seconds,
        first_startup_seconds=first, model_error=model_error,
        max_shards_per_task=max(1, math.ceil(cap / len(tasks)))).batches)
    floor = max(min(workers, b0), min(b0, 3 * workers))
    rounds = max(1, math.ceil(b0 / workers))
    candidates = sorted({b0} | {max(floor, min(b0, r * workers))
                                for r in (rounds * 3 // 4, rounds // 2) if r >= 1})
    best: tuple[float, int, Plan] | None = None
    for n in candidates:
        plan = make_plan(tasks, max_shots=max_shots, max_errors=max_errors, jobs=n,
                         allow_shards=allow_shards, min_shard_seconds=min_shard_seconds,
                         workers=workers, goals=goals, max_shards=max_shards)
        loads = [[(s.strong_id, s.predicted_seconds / procs) for s in b.shards]
                 for b in plan.batches]
        t = queue_makespan(loads, workers, startup_seconds, first_startup_seconds=first,
                           model_error=model_error)
        if best is None or (t, len(plan.batches)) < best[:2]:
            best = (t, len(plan.batches), plan)
    assert best is not None
    return best[2]


def _plan_for_target(
    tasks: Sequence[TaskCost], max_shots: int, max_errors: int, target_seconds: float,
    allow_shards: bool, min_shard_seconds: float, goals: Goals | None = None,
    max_shards: int | None = None,
) -> Plan:
    """The fewest batches (searched by doubling, then bisection) whose makespan meets the target."""
    if not target_seconds > 0:
        raise KilnError(f"--target-hours must be positive (got {target_seconds / 3600:g})")
    costs = [_cost(t, max_shots, max_errors, goals) for t in tasks]
    total = sum(costs)
    first = max(1, math.ceil(total / target_seconds))
    most = sum(_max_shards(c, *_goal(t, max_shots, max_errors, goals), allow_shards,
                           min_shard_seconds, max_shards) for t, c in zip(tasks, costs, strict=True))
    if first > min(most, MAX_BATCHES):
        limit = (f"the {MAX_BATCHES:,} batches a plan may have" if first > MAX_BATCHES else
                 f"the {most:,} batches its tasks can be split into (at most one shard of a task "
                 f"per batch, none under {min_shard_seconds:g} s)")
        raise KilnError(
            f"--target-hours: batches of {target_seconds:,.4g} core-seconds need {first:,} batches "
            f"for {total:,.4g} predicted core-seconds, more than {limit}; ask for more hours"
        )
    last = min(most, MAX_BATCHES, max(first, 4 * len(tasks) + 64))  # where the search gives up

    def attempt(n: int) -> tuple[Plan, bool]:
        plan = _partition(tasks, max_shots, max_errors, n, allow_shards, min_shard_seconds,
                          strategy="target-hours", goals=goals, max_shards=max_shards)
        # Met, or more batches cannot help (shards are as small as allowed).
        return plan, plan.makespan_seconds <= target_seconds * 1.0001 or len(plan.batches) < n

    plan, done = attempt(first)
    if done:
        return plan
    low, step = first, 1  # low: too few batches
    while True:
        n = min(low + step, last)
        plan, done = attempt(n)
        if done or n >= last:
            break
        low, step = n, 2 * step
    if not done:
        return plan  # the best the search found: some task cannot be split below the target
    high, best = n, plan
    while high - low > 1:
        mid = (low + high) // 2
        plan, done = attempt(mid)
        if done:
            high, best = mid, plan
        else:
            low = mid
    return best


def round_weights(batches: int, workers: int) -> list[float]:
    """Relative sizes (mean 1) of ``batches`` batches run by ``workers`` workers in the queue's
    order: rounds of K equal batches, falling linearly to the last round's ``f = max(1/4, 1/R)``
    of the mean (R rounds), so that each worker ends on a short batch. Equal when B <= K.

    Example:
        >>> round_weights(8, 2)  # 4 rounds: 1.75, 1.25, 0.75, 0.25
        [1.75, 1.75, 1.25, 1.25, 0.75, 0.75, 0.25, 0.25]
        >>> round_weights(3, 5)
        [1.0, 1.0, 1.0]
    """
    rounds = math.ceil(batches / workers)
    if workers < 2 or rounds < 2:
        return [1.0] * batches
    f = max(0.25, 1 / rounds)
    per_round = [(2 - f) - (2 - 2 * f) * r / (rounds - 1) for r in range(rounds)]
    w = [per_round[i // workers] for i in range(batches)]
    mean = sum(w) / batches  # a partial last round: renormalize
    return [x / mean for x in w]


def _partition(
    tasks: Sequence[TaskCost], max_shots: int, max_errors: int, n: int, allow_shards: bool,
    min_shard_seconds: float, strategy: str, workers: int | None = None,
    goals: Goals | None = None,
    max_shards: int | None = None,
) -> Plan:
    queue = workers is not None and workers >= 2 and n > workers
    costs = {t.strong_id: _cost(t, max_shots, max_errors, goals) for t in tasks}
    share = sum(costs.values()) / n
    weights = round_weights(n, workers) if queue and workers is not None else None
    # A shard at most the smallest batch's share, so that the last round's short batches can be
    # filled at all (and the long ones packed from several pieces): with a queue, f x the mean.
    piece = share * min(weights) if weights else share
    shards: list[Shard] = []  # in (circuit, decoder, index) order: ties in balance() go by it
    for t in sorted(tasks, key=lambda t: (t.circuit, t.decoder)):
        cost = costs[t.strong_id]
        goal_shots, goal_errors = _goal(t, max_shots, max_errors, goals)
        k = 1
        if allow_shards and piece > 0 and cost > piece * 1.05:
            k = min(n, math.ceil(cost / piece), goal_shots, goal_errors, max_shards or n)
            if min_shard_seconds > 0:
                k = max(1, min(k, math.floor(cost / min_shard_seconds)))
        shots = split_targets(goal_shots, k)
        errors = split_targets(goal_errors, k)
        for j in range(k):
            shards.append(
                Shard(
                    circuit=t.circuit,
                    decoder=t.decoder,
                    strong_id=t.strong_id,
                    max_shots=shots[j],
                    max_errors=errors[j],
                    predicted_seconds=t.predicted_seconds(shots[j], errors[j]),
                    predicted_shots=t.shots_needed(shots[j], errors[j]),
                    index=j,
                    count=k,
                )
            )
    sizes = [s.predicted_seconds for s in shards]
    groups = [s.strong_id for s in shards]
    base = None
    if weights:
        # Bins of unequal sizes: each starts with the load it should *not* take.
        base = [(weights[0] - x) * share for x in weights]
    bins = lpt(sizes, groups, n, base)
    improve(bins, sizes, groups, base=base)
    filled = [[shards[i] for i in sorted(b)] for b in bins if b]  # sorted(b): name order
    if queue and len(filled) < n:  # too few shards for short last rounds: equal ones if more
        equal = _partition(tasks, max_shots, max_errors, n, allow_shards, min_shard_seconds,
                           strategy, goals=goals, max_shards=max_shards)
        if len(equal.batches) > len(filled):
            return equal
    if queue:
        strategy += f" workers={workers}"
    filled.sort(key=lambda b: (-_load(b), b[0].circuit, b[0].decoder, b[0].index))
    batches = [Batch(id=batch_id(i), shards=b) for i, b in enumerate(filled)]
    return Plan(batches=batches, max_shots=max_shots, max_errors=max_errors, strategy=strategy,
                workers=workers if queue else None)


def _load(items: list[Shard]) -> float:
    return sum(s.predicted_seconds for s in items)
