"""``qec-kiln VERB ...``: reads the verb and imports that verb's module alone,
``_main_<verb>.py``, which owns its flags, its handler and its printing (as ``sinter``'s own
``_main`` does). ``qec-kiln --help`` lists the verbs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from qec_kiln._version import __version__

#: Every verb, in the order ``qec-kiln --help`` lists them.
VERBS = ("plan", "launch", "run-batch", "merge", "status", "cancel", "remove", "pool", "clean",
         "watch", "plot", "report")


def verb_module(verb: str) -> ModuleType:
    """The module of ``verb``: ``qec_kiln._command._main_<verb>``, dashes as underscores."""
    return importlib.import_module(f"qec_kiln._command._main_{verb.replace('-', '_')}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """What ``qec-kiln VERB ARGS`` parses to: the namespace VERB's handler gets.

    >>> parse_args(["merge", "--skip_bad"]).skip_bad
    True
    """
    from qec_kiln._command._base import parse_args as parse

    return parse(verb_module(argv[0]).parser(), argv[1:])


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words and words[0] in VERBS:
        return verb_module(words[0]).main(words[1:])
    _overview().parse_args(words)  # --help, --version, or one error line
    return 2


def _overview() -> argparse.ArgumentParser:
    """``qec-kiln`` without a verb: the verbs and what each does (the one path that imports
    every verb's module, for its ``HELP``)."""
    from qec_kiln._command._base import Parser

    parser = Parser(
        prog="qec-kiln",
        description="Run Stim/sinter sweeps on many machines (local, Slurm, SkyPilot) and merge "
        "them into one CSV for `sinter plot`.",
        epilog="typical use: qec-kiln launch circuits/ --dry-run; qec-kiln launch circuits/; "
        "qec-kiln status; qec-kiln merge --out merged.csv",
    )
    parser.add_argument("--version", action="version", version=f"qec-kiln {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    for verb in VERBS:
        sub.add_parser(verb, help=verb_module(verb).HELP, add_help=False)
    return parser


if __name__ == "__main__":
    sys.exit(main())
