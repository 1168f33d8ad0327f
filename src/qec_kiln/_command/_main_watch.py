"""``qec-kiln watch``: a live page of the sweep (progress, batches, failures and the threshold
plot as it fills in), served read-only.

Example::

    qec-kiln watch --bucket demo/bucket                       # http://127.0.0.1:8787/
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from qec_kiln._command._base import Parser, parse_args, run
from qec_kiln._command._main_plot import add_view_arguments, plot_spec, positive

HELP = ("a live page of the sweep: progress, batches, failures and the threshold plot as it "
        "fills in (read-only)")


def parser() -> Parser:
    p = Parser(prog="qec-kiln watch", description=HELP)
    add_view_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8787, help="default 8787")
    p.add_argument("--interval", type=positive, default=2.0, metavar="SECONDS",
                   help="read the bucket again this long after each read (default 2)")
    p.add_argument("--price-per-cpu-hour", type=positive,
                   help="show the cost so far (sinter's CPU time) and predicted (the plan's)")
    return p


def main(argv: Sequence[str]) -> int:
    return run(handle, parse_args(parser(), argv))


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def handle(args: argparse.Namespace) -> int:
    from qec_kiln._view.server import Watcher, serve
    from qec_kiln._view.state import Prices

    watcher = Watcher(args.bucket, sweep=args.sweep, spec=plot_spec(args),
                      prices=Prices(args.price_per_cpu_hour), interval=args.interval)
    return serve(watcher, host=args.host, port=args.port, log=print)
