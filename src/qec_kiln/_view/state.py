"""A snapshot as the page's JSON: per sweep its fleet summary (share done, shots/s, ETA, batches
by state, failures, cost), a page of its batch table, and its task table (every task, sampling
or done) in two parts with a version each, so that the page fetches the finished tasks only
when they change (:func:`task_parts`).

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
import functools
import hashlib
import json
from typing import Any

from qec_kiln._sweep.progress import eta_seconds, share_of_targets
from qec_kiln._view.data import Snapshot, SweepView

#: Batch rows per page of the table (the JSON of thousands of batches is paged, not sent whole).
PAGE_SIZE = 200
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
        return None if span is None else eta_seconds(span[0], fraction, gained=span[2])


def task_columns(factor: float) -> list[dict]:
    """The task table's columns: ``key``, ``label``, ``numeric`` (right-aligned, sorted as
    numbers) and ``title`` (the header's tooltip)."""
    band = (f"the band sinter plot highlights: rates at most {factor:g} times less likely than "
            "the best fit (sinter.fit_binomial)")
    cols = [("circuit", "circuit", False, "the circuit's file name in the sweep's plan"),
            ("metadata", "metadata", False, "its json_metadata, as in the merged CSV"),
            ("decoder", "decoder", False, ""),
            ("shots", "shots", True, "shots merged from every batch"),
            ("errors", "errors", True, "shots with a logical error"),
            ("discards", "discards", True, "shots discarded by postselection"),
            ("rate", "error rate", True, "errors / (shots - discards), per shot"),
            ("low", "low", True, "lower end of " + band),
            ("high", "high", True, "upper end of " + band),
            ("target", "target", True, "reached its max_shots or max_errors, or how far along")]
    return [{"key": k, "label": label, "numeric": num, "title": title}
            for k, label, num, title in cols]


@functools.lru_cache(maxsize=1 << 16)
def fit(shots: int, errors: int, factor: float) -> tuple[float, float, float] | None:
    """sinter's fit of a per-shot error rate, as ``sinter plot`` computes the band it highlights
    (``sinter.fit_binomial`` on the kept shots): ``(low, best, high)``, None without shots.

    >>> fit(1000, 10, 1000.0)
    (0.00234, 0.01, 0.02652)
    """
    if shots <= 0:
        return None
    import sinter

    f = sinter.fit_binomial(num_shots=shots, num_hits=errors, max_likelihood_factor=factor)
    return float(f.low), float(f.best), float(f.high)


def _int(n: int) -> str:
    return f"{n:,}"


def _rate(x: float | None) -> str:
    """A rate as the table shows it.

    >>> _rate(None), _rate(0.0), _rate(0.000123456)
    ('–', '0', '1.23e-04')
    """
    return "–" if x is None else "0" if x == 0 else f"{x:.2e}"


def _metadata_text(metadata: Any) -> str:
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)


def task_rows(view: SweepView, factor: float) -> list[dict]:
    """Every task of the sweep (planned tasks and merged rows), in the merged CSV's order and then
    the plan's: ``id`` (strong_id), ``n`` (that order), ``reached`` (None: no targets, an
    import), ``text`` (a cell's text per column of :func:`task_columns`), ``sort`` (its value to
    sort by; None: none, last) and ``note`` (the targets, for the last cell's tooltip)."""
    stats = {st.strong_id: st for st in view.stats}
    outcomes = {t.strong_id: t for t in view.tasks}
    rows = []
    for n, sid in enumerate([*stats, *(sid for sid in outcomes if sid not in stats)]):
        st, t = stats.get(sid), outcomes.get(sid)
        if st is not None:
            decoder, metadata = st.decoder, st.json_metadata
            shots, errors, discards = st.shots, st.errors, st.discards
        else:
            assert t is not None
            decoder, metadata, shots, errors, discards = t.decoder, t.metadata, 0, 0, 0
        circuit = view.circuits.get(sid) or (t.name if t else _metadata_text(metadata))
        band = fit(shots - discards, errors, factor)
        rate = errors / (shots - discards) if band else None
        low, high = (band[0], band[2]) if band else (None, None)
        if t is None:
            reached, frac, target, note = None, None, "–", "no targets (imported rows)"
        else:
            reached = t.reached
            frac = 1.0 if reached else share_of_targets(t.shots, t.errors, t.target_shots,
                                                        t.target_errors)
            target = "reached" if reached else f"{100 * frac:.0f}%"
            note = f"target: {t.target_shots:,} shots or {t.target_errors:,} errors"
        meta = _metadata_text(metadata)
        rows.append({
            "id": sid, "n": n, "reached": reached, "note": note,
            "text": [circuit, meta, decoder, _int(shots), _int(errors), _int(discards),
                     _rate(rate), _rate(low), _rate(high), target],
            "sort": [circuit, meta, decoder, shots, errors, discards, rate, low, high, frac]})
    return rows


@dataclasses.dataclass(frozen=True)
class TaskPart:
    """Rows of the task table as the page fetches them: ``body`` (JSON), its ``version``."""

    version: str
    body: bytes
    count: int


def task_parts(view: SweepView, factor: float) -> dict[str, TaskPart]:
    """The task table in two parts: ``done`` (reached its targets, or an import's rows: they
    rarely change) and ``left`` (still sampling). Each has a version, the digest of its body, that
    the page's poll carries, so a page fetches a part only when it changed: the poll stays the
    same size however many tasks are done."""
    rows = task_rows(view, factor)
    out = {}
    for part, keep in (("done", lambda r: r["reached"] is not False),
                       ("left", lambda r: r["reached"] is False)):
        mine = [r for r in rows if keep(r)]
        text = json.dumps(mine, separators=(",", ":"), ensure_ascii=False)
        version = hashlib.sha256(text.encode()).hexdigest()[:16]
        head = json.dumps({"sweep": view.name, "part": part, "version": version})
        body = f'{head[:-1]},"rows":{text}}}'.encode()  # the rows' JSON is not encoded twice
        out[part] = TaskPart(version, body, len(mine))
    return out


def sweep_json(view: SweepView, *, rates: Rates | None, prices: Prices, plot_url: str | None,
               plot_problem: str | None, parts: dict[str, TaskPart] | None = None,
               csv_url: str | None = None) -> dict:
    """One sweep's part of the page: summary, failures, cost, a first page of batches, and the
    versions of its task table's two parts (the rows come from ``api/tasks``)."""
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
        "tasks_left_total": len(left),
        "task_parts": {k: {"version": p.version, "count": p.count}
                       for k, p in (parts or {}).items()},
        "csv_url": csv_url,
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
              unreachable: str | None, checked: float, columns: list[dict] | None = None) -> dict:
    """The whole page: ``version`` changes when anything shown but the clock changes;
    ``task_columns`` heads every sweep's task table."""
    return {
        "version": version,
        "task_columns": columns or [],
        "bucket": snapshot.bucket if snapshot else "",
        "taken": snapshot.taken if snapshot else None,
        "checked": checked,
        "problem": snapshot.problem if snapshot else None,
        "unreachable": unreachable,
        "warnings": snapshot.warnings if snapshot else [],
        "sweeps": sweeps,
    }


__all__ = ["PAGE_SIZE", "Prices", "Rates", "TaskPart", "batches_page", "fit", "page_json", "sweep_json",
           "task_columns", "task_parts", "task_rows"]
