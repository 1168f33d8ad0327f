"""``qec-kiln pool``: SkyPilot pools of warm workers (``--backend skypilot --workers K``): show
them, or take them down (idle workers bill). The backend answers; this verb prints."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from qec_kiln._command._base import Parser, out, parse_args, run
from qec_kiln._errors import KilnError

HELP = ("SkyPilot pools of warm workers (--backend skypilot --workers K): show them, or take "
        "them down (idle workers bill)")


def parser() -> Parser:
    p = Parser(prog="qec-kiln pool", description=HELP)
    p.add_argument("action", choices=("status", "down"))
    p.add_argument("name", nargs="?", help="the pool (default: every kiln-pool-* pool)")
    p.add_argument("--pool", dest="pool_opt", metavar="NAME", help="the same as NAME")
    p.add_argument("--backend", help="the backend whose pools (default: the one backend "
                   "with pools)")
    return p


def main(argv: Sequence[str]) -> int:
    return run(handle, parse_args(parser(), argv))


def handle(args: argparse.Namespace) -> int:
    from qec_kiln._backends import pool_backend

    name = args.pool_opt or args.name
    if args.name and args.pool_opt and args.name != args.pool_opt:
        raise KilnError(f"qec-kiln pool: two names ({args.name}, --pool {args.pool_opt}); give one")
    for line in pool_backend(args.backend).pool_command(args.action, name):
        out.print(line, markup=False)
    return 0
