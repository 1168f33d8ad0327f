"""The options every backend understands (``BackendOptions``); each backend's own options are a
subclass of it in its package's light ``options`` module."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

_O = TypeVar("_O", bound="BackendOptions")


@dataclasses.dataclass(frozen=True)
class BackendOptions:
    """Settings every backend understands; each maps them onto its own terms (submitit's generic
    parameters). A backend's own settings live in a subclass (``LocalOptions``, ``SlurmOptions``).

    >>> BackendOptions(processes=4).sync_seconds
    30.0
    """

    processes: int | None = None  # sinter --processes per batch (default: the node's cores)
    sync_seconds: float = 30.0  # how often run-batch uploads complete lines of its resume CSV
    cpus: str | None = None  # CPUs per node (SkyPilot, e.g. "16+") or per task (Slurm, "8")
    gpus: str | None = None  # accelerators, e.g. "H100:1"
    workers: int | None = None  # K: machines/slots that run batches at once, taking them in turn

    @classmethod
    def from_args(cls: type[_O], args: argparse.Namespace, **own: Any) -> _O:
        """The common settings from parsed flags (absent flags take their defaults), plus ``own``."""
        return cls(processes=getattr(args, "processes", None),
                   sync_seconds=getattr(args, "sync_seconds", None) or 30.0,
                   cpus=getattr(args, "cpus", None), gpus=getattr(args, "gpus", None),
                   workers=getattr(args, "workers", None), **own)
