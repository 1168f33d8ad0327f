#!/usr/bin/env python3
"""How planning time grows with the number of tasks and batches (``make_plan``, no sampling).

Synthetic task costs like a real d x p sweep (seconds per shot over three orders of magnitude,
p_L over five; ``max_shots=10**6``, ``max_errors=1000``), planned side by side:

- 1,000 vs 10,000 tasks into 4 batches: the ratio of the times (linear: ~10x, quadratic: ~100x);
- 10,000 tasks into 1,000 batches;
- 2,000 tasks (the size of the sweep in the issue) into 16, 16,000 and 100,000 batches
  (``--jobs``; shards of at least 2 s, as the local backend asks) and by ``--target-hours``.

Each line: case, seconds (best of ``--repeat``), batches, shards, predicted balance (makespan /
ideal). The last lines print the ratios. Usage::

    python bench/plan_scale.py             # about 10 s on one core
    python bench/plan_scale.py --quick     # skips the 10,000-task and 100,000-batch cases
"""

from __future__ import annotations

import argparse
import random
import time

from qec_kiln._planning.plan import TaskCost, make_plan

MAX_SHOTS, MAX_ERRORS = 10**6, 1000


def synthetic_tasks(n: int, seed: int = 1) -> list[TaskCost]:
    """``n`` tasks with costs spread like a surface-code sweep (seeded, so runs compare)."""
    rng = random.Random(seed)
    return [
        TaskCost(f"c{i:06d}.stim", "pymatching", f"id{i:06d}",
                 seconds_per_shot=10 ** rng.uniform(-7, -4), p_logical=10 ** rng.uniform(-6, -1),
                 overhead_seconds=0.05)
        for i in range(n)
    ]


def timed(label: str, tasks: list[TaskCost], repeat: int, **kwargs) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan = make_plan(tasks, max_shots=MAX_SHOTS, max_errors=MAX_ERRORS, **kwargs)
        best = min(best, time.perf_counter() - t0)
    shards = sum(len(b.shards) for b in plan.batches)
    print(f"{label:34s} {best:8.3f} s  {len(plan.batches):7d} batches  {shards:7d} shards  "
          f"balance {plan.balance_ratio:.4f}", flush=True)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per case")
    parser.add_argument("--quick", action="store_true", help="only the small cases")
    args = parser.parse_args(argv)
    r = args.repeat

    t1k = timed("1,000 tasks -> 4 batches", synthetic_tasks(1_000), r, jobs=4)
    two_k = synthetic_tasks(2_000)
    t2k = timed("2,000 tasks -> 16 batches", two_k, r, jobs=16)
    total = sum(t.predicted_seconds(MAX_SHOTS, MAX_ERRORS) for t in two_k)
    timed("2,000 tasks -> target total/100", two_k, r, target_seconds=total / 100,
          min_shard_seconds=2.0)
    timed("2,000 tasks -> 16,000 batches", two_k, r, jobs=16_000, min_shard_seconds=2.0)
    if args.quick:
        return 0
    timed("2,000 tasks -> 100,000 batches", two_k, 1, jobs=100_000, min_shard_seconds=2.0)
    ten_k = synthetic_tasks(10_000)
    t10k = timed("10,000 tasks -> 4 batches", ten_k, r, jobs=4)
    t10k_1k = timed("10,000 tasks -> 1,000 batches", ten_k, r, jobs=1_000)
    print(f"ratio 10,000/1,000 tasks into 4 batches: {t10k / t1k:.1f}x (linear ~10x, quadratic ~100x)")
    print(f"planning times: 2,000 tasks {t2k:.2f} s, 10,000 tasks {t10k:.2f} s (4 batches), "
          f"{t10k_1k:.2f} s (1,000 batches)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
