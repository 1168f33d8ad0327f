"""``qec-kiln report``: the page as one self-contained HTML file, to attach or send.

No reference to anything outside the file: the style and one script (the task table's sorting
and filtering, ``static/tasks.js``, the watch page's own) are inline, allowed by their hashes in
the file's own Content-Security-Policy (no other script can run); each plot is an SVG and each
sweep's merged CSV (what ``qec-kiln merge --sweep`` writes) a ``data:`` URI; every name from the
bucket is escaped with :func:`html.escape`. The tables are plain HTML: without the script they
are all there, only not sortable.

Example:
    >>> from qec_kiln._view.data import Snapshot
    >>> text = report_html(Snapshot("s3://b", 0.0, [], problem="no sweeps"), plots={})
    >>> "no sweeps" in text and text.count("<script") == 1
    True
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Iterable
from html import escape

from qec_kiln._version import __version__
from qec_kiln._view.data import Snapshot, SweepView, merged_csv
from qec_kiln._view.plot import PlotSpec, highlight_factor
from qec_kiln._view.state import Prices, sweep_json, task_columns, task_rows

#: Batch rows written per sweep (a sweep of more says how many were left out).
MAX_BATCH_ROWS = 5000


def _asset(name: str) -> str:
    from qec_kiln._view.server import asset

    return asset(name).decode()


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _csp(style: str, script: str) -> str:
    return (f"default-src 'none'; style-src {_sha(style)}; script-src {_sha(script)}; "
            "img-src data:; base-uri 'none'; form-action 'none'")


def _sort_value(value: object) -> str:
    return "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)


def _tasks_html(view: SweepView, factor: float) -> str:
    """Every task as a table the inline tasks.js sorts and filters (numeric cells carry their
    value in ``data-s``), with a filter box (shown by the script) and the merged CSV."""
    columns = task_columns(factor)
    head = "".join(
        f'<th class="n" title="{escape(c["title"])}">{escape(c["label"])}</th>' if c["numeric"]
        else f'<th title="{escape(c["title"])}">{escape(c["label"])}</th>' for c in columns)
    rows = []
    for r in task_rows(view, factor):
        cls = "sampling" if r["reached"] is False else "reached" if r["reached"] else "imported"
        cells = []
        for c, text, value in zip(columns, r["text"], r["sort"], strict=True):
            title = f' title="{escape(r["note"])}"' if c["key"] == "target" else ""
            cells.append(f'<td class="n" data-s="{escape(_sort_value(value))}"{title}>{escape(text)}</td>'
                         if c["numeric"] else f"<td{title}>{escape(text)}</td>")
        rows.append(f'<tr class="{cls}" data-id="{escape(r["id"])}">' + "".join(cells) + "</tr>\n")
    csv = ""
    if view.stats:
        uri = "data:text/csv;base64," + base64.b64encode(merged_csv(view.stats)).decode()
        name = "merged-" + "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in view.name)
        csv = (f'<a class="csv" download="{escape(name)}.csv" href="{uri}">merged CSV (as qec-kiln '
               "merge writes it)</a>")
    return ('<div class="tasks-box"><div class="task-tools"><input type="search" '
            'class="task-filter" placeholder="filter tasks: d=5 pymatching sampling" '
            f'aria-label="filter tasks" hidden><span class="task-count muted">{len(rows):,} tasks'
            f'</span>{csv}</div><div class="task-scroll"><table class="tasks" data-columns="1">'
            f"<thead><tr>{head}</tr></thead><tbody>\n{''.join(rows)}</tbody></table></div></div>")


def _table(head: Iterable[str], rows: Iterable[Iterable[object]], cls: str = "") -> str:
    numeric = {"shots", "errors", "done", "ETA", "target shots", "target errors"}
    th = "".join(f'<th class="n">{escape(h)}</th>' if h in numeric else f"<th>{escape(h)}</th>"
                 for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>\n"
                   for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>\n{body}</tbody></table>'


def _n(x: object) -> str:
    return "–" if x is None else f"{x:,}" if isinstance(x, int) else f"{x:,.0f}"


def _dur(s: float | None) -> str:
    if s is None:
        return "–"
    for limit, unit, div in ((90, "s", 1), (5400, "min", 60), (172800, "h", 3600)):
        if s < limit:
            return f"{s / div:.0f} s" if unit == "s" else f"{s / div:.1f} {unit}"
    return f"{s / 86400:.1f} d"


def _sweep_html(view: SweepView, plot: bytes | None, problem: str | None, prices: Prices,
                factor: float) -> str:
    sw = sweep_json(view, rates=None, prices=prices, plot_url=None, plot_problem=problem)
    items = [("done", f"{100 * sw['fraction_done']:.1f}%"), ("shots", _n(sw["shots"])),
             ("errors", _n(sw["errors"])), ("ETA (slowest batch)", _dur(sw["eta_seconds"])),
             ("tasks at target", f"{sw['tasks_reached']} / {sw['tasks']}")]
    items += [(f"batches {state}", _n(count)) for state, count in sw["states"].items()]
    if sw["cost"]:
        items += [("cost so far", f"{sw['cost']['so_far']:.2f}"),
                  ("cost predicted", f"{sw['cost']['predicted']:.2f}")]
    parts = [f'<section class="sweep" data-sweep="{escape(view.name)}">'
             f"<h2>sweep <code>{escape(view.name)}</code></h2>",
             f'<p class="muted">backend {escape(view.backend)} · {len(view.status["batches"]):,} '
             f'batches · {len(view.tasks):,} tasks</p>',
             f'<progress max="1" value="{min(1.0, view.fraction_done):.4f}"></progress>',
             '<div class="fleet">' + "".join(f"<div><b>{escape(v)}</b>{escape(k)}</div>"
                                             for k, v in items) + "</div>"]
    if view.warnings:
        parts.append('<ul class="warnings">' + "".join(f"<li>{escape(w)}</li>" for w in view.warnings)
                     + "</ul>")
    if plot is not None:
        uri = "data:image/svg+xml;base64," + base64.b64encode(plot).decode()
        parts.append(f'<div class="plot"><img alt="threshold plot of sweep {escape(view.name)}" '
                     f'src="{uri}"></div>')
    if problem:
        parts.append(f'<p class="muted">{escape(problem)}</p>')
    if view.failures:
        parts.append(f"<h3>failures ({len(view.failures)})</h3>" + _table(
            ["batch", "state", "detail", "last log line"],
            ([f["id"], f["state"], f["detail"] or "", f["last_log_line"] or "(no log)"]
             for f in view.failures), "failures"))
    left = sw["tasks_left_total"]
    parts.append(f"<h3>tasks: {sw['tasks_reached']:,} of {sw['tasks']:,} at their targets"
                 + (" (every task reached its targets)" if not left else f", {left:,} still sampling")
                 + "</h3>")
    parts.append(_tasks_html(view, factor))
    rows = view.status["batches"]
    parts.append("<h3>batches</h3>" + _table(
        ["batch", "state", "job", "shots", "errors", "done", "ETA", "detail"],
        ([b["id"], b["state"], b["job_id"] or "", _n(b["shots"]), _n(b["errors"]),
          f"{100 * b['fraction']:.1f}%", _dur(b["eta_seconds"]), b["problem"] or b["job_detail"]]
         for b in rows[:MAX_BATCH_ROWS]), "batches"))
    if len(rows) > MAX_BATCH_ROWS:
        parts.append(f'<p class="muted">and {len(rows) - MAX_BATCH_ROWS:,} more batches '
                     "(`qec-kiln status --json` lists them all)</p>")
    return "\n".join(p for p in parts if p) + "</section>"


def report_html(snapshot: Snapshot, *, plots: dict[str, tuple[bytes | None, str | None]],
                prices: Prices | None = None, factor: float | None = None) -> str:
    """The report of ``snapshot``; ``plots`` maps a sweep to its SVG (or None and why);
    ``factor``: the likelihood factor of the rates' intervals (sinter plot's, 1000)."""
    style, script = _asset("style.css"), _asset("tasks.js")
    factor = highlight_factor(PlotSpec()) if factor is None else factor
    when = datetime.datetime.fromtimestamp(snapshot.taken, datetime.timezone.utc)
    body = [f"<header><h1>qec-kiln <span class=\"muted\">report</span></h1>"
            f'<p class="muted">bucket {escape(snapshot.bucket)}</p>'
            f'<p class="muted">read {when:%Y-%m-%d %H:%M} UTC</p></header>']
    if snapshot.problem:
        body.append(f'<div class="notice">{escape(snapshot.problem)}</div>')
    if snapshot.warnings:
        body.append('<ul class="warnings">' + "".join(f"<li>{escape(w)}</li>"
                                                      for w in snapshot.warnings) + "</ul>")
    for view in snapshot.sweeps:
        svg, problem = plots.get(view.name, (None, None))
        body.append(_sweep_html(view, svg, problem, prices or Prices(), factor))
    body.append(f'<footer class="muted">Written by qec-kiln {escape(__version__)} `qec-kiln '
                "report`; the plots are drawn by sinter's own <code>sinter plot</code>. Hollow "
                "rings: tasks still sampling.</footer>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{escape(_csp(style, script))}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>qec-kiln report: {escape(snapshot.bucket)}</title>\n"
            '<link rel="icon" href="data:,">\n'
            f'<style>{style}</style></head>\n<body data-report="1">\n' + "\n".join(body)
            + f"\n<script>{script}</script>\n</body></html>\n")


__all__ = ["MAX_BATCH_ROWS", "report_html"]
