"""Backends: where batches run. ``local`` (default), ``skypilot``, ``slurm`` and any installed
package that names a :class:`BackendPlugin` in the entry-point group ``qec_kiln.backends``
(docs/backends.md)."""

from __future__ import annotations

import argparse

from qec_kiln._backends.base import (
    Backend,
    JobState,
    LaunchRequest,
    Submission,
    kiln_home,
    quote_argv,
)
from qec_kiln._backends.options import BackendOptions, add_common_flags, add_own_flags, option
from qec_kiln._backends.plugin import BackendPlugin
from qec_kiln._backends.registry import Registry
from qec_kiln._errors import KilnError

#: Name -> BackendPlugin of every backend found (read when first asked).
BACKENDS = Registry()


def plugin(name: str) -> BackendPlugin:
    """The plugin of the backend called ``name`` (case-insensitive)."""
    name = name.lower()
    if name not in BACKENDS:
        why = f" ({BACKENDS.problems[name]})" if name in BACKENDS.problems else ""
        raise KilnError(f"--backend {name!r} is not a backend{why}; choose one of "
                        f"{', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]


def backend_class(name: str) -> type[Backend]:
    """The class of the backend called ``name``, imported only when asked for (SkyPilot is slow to
    import).

    >>> backend_class("local").startup_seconds
    2.0
    """
    found = plugin(name)
    cls = found.backend_class()
    if cls.name != found.name or cls.options_type is not found.options_type:
        raise KilnError(f"backend {found.name!r}: its class {found.backend} says name "
                        f"{cls.name!r} and options {cls.options_type.__name__}, its plugin "
                        f"{found.name!r} and {found.options_type.__name__}")
    return cls


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the common options and each backend's own group (from its options' fields;
    no backend class is imported)."""
    add_common_flags(parser)
    for name, found in BACKENDS.items():
        add_own_flags(parser, name, found.options_type)


def get_backend(name: str) -> Backend:
    """The backend called ``name``, imported only when asked for (SkyPilot is slow to import).

    >>> get_backend("local").name
    'local'
    """
    return backend_class(name)()


def pool_backend(name: str | None) -> Backend:
    """``qec-kiln pool``'s backend: ``name``, else the one backend that has pools."""
    if name:
        return get_backend(name)
    with_pools = [get_backend(n) for n in BACKENDS if plugin(n).backend_class().has_pools()]
    if len(with_pools) != 1:
        raise KilnError("qec-kiln pool: give --backend, one of: "
                        + (", ".join(b.name for b in with_pools) or "(no backend has pools)"))
    return with_pools[0]


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOptions",
    "BackendPlugin",
    "JobState",
    "LaunchRequest",
    "Submission",
    "add_arguments",
    "backend_class",
    "get_backend",
    "kiln_home",
    "option",
    "plugin",
    "pool_backend",
    "quote_argv",
]
