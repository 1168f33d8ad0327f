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

import dataclasses
import math
from collections.abc import Sequence

from qec_kiln._cost import TaskCost
from qec_kiln._errors import KilnError


@dataclasses.dataclass(frozen=True)
class Shard:
    """A share of one task's targets, run by one batch."""

    circuit: str
    decoder: str
    strong_id: str
    max_shots: int
    max_errors: int
    predicted_seconds: float
    predicted_shots: float
    index: int = 0
    count: int = 1

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: dict) -> Shard:
        return Shard(**d)


@dataclasses.dataclass
class Batch:
    """What one job runs: a list of shards, at most one per task."""

    id: str
    shards: list[Shard]

    @property
    def predicted_seconds(self) -> float:
        return sum(s.predicted_seconds for s in self.shards)

    @property
    def predicted_shots(self) -> float:
        return sum(s.predicted_shots for s in self.shards)

    def target_groups(self) -> list[tuple[str, int, int, list[Shard]]]:
        """Shards grouped by (decoder, max_shots, max_errors): one ``sinter collect`` each."""
        groups: dict[tuple[str, int, int], list[Shard]] = {}
        for s in self.shards:
            groups.setdefault((s.decoder, s.max_shots, s.max_errors), []).append(s)
        return [(d, ms, me, sh) for (d, ms, me), sh in sorted(groups.items())]

    def to_json(self) -> dict:
        return {"id": self.id, "shards": [s.to_json() for s in self.shards]}

    @staticmethod
    def from_json(d: dict) -> Batch:
        return Batch(id=d["id"], shards=[Shard.from_json(s) for s in d["shards"]])


@dataclasses.dataclass
class Plan:
    batches: list[Batch]
    max_shots: int
    max_errors: int
    strategy: str = ""

    @property
    def total_predicted_seconds(self) -> float:
        return sum(b.predicted_seconds for b in self.batches)

    @property
    def makespan_seconds(self) -> float:
        return max((b.predicted_seconds for b in self.batches), default=0.0)

    @property
    def balance_ratio(self) -> float:
        """Predicted makespan ÷ ideal (total ÷ number of batches); 1.0 is perfect."""
        if not self.batches or self.total_predicted_seconds <= 0:
            return 1.0
        return self.makespan_seconds / (self.total_predicted_seconds / len(self.batches))

    def batch(self, batch_id: str) -> Batch:
        for b in self.batches:
            if b.id == batch_id:
                return b
        known = ", ".join(b.id for b in self.batches)
        raise KilnError(f"--batch {batch_id!r} is not in this sweep's plan (batches: {known})")

    def task_targets(self) -> dict[str, tuple[int, int]]:
        """strong_id -> (max_shots, max_errors) summed over its shards."""
        out: dict[str, tuple[int, int]] = {}
        for b in self.batches:
            for s in b.shards:
                ms, me = out.get(s.strong_id, (0, 0))
                out[s.strong_id] = (ms + s.max_shots, me + s.max_errors)
        return out


def batch_id(index: int) -> str:
    """The id of the batch at ``index``.

    >>> batch_id(7)
    'b007'
    """
    return f"b{index:03d}"


def split_targets(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` integers that differ by at most one and sum to ``total``.

    >>> split_targets(10, 3)
    [4, 3, 3]
    """
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


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
) -> Plan:
    """Balance ``tasks`` into batches by predicted cost.

    Exactly one of ``jobs`` (N batches), ``target_seconds`` (as many batches as needed so none is
    predicted to exceed it, in core-seconds) or ``circuits_per_job`` (ceil(tasks / K) batches) sets
    the number of batches. Plans are deterministic: the same input gives the same plan.
    A task is never split into shards predicted to cost less than ``min_shard_seconds`` each
    (a job's start-up would outweigh them), so a plan may have fewer batches than asked for.
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
                          strategy=f"circuits-per-job={circuits_per_job}")
    if target_seconds is not None:
        if target_seconds <= 0:
            raise KilnError(f"--target-hours must be positive (got {target_seconds / 3600:g})")
        total = sum(t.predicted_seconds(max_shots, max_errors) for t in tasks)
        n = max(1, math.ceil(total / target_seconds))
        while True:
            plan = _partition(tasks, max_shots, max_errors, n, allow_shards, min_shard_seconds,
                              strategy="target-hours")
            if plan.makespan_seconds <= target_seconds * 1.0001 or n >= 4 * n_tasks + 64:
                return plan
            if len(plan.batches) < n:  # more batches cannot help: shards are as small as allowed
                return plan
            n += 1
    if jobs is None:
        jobs = 1
    if jobs < 1:
        raise KilnError(f"--jobs must be at least 1 (got {jobs})")
    return _partition(tasks, max_shots, max_errors, jobs, allow_shards, min_shard_seconds,
                      strategy=f"jobs={jobs}")


def _partition(
    tasks: Sequence[TaskCost], max_shots: int, max_errors: int, n: int, allow_shards: bool,
    min_shard_seconds: float, strategy: str,
) -> Plan:
    costs = {t.strong_id: t.predicted_seconds(max_shots, max_errors) for t in tasks}
    share = sum(costs.values()) / n
    shards: list[Shard] = []
    for t in sorted(tasks, key=lambda t: (t.circuit, t.decoder)):
        cost = costs[t.strong_id]
        k = 1
        if allow_shards and share > 0 and cost > share * 1.05:
            k = min(n, math.ceil(cost / share), max_shots, max_errors)
            if min_shard_seconds > 0:
                k = max(1, min(k, math.floor(cost / min_shard_seconds)))
        shots = split_targets(max_shots, k)
        errors = split_targets(max_errors, k)
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
    bins = _lpt(shards, n)
    _improve(bins)
    bins = [b for b in bins if b]
    batches = [
        Batch(id=batch_id(i), shards=sorted(b, key=lambda s: (s.circuit, s.decoder, s.index)))
        for i, b in enumerate(sorted(bins, key=lambda b: (-_load(b), b[0].circuit)))
    ]
    return Plan(batches=batches, max_shots=max_shots, max_errors=max_errors, strategy=strategy)


def _load(items: list[Shard]) -> float:
    return sum(s.predicted_seconds for s in items)


def _lpt(shards: list[Shard], n: int) -> list[list[Shard]]:
    """Longest processing time first: each shard to the least loaded batch without its task."""
    bins: list[list[Shard]] = [[] for _ in range(n)]
    loads = [0.0] * n
    for s in sorted(shards, key=lambda s: (-s.predicted_seconds, s.circuit, s.decoder, s.index)):
        candidates = [i for i in range(n) if all(x.strong_id != s.strong_id for x in bins[i])]
        i = min(candidates, key=lambda i: (loads[i], i))
        bins[i].append(s)
        loads[i] += s.predicted_seconds
    return bins


def _improve(bins: list[list[Shard]], rounds: int = 200) -> None:
    """Local search: move or swap shards off the most loaded batch while that lowers the makespan."""

    def fits(s: Shard, b: list[Shard], leaving: Shard | None = None) -> bool:
        return all(x.strong_id != s.strong_id or x is leaving for x in b)

    for _ in range(rounds):
        loads = [_load(b) for b in bins]
        hi = max(range(len(bins)), key=lambda i: (loads[i], -i))
        best: tuple[float, int, int, int] | None = None  # (new max of the pair, shard idx, target, swap idx)
        for si, s in enumerate(bins[hi]):
            for j, b in enumerate(bins):
                if j == hi:
                    continue
                if fits(s, b):
                    new = max(loads[hi] - s.predicted_seconds, loads[j] + s.predicted_seconds)
                    if new < loads[hi] - 1e-12 and (best is None or new < best[0]):
                        best = (new, si, j, -1)
                for ti, t in enumerate(b):
                    delta = s.predicted_seconds - t.predicted_seconds
                    if delta <= 0 or not fits(s, b, t) or not fits(t, bins[hi], s):
                        continue
                    new = max(loads[hi] - delta, loads[j] + delta)
                    if new < loads[hi] - 1e-12 and (best is None or new < best[0]):
                        best = (new, si, j, ti)
        if best is None:
            return
        _, si, j, ti = best
        s = bins[hi].pop(si)
        if ti >= 0:
            t = bins[j].pop(ti)
            bins[hi].append(t)
        bins[j].append(s)
