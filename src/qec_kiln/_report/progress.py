"""Live progress of running batches, read from their local resume files (sinter's own CSV
parsing), shown while ``launch`` waits: a rich live table on a terminal, otherwise one plain line
every ``QEC_KILN_PROGRESS_SECONDS`` (default 30) seconds.

    >>> duration(None), duration(42), duration(3 * 3600)
    ('-', '42 s', '3.0 h')
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from qec_kiln._errors import KilnError, Log
from qec_kiln._report.status import BatchProgress
from qec_kiln._report.units import duration, percent
from qec_kiln._sweep.fragments import Fragment, parse_fragment
from qec_kiln._sweep.manifest import Manifest
from qec_kiln._sweep.progress import batch_progress, eta_seconds, weighted_share

#: Seconds between plain progress lines when the output is not a terminal.
DEFAULT_PERIOD = 30.0


def progress_period() -> float:
    """``$QEC_KILN_PROGRESS_SECONDS`` (default 30)."""
    try:
        value = float(os.environ.get("QEC_KILN_PROGRESS_SECONDS", DEFAULT_PERIOD))
    except ValueError:
        return DEFAULT_PERIOD
    return value if value > 0 else DEFAULT_PERIOD


class ResumeReader:
    """Parses a batch's resume file again only when it has changed (size, mtime)."""

    def __init__(self, manifest: Manifest, path_of: Callable[[str], pathlib.Path]):
        self.manifest = manifest
        self.path_of = path_of
        self._cache: dict[str, tuple[tuple[int, int], BatchProgress]] = {}
        # The batches of one `run-batch --all` share one resume file (links to it): parsed once
        # per change, not once per batch.
        self._parsed: dict[str, tuple[tuple[int, int], Fragment]] = {}

    def batch(self, batch_id: str) -> BatchProgress:
        batch = self.manifest.plan.batch(batch_id)
        path = self.path_of(batch_id)
        try:
            st = path.stat()
        except OSError:
            return BatchProgress(batch, batch_progress(batch, None), False)
        stamp = (st.st_size, st.st_mtime_ns)
        cached = self._cache.get(batch_id)
        if cached and cached[0] == stamp:
            return cached[1]
        real = os.path.realpath(path)
        shared = self._parsed.get(real)
        if shared and shared[0] == stamp:
            frag = shared[1]
        else:
            try:
                frag = parse_fragment(path.read_bytes(), str(path))
            except (OSError, KilnError):  # half-written or replaced this instant: the last view
                return cached[1] if cached else BatchProgress(batch, batch_progress(batch, None),
                                                              False)
            self._parsed[real] = (stamp, frag)
        result = BatchProgress(batch, batch_progress(batch, frag, self.manifest.errors_of), True)
        self._cache[batch_id] = (stamp, result)
        return result


class LaunchProgress:
    """Shots, errors, rate and ETA of the batches one ``launch`` runs.

    ``states()`` gives each batch's state (``running``, ``waiting``, ``done``, ``failed``...).
    Use as a context manager; call :meth:`update` often (it redraws or prints when due).
    """

    def __init__(self, reader: ResumeReader, batch_ids: Sequence[str],
                 states: Callable[[], dict[str, str]], say: Log,
                 console: Console | None = None, period: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.reader = reader
        self.batch_ids = list(batch_ids)
        self.states = states
        self.say = say  # the plain lines (the caller's log)
        self.console = console  # a terminal: a live table instead
        self.period = period or progress_period()
        self.clock = clock
        self.start = clock()
        self.live: Live | None = None
        self._last_print = self.start
        self._last_read = -1e9
        self._rows: list[BatchProgress] = []
        self._start_shots: int | None = None
        self._start_fraction = 0.0

    def __enter__(self) -> LaunchProgress:
        self._read()
        if self.console is not None and self.console.is_terminal:
            self.live = Live(self.render(), console=self.console, refresh_per_second=2,
                             transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._read()
        if self.live is not None:
            self.live.update(self.render())
            self.live.__exit__(*exc)
        else:
            self.say(self.line())

    def _read(self) -> None:
        self._rows = [self.reader.batch(b) for b in self.batch_ids]
        self._last_read = self.clock()
        if self._start_shots is None:
            self._start_shots = self.shots
            self._start_fraction = self.fraction

    def update(self) -> None:
        now = self.clock()
        if now - self._last_read >= 1.0:
            self._read()
            if self.live is not None:
                self.live.update(self.render())
        if self.live is None and now - self._last_print >= self.period:
            self._last_print = now
            self.say(self.line())

    @property
    def shots(self) -> int:
        return sum(b.shots for b in self._rows)

    @property
    def errors(self) -> int:
        return sum(b.errors for b in self._rows)

    @property
    def fraction(self) -> float:
        return weighted_share((b.fraction, b.batch.predicted_seconds) for b in self._rows)

    def rate(self) -> float:
        """Shots per second since this launch began."""
        elapsed = self.clock() - self.start
        return (self.shots - (self._start_shots or 0)) / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> float | None:
        """Seconds left at this launch's pace so far (None before any progress)."""
        return eta_seconds(self.clock() - self.start, self.fraction,
                           gained=self.fraction - self._start_fraction)

    def line(self) -> str:
        """One plain progress line: the total, then each unfinished batch."""
        states = self.states()
        done = sum(1 for b in self.batch_ids if states.get(b) in ("done", "failed", "cancelled"))
        parts = [f"progress: {done}/{len(self.batch_ids)} batch(es) ended, {self.shots:,} shots "
                 f"({self.rate():,.0f}/s), {self.errors:,} errors, {percent(self.fraction)} done, "
                 f"ETA {duration(self.eta_seconds())}, "
                 f"elapsed {duration(self.clock() - self.start)}"]
        for b in self._rows:
            if states.get(b.batch.id) == "running":
                parts.append(f"{b.batch.id} {b.shots:,} shots {b.errors:,} errors "
                             f"{percent(b.fraction)}")
        return "; ".join(parts)

    def render(self) -> Group:
        states = self.states()
        table = Table(title_justify="left", box=None, pad_edge=False)
        for col in ("batch", "state", "shots", "errors", "done"):
            table.add_column(col, justify="left" if col in ("batch", "state") else "right")
        for b in self._rows:
            table.add_row(b.batch.id, states.get(b.batch.id, ""), f"{b.shots:,}",
                          f"{b.errors:,}", percent(b.fraction))
        total = Text(self.line().split("; ")[0], style="bold")
        return Group(table, total)
