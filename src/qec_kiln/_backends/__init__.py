"""Backends: where batches run. ``local`` (default), ``skypilot`` and ``slurm``."""

from __future__ import annotations

import argparse
import importlib

from qec_kiln._backends.base import (
    Backend,
    BackendOptions,
    JobState,
    LaunchRequest,
    Submission,
    add_common_arguments,
    kiln_home,
    quote_argv,
)
from qec_kiln._errors import KilnError

BACKENDS = {
    "local": ("qec_kiln._backends.local.backend", "LocalBackend"),
    "skypilot": ("qec_kiln._backends.skypilot.backend", "SkyPilotBackend"),
    "slurm": ("qec_kiln._backends.slurm.backend", "SlurmBackend"),
}


def backend_class(name: str) -> type[Backend]:
    """The class of the backend called ``name``, imported only when asked for (SkyPilot is slow to
    import).

    >>> backend_class("local").startup_seconds
    2.0
    """
    name = name.lower()
    if name not in BACKENDS:
        raise KilnError(
            f"--backend {name!r} is not a backend; choose one of {', '.join(sorted(BACKENDS))}"
        )
    module_name, class_name = BACKENDS[name]
    return getattr(importlib.import_module(module_name), class_name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the common options and each backend's own group."""
    add_common_arguments(parser)
    for name in BACKENDS:  # each backend's light options module, not the backend itself
        importlib.import_module(f"qec_kiln._backends.{name}.options").add_arguments(parser)


def get_backend(name: str) -> Backend:
    """The backend called ``name``, imported only when asked for (SkyPilot is slow to import).

    >>> get_backend("local").name
    'local'
    """
    return backend_class(name)()


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOptions",
    "JobState",
    "LaunchRequest",
    "Submission",
    "add_arguments",
    "backend_class",
    "get_backend",
    "kiln_home",
    "quote_argv",
]
