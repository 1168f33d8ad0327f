"""``qec-kiln plot``: merge in memory and draw the threshold plot in one step (PNG, SVG or PDF
by ``--out``'s extension), once or every ``--watch`` seconds until every task reached its
targets. The plot flags are ``sinter plot``'s, in its spelling (``--x_func``) or with dashes
(``--x-func``); ``watch`` and ``report`` take them too.

Example::

    qec-kiln plot --bucket demo/bucket --out threshold.png --xaxis "[log]p" --watch 10
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from qec_kiln._argtypes import DEFAULT_BUCKET
from qec_kiln._command._base import Parser, parse_args, run
from qec_kiln._errors import KilnError
from qec_kiln._view.plot import PlotSpec, check_spec, format_of, render

HELP = ("merge in memory and draw the threshold plot in one step (PNG, SVG or PDF by --out's "
        "extension)")


def parser() -> Parser:
    p = Parser(prog="qec-kiln plot", description=HELP)
    add_view_arguments(p)
    p.add_argument("--out", required=True, help="threshold.png, .svg or .pdf")
    p.add_argument("--watch", type=positive, metavar="SECONDS",
                   help="read again every SECONDS and rewrite --out when rows changed, until "
                   "every task reached its targets")
    return p


def main(argv: Sequence[str]) -> int:
    return run(handle, parse_args(parser(), argv))


def positive(text: str) -> float:
    """A number of seconds (or a price) above zero.

    >>> positive("1.5")
    1.5
    """
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def add_view_arguments(p: argparse.ArgumentParser, *, plot: bool = True) -> None:
    """``--bucket``, ``--sweep`` and (unless not ``plot``) the plot's flags, as ``sinter plot``'s."""
    p.add_argument("--bucket", default=DEFAULT_BUCKET,
                   help="s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or a directory "
                   f"(default ./{DEFAULT_BUCKET}); only read")
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


def plot_spec(args: argparse.Namespace) -> PlotSpec:
    """The plot flags as a checked :class:`PlotSpec`."""
    spec = PlotSpec(x_func=args.x_func, group_func=args.group_func, filter_func=args.filter_func,
                    xaxis=args.xaxis, yaxis=args.yaxis,
                    fig_size=tuple(args.fig_size) if args.fig_size else None, title=args.title)
    check_spec(spec)  # a bad expression is one line now, not after reading the bucket
    return spec


def say(line: str) -> None:
    print(line, file=sys.stderr)


def _draw(rows: Any, spec: PlotSpec, fmt: str) -> bytes | None:
    if not rows.stats:
        return None
    return render(rows.stats, reached=rows.reached, fmt=fmt,
                  spec=spec.with_defaults(rows.metadata_keys, rows.decoders))


def _wrote(path: str, rows: Any) -> str:
    return (f"wrote {path}: {len(rows.stats)} task(s) with rows, {len(rows.reached)} of "
            f"{rows.tasks} at their targets")


def handle(args: argparse.Namespace) -> int:
    from qec_kiln._view.data import merged_rows, write_file

    fmt, spec = format_of(args.out), plot_spec(args)
    if not args.watch:
        rows = merged_rows(args.bucket, sweep=args.sweep)
        for w in rows.warnings:
            say("warning: " + w)
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
                say(f"waiting: {ex}")
                said = str(ex)
            time.sleep(args.watch)
            continue
        data = _draw(rows, spec, fmt)  # a flag that fails on the rows stops the command
        if data is None and said != "no rows":
            say("waiting: no fragment has any rows yet")
            said = "no rows"
        if data is not None and data != last:
            write_file(args.out, data)
            last, said = data, ""
            print(_wrote(args.out, rows), flush=True)
        if rows.tasks and len(rows.reached) == rows.tasks:
            print("every task reached its targets; done")
            return 0
        time.sleep(args.watch)


__all__ = ["add_view_arguments", "plot_spec", "positive"]
