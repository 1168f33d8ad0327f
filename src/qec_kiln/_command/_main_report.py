"""``qec-kiln report``: the live page of ``watch`` as one self-contained HTML file (no network
needed to open it).

Example::

    qec-kiln report --bucket demo/bucket --out report.html
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from qec_kiln._command._base import Parser, parse_args, run
from qec_kiln._command._main_plot import add_view_arguments, plot_spec, positive
from qec_kiln._errors import KilnError
from qec_kiln._view.plot import render

HELP = "the page as one self-contained HTML file (no network needed to open it)"


def parser() -> Parser:
    p = Parser(prog="qec-kiln report", description=HELP)
    add_view_arguments(p)
    p.add_argument("--out", default="report.html", help="default report.html")
    p.add_argument("--price-per-cpu-hour", type=positive,
                   help="show the cost so far (sinter's CPU time) and predicted (the plan's)")
    return p


def main(argv: Sequence[str]) -> int:
    return run(handle, parse_args(parser(), argv))


def handle(args: argparse.Namespace) -> int:
    from qec_kiln._view.data import read_snapshot, write_file
    from qec_kiln._view.report import report_html
    from qec_kiln._view.state import Prices

    spec = plot_spec(args)
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
