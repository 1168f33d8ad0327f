"""A snapshot as the page's JSON: per sweep its fleet summary (share done, shots/s, ETA, batches
by state, failures, cost), a page of its batch table and its tasks still sampling.

Rates come from the snapshots this process has seen (:class:`Rates`), so a page left open
shows shots per second of wall time; a single snapshot (a report) has none.

Example:
    >>> rates = Rates()
    >>> rates.add("s", taken=0.0, shots=0, fraction=0.0)
    >>> rates.add("s", taken=10.0, shots=5000, fraction=0.25)
    >>> rates.shots_per_second("s"), rates.eta_seconds("s", 0.25)
    (500.0, 30.0)
"""

from __future__ import annotations

import collections
import dataclasses

from qec_kiln._view.data import Snapshot, SweepView

#: Batch rows per page of the table (the JSON of thousands of batches is paged, not sent whole).
PAGE_SIZE = 200
#: Tasks still sampling listed per sweep (the rest are counted).
MAX_TASKS = 100
#: Seconds of history the rates look back over.
WINDOW_SECONDS = 120.0


@dataclasses.dataclass
class Prices:
    """Prices for a cost estimate: CPU time (sinter's seconds, summed over its processes) times
    the price of a core-hour; start-up and idle time are not in it."""

    per_cpu_hour: float | None = None

    def cost(self, core_seconds: float) -> float | None:
        return None if self.per_cpu_hour is None else core_seconds / 3600 * self.per_cpu_hour


class Rates:
    """Shots per second and ETA of each sweep from the snapshots seen in the last window."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._seen: dict[str, collections.deque[tuple[float, int, float]]] = {}

    def add(self, sweep: str, *, taken: float, shots: int, fraction: float) -> None:
        seen = self._seen.setdefault(sweep, collections.deque())
        if seen and shots < seen[-1][1]:  # fewer shots: the sweep was relaunched or replaced
            seen.clear()
        seen.append((taken, shots, fraction))
        while len(seen) > 2 and seen[1][0] <= taken - self.window:
            seen.popleft()

    def _span(self, sweep: str) -> tuple[float, int, float] | None:
        seen = self._seen.get(sweep)
        if not seen or len(seen) < 2 or seen[-1][0] <= seen[0][0]:
            return None
        (t0, s0, f0), (t1, s1, f1) = seen[0], seen[-1]
        return t1 - t0, s1 - s0, f1 - f0

    def shots_per_second(self, sweep: str) -> float | None:
        span = self._span(sweep)
        return None if span is None else span[1] / span[0]

    def eta_seconds(self, sweep: str, fraction: float) -> float | None:
        """Seconds left at the pace of the window (None before a second snapshot or progress)."""
        if fraction >= 1.0:
            return 0.0
        span = self._span(sweep)
        if span is None or span[2] <= 0:
            return None
        return (1.0 - fraction) * span[0] / span[2]


def sweep_json(view: SweepView, *, rates: Rates | None, prices: Prices, plot_url: str | None,
               plot_problem: str | None) -> dict:
    """One sweep's part of the page: summary, failures, cost, a first page of batches, tasks."""
    batches = view.status["batches"]
    left = [t for t in view.tasks if not t.reached]
    rate = rates.shots_per_second(view.name) if rates and view.fraction_done < 1 else None
    eta = rates.eta_seconds(view.name, view.fraction_done) if rates else None
    return {
        "name": view.name,
        "backend": view.backend,
        "fraction_done": view.fraction_done,
        "shots": view.shots,
        "errors": view.errors,
        "shots_per_second": rate,
        "eta_seconds": eta if eta is not None else view.batch_eta_seconds(),
        "eta_from": "pace" if eta is not None else "batches",
        "states": view.states(),
        "tasks": len(view.tasks),
        "tasks_reached": len(view.tasks) - len(left),
        "tasks_left": [t.to_json() for t in left[:MAX_TASKS]],
        "tasks_left_total": len(left),
        "failures": view.failures,
        "cost": None if prices.per_cpu_hour is None else {
            "so_far": prices.cost(view.used_core_seconds),
            "predicted": prices.cost(view.predicted_core_seconds),
            "per_cpu_hour": prices.per_cpu_hour},
        "batch_count": len(batches),
        "batches": batches[:PAGE_SIZE],
        "page_size": PAGE_SIZE,
        "warnings": view.warnings,
        "plot_url": plot_url,
        "plot_problem": plot_problem,
    }


def batches_page(view: SweepView, offset: int, limit: int = PAGE_SIZE) -> dict:
    """Rows ``offset .. offset+limit`` of a sweep's batch table (status --json's objects)."""
    rows = view.status["batches"]
    offset = max(0, min(offset, len(rows)))
    return {"sweep": view.name, "offset": offset, "batch_count": len(rows),
            "batches": rows[offset:offset + max(1, min(limit, PAGE_SIZE))]}


def page_json(snapshot: Snapshot | None, *, version: int, sweeps: list[dict],
              unreachable: str | None, checked: float) -> dict:
    """The whole page: ``version`` changes when anything shown but the clock changes."""
    return {
        "version": version,
        "bucket": snapshot.bucket if snapshot else "",
        "taken": snapshot.taken if snapshot else None,
        "checked": checked,
        "problem": snapshot.problem if snapshot else None,
        "unreachable": unreachable,
        "warnings": snapshot.warnings if snapshot else [],
        "sweeps": sweeps,
    }


__all__ = ["MAX_TASKS", "PAGE_SIZE", "Prices", "Rates", "batches_page", "page_json", "sweep_json"]
