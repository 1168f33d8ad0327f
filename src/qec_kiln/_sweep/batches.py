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
    #: The task's own sinter (start_batch_size, max_batch_size, max_batch_seconds), None each
    #: for sinter's default (``qec_kiln.collect``'s per-task ``collection_options``); None: the
    #: sweep's (its sinter_args). Left out of the JSON when None, so manifests without it read
    #: and write as before.
    batch_options: tuple[int | None, int | None, int | None] | None = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        if self.batch_options is None:
            del d["batch_options"]
        else:
            d["batch_options"] = list(self.batch_options)
        return d

    @staticmethod
    def from_json(d: dict) -> Shard:
        """A shard of a manifest, old (no batch_options) or new.

        >>> s = Shard("c", "x", "id", 1, 1, 1.0, 1.0, batch_options=(None, 64, 2))
        >>> Shard.from_json(s.to_json()) == s, "batch_options" in Shard("c", "x", "i", 1, 1, 1, 1).to_json()
        (True, False)
        """
        d = dict(d)
        if d.get("batch_options") is not None:
            a, b, c = d["batch_options"]
            d["batch_options"] = (a, b, c)
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

    @property
    def strong_ids(self) -> frozenset[str]:
        return frozenset(s.strong_id for s in self.shards)

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


@dataclasses.dataclass(frozen=True)
class SinterRun:
    """One ``sinter collect``: every circuit with every decoder, at the same targets and batch
    options (None: the sweep's)."""

    decoders: tuple[str, ...]
    max_shots: int
    max_errors: int
    circuits: tuple[str, ...]
    batch_options: tuple[int | None, int | None, int | None] | None = None

    def batch_flags(self) -> list[str]:
        """This run's own sinter batch-size flags (none for the sweep's).

        >>> SinterRun(("x",), 1, 1, ("a",), (None, 64, 2)).batch_flags()
        ['--max_batch_size', '64', '--max_batch_seconds', '2']
        """
        names = ("--start_batch_size", "--max_batch_size", "--max_batch_seconds")
        out: list[str] = []
        for name, value in zip(names, self.batch_options or (), strict=False):
            if value is not None:
                out += [name, str(value)]
        return out


def _order(options: tuple[int | None, ...] | None) -> tuple[int, ...]:
    """A sort key for batch options (None sorts first, as no option)."""
    return () if options is None else tuple(-1 if v is None else v for v in options)


def sinter_runs(shards: list[Shard]) -> list[SinterRun]:
    """The fewest ``sinter collect`` runs that run exactly ``shards`` (at most one per task):
    shards of equal targets and batch options whose decoders have the same circuits share one
    run (sinter runs every circuit with every decoder, so no task is added; a sinter's batch
    options are its every task's, so tasks with other options run in a sinter of their own).

    >>> sh = [Shard(c, d, c + d, 10, 1, 1.0, 1.0) for c in ("a", "b") for d in ("x", "y")]
    >>> [(r.decoders, r.circuits) for r in sinter_runs(sh + [Shard("c", "x", "cx", 10, 1, 1, 1)])]
    [(('x',), ('a', 'b', 'c')), (('y',), ('a', 'b'))]
    >>> [(r.decoders, r.circuits) for r in sinter_runs(sh)]
    [(('x', 'y'), ('a', 'b'))]
    >>> own = Shard("c", "x", "cx", 10, 1, 1, 1, batch_options=(None, 64, None))
    >>> [(r.circuits, r.batch_flags()) for r in sinter_runs(sh[:1] + [own])]
    [(('a',), []), (('c',), ['--max_batch_size', '64'])]
    """
    Key = tuple[str, int, int, tuple[int | None, int | None, int | None] | None]
    circuits: dict[Key, set[str]] = {}
    for s in shards:
        circuits.setdefault((s.decoder, s.max_shots, s.max_errors, s.batch_options),
                            set()).add(s.circuit)
    runs: dict[tuple[int, int, tuple[str, ...], tuple[int | None, int | None, int | None] | None],
               list[str]] = {}
    for (decoder, shots, errors, options), names in sorted(
            circuits.items(), key=lambda kv: (kv[0][:3], _order(kv[0][3]))):
        runs.setdefault((shots, errors, tuple(sorted(names)), options), []).append(decoder)
    return sorted((SinterRun(tuple(d), ms, me, c, o) for (ms, me, c, o), d in runs.items()),
                  key=lambda r: (r.decoders, r.max_shots, r.max_errors, r.circuits,
                                 _order(r.batch_options)))


def disjoint_groups(batches: list[Batch]) -> list[list[Batch]]:
    """``batches`` in order, cut into runs of consecutive batches that share no task (what one
    sinter may run together: it takes each task once).

    >>> a, b = Batch("b0", [Shard("c", "x", "id", 1, 1, 1, 1)]), Batch("b1", [])
    >>> [[x.id for x in g] for g in disjoint_groups([a, b, a])]
    [['b0', 'b1'], ['b0']]
    """
    groups: list[list[Batch]] = []
    seen: set[str] = set()
    for b in batches:
        if not groups or seen & b.strong_ids:
            groups.append([])
            seen = set()
        groups[-1].append(b)
        seen |= b.strong_ids
    return groups


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
