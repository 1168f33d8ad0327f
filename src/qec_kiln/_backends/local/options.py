"""The local backend's options (read without importing the backend): the common ones; its
``workers`` is how many batches run at once, ``--parallel`` another spelling of ``--workers``."""

from __future__ import annotations

import dataclasses

from qec_kiln._argtypes import positive_int
from qec_kiln._backends.options import BackendOptions, option


@dataclasses.dataclass(frozen=True)
class LocalOptions(BackendOptions):
    """The local backend's options: the common ones; ``workers`` is how many batches run at once
    (``parallel`` is an alias of it)."""

    workers: int | None = option(type=positive_int, aliases=("--parallel",),
                                 help="the same as --workers: batches at once (default 1 with "
                                 "all cores)")
