"""What a backend tells the planner, in one answer (``Backend.capacity(options, n_batches)``).

    >>> c = Capacity(processes=8, startup_seconds=30.0, slots=3)
    >>> c.wall_seconds(800.0), c.first_startup_seconds, c.workers is None
    (130.0, 30.0, True)
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Capacity:
    """How ``n_batches`` batches would run on a backend with given options."""

    processes: int  # sinter processes per batch
    startup_seconds: float  # seconds a batch takes to start (on a warm worker, where there is one)
    slots: int  # batches running at once
    workers: int | None = None  # K workers taking batches from a queue; None: one job per batch
    first_startup_seconds_: float | None = None  # a worker's first start (a new VM), if longer
    min_processes: int | None = None  # processes a batch surely has (for --target-hours)
    decoders_run_here: bool = False  # batches run on this machine: decoders must import here

    @property
    def first_startup_seconds(self) -> float:
        """Seconds before a worker's first batch starts (a cold machine)."""
        return self.startup_seconds if self.first_startup_seconds_ is None \
            else self.first_startup_seconds_

    @property
    def surely_processes(self) -> int:
        return self.min_processes or self.processes

    def wall_seconds(self, core_seconds: float) -> float:
        """Predicted wall seconds of a batch with ``core_seconds`` of work, start-up included."""
        return core_seconds / self.processes + self.startup_seconds
