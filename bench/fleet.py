#!/usr/bin/env python3
"""A model (a discrete-event simulation, not a measurement) of a cloud sweep on K workers.

It compares two ways to run the same sweep:

- one-job-per-batch: the original design; B = K batches, each its own job that pays a full start-up
  (a cold spot VM) and, when preempted, a full start-up again on a new VM;
- pool+queue: K pool workers that stay up; B batches and their plan from
  ``qec_kiln._planning.plan.plan_for_workers`` (what ``launch --workers K`` plans: a few whole rounds of K
  up to ``choose_batch_count``'s B, each planned in rounds of decreasing size, the one the queue
  is predicted to finish first), and
  handed longest first to whichever worker is free (the engine's queue); each worker pays one cold
  start-up, then a few seconds per batch; a preempted worker's batch goes back to the head of the
  queue and the pool replaces the worker with a cold VM.

Task costs are measured ones: the 30 circuits of the original sweep (rotated surface-code memory,
d = 3..13, p = 0.001..0.01, pymatching, max_shots 1e6, max_errors 1000) from the measurements in
``qec_kiln/data/cost_model.json`` (seconds per shot and logical error rate of real sinter runs),
scaled so the sweep is a scenario's work; the planner sees qec-kiln's uncalibrated cost model, so
its errors are the model's real errors on these circuits. Every assumption is printed with its
source at the top of the output. Efficiency = one worker's time / (K x sweep wall); its limit with
perfect balance is ideal / (ideal + first start-up), ideal = work / K. The last lines are::

    fleet: <scenario> one-job-per-batch=<e1> pool+queue=<e2> limit=<l> ratio=<e2/l>

Usage::

    python bench/fleet.py               # 20 seeded repeats per case, ~10 s
    python bench/fleet.py --repeats 100 --seed 7
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import heapq
import math
import random
import sys
from collections.abc import Sequence

from qec_kiln._planning._cost import (
    CircuitFeatures,
    load_model,
    predict_logical_error_rate,
    predict_seconds_per_shot,
    predict_task_overhead_seconds,
    shots_needed,
)
from qec_kiln._planning.makespan import choose_batch_count
from qec_kiln._planning.plan import Plan, TaskCost, make_plan, plan_for_workers

MAX_SHOTS, MAX_ERRORS = 1_000_000, 1000
HOUR = 3600.0

COLD_START = 330.0
WARM_START = 5.0
PREEMPT_PER_HOUR = 0.05
SYNC_SECONDS = 30.0
RUN_NOISE = 0.10

ASSUMPTIONS = f"""\
fleet.py is a MODEL (discrete-event simulation), not a measurement. Assumptions and sources:
- task costs: the 30-circuit sweep (rotated_memory_x d=3..13 r=d, p=0.001..0.01, pymatching,
  max_shots 1e6, max_errors 1000), measured seconds/shot and p_L of real sinter runs from
  qec_kiln/data/cost_model.json 'measurements' (~134 core-s in all; d=13 p=0.003 is ~27% of it),
  scaled to each scenario's work; shot shards split a task's shots and errors evenly.
- the plan: qec_kiln._planning.plan.make_plan on qec-kiln's UNcalibrated cost-model predictions (its real
  per-circuit errors on these circuits); run-to-run noise per shard: lognormal, mean 1, sigma
  {RUN_NOISE:g} (assumption: sinter's stop at max_errors, machine noise), total work held fixed.
- cold start-up {COLD_START:g} s (5.5 min): the public peer's measurement, 5-6 min to provision an
  m6i.4xlarge spot node (github.com/brianirish/qec-kiln; /work/shared/NOTES.md).
- warm pool start-up {WARM_START:g} s per batch (assumption: issue 15's 'a few seconds once warm';
  includes sinter's 0.5 s process start-up from cost_model.json); a cold pool's first batch on a
  worker pays the cold start-up.
- spot preemptions (scenario c and the table): Poisson, {PREEMPT_PER_HOUR:.0%}/hour per VM
  (assumption, deliberately pessimistic, not measured); recovery = a new VM's cold start-up; work
  since the last resume-file sync is lost (sync every {SYNC_SECONDS:g} s, qec-kiln's period).
- one-job-per-batch: B = K batches, each its own job (the original design). pool+queue: the plan of
  plan_for_workers (its prediction: the model's error, not preemptions), batches longest first to
  the first free worker; a preempted batch goes back to
  the head of the queue. Idle workers count as paid until the sweep ends.
- public peer reference: 1 h 50 min on one node, 43 min 48 s on 7 nodes = 36% efficiency (measured
  by the peer; count-based batches, one cold cluster per batch)."""


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    features: CircuitFeatures
    seconds_per_shot: float  # measured
    p_logical: float  # measured (0 when no error was seen: runs to max_shots)

    def seconds(self, max_shots: int, max_errors: int, scale: float) -> float:
        overhead = predict_task_overhead_seconds(self.features, "pymatching")
        return overhead + scale * self.seconds_per_shot * shots_needed(max_shots, max_errors, self.p_logical)


def load_tasks() -> list[Task]:
    """The 30 circuits of the original sweep, with their measured costs."""
    tasks = []
    for m in load_model()["measurements"]["seconds_per_shot"]:
        if (m["family"] == "surface_code:rotated_memory_x" and m["decoder"] == "pymatching"
                and m["rounds"] == m["d"]):
            tasks.append(Task(m["name"], CircuitFeatures.from_json(m["features"]), m["seconds_per_shot"],
                              m["errors"] / m["shots"]))
    if len(tasks) != 30:
        raise SystemExit(f"error: cost_model.json holds {len(tasks)} of the 30 sweep circuits, not 30")
    return tasks


def plan_for(tasks: Sequence[Task], scale: float, batches: int, workers: int | None = None) -> Plan:
    """qec-kiln's plan from the uncalibrated model's predictions, scaled like the work; with
    ``workers`` (K), planned for the engine's queue as the launch path does for backends with one."""
    return make_plan(pool_costs(tasks, scale), max_shots=MAX_SHOTS, max_errors=MAX_ERRORS, jobs=batches,
                     workers=workers)


def pool_costs(tasks: Sequence[Task], scale: float) -> list[TaskCost]:
    """The uncalibrated model's predictions, scaled like the work: what the planner sees."""
    d = "pymatching"
    return [TaskCost(t.name, d, t.name, scale * predict_seconds_per_shot(t.features, d),
                     predict_logical_error_rate(t.features, d), predict_task_overhead_seconds(t.features, d))
            for t in tasks]


def actual_batches(plan: Plan, tasks: dict[str, Task], scale: float, work: float,
                   rng: random.Random) -> list[float]:
    """Each batch's true seconds in the plan's (longest predicted first) order; they sum to work."""
    out = []
    for b in plan.batches:
        out.append(sum(tasks[s.strong_id].seconds(s.max_shots, s.max_errors, scale)
                       * rng.lognormvariate(-RUN_NOISE ** 2 / 2, RUN_NOISE) for s in b.shards))
    total = sum(out)
    return [x * work / total for x in out]


def _attempt(rng: random.Random, rate: float, start: float, remaining: float) -> tuple[float, float | None]:
    """One try on one VM: (elapsed, remaining work) if preempted, else (elapsed, None) when done."""
    x = rng.expovariate(rate) if rate > 0 else math.inf
    if x >= start + remaining:
        return start + remaining, None
    kept = max(0.0, math.floor((x - start) / SYNC_SECONDS) * SYNC_SECONDS) if x > start else 0.0
    return x, remaining - kept


def one_job_per_batch(batches: Sequence[float], start: float, rate: float, rng: random.Random) -> float:
    """Wall time when every batch is its own job on its own VM, all launched at once."""
    wall = 0.0
    for work in batches:
        t, remaining, s = 0.0, work, start
        while True:
            dt, left = _attempt(rng, rate, s, remaining)
            t += dt
            if left is None:
                break
            remaining, s = left, COLD_START  # a managed job recovers on a new (cold) VM
        wall = max(wall, t)
    return wall


def pool_queue(batches: Sequence[float], workers: int, first_start: float, start: float, rate: float,
               rng: random.Random) -> float:
    """Wall time of K pool workers taking batches from one queue (longest first)."""
    queue = collections.deque(batches)
    events: list[tuple[float, int, int, bool, float]] = []  # (time, order, worker or -1, warm, work)
    for w in range(workers):
        heapq.heappush(events, (0.0, w, w, False, 0.0))
    idle: list[tuple[int, bool]] = []
    wall, order = 0.0, workers

    def assign(t: float, w: int, warm: bool) -> None:
        nonlocal order, wall
        work = queue.popleft()
        dt, left = _attempt(rng, rate, start if warm else first_start, work)
        order += 1
        if left is None:
            wall = max(wall, t + dt)
            heapq.heappush(events, (t + dt, order, w, True, 0.0))
        else:  # preempted: the batch goes back to the queue; the pool replaces the VM (cold)
            heapq.heappush(events, (t + dt, order, -1, False, left))
            order += 1
            heapq.heappush(events, (t + dt, order, w, False, 0.0))

    while events:
        t, _, w, warm, work = heapq.heappop(events)
        if w < 0:
            queue.appendleft(work)
            if idle:
                idle.sort(key=lambda x: not x[1])  # a warm worker first
                iw, iwarm = idle.pop(0)
                assign(t, iw, iwarm)
        elif queue:
            assign(t, w, warm)
        else:
            idle.append((w, warm))
    return wall


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    work: float  # one worker's time, seconds
    workers: int
    pool_warm: bool  # the pool's workers are already up (no cold start-up)
    preempt_per_hour: float


def run_case(case: Case, tasks: list[Task], repeats: int, seed: int) -> dict[str, float]:
    by_name = {t.name: t for t in tasks}
    scale = case.work / sum(t.seconds(MAX_SHOTS, MAX_ERRORS, 1.0) for t in tasks)
    first = WARM_START if case.pool_warm else COLD_START
    choice = choose_batch_count(case.work, len(tasks), case.workers, WARM_START, first_startup_seconds=first,
                                max_shards_per_task=MAX_ERRORS)
    one_plan = plan_for(tasks, scale, case.workers)
    pool_plan = plan_for_workers(pool_costs(tasks, scale), max_shots=MAX_SHOTS, max_errors=MAX_ERRORS,
                                 workers=case.workers, startup_seconds=WARM_START,
                                 first_startup_seconds=first)
    rate = case.preempt_per_hour / HOUR
    rng = random.Random(seed)
    e1 = e2 = 0.0
    for _ in range(repeats):
        w1 = one_job_per_batch(actual_batches(one_plan, by_name, scale, case.work, rng), first, rate, rng)
        w2 = pool_queue(actual_batches(pool_plan, by_name, scale, case.work, rng), case.workers, first,
                        WARM_START, rate, rng)
        e1 += case.work / (case.workers * w1) / repeats
        e2 += case.work / (case.workers * w2) / repeats
    ideal = case.work / case.workers
    return dict(batches=len(pool_plan.batches), one=e1, pool=e2, limit=ideal / (ideal + first),
                predicted=choice.efficiency, predicted_one=choice.one_job_per_batch_efficiency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="seeded runs per case (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    tasks = load_tasks()
    print(ASSUMPTIONS)
    print()
    print(f"{'case':<30} {'K':>4} {'B':>5} {'one-job':>8} {'pool+q':>7} {'limit':>6} {'ratio':>6}"
          f" {'pred one/pool':>14}")
    rows = []
    for k in (8, 16, 32, 64, 128, 256):
        for warm in (False, True):
            rows.append(Case(f"node-day spot {'warm' if warm else 'cold'} pool", 24 * HOUR, k, warm,
                             PREEMPT_PER_HOUR))
    scenarios = [
        Case("a-peer-cold", 110 * 60, 7, False, 0.0),
        Case("b-peer-warm-pool", 110 * 60, 7, True, 0.0),
        Case("c-node-day-K64-spot", 24 * HOUR, 64, False, PREEMPT_PER_HOUR),
    ]
    results = {}
    for case in scenarios + rows:
        r = run_case(case, tasks, args.repeats, args.seed)
        results[case.name] = r
        print(f"{case.name:<30} {case.workers:>4} {r['batches']:>5} {r['one']:>8.1%} {r['pool']:>7.1%}"
              f" {r['limit']:>6.1%} {r['pool'] / r['limit']:>6.3f}"
              f" {r['predicted_one']:>6.1%}/{r['predicted']:>6.1%}")
    print(f"(mean of {args.repeats} seeded runs each; 'pred' = choose_batch_count's prediction for its own B;"
          " one-job = one-job-per-batch, B = K)")
    print()
    for case in scenarios:
        r = results[case.name]
        print(f"fleet: {case.name} one-job-per-batch={r['one']:.3f} pool+queue={r['pool']:.3f}"
              f" limit={r['limit']:.3f} ratio={r['pool'] / r['limit']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
