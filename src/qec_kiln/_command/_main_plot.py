"""``qec-kiln watch``, ``plot`` and ``report``: their flags and commands.

``_cli.py`` adds the parsers with :func:`add_parsers` and dispatches ``cmd_watch``,
``cmd_plot`` and ``cmd_report`` here. The plot flags are ``sinter plot``'s, in its spelling
(``--x_func``) or with dashes (``--x-func``).

Example::

    qec-kiln watch --bucket demo/bucket                       # http://127.0.0.1:8787/
    qec-kiln plot --bucket demo/bucket --out threshold.png --xaxis "[log]p" --watch 10
    qec-kiln report --bucket demo/bucket --out report.html
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from qec_kiln._errors import KilnError
from qec_kiln._view.plot import PlotSpec, check_spec, format_of, render


def _positive(text: str) -> float:
    """A number of seconds (or a price) above zero.

    >>> _positive("1.5")
    1.5
    """
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def _add_common(p: argparse.ArgumentParser, *, plot: bool = True) -> None:
    p.add_argument("--bucket", default="kiln-results",
                   help="s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or a directory "
                   "(default ./kiln-results); only read")
    p.add_argument("--sweep", help="only this sweep (default: every sweep in the bucket)")
    if not plot:
        return
    g = p.add_argument_group("the plot, as `sinter plot` draws it (its flags and defaults; "
                             "x = m.p and a curve per m.d when every circuit's name has them)")
    g.add_argument("--x-func", help="x of a point, e.g. m.p (see `sinter plot --help`)")
    g.add_argument("--group-func", help="curve of a point, e.g. \"{'sort': m.d, 'label': "
                   "f'd={m.d}'}\"")
    g.add_argument("--filter-func", help="keep a point when true, e.g. \"decoder=='pymatching'\"")
    g.add_argument("--xaxis", help="x axis label; prefix [log] or [sqrt] for its scale")
    g.add_argument("--yaxis", help="y axis label; prefix [log] or [sqrt] for its scale")
    g.add_argument("--fig-size", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"),
                   help="figure size in pixels")
    g.add_argument("--title", help="the plot's title")


def add_parsers(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``watch``, ``plot`` and ``report`` to the ``qec-kiln`` subparsers ``sub``."""
    del parser_class  # `sub` already makes parsers of the CLI's class (underscore aliases)
    p = sub.add_parser("watch", help="a live page of the sweep: progress, batches, failures and "
                       "the threshold plot as it fills in (read-only)")
    _add_common(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8787, help="default 8787")
    p.add_argument("--interval", type=_positive, default=2.0, metavar="SECONDS",
                   help="read the bucket again this long after each read (default 2)")
    p.add_argument("--price-per-cpu-hour", type=_positive,
                   help="show the cost so far (sinter's CPU time) and predicted (the plan's)")

    p = sub.add_parser("plot", help="merge in memory and draw the threshold plot in one step "
                       "(PNG, SVG or PDF by --out's extension)")
    _add_common(p)
    p.add_argument("--out", required=True, help="threshold.png, .svg or .pdf")
    p.add_argument("--watch", type=_positive, metavar="SECONDS",
                   help="read again every SECONDS and rewrite --out when rows changed, until "
                   "every task reached its targets")

    p = sub.add_parser("report", help="the page as one self-contained HTML file (no network "
                       "needed to open it)")
    _add_common(p)
    p.add_argument("--out", default="report.html", help="default report.html")
    p.add_argument("--price-per-cpu-hour", type=_positive,
                   help="show the cost so far (sinter's CPU time) and predicted (the plan's)")


def _spec(args: argparse.Namespace) -> PlotSpec:
    spec = PlotSpec(x_func=args.x_func, group_func=args.group_func, filter_func=args.filter_func,
                    xaxis=args.xaxis, yaxis=args.yaxis,
                    fig_size=tuple(args.fig_size) if args.fig_size else None, title=args.title)
    check_spec(spec)  # a bad expression is one line now, not after reading the bucket
    return spec


def _log(line: str) -> None:
    print(line, file=sys.stderr)


def cmd_watch(args: argparse.Namespace) -> int:
    from qec_kiln._view.server import Watcher, serve
    from qec_kiln._view.state import Prices

    watcher = Watcher(args.bucket, sweep=args.sweep, spec=_spec(args),
                      prices=Prices(args.price_per_cpu_hour), interval=args.interval)
    return serve(watcher, host=args.host, port=args.port, log=print)


def _draw(rows: Any, spec: PlotSpec, fmt: str) -> bytes | None:
    if not rows.stats:
        return None
    return render(rows.stats, reached=rows.reached, fmt=fmt,
                  spec=spec.with_defaults(rows.metadata_keys, rows.decoders))


def _wrote(path: str, rows: Any) -> str:
    return (f"wrote {path}: {len(rows.stats)} task(s) with rows, {len(rows.reached)} of "
            f"{rows.tasks} at their targets")


def cmd_plot(args: argparse.Namespace) -> int:
    from qec_kiln._view.data import merged_rows, write_file

    fmt, spec = format_of(args.out), _spec(args)
    if not args.watch:
        rows = merged_rows(args.bucket, sweep=args.sweep)
        for w in rows.warnings:
            _log("warning: " + w)
        data = _draw(rows, spec, fmt)
        if data is None:
            raise KilnError(f"{args.bucket}: no fragment has any rows yet, so there is nothing "
                            "to plot; try again later, or give --watch SECONDS")
        write_file(args.out, data)
        print(_wrote(args.out, rows))
        return 0
    last, said = b"", ""
    while True:
        try:
            rows = merged_rows(args.bucket, sweep=args.sweep)
        except KilnError as ex:  # no sweep yet, or the bucket unreachable: wait, say it once
            if str(ex) != said:
                _log(f"waiting: {ex}")
                said = str(ex)
            time.sleep(args.watch)
            continue
        data = _draw(rows, spec, fmt)  # a flag that fails on the rows stops the command
        if data is None and said != "no rows":
            _log("waiting: no fragment has any rows yet")
            said = "no rows"
        if data is not None and data != last:
            write_file(args.out, data)
            last, said = data, ""
            print(_wrote(args.out, rows), flush=True)
        if rows.tasks and len(rows.reached) == rows.tasks:
            print("every task reached its targets; done")
            return 0
        time.sleep(args.watch)


def cmd_report(args: argparse.Namespace) -> int:
    from qec_kiln._view.data import read_snapshot, write_file
    from qec_kiln._view.report import report_html
    from qec_kiln._view.state import Prices

    spec = _spec(args)
    snap = read_snapshot(args.bucket, sweep=args.sweep)
    plots: dict[str, tuple[bytes | None, str | None]] = {}
    for view in snap.sweeps:
        if not view.stats:
            plots[view.name] = (None, "no rows yet")
            continue
        full = spec.with_defaults(view.metadata_keys(), [t.decoder for t in view.tasks])
        try:
            plots[view.name] = (render(view.stats, reached=view.reached, spec=full), None)
        except KilnError as ex:
            plots[view.name] = (None, str(ex))
    write_file(args.out, report_html(snap, plots=plots,
                                     prices=Prices(args.price_per_cpu_hour)).encode())
    what = snap.problem or ", ".join(f"sweep {v.name} {100 * v.fraction_done:.0f}% done"
                                     for v in snap.sweeps)
    print(f"wrote {args.out}: {what}")
    return 0


__all__ = ["add_parsers", "cmd_plot", "cmd_report", "cmd_watch"]
