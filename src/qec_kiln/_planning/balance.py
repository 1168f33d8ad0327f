"""Balance items of known sizes into ``n`` bins, at most one item of a group per bin.

The planner's engine (:mod:`qec_kiln._planning.plan` feeds it shards: size = predicted seconds, group =
strong_id). Near-linear, so that 100,000 items plan in seconds:

* :func:`lpt`: longest processing time first, each item to the least loaded bin that has no item
  of its group, the bins kept in a heap: ``O(items * log(bins))`` (plus a heap pop per bin that
  already holds the group, at most the group's size).
* :func:`improve`: a bounded local search. Each round moves one item, or swaps two, between the
  most loaded bin and one of the ``width`` least loaded ones, if that lowers the most loaded bin;
  at most ``rounds`` rounds, each ``O(items in the two bins + width * log(bins))``.

Items are indices into ``sizes`` and ``groups``; ties are broken by index, so the same input
gives the same bins.

Example:
    >>> sizes, groups = [3.0, 3.0, 2.0, 2.0, 2.0], ["a", "b", "c", "d", "e"]
    >>> bins = lpt(sizes, groups, 2)
    >>> bins, [sum(sizes[i] for i in b) for b in bins]
    ([[0, 2, 4], [1, 3]], [7.0, 5.0])
    >>> improve(bins, sizes, groups)  # one swap: 3 for 2
    1
    >>> [sorted(b) for b in bins], [sum(sizes[i] for i in b) for b in bins]
    ([[2, 3, 4], [0, 1]], [6.0, 6.0])
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Hashable, Iterator, Sequence

__all__ = ["improve", "lpt"]

#: Feasible neighbours looked at on each side of the ideal size (items of a group already in the
#: other bin are skipped): bounds a round's work when groups crowd the ideal size.
_SCAN = 8


def lpt(sizes: Sequence[float], groups: Sequence[Hashable], n: int,
        base: Sequence[float] | None = None) -> list[list[int]]:
    """Items (indices) in ``n`` bins, largest first, each to the least loaded bin without its group.

    Ties go to the lower index (item and bin). Every group must have at most ``n`` items.
    ``base``: a load each bin starts with (a bin with more holds less: bins of unequal sizes).

    Example:
        >>> lpt([1.0, 1.0, 1.0], ["a", "a", "b"], 2)
        [[0, 2], [1]]
        >>> lpt([2.0, 1.0, 1.0], ["a", "b", "c"], 2, base=[0.0, 1.5])  # bin 1 holds 1.5 less
        [[0, 2], [1]]
    """
    bins: list[list[int]] = [[] for _ in range(n)]
    where: dict[Hashable, set[int]] = {}  # group -> bins holding one of its items
    heap = [(0.0 if base is None else float(base[b]), b) for b in range(n)]
    heapq.heapify(heap)
    for item in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        taken = where.setdefault(groups[item], set())
        skipped = []
        load, b = heapq.heappop(heap)
        while b in taken:
            skipped.append((load, b))
            load, b = heapq.heappop(heap)
        bins[b].append(item)
        taken.add(b)
        heapq.heappush(heap, (load + sizes[item], b))
        for entry in skipped:
            heapq.heappush(heap, entry)
    return bins


class _Loads:
    """Bin loads with the most and least loaded bins at hand (heaps with stale entries dropped)."""

    def __init__(self, loads: list[float]) -> None:
        self.loads = loads
        self._max = [(-x, b) for b, x in enumerate(loads)]
        self._min = [(x, b) for b, x in enumerate(loads)]
        heapq.heapify(self._max)
        heapq.heapify(self._min)

    def add(self, b: int, delta: float) -> None:
        self.loads[b] += delta
        heapq.heappush(self._max, (-self.loads[b], b))
        heapq.heappush(self._min, (self.loads[b], b))

    def heaviest(self) -> int:
        """The most loaded bin (lowest index on ties)."""
        while -self._max[0][0] != self.loads[self._max[0][1]]:
            heapq.heappop(self._max)
        return self._max[0][1]

    def lightest(self, k: int, exclude: int) -> list[int]:
        """Up to ``k`` least loaded bins other than ``exclude``, lightest first."""
        out: list[int] = []
        kept: list[tuple[float, int]] = []
        while self._min and len(out) < k:
            x, b = heapq.heappop(self._min)
            if x != self.loads[b] or any(b == c for _, c in kept):
                continue  # stale or duplicate entry: drop it
            kept.append((x, b))
            if b != exclude:
                out.append(b)
        for entry in kept:
            heapq.heappush(self._min, entry)
        return out


def _outward(start: int, stop: int, step: int) -> Iterator[int]:
    """``start``, ``start + step``, ... within ``[0, stop)``, at most ``_SCAN`` of them."""
    i = start
    for _ in range(_SCAN):
        if not 0 <= i < stop:
            return
        yield i
        i += step


def improve(
    bins: list[list[int]],
    sizes: Sequence[float],
    groups: Sequence[Hashable],
    *,
    rounds: int = 200,
    width: int = 8,
    base: Sequence[float] | None = None,
) -> int:
    """Lower the most loaded bin by moves and swaps, in place; returns how many were made.

    Each round takes the most loaded bin ``hi`` and, for each of the ``width`` least loaded bins
    ``j`` (gap ``g`` between them), the move of one item of size ``d`` (or swap of items whose
    sizes differ by ``d``) with ``0 < d < g`` closest to ``g / 2``, keeping at most one item of a
    group per bin; it makes the best of these if it lowers ``hi``, else stops. A bin's load counts
    its ``base`` (as in :func:`lpt`).

    Example:
        >>> bins = [[0, 1], [2]]
        >>> improve(bins, [3.0, 2.5, 2.0], ["a", "b", "c"]), bins
        (1, [[0], [2, 1]])
        >>> bins = [[0, 1], [2]]  # item 1 may not join item 2's bin: same group
        >>> improve(bins, [4.0, 1.0, 1.0], ["a", "b", "b"]), bins
        (0, [[0, 1], [2]])
        >>> improve(bins, [4.0, 1.0, 1.0], ["a", "b", "c"]), bins
        (1, [[0], [2, 1]])
    """
    n = len(bins)
    if n < 2:
        return 0
    loads = _Loads([(0.0 if base is None else float(base[j])) + sum(sizes[i] for i in b)
                    for j, b in enumerate(bins)])
    where: dict[Hashable, set[int]] = {}
    for b, items in enumerate(bins):
        for i in items:
            where.setdefault(groups[i], set()).add(b)

    def free(item: int, b: int, leaving: int = -1) -> bool:
        """Can ``item`` join bin ``b`` (once ``leaving`` has left it)?"""
        return b not in where[groups[item]] or (leaving >= 0 and groups[leaving] == groups[item])

    made = 0
    for _ in range(rounds):
        hi = loads.heaviest()
        top = loads.loads[hi]
        tol = max(1e-12, 1e-9 * abs(top))
        src = sorted(bins[hi], key=lambda i: (sizes[i], i))
        src_sizes = [sizes[i] for i in src]
        best: tuple[float, int, int, int] | None = None  # (new load of hi's pair, j, item, swap)
        for j in loads.lightest(width, hi):
            low = loads.loads[j]
            gap = top - low
            if gap <= tol:
                break  # the others are no lighter
            half = gap / 2
            found: list[tuple[float, int, int]] = []  # (d, item of hi, item of j or -1)
            # Moves: the item closest to half the gap, from below and from above.
            p = bisect.bisect_left(src_sizes, half)
            for step in (-1, 1):
                for q in _outward(p if step > 0 else p - 1, len(src), step):
                    if free(src[q], j):
                        found.append((src_sizes[q], src[q], -1))
                        break
            # Swaps: for each item of hi (ascending), the item of j closest to its size - half.
            dst = sorted(bins[j], key=lambda i: (sizes[i], i))
            dst_sizes = [sizes[i] for i in dst]
            ptr = 0
            for a, s in zip(src_sizes, src, strict=True):
                want = a - half
                while ptr < len(dst) and dst_sizes[ptr] < want:
                    ptr += 1
                for step in (-1, 1):
                    for q in _outward(ptr if step > 0 else ptr - 1, len(dst), step):
                        t = dst[q]
                        if free(s, j, t) and free(t, hi, s):
                            found.append((a - dst_sizes[q], s, t))
                            break
            for d, s, t in found:
                if 0 < d < gap:
                    new = max(top - d, low + d)
                    if new < top - tol and (best is None or new < best[0]):
                        best = (new, j, s, t)
        if best is None:
            return made
        _, j, s, t = best
        bins[hi].remove(s)
        bins[j].append(s)
        delta = sizes[s]
        where[groups[s]].discard(hi)
        if t >= 0:
            bins[j].remove(t)
            bins[hi].append(t)
            delta -= sizes[t]
            where[groups[t]].discard(j)
            where[groups[t]].add(hi)
        where[groups[s]].add(j)
        loads.add(hi, -delta)
        loads.add(j, delta)
        made += 1
    return made
