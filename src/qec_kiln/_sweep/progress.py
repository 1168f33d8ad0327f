"""How far each shard of a batch is, measured from its fragment against its targets (pure
computation over fragments: planning counts settled rows with it, status reports it).

>>> from qec_kiln._sweep.batches import Batch, Shard
>>> b = Batch("b000", [Shard("c", "pymatching", "id", 1000, 10, predicted_seconds=1,
...                          predicted_shots=9)])
>>> [p.fraction for p in batch_progress(b, None)]
[0.0]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from qec_kiln._sweep.batches import Batch, Shard
from qec_kiln._sweep.fragments import Fragment

if TYPE_CHECKING:
    import sinter

#: The largest share a batch or shard still sampling shows (never "100%" before it is done).
NOT_DONE = 0.999


@dataclasses.dataclass
class ShardProgress:
    shard: Shard
    shots: int
    errors: int
    seconds: float

    @property
    def done(self) -> bool:
        return self.shots >= self.shard.max_shots or self.errors >= self.shard.max_errors

    @property
    def fraction(self) -> float:
        """Share done: shots against ``max_shots`` or errors against ``max_errors``, whichever
        is nearer (sinter stops at the first it reaches). Measured, not predicted, so it is
        1.0 only when the shard is done, however wrong the cost model was.

        >>> s = Shard("c", "pymatching", "id", 1000, 10, predicted_seconds=1, predicted_shots=9)
        >>> ShardProgress(s, 500, 2, 1.0).fraction, ShardProgress(s, 999, 9, 1.0).fraction
        (0.5, 0.999)
        """
        if self.done:
            return 1.0
        return min(NOT_DONE, share_of_targets(self.shots, self.errors, self.shard.max_shots,
                                              self.shard.max_errors))


def share_of_targets(shots: int, errors: int, max_shots: int, max_errors: int) -> float:
    """How far ``shots`` and ``errors`` are toward ``max_shots`` or ``max_errors``, whichever is
    nearer (sinter stops at the first it reaches); not capped.

    >>> share_of_targets(500, 2, 1000, 10), share_of_targets(10, 8, 1000, 10)
    (0.5, 0.8)
    """
    return max(shots / max(1, max_shots), errors / max(1, max_errors))


def batch_progress(batch: Batch, fragment: Fragment | None,
                   errors_of: Callable[[sinter.TaskStats], int] | None = None
                   ) -> list[ShardProgress]:
    """Each shard's shots and errors in ``fragment``; ``errors_of`` says what counts as an
    error (``Manifest.errors_of``: a custom count with ``--custom-error-count-key``)."""
    stats: dict[str, sinter.TaskStats] = fragment.stats if fragment else {}
    count = errors_of or (lambda st: st.errors)
    out = []
    for s in batch.shards:
        st = stats.get(s.strong_id)
        out.append(ShardProgress(s, st.shots if st else 0, count(st) if st else 0,
                                 st.seconds if st else 0.0))
    return out


def weighted_share(parts: Iterable[tuple[float, float]]) -> float:
    """The share done of a whole made of ``(share, weight)`` parts (a batch's shards, a sweep's
    batches: weighted by their predicted seconds); 0.0 when nothing has weight.

    >>> weighted_share([(1.0, 3.0), (0.5, 1.0)]), weighted_share([])
    (0.875, 0.0)
    """
    done = total = 0.0
    for share, weight in parts:
        done += share * weight
        total += weight
    return done / total if total > 0 else 0.0


def eta_seconds(elapsed: float, fraction: float, gained: float) -> float | None:
    """Seconds left if the pace holds: ``gained`` of the whole was done in ``elapsed`` seconds
    and ``fraction`` is done now; 0.0 when done, None before any progress.

    >>> eta_seconds(10.0, 0.25, 0.25), eta_seconds(5.0, 1.0, 0.0), eta_seconds(5.0, 0.5, 0.0)
    (30.0, 0.0, None)
    """
    if fraction >= 1.0:
        return 0.0
    if gained <= 0:
        return None
    return elapsed * (1.0 - fraction) / gained


__all__ = ["NOT_DONE", "ShardProgress", "batch_progress", "eta_seconds", "share_of_targets",
           "weighted_share"]
