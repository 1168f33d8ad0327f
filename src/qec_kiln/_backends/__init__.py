"""Backends: where batches run. ``local`` (default), ``skypilot`` and ``slurm``."""

from __future__ import annotations

import importlib

from qec_kiln._backends._base import (
    Backend,
    BackendOptions,
    JobState,
    LaunchRequest,
    LaunchResult,
    kiln_home,
    quote_argv,
)
from qec_kiln._errors import KilnError

BACKENDS = {
    "local": ("qec_kiln._backends.local", "LocalBackend"),
    "skypilot": ("qec_kiln._backends.skypilot", "SkyPilotBackend"),
    "slurm": ("qec_kiln._backends.slurm", "SlurmBackend"),
}


def get_backend(name: str) -> Backend:
    """The backend called ``name``, imported only when asked for (SkyPilot is slow to import).

    >>> get_backend("local").name
    'local'
    """
    name = name.lower()
    if name not in BACKENDS:
        raise KilnError(
            f"--backend {name!r} is not a backend; choose one of {', '.join(sorted(BACKENDS))}"
        )
    module_name, class_name = BACKENDS[name]
    module = importlib.import_module(module_name)
    return getattr(module, class_name)()


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOptions",
    "JobState",
    "LaunchRequest",
    "LaunchResult",
    "get_backend",
    "kiln_home",
    "quote_argv",
]
