"""The local backend's options and flags (read without importing the backend)."""

from __future__ import annotations

import argparse
import dataclasses

from qec_kiln._argtypes import positive_int
from qec_kiln._backends.options import BackendOptions


@dataclasses.dataclass(frozen=True)
class LocalOptions(BackendOptions):
    """The local backend's options: the common ones; ``workers`` is how many batches run at once
    (``parallel`` is an alias of it)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("local")
    g.add_argument("--parallel", type=positive_int, dest="workers", default=argparse.SUPPRESS,
                   help="the same as --workers: batches at once (default 1 with all cores)")
