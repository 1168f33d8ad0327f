"""What a backend tells the planner, in one answer (``Backend.capacity(options)``).

The answer covers every batch count: ``capacity.at(n)`` is how ``n`` batches would run (at most
``slots`` at once, and where a machine's cores are split among the slots in use, the processes
each gets with fewer).

    >>> c = Capacity(processes=8, startup_seconds=30.0, slots=3)
    >>> c.wall_seconds(800.0), c.first_startup_seconds, c.workers is None
    (130.0, 30.0, True)
    >>> c.at(2).slots, c.at(10).slots, Capacity(processes=1, startup_seconds=1.0).at(7).slots
    (2, 3, 7)
    >>> Capacity(processes=1, startup_seconds=1.0, slots=2, fewer_slots_processes=(2,)).at(1).processes
    2
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Capacity:
    """How a backend with given options runs batches (``at(n)``: ``n`` of them)."""

    processes: int  # sinter processes per batch (with every slot in use)
    startup_seconds: float  # seconds a batch takes to start (on a warm worker, where there is one)
    slots: int | None = None  # batches running at once; None: every batch at once (one job each)
    workers: int | None = None  # K workers taking batches from a queue; None: one job per batch
    first_startup_seconds_: float | None = None  # a worker's first start (a new VM), if longer
    min_processes: int | None = None  # processes a batch surely has (for --target-hours)
    decoders_run_here: bool = False  # batches run on this machine: decoders must import here
    #: processes per batch when only 1, 2, ... of the slots are used (one machine's cores split
    #: among fewer slots); empty: ``processes`` whatever the count
    fewer_slots_processes: tuple[int, ...] = ()

    def at(self, n_batches: int) -> Capacity:
        """How ``n_batches`` batches run: ``slots`` is then a number (at most ``n_batches``)."""
        n = max(1, n_batches)
        slots = max(1, min(self.slots or n, n))
        procs = self.fewer_slots_processes[slots - 1] \
            if slots <= len(self.fewer_slots_processes) else self.processes
        return dataclasses.replace(self, slots=slots, processes=procs)

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
