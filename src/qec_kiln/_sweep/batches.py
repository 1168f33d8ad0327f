"""A sweep's batches: each a list of shards, a shard being one task's share of its targets
(shards of one task share its strong_id, so ``sinter combine`` sums them into one row).

    >>> b = Batch("b000", [Shard("d=3.stim", "pymatching", "id", 1, 1, 1000, 10)])
    >>> b.predicted_seconds, batch_id(12)
    (1000, 'b012')
"""

from __future__ import annotations

import dataclasses
import heapq

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
    #: K when planned for a queue of K workers (batches of decreasing size), else None.
    workers: int | None = None

    @property
    def total_predicted_seconds(self) -> float:
        return sum(b.predicted_seconds for b in self.batches)

    @property
    def makespan_seconds(self) -> float:
        return max((b.predicted_seconds for b in self.batches), default=0.0)

    @property
    def balance_ratio(self) -> float:
        """Predicted makespan ÷ ideal (total ÷ number of batches); 1.0 is perfect. Planned for a
        queue of K workers: the queue's predicted makespan (batches longest first, each to the
        worker free first) ÷ (total ÷ K)."""
        if not self.batches or self.total_predicted_seconds <= 0:
            return 1.0
        if self.workers and len(self.batches) > self.workers:
            free = [0.0] * self.workers  # when each worker is next free (a heap)
            for seconds in sorted((b.predicted_seconds for b in self.batches), reverse=True):
                heapq.heappush(free, heapq.heappop(free) + seconds)
            return max(free) / (self.total_predicted_seconds / self.workers)
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
